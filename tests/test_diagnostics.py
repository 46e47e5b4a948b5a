"""trainer.diagnostics: diagnostics.csv and gradients.png, what they measure, and that measuring
changes nothing of the run."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from dltrain import compose, train
from dltrain.report.diagnostics_plot import gradients_figure, plot_gradients
from dltrain.training.diagnostics import COLUMNS, Diagnostics

#: A short run on the digits: 3 epochs of 5 batches.
SHORT = ["model.hidden=[16,16]", "trainer.max_epochs=3", "trainer.batch_size=256", "device=cpu"]


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def metrics_without_time(run: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in read_rows(run / "metrics.csv")]


def one_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float = 0.1) -> Diagnostics:
    """A Diagnostics of ``model`` that measured one SGD step on ``(x, y)``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    diagnostics = Diagnostics(model, "unused.csv")
    diagnostics.measure(step, x, y)
    return diagnostics


def by_layer(diagnostics: Diagnostics) -> dict[str, dict[str, float]]:
    return {row["layer"]: row for row in diagnostics.pending}


@pytest.fixture(scope="module")
def diagnosed_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("diag") / "run"
    train(compose(SHORT), run_dir=run)
    return run


def test_diagnostics_csv_has_one_row_per_epoch_and_layer_named_as_in_the_model_summary(diagnosed_run):
    rows = read_rows(diagnosed_run / "diagnostics.csv")
    assert tuple(rows[0]) == COLUMNS
    layers = ["fc1", "act1", "fc2", "act2", "out"]
    assert [(int(r["epoch"]), r["layer"]) for r in rows] == [(e, name) for e in (1, 2, 3) for name in layers]
    summary = (diagnosed_run / "model_summary.txt").read_text().split()
    assert all(name in summary for name in layers)
    fc1 = rows[0]
    assert fc1["kind"] == "Linear" and fc1["dead_fraction"] == ""
    for column in ("grad_norm", "weight_norm", "update_ratio", "act_std"):
        assert float(fc1[column]) > 0
    assert float(fc1["identical_units"]) == 0.0  # random init: no two units alike
    assert rows[1]["kind"] == "ReLU" and 0 <= float(rows[1]["dead_fraction"]) < 1 and rows[1]["grad_norm"] == ""


@pytest.mark.pictures
def test_gradients_png_draws_grad_norm_update_ratio_and_dead_units_per_layer(diagnosed_run):
    png = diagnosed_run / "gradients.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    axes = gradients_figure(read_rows(diagnosed_run / "diagnostics.csv")).axes
    titles = ["gradient norm", "update / weight norm", "dead (ReLU) or saturated units"]
    assert [ax.get_title() for ax in axes] == titles
    assert [ax.get_yscale() for ax in axes] == ["log", "log", "linear"]
    assert [line.get_label() for line in axes[0].get_lines()] == ["fc1", "fc2", "out"]
    assert [line.get_label() for line in axes[2].get_lines()] == ["act1", "act2"]
    assert list(axes[0].get_lines()[0].get_xdata()) == [1, 2, 3]


def test_the_run_lists_its_diagnostics_files_in_the_help_list(diagnosed_run):
    from dltrain.report.run_files import RUN_FILES

    names = {entry.name for entry in RUN_FILES}
    assert {"diagnostics.csv", "gradients.png"} <= names


@pytest.mark.pictures
def test_measuring_changes_nothing_of_the_run_and_off_writes_nothing(tmp_path, diagnosed_run):
    off = tmp_path / "off"
    train(compose([*SHORT, "trainer.diagnostics=false"]), run_dir=off)
    assert metrics_without_time(off) == metrics_without_time(diagnosed_run)
    assert read_rows(off / "predictions.csv") == read_rows(diagnosed_run / "predictions.csv")
    assert not (off / "diagnostics.csv").exists() and not (off / "gradients.png").exists()


def test_off_measures_no_step(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("measured with trainer.diagnostics=false")

    monkeypatch.setattr(Diagnostics, "__init__", fail)
    monkeypatch.setattr(Diagnostics, "measure", fail)
    summary = train(compose([*SHORT, "trainer.diagnostics=false", "trainer.max_epochs=1"]), run_dir=tmp_path / "r")
    assert summary["status"] == "completed"


def test_a_resumed_run_continues_the_csv_without_repeating_an_epoch(tmp_path, diagnosed_run):
    first = tmp_path / "first"
    train(compose([*SHORT, "trainer.max_epochs=2"]), run_dir=first)
    resumed = tmp_path / "resumed"
    train(compose([*SHORT, f"resume={first / 'checkpoints' / 'last.pt'}"]), run_dir=resumed)
    rows = read_rows(resumed / "diagnostics.csv")
    assert [r["epoch"] for r in rows] == [str(e) for e in (1, 2, 3) for _ in range(5)]
    assert rows[:10] == read_rows(first / "diagnostics.csv")
    # the epochs' first steps are the same steps as in an uninterrupted run
    assert rows == read_rows(diagnosed_run / "diagnostics.csv")


def test_continuing_a_csv_drops_the_epochs_the_resume_trains_again(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    path = tmp_path / "diagnostics.csv"
    diagnostics = one_step(model, torch.randn(8, 4), torch.randint(0, 2, (8,)))
    diagnostics.path = path
    rows = diagnostics.pending
    for epoch in (1, 2, 3):  # epoch 3's rows were written, then the run was killed before its checkpoint
        diagnostics.pending = rows
        diagnostics.write_epoch(epoch)
    again = Diagnostics(model, path)
    again.continue_from(path, epochs=2)
    again.pending = rows
    again.write_epoch(3)
    assert [r["epoch"] for r in read_rows(path)] == ["1"] * 3 + ["2"] * 3 + ["3"] * 3
    assert not list(tmp_path.glob(".tmp-*"))


def test_identical_units_is_one_for_zero_weights_and_zero_for_random_ones():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    random_rows = by_layer(one_step(model, torch.randn(16, 4), torch.randint(0, 3, (16,))))
    assert random_rows["0"]["identical_units"] == 0.0 and random_rows["2"]["identical_units"] == 0.0
    for p in model.parameters():
        nn.init.zeros_(p)
    zero_rows = by_layer(one_step(model, torch.randn(16, 4), torch.randint(0, 3, (16,))))
    assert zero_rows["0"]["identical_units"] == 1.0
    assert zero_rows["0"]["grad_norm"] == 0.0 and math.isnan(zero_rows["0"]["update_ratio"])  # nothing to compare with


def test_dead_relus_saturated_sigmoids_and_the_update_ratio():
    torch.manual_seed(0)
    first = nn.Linear(4, 6)
    with torch.no_grad():
        first.bias[:3] = -100.0  # units 0..2 never fire
    model = nn.Sequential(first, nn.ReLU(), nn.Linear(6, 6), nn.Sigmoid(), nn.Linear(6, 2))
    with torch.no_grad():
        model[2].weight.zero_()
        model[2].bias.copy_(torch.tensor([50.0, -50.0, 50.0, 0.0, 0.0, 0.0]))  # 3 of 6 sigmoid outputs saturate
    before = [p.detach().clone() for p in model[0].parameters()]
    rows = by_layer(one_step(model, torch.randn(32, 4), torch.randint(0, 2, (32,)), lr=0.5))
    assert rows["1"]["dead_fraction"] == 0.5 and rows["3"]["saturated_fraction"] == 0.5
    after = [p.detach() for p in model[0].parameters()]
    expected = math.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(after, before, strict=True))) / math.sqrt(
        sum((b ** 2).sum() for b in before))
    assert rows["0"]["update_ratio"] == pytest.approx(expected, rel=1e-5)
    assert rows["0"]["weight_norm"] == pytest.approx(math.sqrt(sum((a ** 2).sum() for a in after)), rel=1e-5)
    assert rows["1"]["act_mean"] >= 0 and "grad_norm" not in rows["1"]


def test_plot_gradients_of_an_empty_csv_is_an_error(tmp_path):
    path = tmp_path / "diagnostics.csv"
    path.write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(ValueError, match="no rows"):
        plot_gradients(path, tmp_path / "gradients.png")


def host_reads_in_one_epoch(steps: int, tmp_path: Path, diagnosed: bool) -> int:
    """Host reads of tensor values during one epoch of ``steps`` batches, measured or not."""
    from dltrain.data import TensorBatches
    from dltrain.training.callbacks import EarlyStopping
    from dltrain.training.trainer import Hooks, Trainer
    from tests.test_performance import counting_host_reads

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    diagnostics = Diagnostics(model, tmp_path / "diagnostics.csv") if diagnosed else None
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), "multiclass",
                      max_epochs=1, stopper=EarlyStopping("val_loss"),
                      hooks=Hooks(log_every_n_steps=1000, diagnostics=diagnostics))
    batches = TensorBatches(torch.randn(steps * 8, 5), torch.randint(0, 3, (steps * 8,)), 8, shuffle=True,
                            generator=torch.Generator().manual_seed(0))
    with counting_host_reads() as calls:
        trainer.train_epoch(batches)
    return len(calls)


def test_measuring_reads_the_device_once_an_epoch_and_nothing_per_step(tmp_path):
    off_10, off_40 = host_reads_in_one_epoch(10, tmp_path, False), host_reads_in_one_epoch(40, tmp_path, False)
    on_10, on_40 = host_reads_in_one_epoch(10, tmp_path, True), host_reads_in_one_epoch(40, tmp_path, True)
    assert off_10 == off_40 and on_10 == on_40 == off_10 + 1

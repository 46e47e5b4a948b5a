"""``trainer.checkpoint.save_top_k``: the k best epochs by the monitor, each a checkpoint named
with its epoch and value; a resumed run manages the same set; nothing else is deleted."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from dltrain import train
from dltrain.errors import ConfigError, UserError
from dltrain.training.callbacks import CheckpointPolicy, EpochEndWriter
from dltrain.training.checkpoint import load_checkpoint
from dltrain.training.top_k import TopKCheckpoints, top_k_name

from .test_epoch_end_writer import FakeTrainer, Recorder
from .test_run_end import run_dltrain

FAST = ["model.hidden=[16]", "optim.lr=0.03", "trainer.batch_size=256", "trainer.early_stopping.enabled=false",
        "trainer.diagnostics=false"]


def top_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("top-*.pt"))


def best_of(run_dir: Path, k: int, monitor: str = "val_loss", first: int = 1) -> list[str]:
    """The names of the k best epochs from ``first`` on of a run's metrics.csv (lowest first, ties: the earlier)."""
    with (run_dir / "metrics.csv").open() as f:
        rows = [(float(row[monitor]), int(row["epoch"])) for row in csv.DictReader(f) if int(row["epoch"]) >= first]
    return sorted(top_k_name(epoch, monitor, value) for value, epoch in sorted(rows)[:k])


def test_names_hold_epoch_and_value_and_no_equals_sign():
    assert top_k_name(7, "val_loss", 0.12344) == "top-epoch0007-val_loss0.1234.pt"
    assert top_k_name(12, "val_accuracy", 0.9) == "top-epoch0012-val_accuracy0.9000.pt"
    assert top_k_name(3, "val_loss", 1.5e-05) == "top-epoch0003-val_loss1.500e-05.pt"  # not 0.0000
    assert "=" not in top_k_name(1, "val_r2", -2.5)


@pytest.mark.parametrize(("mode", "values", "kept"), [
    # epochs 1..8; a tie (6 and 7) keeps the earlier
    ("min", [0.5, 0.4, 0.45, 0.3, 0.6, 0.35, 0.35, 0.2], {8: 0.2, 4: 0.3, 6: 0.35}),
    ("max", [0.5, 0.4, 0.45, 0.3, 0.6, 0.35, 0.6, 0.2], {5: 0.6, 7: 0.6, 1: 0.5}),
])
def test_a_metric_that_moves_both_ways_keeps_exactly_the_three_best(tmp_path, mode, values, kept):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    foreign = [folder / "top-epoch0099-val_loss0.0001.pt", folder / "mine.pt"]  # not this run's files
    for path in foreign:
        path.write_bytes(b"x")
    top_k = TopKCheckpoints(folder, 3, "val_loss", mode)
    writer = EpochEndWriter(Recorder(), Recorder(), CheckpointPolicy(folder, top_k=top_k), True)
    for epoch, value in enumerate(values, start=1):
        writer(FakeTrainer(epoch), {"epoch": epoch, "val_loss": value}, False)
        assert len(top_files(folder)) == min(epoch, 3) + 1  # + the foreign one
    expected = sorted(top_k_name(epoch, "val_loss", value) for epoch, value in kept.items())
    assert [name for name in top_files(folder) if name != foreign[0].name] == expected
    assert all(path.read_bytes() == b"x" for path in foreign)
    assert [e["epoch"] for e in top_k.kept] == list(kept)  # best first
    best = top_k.kept[0]
    assert torch.load(folder / best["file"], weights_only=True)["epoch"] == best["epoch"]


def test_epochs_without_a_value_or_in_the_warm_up_are_not_ranked(tmp_path):
    top_k = TopKCheckpoints(tmp_path, 2, "val_loss", "min", start_from_epoch=1)
    assert top_k.admit(1, {"val_loss": 0.1}) is None  # warm-up
    assert top_k.admit(2, {"val_loss": float("nan")}) is None  # e.g. an epoch that did not validate
    assert top_k.admit(3, {"val_loss": 0.5}) == tmp_path / "top-epoch0003-val_loss0.5000.pt"
    assert top_k.state_dict() == {"monitor": "val_loss",
                                  "kept": [{"epoch": 3, "value": 0.5, "file": "top-epoch0003-val_loss0.5000.pt"}]}


def test_a_real_run_keeps_the_three_best_epochs_of_its_metrics(compose, tmp_path):
    run = tmp_path / "run"
    train(compose([*FAST, "trainer.max_epochs=5", "trainer.checkpoint.save_top_k=3"]), run_dir=run)
    assert top_files(run / "checkpoints") == best_of(run, 3)
    for name in top_files(run / "checkpoints"):  # each a full checkpoint of its epoch
        state = load_checkpoint(run / "checkpoints" / name)
        assert name.startswith(f"top-epoch{state['epoch']:04d}-") and state["partial_epoch"] is None
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert sorted(e["file"] for e in last["top_k"]["kept"]) == best_of(run, 3)


def test_a_resumed_run_manages_the_same_set(compose, tmp_path):
    settings = [*FAST, "trainer.checkpoint.save_top_k=2"]
    train(compose([*settings, "trainer.max_epochs=5"]), run_dir=tmp_path / "straight")
    train(compose([*settings, "trainer.max_epochs=3"]), run_dir=tmp_path / "first")
    first = top_files(tmp_path / "first" / "checkpoints")
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    train(compose([*settings, "trainer.max_epochs=5", f"resume={last}"]), run_dir=tmp_path / "resumed")
    resumed = top_files(tmp_path / "resumed" / "checkpoints")
    assert resumed == top_files(tmp_path / "straight" / "checkpoints") == best_of(tmp_path / "resumed", 2)
    assert top_files(tmp_path / "first" / "checkpoints") == first  # the earlier run's folder is left as it was


def test_resume_from_a_top_k_file_on_the_command_line(compose, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train(compose([*FAST, "trainer.max_epochs=2", "trainer.checkpoint.save_top_k=3"]), run_dir=tmp_path / "a")
    top = tmp_path / "a" / "checkpoints" / best_of(tmp_path / "a", 3)[-1]  # epoch 2's
    code = run_dltrain([f"resume={top}", "trainer.max_epochs=3", "hydra.run.dir=b"], monkeypatch)
    assert code == 0
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["epoch"] == 3
    # the two files of the run it continues, copied, and its own third
    assert top_files(tmp_path / "b" / "checkpoints") == best_of(tmp_path / "b", 3)
    assert set(top_files(tmp_path / "a" / "checkpoints")) < set(top_files(tmp_path / "b" / "checkpoints"))


def test_top_k_without_a_monitor_is_one_line(compose, tmp_path):
    cfg = compose(["data.val_fraction=0", "trainer.checkpoint.save_top_k=2"])
    with pytest.raises(ConfigError) as err:
        train(cfg, run_dir=tmp_path / "run")
    message = str(err.value)
    assert "\n" not in message
    assert "trainer.checkpoint.save_top_k=2" in message and "data.val_fraction=0" in message
    assert "trainer.early_stopping.monitor=train_loss" in message
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_a_checkpoint_written_before_top_k_and_the_profiler_resumes_with_them(compose, tmp_path):
    train(compose([*FAST, "trainer.max_epochs=2"]), run_dir=tmp_path / "old")
    state = load_checkpoint(tmp_path / "old" / "checkpoints" / "last.pt")
    del state["top_k"]  # as a checkpoint of a version without these keys holds it
    for key in ("profiler", "profiler_steps"):
        del state["config"]["trainer"][key]
    for key in ("save_top_k", "every_n_steps", "every_n_minutes"):
        del state["config"]["trainer"]["checkpoint"][key]
    old = tmp_path / "old.pt"
    torch.save(state, old)
    summary = train(compose([*FAST, "trainer.max_epochs=4", "trainer.checkpoint.save_top_k=1",
                             "trainer.profiler=simple", f"resume={old}"]), run_dir=tmp_path / "resumed")
    assert summary["epochs_run"] == 4 and summary["profile"]["optimizer"]["calls"] > 0
    assert top_files(tmp_path / "resumed" / "checkpoints") == best_of(tmp_path / "resumed", 1, first=3)


@pytest.mark.parametrize("name", ["../../outside.txt", "last.pt", "top-epoch0001-val_loss9.9999.pt"])
def test_a_checkpoint_naming_another_file_in_its_top_k_list_is_refused(compose, tmp_path, name):
    """The kept files are copied and deleted by later epochs: a crafted list naming a file
    outside checkpoints/, one dltrain did not write as top-k, or a name its value does not give
    is refused in one line, and that file is left alone."""
    settings = [*FAST, "trainer.checkpoint.save_top_k=2"]
    train(compose([*settings, "trainer.max_epochs=2"]), run_dir=tmp_path / "first")
    victim = tmp_path / "outside.txt"
    victim.write_text("not dltrain's")
    state = load_checkpoint(tmp_path / "first" / "checkpoints" / "last.pt")
    state["top_k"]["kept"][0]["file"] = name
    crafted = tmp_path / "first" / "checkpoints" / "crafted.pt"
    torch.save(state, crafted)
    with pytest.raises(UserError) as err:
        train(compose([*settings, "trainer.max_epochs=4", f"resume={crafted}"]), run_dir=tmp_path / "again")
    assert "\n" not in str(err.value) and repr(name) in str(err.value)
    assert victim.read_text() == "not dltrain's"
    assert (tmp_path / "first" / "checkpoints" / "last.pt").is_file()


@pytest.mark.parametrize("saved", ["x", {"kept": "x"}, {"kept": ["x"]}])
def test_a_top_k_state_of_another_shape_is_one_line(saved):
    top = TopKCheckpoints(Path("checkpoints"), 2, "val_loss", "min")
    with pytest.raises(UserError, match="not the list dltrain saves"):
        top.load_state_dict(saved)

"""End to end through the Python API: ``train(compose(overrides), run_dir)``."""

from __future__ import annotations

import csv
import json
from importlib import metadata

import pytest
import torch
from torch import nn

import dltrain
from dltrain import train
from dltrain.data import TensorBatches
from dltrain.data.digits import build_digits
from dltrain.errors import ConfigError
from dltrain.models.mlp import build_mlp
from dltrain.training.callbacks import EarlyStopping
from dltrain.training.trainer import Trainer, TrainingDiverged

SUMMARY_KEYS = {"status", "stop_reason", "epochs_run", "best_epoch", "monitor", "best_value", "test",
                "num_params", "train_seconds", "data", "world_size", "versions"}


def read_metrics(run_dir) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_fast_dev_run_writes_every_file(compose, tmp_path):
    summary = train(compose(["trainer.fast_dev_run=true"]), run_dir=tmp_path)
    assert SUMMARY_KEYS <= set(summary)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["status"] == summary["status"] == "completed"
    assert on_disk["epochs_run"] == 1 and on_disk["world_size"] == 1
    assert set(on_disk["test"]) == {"loss", "accuracy"}
    assert on_disk["data"] == {"num_train": 1257, "num_val": 180, "num_test": 360}
    assert on_disk["versions"]["torch"] == metadata.version("torch")
    assert on_disk["versions"]["dltrain"] == dltrain.__version__
    rows = read_metrics(tmp_path)
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    assert {"epoch", "train_loss", "val_loss", "val_accuracy", "lr", "epoch_seconds"} <= set(rows[0])
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(tmp_path / "checkpoints" / name, weights_only=True)
        assert ckpt["epoch"] == 1 and "fc1.weight" in ckpt["model"] and ckpt["config"]["model"]["name"] == "mlp"
    assert "Total params: 17,226" in (tmp_path / "model_summary.txt").read_text()


def test_short_run_learns_and_tests_the_best_weights(compose, tmp_path):
    cfg = compose(["trainer.max_epochs=4", "trainer.early_stopping.enabled=false", "model.hidden=[32]"])
    summary = train(cfg, run_dir=tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    losses = [float(r["train_loss"]) for r in rows]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.75 * losses[0]
    assert summary["status"] == "completed" and summary["epochs_run"] == 4
    # The reported test metrics are those of best.pt's weights on the test split.
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == summary["best_epoch"]
    data = build_digits(seed=0)
    model = build_mlp(data.input_shape, 10, hidden=[32])
    model.load_state_dict(best["model"])
    model.eval()
    with torch.no_grad():
        accuracy = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
    assert summary["test"]["accuracy"] == pytest.approx(accuracy)


def test_same_seed_same_run(compose, tmp_path):
    overrides = ["trainer.max_epochs=2", "regularization.dropout=0.2", "model.hidden=[32]"]
    train(compose(overrides), run_dir=tmp_path / "a")
    train(compose(overrides), run_dir=tmp_path / "b")
    train(compose([*overrides, "seed=1"]), run_dir=tmp_path / "c")

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in rows]

    assert strip(read_metrics(tmp_path / "a")) == strip(read_metrics(tmp_path / "b"))
    assert strip(read_metrics(tmp_path / "a")) != strip(read_metrics(tmp_path / "c"))


def test_zero_learning_rate_stops_early(compose, tmp_path):
    summary = train(compose(["optim=sgd", "optim.lr=0", "trainer.early_stopping.patience=3"]), run_dir=tmp_path)
    assert summary["status"] == "early_stopped" and summary["epochs_run"] == 4 and summary["best_epoch"] == 1
    assert "patience 3" in summary["stop_reason"]


def test_divergence_is_reported(compose, tmp_path):
    with pytest.raises(TrainingDiverged, match="epoch 1"):
        train(compose(["optim=sgd", "optim.lr=1e12", "trainer.max_epochs=3"]), run_dir=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged" and "epoch 1" in summary["stop_reason"]
    assert "lower optim.lr (it is 1e+12)" in summary["stop_reason"]  # the summary says what to change


@pytest.mark.parametrize("overrides", [["loss=mse"], ["loss=cross_entropy", "optim=sgd", "optim.lr=0.1"],
                                       ["regularization.batch_norm=true", "regularization.dropout=0.3"]])
def test_options_train(compose, tmp_path, overrides):
    summary = train(compose([*overrides, "trainer.max_epochs=3"]), run_dir=tmp_path)
    rows = read_metrics(tmp_path)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert summary["test"]["accuracy"] > 0.5


class PhaseRecorder(nn.Module):
    """Records the module mode and grad mode of every forward call."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.linear(x)


def test_trainer_phases_train_with_grad_eval_without():
    model = PhaseRecorder()
    x, y = torch.randn(8, 2), torch.randint(0, 2, (8,))
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), "multiclass",
                      max_epochs=1, stopper=EarlyStopping("val_loss"))
    trainer.fit(TensorBatches(x, y, 4, shuffle=True, generator=torch.Generator()), TensorBatches(x, y, 8))
    assert model.calls == [(True, True), (True, True), (False, False)]
    assert trainer.global_step == 2 and trainer.history[0]["epoch"] == 1


def test_an_existing_run_is_never_overwritten(compose, tmp_path):
    train(compose(["trainer.fast_dev_run=true"]), run_dir=tmp_path)
    before = (tmp_path / "metrics.csv").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run"):
        train(compose(["trainer.fast_dev_run=true", "seed=3"]), run_dir=tmp_path)
    assert (tmp_path / "metrics.csv").read_bytes() == before


def test_default_config_reaches_95_percent_on_digits(compose, tmp_path):
    summary = train(compose(), run_dir=tmp_path)
    assert summary["test"]["accuracy"] >= 0.95


def test_resume_from_a_missing_checkpoint_is_an_error_before_training(compose, tmp_path):
    with pytest.raises(ConfigError, match=r"resume=some/last.pt: no such file or directory: pass a checkpoint"):
        train(compose(["resume=some/last.pt"]), run_dir=tmp_path)
    assert not tmp_path.joinpath("metrics.csv").exists()


def test_batch_norm_with_a_last_batch_of_one(compose, tmp_path):
    # 1,257 training images: batch size 8 leaves one over, which batch norm cannot train on.
    summary = train(compose(["regularization.batch_norm=true", "trainer.batch_size=8", "trainer.max_epochs=1"]),
                    run_dir=tmp_path)
    assert summary["status"] == "completed"


@pytest.mark.pictures
def test_every_run_draws_its_curves(compose, tmp_path, monkeypatch):
    from PIL import Image

    import dltrain.report.plots

    seen = {}
    draw = dltrain.report.plots.plot_curves

    def spy(history, path, **kw):
        seen.update(kw, epochs=[row["epoch"] for row in history])
        return draw(history, path, **kw)

    monkeypatch.setattr(dltrain.report.plots, "plot_curves", spy)
    summary = train(compose(["data=xor", "optim=sgd", "optim.lr=5", "trainer.max_epochs=30",
                             "trainer.early_stopping.patience=2"]), run_dir=tmp_path)
    with Image.open(tmp_path / "curves.png") as image:
        assert image.format == "PNG" and image.width > 300
    # The best epoch and the early stop are what the plot was asked to mark.
    assert seen["best_epoch"] == summary["best_epoch"] and seen["stopped_epoch"] == summary["stopped_epoch"]
    assert seen["status"] == summary["status"] and seen["monitor"] == "val_loss"
    assert seen["epochs"] == list(range(1, summary["epochs_run"] + 1))


@pytest.mark.pictures
def test_a_plot_that_fails_costs_the_run_nothing(compose, tmp_path, monkeypatch, caplog):
    import dltrain.report.plots

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts here")

    monkeypatch.setattr(dltrain.report.plots, "plot_curves", broken)
    summary = train(compose(["data=xor", "trainer.max_epochs=2"]), run_dir=tmp_path)
    assert summary["status"] == "completed" and (tmp_path / "summary.json").is_file()
    assert not (tmp_path / "curves.png").exists()
    assert "could not draw curves.png: no fonts here" in caplog.text


def test_logger_tensorboard_in_a_run(compose, tmp_path):
    pytest.importorskip("tensorboard")
    train(compose(["data=xor", "logger=tensorboard", "trainer.max_epochs=3", "optim.lr=0.01"]), run_dir=tmp_path)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [events] = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events.parent))
    acc.Reload()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [e.step for e in acc.Scalars("loss/train")] == [1, 2, 3]
    assert [e.value for e in acc.Scalars("loss/val")] == pytest.approx([float(r["val_loss"]) for r in rows], rel=1e-5)
    assert "hparam/best_value" in acc.Tags()["scalars"]


def test_run_hparams_hold_the_choices(compose):
    from hydra.core.global_hydra import GlobalHydra

    from dltrain.build import run_hparams

    hparams = run_hparams(compose(["optim=sgd", "optim.lr=0.3", "regularization.dropout=0.25"]))
    assert hparams["optim"] == "sgd" and hparams["optim.lr"] == 0.3 and hparams["model"] == "mlp"
    assert hparams["regularization.dropout"] == 0.25 and hparams["data"] == "digits"
    assert all(isinstance(v, (bool, int, float, str)) for v in hparams.values())
    assert not GlobalHydra.instance().is_initialized()  # from Python, nothing is composed behind the caller's back


def test_train_leaves_the_callers_hydra_alone(tmp_path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from dltrain.config.validation import register_configs

    register_configs()
    with initialize_config_module(config_module="dltrain.conf", version_base="1.3"):
        for name in ("a", "b"):  # composing again after a run still works
            cfg = hydra_compose(config_name="train", overrides=["data=xor", "trainer.max_epochs=1"])
            assert train(cfg, run_dir=tmp_path / name)["status"] == "completed"


@pytest.mark.pictures
def test_a_run_that_diverges_in_its_first_epoch_still_draws_it(compose, tmp_path):
    with pytest.raises(TrainingDiverged):
        train(compose(["data=sine", "optim=sgd", "optim.lr=1e12", "trainer.max_epochs=2"]), run_dir=tmp_path)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [row["epoch"] for row in rows] == ["1"]
    assert (tmp_path / "curves.png").stat().st_size > 1000


@pytest.mark.pictures
def test_a_signal_while_drawing_the_curves_still_stops(compose, tmp_path, monkeypatch):
    import signal

    import dltrain.report.plots
    from dltrain.training.signals import Interrupted

    def signalled(*args, **kwargs):
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(dltrain.report.plots, "plot_curves", signalled)
    with pytest.raises(Interrupted):
        train(compose(["data=xor", "trainer.max_epochs=1"]), run_dir=tmp_path)


def test_a_logger_that_fails_costs_the_run_nothing(compose, tmp_path, monkeypatch, caplog):
    import dltrain.training.run
    from dltrain.loggers import Logger

    class Broken(Logger):
        calls = 0

        def log_epoch(self, row):
            Broken.calls += 1
            raise OSError("disk gone")

    monkeypatch.setattr(dltrain.training.run, "build_loggers", lambda *a, **k: [Broken()])
    summary = train(compose(["data=xor", "trainer.max_epochs=3"]), run_dir=tmp_path)
    assert summary["status"] == "completed" and Broken.calls == 1  # switched off after its first failure
    assert "logger failed and is off for the rest of the run: disk gone" in caplog.text
    assert len(list(csv.DictReader((tmp_path / "metrics.csv").open()))) == 3


def test_channels_last_run_matches_the_default_layout(compose, tmp_path):
    """A CNN with crop, flip and rotate (whose resampling hands back the default layout, so the
    trainer converts those batches): the same losses to float rounding, and checkpoints that load
    into a model built in the default layout."""
    from dltrain.models.cnn import build_cnn

    base = ["model=cnn", "model.channels=[8,16]", "model.hidden=[16]", "regularization.batch_norm=true",
            "regularization.augment=[crop,hflip,rotate]", "regularization.augment_params.crop.padding=2",
            "trainer.batch_size=512", "trainer.max_epochs=2", "device=cpu"]
    plain = train(compose(base), run_dir=tmp_path / "plain")
    fast = train(compose([*base, "trainer.channels_last=true"]), run_dir=tmp_path / "fast")
    assert not fast["warnings"]
    for a, b in zip(read_metrics(tmp_path / "plain"), read_metrics(tmp_path / "fast"), strict=True):
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4, abs=1e-6), key
    assert fast["test"]["loss"] == pytest.approx(plain["test"]["loss"], rel=1e-4)
    state = torch.load(tmp_path / "fast" / "checkpoints" / "last.pt", weights_only=True)["model"]
    model = build_cnn((1, 8, 8), 10, channels=[8, 16], hidden=[16], batch_norm=True)
    model.load_state_dict(state)
    assert model.conv2.weight.is_contiguous()

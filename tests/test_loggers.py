"""Experiment loggers: the registry, the csv no-op and TensorBoard event files read back."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from dltrain.errors import ConfigError
from dltrain.loggers import LOGGERS, CSVLogger, Logger, TensorBoardLogger, build_logger, scalar_tag

# tensorboard is an optional extra: without it only the error message can be tested.
needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="the tensorboard package is not installed")

HPARAMS = {"model": "mlp", "lr": 0.001, "epochs": 3, "amp": False, "scheduler": None, "hidden": [64, 32]}
CONFIG_YAML = "model:\n  name: mlp\n  hidden: [64, 32]\noptim:\n  lr: 0.001\n"
ROWS = [
    {"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 0.9, "val_accuracy": 0.6, "lr": 0.01,
     "epoch_seconds": 0.02},
    {"epoch": 2, "train_loss": 0.8, "train_accuracy": 0.7, "val_loss": math.nan, "val_accuracy": 0.7, "lr": 0.005,
     "epoch_seconds": 0.02},
    {"epoch": 3, "train_loss": 0.6, "train_accuracy": 0.8, "val_loss": 0.5, "val_accuracy": 0.9, "lr": 0.001,
     "epoch_seconds": 0.02, "note": "resumed"},
]
SUMMARY = {"status": "completed", "stop_reason": None, "best_value": 0.5,
           "test": {"accuracy": 0.85, "loss": math.inf}}


def event_dirs(log_dir: Path) -> list[Path]:
    """Every folder under ``log_dir`` that holds an event file (one TensorBoard run each)."""
    return sorted({p.parent for p in log_dir.rglob("events.out.tfevents.*")})


def accumulator(directory: Path) -> Any:
    """Everything TensorBoard reads from the event files in ``directory``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory))
    acc.Reload()
    return acc


def points(acc: Any, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def text(acc: Any, tag: str) -> str:
    from tensorboard.util import tensor_util

    return tensor_util.make_ndarray(acc.Tensors(tag)[0].tensor_proto).item().decode()


def session_start_hparams(acc: Any) -> Any:
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    return plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams


@pytest.fixture
def logged_run(tmp_path: Path) -> Path:
    """A run directory after a full TensorBoard session: start, three epochs, finish."""
    logger = build_logger("tensorboard", tmp_path)
    logger.start(HPARAMS, CONFIG_YAML)
    for row in ROWS:
        logger.log_epoch(row)
    logger.finish(SUMMARY)
    return tmp_path


def test_registry_holds_csv_and_tensorboard():
    assert {"csv", "tensorboard"} <= set(LOGGERS.names())
    assert isinstance(build_logger("csv", "."), CSVLogger)


def test_unknown_logger_is_a_config_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"logger=neptune is not a known option: choose one of .*csv.*tensorboard"):
        build_logger("neptune", tmp_path)


def test_a_logger_overrides_only_the_hooks_it_needs(tmp_path, monkeypatch):
    """A logger with one hook of its own (and no call to Logger.__init__) goes through a
    whole run: the run calls the hooks it left to the base class without error, and
    the one it overrode sees every epoch the run wrote to metrics.csv."""
    from dltrain import compose, train

    built: list[EpochsOnly] = []

    class EpochsOnly(Logger):
        def __init__(self, run_dir: str) -> None:
            self.epochs: list[int] = []
            built.append(self)

        def log_epoch(self, row: dict[str, Any]) -> None:
            self.epochs.append(int(row["epoch"]))

    assert EpochsOnly.start is Logger.start and EpochsOnly.finish is Logger.finish
    from dltrain.config.schemas import GROUP_SCHEMAS

    monkeypatch.setitem(GROUP_SCHEMAS["logger"], "epochs_only", GROUP_SCHEMAS["logger"]["csv"])
    cfg = compose(["data=xor", "trainer.max_epochs=2", "device=cpu", "logger=csv"])
    cfg.logger = {"epochs_only": {}}
    with LOGGERS.registered("epochs_only", EpochsOnly):
        summary = train(cfg, run_dir=tmp_path / "run")
    with (tmp_path / "run" / "metrics.csv").open() as f:
        logged = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert summary["status"] == "completed" and logged == [1, 2]
    assert len(built) == 1 and built[0].epochs == logged


def test_csv_logger_writes_nothing_itself(tmp_path):
    logger = build_logger("csv", tmp_path)
    logger.start(HPARAMS, CONFIG_YAML)
    for row in ROWS:
        logger.log_epoch(row)
    logger.finish(SUMMARY)
    logger.finish(SUMMARY)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("key", "tag"), [
    ("train_loss", "loss/train"), ("val_loss", "loss/val"), ("train_accuracy", "accuracy/train"),
    ("val_r2", "r2/val"), ("val_top5_accuracy", "top5_accuracy/val"), ("lr", "lr"),
    ("epoch_seconds", "time/epoch_seconds"), ("grad_norm", "grad_norm"), ("train_", "train_"),
])
def test_scalar_tags_group_train_and_val_by_metric(key, tag):
    assert scalar_tag(key) == tag


@needs_tensorboard
def test_tensorboard_scalars_are_read_back_with_the_nan_skipped(logged_run):
    log_dir = logged_run / "tensorboard"
    assert list(log_dir.rglob("events.out.tfevents.*"))
    assert event_dirs(log_dir) == [log_dir]  # hparams included: one run, not a sub-run per session
    acc = accumulator(log_dir)
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr", "time/epoch_seconds"} <= set(
        acc.Tags()["scalars"])
    assert points(acc, "loss/train") == [(1, pytest.approx(1.0)), (2, pytest.approx(0.8)), (3, pytest.approx(0.6))]
    assert points(acc, "accuracy/val") == [(1, pytest.approx(0.6)), (2, pytest.approx(0.7)), (3, pytest.approx(0.9))]
    assert points(acc, "lr") == [(1, pytest.approx(0.01)), (2, pytest.approx(0.005)), (3, pytest.approx(0.001))]
    assert points(acc, "loss/val") == [(1, pytest.approx(0.9)), (3, pytest.approx(0.5))]  # epoch 2 was NaN
    assert "epoch" not in acc.Tags()["scalars"] and "note" not in acc.Tags()["scalars"]


@needs_tensorboard
def test_tensorboard_config_is_a_verbatim_code_block(logged_run):
    acc = accumulator(logged_run / "tensorboard")
    assert {"config/text_summary", "summary/text_summary"} <= set(acc.Tags()["tensors"])
    config = text(acc, "config/text_summary")
    assert config.splitlines() == ["    " + line for line in CONFIG_YAML.splitlines()]
    assert "status: completed" in text(acc, "summary/text_summary")


@needs_tensorboard
def test_tensorboard_hparams_and_results_land_in_the_run(logged_run):
    acc = accumulator(logged_run / "tensorboard")
    content = acc.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(content)
    start = session_start_hparams(acc)
    assert start["model"].string_value == "mlp"
    assert start["lr"].number_value == pytest.approx(0.001)
    assert start["epochs"].number_value == 3
    assert start["scheduler"].string_value == "None"
    assert start["hidden"].string_value == "[64, 32]"
    scalars = set(acc.Tags()["scalars"])
    assert {"hparam/best_value", "hparam/test_accuracy"} <= scalars
    assert "hparam/test_loss" not in scalars  # infinite: not a result to compare
    assert points(acc, "hparam/best_value") == [(3, pytest.approx(0.5))]


@needs_tensorboard
def test_tensorboard_finish_twice_and_without_start(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.finish({})
    logger.finish({})
    assert not (tmp_path / "tensorboard").exists()  # nothing logged, no empty event file

    logger = TensorBoardLogger(tmp_path, subdir="tb", flush_secs=1)
    logger.log_epoch(ROWS[0])
    logger.finish({"status": "interrupted"})
    logger.finish({"status": "interrupted"})
    acc = accumulator(tmp_path / "tb")
    assert points(acc, "loss/train") == [(1, pytest.approx(1.0))]
    with pytest.raises(KeyError):  # no start(): no hyperparameters to record
        acc.PluginTagToContent("hparams")


@needs_tensorboard
def test_tensorboard_without_epochs_still_records_the_session(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.start(HPARAMS, CONFIG_YAML)
    logger.finish({"status": "failed", "stop_reason": "exception", "best_value": None})
    acc = accumulator(tmp_path / "tensorboard")
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    assert "status: failed" in text(acc, "summary/text_summary")
    assert not any(tag.startswith("hparam/") for tag in acc.Tags()["scalars"])


def test_missing_tensorboard_package_is_a_config_error(tmp_path, monkeypatch):
    # None in sys.modules makes the import fail exactly as an uninstalled package does.
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError) as err:
        build_logger("tensorboard", tmp_path)
    message = str(err.value)
    assert "logger=tensorboard" in message and "pip install tensorboard" in message and "logger=csv" in message
    assert "\n" not in message
    assert not (tmp_path / "tensorboard").exists()


def test_every_key_of_every_logger_says_what_it_does():
    """Each logger schema's keys carry a help line (``spec(help=...)``), as the other groups' do."""
    import dataclasses

    from dltrain.config.schemas import GROUP_SCHEMAS

    missing = [f"logger.{name}.{field.name}" for name, schema in GROUP_SCHEMAS["logger"].items()
               for field in dataclasses.fields(schema) if not field.metadata.get("help")]
    assert missing == []

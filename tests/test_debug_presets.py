"""The ``debug=`` presets (conf/debug/): every one composes and trains, does what its header
says, and wins over an experiment's values (it comes after ``experiment`` in the defaults)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from torch import nn

from dltrain import train

DEBUG_DIR = Path(__file__).resolve().parents[1] / "conf" / "debug"
#: Every conf/debug/*.yaml: a new preset is tested by adding its file.
PRESETS = sorted(p.stem for p in DEBUG_DIR.glob("*.yaml"))


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_the_presets_are_the_four():
    assert PRESETS == ["fdr", "limit", "overfit", "profiler"]


@pytest.mark.parametrize("name", PRESETS)
def test_every_debug_preset_composes_and_trains(compose, tmp_path, name):
    short = ["trainer.max_epochs=2"] if name == "overfit" else []  # its 120 epochs: the slow test below
    summary = train(compose([f"debug={name}", "device=cpu", *short]), run_dir=tmp_path)
    assert summary["status"] == "completed", summary["stop_reason"]
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"
    if name == "fdr":  # a fast dev run
        assert summary["stop_reason"].startswith("fast_dev_run") and summary["epochs_run"] == 1
    if name == "profiler":  # one epoch, its phases timed
        assert summary["epochs_run"] == 1
        assert summary["profile"]["forward"]["calls"] > 0 and (tmp_path / "profile.txt").is_file()


@pytest.mark.slow  # 120 epochs of one step, with their checkpoints
def test_overfit_drives_the_training_loss_to_zero(compose, tmp_path):
    """The sanity check the preset is for: the digits MLP learns its one batch by heart, and
    validates on that same batch."""
    summary = train(compose(["debug=overfit", "device=cpu"]), run_dir=tmp_path)
    rows = metrics(tmp_path)
    assert summary["epochs_run"] == len(rows) == 120  # no early stopping
    last = rows[-1]
    assert float(last["train_loss"]) < 0.01
    assert float(last["val_loss"]) < 0.01


class CountingNet(nn.Module):
    """A user's network that counts the batches it trains on (forward passes in training mode)."""

    trained = 0

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_outputs))

    def forward(self, x):
        CountingNet.trained += self.training
        return self.body(x)


def test_limit_trains_a_part_of_each_epoch(compose, tmp_path):
    """Three epochs of 5% of the training batches (at least one): of the digits' 20, one an epoch."""
    net = ["model=custom", "model._target_=tests.test_debug_presets.CountingNet", "device=cpu"]
    CountingNet.trained = 0
    summary = train(compose(["debug=limit", *net]), run_dir=tmp_path / "limit")
    assert summary["epochs_run"] == len(metrics(tmp_path / "limit")) == 3
    batches = math.ceil(summary["data"]["num_train"] / 64)
    assert CountingNet.trained == 3 * max(1, math.floor(0.05 * batches))

    CountingNet.trained = 0
    train(compose(["trainer.max_epochs=1", *net]), run_dir=tmp_path / "full")
    assert CountingNet.trained == batches  # the same count without the preset: every batch


def test_a_debug_preset_wins_over_an_experiment(compose):
    cfg = compose(["experiment=mnist_mlp", "debug=limit"])
    assert cfg.trainer.max_epochs == 3 and cfg.trainer.batch_size == 128  # the experiment's batch size stays
    assert compose(["experiment=mnist_mlp", "debug=fdr"]).trainer.fast_dev_run

"""Every option of every config group, composed from the real configs and trained for a
few batches: a new option is covered by registering it (one registry, one test)."""

from __future__ import annotations

import json
import math

import pytest

from dltrain import train
from dltrain.config import GROUP_SCHEMAS

#: Keys an option cannot run without.
REQUIRED = {("model", "custom"): ["model._target_=tests.nets.TinyNet", "+model.width=8"]}

OPTIONS = [(group, option) for group, options in GROUP_SCHEMAS.items() for option in options]

#: Regularization and numerics settings, each on its own.
SETTINGS = [
    ["regularization.dropout=0.3"], ["regularization.batch_norm=true"], ["regularization.l1=1e-4"],
    ["regularization.l2=1e-3"], ["regularization.l1=1e-4", "regularization.l2=1e-3"],
    ["regularization.label_smoothing=0.1"], ["regularization.grad_clip=1.0"],
    ["regularization.grad_clip_value=0.5"], ["regularization.augment=[hflip,rotate,shift,zoom,brightness,contrast]"],
    ["trainer.precision=bf16"], ["scheduler=cosine", "scheduler.warmup_epochs=2"],
    ["optim=lbfgs", "regularization.l2=1e-3"], ["model=cnn", "regularization.batch_norm=true",
                                                 "regularization.dropout=0.2"],
    ["model=gru", "model.bidirectional=true", "model.num_layers=2", "model.dropout=0.2", "model.pooling=mean"],
]


def fast_run(compose, tmp_path, overrides):
    cfg = compose(["trainer.fast_dev_run=true", "device=cpu", *overrides])
    summary = train(cfg, run_dir=tmp_path / "run")
    assert summary["status"] == "completed"
    assert math.isfinite(summary["test"]["loss"])
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"
    return summary


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_trains(compose, tmp_path, group, option):
    summary = fast_run(compose, tmp_path, [f"{group}={option}", *REQUIRED.get((group, option), [])])
    text = (tmp_path / "run" / "model_summary.txt").read_text()
    if group == "init":
        assert option in text  # the init column names the scheme applied
    if group == "loss" and option != "auto":
        assert summary["loss"] == option


@pytest.mark.parametrize("overrides", SETTINGS, ids=[" ".join(s) for s in SETTINGS])
def test_every_setting_trains(compose, tmp_path, overrides):
    fast_run(compose, tmp_path, overrides)

"""Budgets and sanity checks: ``trainer.max_steps``, ``max_time``, ``limit_train_batches``,
``limit_val_batches``, ``overfit_batches`` and ``val_every_n_epochs``.

Every run trains the digits MLP in-process (1257 training examples: 20 batches of 64 an
epoch), a second or two each; ``max_time`` runs out on a clock patched to count optimizer
steps, so where it stops does not depend on the machine.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from dltrain import train
from dltrain.build import build_experiment
from dltrain.errors import ConfigError
from dltrain.report import run_end
from dltrain.report.run_end import draw_curves
from dltrain.report.summary import RunSummary
from dltrain.report.sweep import rank
from dltrain.training.budget import parse_max_time
from dltrain.training.trainer import Trainer
from tests.conftest import run_cli

STEPS_PER_EPOCH = 20  # 1257 digits in batches of 64 (the last one of 41 examples kept)


def rows(run_dir) -> list[dict[str, str]]:
    """metrics.csv without its timings."""
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(f)]


def state(run_dir, name: str = "last.pt") -> dict:
    return torch.load(run_dir / "checkpoints" / name, weights_only=True)


def step_clock(monkeypatch) -> None:
    """The trainer's training seconds read as its optimizer steps: max_time=N runs out after step N."""
    monkeypatch.setattr(Trainer, "train_seconds", property(lambda self: float(self.global_step)))


# ---- max_time ------------------------------------------------------------------------------


@pytest.mark.parametrize("value,seconds", [(90, 90.0), (0.5, 0.5), ("90", 90.0), ("00:00:01:30", 90.0),
                                           ("01:02:03:04", 93784.0), (None, None)])
def test_max_time_reads_seconds_and_dd_hh_mm_ss(compose, value, seconds):
    assert parse_max_time(value) == seconds
    if value is not None:
        assert parse_max_time(compose([f"trainer.max_time={value}"]).trainer.max_time) == seconds


@pytest.mark.parametrize("value", ["abc", "1:30", "00:01:30", "-5", "true", "00:01:3a:00"])
def test_max_time_refuses_other_values_in_one_line(compose, value):
    with pytest.raises(ConfigError) as err:
        compose([f"trainer.max_time={value}"])
    line = str(err.value)
    assert "\n" not in line and line.startswith("trainer.max_time=") and " is not valid: " in line
    assert "seconds" in line and "DD:HH:MM:SS" in line


# Dropout and a cosine schedule: a resume that lost the RNG, the data order or the schedule's
# position would not repeat the straight run; half of each epoch's batches (limit_train_batches).
EXACT = ["regularization.dropout=0.3", "scheduler=cosine", "scheduler.T_max=7", "model.hidden=[32]",
         "trainer.limit_train_batches=0.5", "trainer.max_epochs=2", "trainer.diagnostics=false"]


def test_max_time_ends_with_results_and_a_last_pt_that_resumes_exactly(compose, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        step_clock(patch)
        patch.setattr(run_end, "draw_curves", draw_curves)  # curves.png of the epoch that ended
        stopped = train(compose([*EXACT, "trainer.max_time=15"]), run_dir=tmp_path / "stopped")
    assert stopped["status"] == "time_limit"
    assert stopped["stop_reason"].startswith("reached trainer.max_time=15 after 15.0 s of training, in epoch 2 after "
                                             "batch 5 of 10: saved ")
    last = tmp_path / "stopped" / "checkpoints" / "last.pt"
    assert stopped["checkpoint"] == str(last)
    saved = state(tmp_path / "stopped")
    assert saved["global_step"] == 15 and saved["epoch"] == 1 and saved["partial_epoch"]["step"] == 5
    # still tested (the best epoch's weights) and every result written
    assert stopped["test_weights"] == "best epoch 1" and math.isfinite(stopped["test"]["loss"])
    assert json.loads((tmp_path / "stopped" / "summary.json").read_text())["status"] == "time_limit"
    for name in ("predictions.csv", "metrics.csv", "curves.png"):
        assert (tmp_path / "stopped" / name).is_file(), name

    resumed = train(compose([*EXACT, "trainer.max_time=3600", f"resume={last}"]), run_dir=tmp_path / "resumed")
    straight = train(compose(EXACT), run_dir=tmp_path / "straight")
    assert resumed["status"] == straight["status"] == "completed"
    assert rows(tmp_path / "resumed") == rows(tmp_path / "straight") and len(rows(tmp_path / "straight")) == 2
    a, b = state(tmp_path / "resumed")["model"], state(tmp_path / "straight")["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert resumed["test"] == straight["test"]
    assert state(tmp_path / "straight")["global_step"] == 2 * STEPS_PER_EPOCH // 2


def test_a_time_limit_run_is_ranked_by_a_sweep_but_not_finished():
    """It tested its weights and wrote its results (a sweep ranks it), yet a resume trains on."""
    rows = [{"job": 0, "status": "time_limit", "monitor": "val_loss", "best_value": 0.5},
            {"job": 1, "status": "completed", "monitor": "val_loss", "best_value": 0.7}]
    assert [row["job"] for row in rank(rows, "val_loss", "min")] == [0, 1]
    assert not RunSummary("time_limit").finished and RunSummary("completed").finished


@pytest.mark.slow  # a process of its own; the in-process max_time tests run by default
def test_max_time_run_exits_0_from_the_command_line(tmp_path):
    """max_time=0 runs out after the first step, whatever the machine."""
    proc = run_cli(["trainer.max_time=0", "trainer.max_epochs=2", "trainer.diagnostics=false",
                    "hydra.run.dir=run"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "time_limit" and "in epoch 1 after batch 1 of 20" in summary["stop_reason"]
    assert summary["test"] and (tmp_path / "run" / "predictions.csv").is_file()  # no epoch ended: no curves.png
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


# ---- max_steps -----------------------------------------------------------------------------


def test_max_steps_ends_the_epoch_it_is_reached_in(compose, tmp_path, caplog):
    fast = ["trainer.batch_size=256", "trainer.max_epochs=5", "model.hidden=[16]", "trainer.diagnostics=false"]
    summary = train(compose(["trainer.max_steps=7", *fast]), run_dir=tmp_path / "run")  # 5 steps an epoch
    assert summary["status"] == "completed" and summary["stop_reason"] == "reached trainer.max_steps=7"
    saved = state(tmp_path / "run")
    assert saved["global_step"] == 7 and saved["epoch"] == 2 and saved["partial_epoch"] is None
    metrics = rows(tmp_path / "run")
    assert [r["epoch"] for r in metrics] == ["1", "2"] and all(r["val_loss"] != "nan" for r in metrics)
    # nothing left to train under the same max_steps; a larger one trains on
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    with caplog.at_level("INFO", logger="dltrain"):
        again = train(compose(["trainer.max_steps=7", *fast, f"resume={last}"]), run_dir=tmp_path / "again")
    assert "nothing to train (it took 7 optimizer steps and trainer.max_steps=7)" in caplog.text
    assert again["epochs_run"] == 2 and len(rows(tmp_path / "again")) == 2
    train(compose(["trainer.max_steps=9", *fast, f"resume={last}"]), run_dir=tmp_path / "more")
    assert state(tmp_path / "more")["global_step"] == 9


def test_a_stop_right_at_max_steps_resumes_into_the_end_of_that_epoch(compose, tmp_path, monkeypatch):
    """max_time runs out at the very step max_steps is reached: the resume takes no step more,
    and ends (validates, writes) that epoch as the straight run did."""
    run = ["trainer.max_steps=7", "trainer.max_epochs=5", "model.hidden=[16]", "trainer.diagnostics=false",
           "trainer.batch_size=256"]  # 5 steps an epoch
    with monkeypatch.context() as patch:
        step_clock(patch)
        assert train(compose([*run, "trainer.max_time=7"]), run_dir=tmp_path / "cut")["status"] == "time_limit"
    assert state(tmp_path / "cut")["partial_epoch"]["step"] == 2
    last = tmp_path / "cut" / "checkpoints" / "last.pt"
    # max_time raised: a resume with its max_time spent is refused
    resumed = train(compose([*run, "trainer.max_time=3600", f"resume={last}"]), run_dir=tmp_path / "resumed")
    train(compose(run), run_dir=tmp_path / "straight")
    assert resumed["stop_reason"] == "reached trainer.max_steps=7"
    assert state(tmp_path / "resumed")["global_step"] == 7
    assert rows(tmp_path / "resumed") == rows(tmp_path / "straight") and len(rows(tmp_path / "straight")) == 2


def test_onecycle_is_sized_on_max_steps_when_it_comes_first(compose):
    cfg = compose(["scheduler=onecycle", "trainer.max_steps=25", "trainer.max_epochs=5", "device=cpu"])
    assert build_experiment(cfg, torch.device("cpu")).scheduler.scheduler.total_steps == 25
    cfg = compose(["scheduler=onecycle", "trainer.max_steps=500", "trainer.max_epochs=5", "device=cpu"])
    assert build_experiment(cfg, torch.device("cpu")).scheduler.scheduler.total_steps == 5 * STEPS_PER_EPOCH


# ---- limit_train_batches, limit_val_batches ----------------------------------------------


@pytest.mark.parametrize("limit,steps", [("0.25", 5), ("3", 3), ("1", 1), ("1.0", STEPS_PER_EPOCH)])
def test_limit_train_batches_trains_that_many_steps_an_epoch(compose, tmp_path, limit, steps):
    train(compose([f"trainer.limit_train_batches={limit}", "trainer.max_epochs=2", "model.hidden=[16]",
                   "trainer.diagnostics=false"]), run_dir=tmp_path / "run")
    assert state(tmp_path / "run")["global_step"] == 2 * steps


def test_limit_val_batches_validates_that_many_examples_and_never_limits_the_test_split(compose):
    cfg = compose(["trainer.limit_val_batches=2", "trainer.limit_train_batches=0.5", "trainer.eval_batch_size=50",
                   "device=cpu"])
    train_batches, val, test = build_experiment(cfg, torch.device("cpu")).batches
    assert len(train_batches) == 10
    assert len(val) == 2 and sum(len(y) for _, y in val) == 100  # of 180
    assert sum(len(y) for _, y in test) == 360
    cfg = compose(["trainer.limit_val_batches=0.5", "trainer.eval_batch_size=50", "device=cpu"])
    assert len(build_experiment(cfg, torch.device("cpu")).batches[1]) == 2  # half of 4, rounded down


def test_fast_dev_run_wins_over_the_limits(compose):
    cfg = compose(["trainer.fast_dev_run=true", "trainer.limit_train_batches=5", "trainer.overfit_batches=3",
                   "trainer.limit_val_batches=1", "trainer.eval_batch_size=50", "device=cpu"])
    assert [len(b) for b in build_experiment(cfg, torch.device("cpu")).batches] == [2, 2, 2]


# ---- overfit_batches -----------------------------------------------------------------------


def test_overfit_one_batch_drives_the_training_loss_below_0_01(compose, tmp_path):
    """The classic sanity check: the digits MLP memorises one batch of 64 in 20 epochs (one step each)."""
    summary = train(compose(["trainer.overfit_batches=1", "trainer.max_epochs=20", "optim.lr=0.01",
                             "trainer.early_stopping.enabled=false", "trainer.diagnostics=false"]),
                    run_dir=tmp_path / "run")
    metrics = rows(tmp_path / "run")
    assert summary["status"] == "completed" and len(metrics) == 20
    assert state(tmp_path / "run")["global_step"] == 20
    assert float(metrics[-1]["train_loss"]) < 0.01
    # Validation is on that same batch: with neither dropout nor batch norm, epoch e's
    # validation (after its step) is the loss epoch e + 1 trains from, on the same weights.
    for before, after in zip(metrics, metrics[1:], strict=False):
        assert float(before["val_loss"]) == pytest.approx(float(after["train_loss"]), rel=1e-5)
        assert before["val_accuracy"] == after["train_accuracy"]


def test_overfit_batches_are_the_first_training_examples_in_order(compose):
    cfg = compose(["trainer.overfit_batches=2", "trainer.batch_size=32", "device=cpu"])
    exp = build_experiment(cfg, torch.device("cpu"))
    train_batches, val, _ = exp.batches
    first = torch.cat([x for x, _ in train_batches])
    assert len(train_batches) == 2 and torch.equal(first, exp.data.x_train[:64])
    assert torch.equal(torch.cat([x for x, _ in train_batches]), first)  # the same order every epoch
    assert torch.equal(torch.cat([x for x, _ in val]), first)


# ---- val_every_n_epochs --------------------------------------------------------------------


def test_val_every_2_epochs_validates_epochs_2_4_and_the_last(compose, tmp_path):
    train(compose(["trainer.val_every_n_epochs=2", "trainer.max_epochs=5", "model.hidden=[16]",
                   "trainer.batch_size=256", "trainer.diagnostics=false"]), run_dir=tmp_path / "run")
    validated = [int(r["epoch"]) for r in rows(tmp_path / "run") if r["val_loss"] != "nan"]
    assert validated == [2, 4, 5]


def test_early_stopping_patience_counts_validations(compose, tmp_path):
    """No epoch after the first validated one improves by 100: patience=2 stops at the second
    validation after it (epoch 6), not at the second epoch after it."""
    summary = train(compose(["trainer.val_every_n_epochs=2", "trainer.max_epochs=10", "model.hidden=[16]",
                             "trainer.early_stopping.patience=2", "trainer.early_stopping.min_delta=100",
                             "trainer.batch_size=256", "trainer.diagnostics=false"]), run_dir=tmp_path / "run")
    assert summary["status"] == "early_stopped" and summary["epochs_run"] == 6 and summary["best_epoch"] == 2


def test_checkpoint_written_before_these_keys_still_resumes(compose, tmp_path):
    train(compose(["model.hidden=[16]", "trainer.max_epochs=1", "trainer.diagnostics=false"]), run_dir=tmp_path / "a")
    saved = state(tmp_path / "a")
    for key in ("max_steps", "max_time", "limit_train_batches", "limit_val_batches", "overfit_batches",
                "val_every_n_epochs"):
        del saved["config"]["trainer"][key]
    old = tmp_path / "old.pt"
    torch.save(saved, old)
    summary = train(compose(["model.hidden=[16]", "trainer.max_epochs=2", "trainer.diagnostics=false",
                             f"resume={old}"]), run_dir=tmp_path / "b")
    assert summary["status"] == "completed" and summary["epochs_run"] == 2

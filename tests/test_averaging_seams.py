"""Weight averaging with the rest of the run: SWA's batch norm pass leaves the raw training as
it was, SWA within the run's length, what a run stopped early says it tested, top-k files and
restored best weights of an averaged run, batch norm statistics over DDP ranks."""

from __future__ import annotations

import csv
import re

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from dltrain import compose, train
from dltrain.errors import ConfigError
from dltrain.inference.evaluate import evaluate_checkpoint
from dltrain.training.averaging import WeightAverage, average_batch_norm_over_ranks
from dltrain.training.callbacks import CheckpointPolicy, EpochEndWriter
from dltrain.training.top_k import TopKCheckpoints

FAST = ["device=cpu", "model.hidden=[16]", "trainer.diagnostics=false", "trainer.batch_size=256",
        "trainer.limit_train_batches=6"]


def _column(run_dir, name):
    with open(run_dir / "metrics.csv") as f:
        return [row[name] for row in csv.DictReader(f)]


def test_swa_batch_norm_pass_leaves_the_raw_training_unchanged(tmp_path):
    overrides = [*FAST, "regularization.batch_norm=true", "regularization.dropout=0.3", "trainer.max_epochs=2"]
    train(compose(overrides), run_dir=tmp_path / "plain")
    train(compose([*overrides, "regularization.swa_start=1", "regularization.evaluate_averaged=false"]),
          run_dir=tmp_path / "swa")
    assert _column(tmp_path / "swa", "train_loss") == _column(tmp_path / "plain", "train_loss")
    assert _column(tmp_path / "swa", "val_loss") == _column(tmp_path / "plain", "val_loss")


@pytest.mark.parametrize(("overrides", "message"), [
    (["trainer.max_epochs=4", "trainer.max_steps=3", "regularization.swa_start=2"],
     "regularization.swa_start=2 is after the run's last epoch (1: trainer.max_steps=3"),
    (["regularization.swa_anneal_epochs=3"], "regularization.swa_anneal_epochs=3 anneals the LR to swa_lr"),
])
def test_swa_that_cannot_apply_is_refused(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        train(compose([*FAST, *overrides]), run_dir=tmp_path / "run")
    assert "\n" not in str(err.value)


def test_a_run_stopped_before_swa_averaged_says_so(tmp_path):
    summary = train(compose([*FAST, "trainer.max_epochs=2", "trainer.max_time=0.001",
                             "regularization.swa_start=1"]), run_dir=tmp_path / "run")
    assert summary["status"] == "time_limit" and summary["averaging"]["updates"] == 0
    assert any("SWA averaged nothing" in w for w in summary["warnings"])
    assert summary["test_weights"] == "after batch 1 of epoch 1"  # the raw weights


def test_test_weights_name_the_ema_after_a_max_time_stop(tmp_path):
    summary = train(compose([*FAST, "trainer.max_epochs=2", "trainer.max_time=0.001",
                             "regularization.ema_decay=0.9"]), run_dir=tmp_path / "run")
    assert summary["status"] == "time_limit" and summary["test_weights"] == "EMA after 1 update"


def test_the_swa_label_names_the_averaged_epochs():
    averaging = WeightAverage(nn.Linear(2, 2), swa_start=2)
    for epoch in (1, 2, 3):
        averaging.end_epoch(epoch, [])
    assert averaging.label() == "SWA average of epochs 2-3" and averaging.nothing_averaged() is None


class _Trainer:
    epoch, healthy = 0, True

    def checkpoint(self):
        return {}


def test_top_k_on_other_ranks_forgets_the_dropped_files(tmp_path):
    top_k = TopKCheckpoints(tmp_path, 1, "val_loss", "min")
    writer = EpochEndWriter(None, None, CheckpointPolicy(tmp_path, save_last=False, save_best=False, top_k=top_k),
                            main=False)
    trainer = _Trainer()
    for epoch, value in enumerate([0.5, 0.4, 0.3], start=1):
        trainer.epoch = epoch
        writer(trainer, {"epoch": epoch, "val_loss": value}, improved=True)
    assert top_k.dropped == [] and [e["epoch"] for e in top_k.kept] == [3]


def test_an_ema_top_k_file_evaluates_to_the_value_in_its_name(tmp_path):
    train(compose([*FAST, "trainer.max_epochs=2", "regularization.ema_decay=0.5",
                   "trainer.checkpoint.save_top_k=1"]), run_dir=tmp_path / "run")
    (top,) = (tmp_path / "run" / "checkpoints").glob("top-*.pt")
    named = float(re.search(r"val_loss([0-9.e+-]+)\.pt$", top.name).group(1))
    assert evaluate_checkpoint(top, "val", "cpu")["metrics"]["loss"] == pytest.approx(named, abs=5e-5)


def test_swa_with_restored_best_weights_tests_best_pt(tmp_path):
    summary = train(compose([*FAST, "trainer.max_epochs=3", "regularization.swa_start=2",
                             "regularization.batch_norm=true", "trainer.early_stopping.restore_best_weights=true"]),
                    run_dir=tmp_path / "run")
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    assert summary["test_weights"] == f"best epoch {summary['best_epoch']}"
    assert evaluate_checkpoint(best, "test", "cpu")["metrics"] == pytest.approx(summary["test"], rel=1e-6)


def _rank(rank: int, init: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    layer = nn.BatchNorm1d(2)
    layer.running_mean.fill_(float(rank))  # rank 0: 0, rank 1: 1
    layer.running_var.fill_(1.0 + 2 * rank)  # 1 and 3
    average_batch_norm_over_ranks(layer)
    assert torch.equal(layer.running_mean, torch.full((2,), 0.5))
    assert torch.equal(layer.running_var, torch.full((2,), 2.0))
    dist.destroy_process_group()


def test_batch_norm_statistics_are_averaged_over_the_ranks(tmp_path):
    mp.start_processes(_rank, args=(f"file://{tmp_path / 'rendezvous'}",), nprocs=2, start_method="fork")


@pytest.mark.parametrize("saved", ["junk", {"weights": "x", "updates": 1}, {"weights": {}, "updates": "1"}])
def test_averaged_weights_of_another_shape_are_the_resumes_runtime_error(saved):
    """A damaged ``averaged_model`` entry is the RuntimeError a resume turns into its one line."""
    average = WeightAverage(nn.Linear(2, 1), ema_decay=0.9)
    with pytest.raises(RuntimeError, match="averaged weights are not"):
        average.load_state_dict(saved)


@pytest.mark.parametrize("damage", ["removed", "junk", "updates"])
def test_a_checkpoint_without_its_averaged_weights_is_refused_by_load_model(compose, tmp_path, damage):
    """A run that averaged and evaluated the average: without a readable average in its file,
    the raw weights are not what the run evaluated, so eval/predict/export refuse in one line
    instead of silently using them."""
    from dltrain.errors import UserError
    from dltrain.inference.restore import load_model
    from dltrain.training.checkpoint import load_checkpoint

    train(compose([*FAST, "trainer.max_epochs=1", "regularization.ema_decay=0.9"]), run_dir=tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    if damage == "removed":
        del state["averaged_model"]
    elif damage == "junk":
        state["averaged_model"] = "junk"
    else:
        state["averaged_model"]["updates"] = "many"
    torch.save(state, tmp_path / "damaged.pt")
    with pytest.raises(UserError, match="holds no averaged weights") as err:
        load_model(tmp_path / "damaged.pt")
    assert "\n" not in str(err.value)
    load_model(tmp_path / "run" / "checkpoints" / "last.pt")  # the file as written loads

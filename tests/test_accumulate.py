"""Gradient accumulation (``trainer.accumulate_grad_batches=k``): k micro-batches make one
optimizer step equal to one step on a batch of all their examples, normalised by examples
(an uneven last group too), in one process and on two gloo ranks; the schedule and the
logging steps count optimizer steps; an interrupt inside a group resumes exactly.

The unit tests train a small MLP through :class:`Trainer` on unshuffled batches, so the k
micro-batches of a group are exactly the examples of the big batch they are compared with.
The end-to-end runs shuffle: one permutation an epoch, cut into consecutive batches, so the
k batches of b of a group are the batch of k*b at the same place (same seed, same order).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from dltrain import train
from dltrain.data.batches import TensorBatches
from dltrain.errors import ConfigError
from dltrain.regularization import WeightPenalty
from dltrain.training.callbacks import EarlyStopping
from dltrain.training.checkpoint import load_checkpoint
from dltrain.training.guard import StepGuard
from dltrain.training.signals import Interrupted
from dltrain.training.trainer import Hooks, StepOptions, Trainer
from tests import accumulate_workers as workers
from tests.test_distributed import LAUNCH_VARS, ROOT, WORLD, free_port

OPTIMIZERS = {"sgd": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
              "adam": lambda params: torch.optim.Adam(params, lr=0.01)}


def data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def trainer_for(k: int, optimizer: str = "sgd", l1: float = 0.0, grad_clip: float | None = None,
                hooks: Hooks | None = None) -> Trainer:
    model = workers.mlp()
    return Trainer(model, OPTIMIZERS[optimizer](model.parameters()), nn.CrossEntropyLoss(), "multiclass",
                   max_epochs=1, stopper=EarlyStopping("val_loss"), hooks=hooks,
                   options=StepOptions(penalty=WeightPenalty(model, l1=l1), grad_clip=grad_clip,
                                       accumulate_grad_batches=k))


def epoch(k: int, batch_size: int, n: int, **kw) -> tuple[dict[str, torch.Tensor], int, float]:
    """Weights, optimizer steps and train loss after an epoch over ``n`` unshuffled examples."""
    trainer = trainer_for(k, **kw)
    metrics = trainer.train_epoch(TensorBatches(*data(n), batch_size))
    return trainer.model.state_dict(), trainer.global_step, metrics["loss"]


def assert_weights_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key])


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("setting", [{}, {"l1": 0.01}, {"grad_clip": 0.05}], ids=["plain", "l1", "grad_clip"])
def test_k_micro_batches_equal_one_big_batch(optimizer, setting):
    """Acceptance: 3 micro-batches of 4, 4 and 2 examples (uneven) make one step equal to one
    step on the batch of 10, with the L1 penalty counted once and the clip on the summed
    gradient; the plain run on batches of 4 (three steps) is not equal: the check can tell."""
    accumulated, steps, loss = epoch(3, 4, 10, optimizer=optimizer, **setting)
    big, big_steps, big_loss = epoch(1, 10, 10, optimizer=optimizer, **setting)
    assert steps == big_steps == 1
    assert_weights_close(accumulated, big)
    assert loss == pytest.approx(big_loss, rel=1e-6)  # the epoch's loss: the mean over its examples
    plain, plain_steps, _ = epoch(1, 4, 10, optimizer=optimizer, **setting)
    assert plain_steps == 3
    with pytest.raises(AssertionError):
        assert_weights_close(accumulated, plain)


def test_uneven_last_group_equals_its_big_batch():
    """20 examples in batches of 4, 3 to a step: groups of 12 and 8 examples (the last of two
    batches), as batches of 12 give."""
    accumulated, steps, _ = epoch(3, 4, 20, optimizer="adam")
    big, big_steps, _ = epoch(1, 12, 20, optimizer="adam")
    assert steps == big_steps == 2
    assert_weights_close(accumulated, big)


def test_logging_steps_count_optimizer_steps(monkeypatch):
    """log_every_n_steps=2 with 3 batches to a step, 20 batches (7 steps): the loss is read
    after optimizer steps 2, 4 and 6 and at the epoch's end, not at every batch in between."""
    reads = []
    finite = StepGuard._loss_finite
    monkeypatch.setattr(StepGuard, "_loss_finite", lambda self: reads.append(self.checked) or finite(self))
    trainer = trainer_for(3, hooks=Hooks(log_every_n_steps=2))
    trainer.train_epoch(TensorBatches(*data(40), 2))
    assert trainer.global_step == 7 and len(reads) == 4


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> list[dict]:
    """What each of two gloo ranks saw (:mod:`tests.accumulate_workers`), started once for the module."""
    tmp_path = tmp_path_factory.mktemp("ddp")
    base = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(WORLD),
                LOCAL_WORLD_SIZE=str(WORLD), OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    procs = [subprocess.Popen([sys.executable, "-m", "tests.accumulate_workers", str(tmp_path)], cwd=tmp_path,
                              env={**base, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(WORLD)]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    results = []
    for rank in range(WORLD):
        path = tmp_path / f"accumulate.rank{rank}.pt"
        assert path.is_file(), outputs[rank][-3000:]
        result = torch.load(path, weights_only=True)
        assert "unexpected" not in result, result.get("unexpected")
        results.append(result)
    return results


@pytest.mark.slow  # two processes start (~5 s): test_distributed.py's DDP runs cover the default suite
def test_ddp_accumulation_equals_the_single_process_big_batch(ddp_results):
    """Two gloo ranks, 3 micro-batches of 2 each, equal one step of one process on the 12
    examples; DDP all-reduces once for the group (3 times for 3 plain steps), and inside the
    group the ranks' gradients are their own."""
    results = ddp_results
    single = workers.trained(1, workers.B * workers.K * WORLD, 1)
    for result in results:
        assert_weights_close(result["weights"], single)
        assert result["allreduce_calls"] == 1 and result["plain_allreduce_calls"] == workers.K
    # Inside a group each rank holds its own gradients; a checkpoint saves their mean, which
    # any number of ranks continue (the all-reduce at the group's end averages it with itself).
    local = [result["local_grads"] for result in results]
    assert not torch.equal(local[0][0], local[1][0])
    for result in results:
        assert result["saved"]["examples"] == workers.B * WORLD  # the group's examples on both ranks
        for saved, grad0, grad1 in zip(result["saved"]["grads"], *local, strict=True):
            torch.testing.assert_close(saved, (grad0 + grad1) / 2)


@pytest.mark.slow  # the two processes of the test above
def test_a_two_rank_group_resumed_in_one_process_takes_the_big_batch_step(ddp_results):
    """The checkpoint of two ranks after the first micro-step of a group, continued by one
    process on the group's other batches (of both ranks' examples), takes the step of the
    uninterrupted one-process run."""
    model = workers.mlp()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), nn.CrossEntropyLoss(),
                      "multiclass", max_epochs=1, stopper=EarlyStopping("val_loss"),
                      options=StepOptions(accumulate_grad_batches=workers.K))
    accumulation = trainer.accumulation
    accumulation.load_state_dict(ddp_results[0]["saved"])
    rest = list(workers.batches(workers.B * WORLD, workers.K))[1:]
    for x, y in accumulation.batches(rest, workers.K, 1):
        accumulation(x, y)
    assert accumulation.stepped
    straight = workers.trained(workers.K, workers.B * WORLD, workers.K)
    assert_weights_close(model.state_dict(), straight)


def test_end_to_end_epoch_equals_the_big_batch_run(compose, tmp_path):
    """1257 digits: batches of 16, 4 to a step (the last group 16 + 16 + 9) against batches of
    64 (the last 41): the same 20 optimizer steps, weights and losses."""
    common = ["model.hidden=[32]", "trainer.max_epochs=1"]
    summary = train(compose([*common, "trainer.batch_size=16", "trainer.accumulate_grad_batches=4"]),
                    run_dir=tmp_path / "k4")
    big = train(compose([*common, "trainer.batch_size=64"]), run_dir=tmp_path / "big")
    state, big_state = (load_checkpoint(tmp_path / run / "checkpoints" / "last.pt") for run in ("k4", "big"))
    assert state["global_step"] == big_state["global_step"] == 20
    assert_weights_close(state["model"], big_state["model"])
    assert state["history"][0]["train_loss"] == pytest.approx(big_state["history"][0]["train_loss"], rel=1e-5)
    assert summary["test"]["loss"] == pytest.approx(big["test"]["loss"], rel=1e-4)


def test_onecycle_counts_optimizer_steps_and_ends_at_its_final_lr(compose, tmp_path):
    """40 batches of 32 an epoch, 3 to a step: 14 optimizer steps an epoch, 28 in 2 epochs,
    the last at onecycle's final LR (lr / div_factor / final_div_factor)."""
    train(compose(["model.hidden=[16]", "trainer.max_epochs=2", "trainer.batch_size=32", "scheduler=onecycle",
                   "trainer.accumulate_grad_batches=3"]), run_dir=tmp_path)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["global_step"] == 28
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 / 25 / 1e4, rel=1e-6)


def test_fast_dev_run_takes_one_step_of_its_two_batches(compose, tmp_path):
    summary = train(compose(["trainer.fast_dev_run=true", "trainer.accumulate_grad_batches=3"]), run_dir=tmp_path)
    assert summary["status"] == "completed"
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["global_step"] == 1


# Dropout and a cosine schedule, 20 batches of 64 an epoch in 7 groups of 3 (the last of 2).
EXACT = ["regularization.dropout=0.3", "scheduler=cosine", "scheduler.T_max=5", "model.hidden=[16]",
         "trainer.batch_size=64", "trainer.accumulate_grad_batches=3", "trainer.max_epochs=2",
         "trainer.diagnostics=false"]


def rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(f)]


def test_interrupt_inside_a_group_then_resume_equals_straight(compose, tmp_path, monkeypatch):
    """Stopped after batch 14 of epoch 2 (the 2nd of group 5's three), the checkpoint holds the
    group's gradients of its 128 examples; the resumed run equals the straight one bit for bit."""
    straight = tmp_path / "straight"
    train(compose(EXACT), run_dir=straight)
    step = Trainer.train_step

    def interrupt_inside_group(self, x, y):
        out = step(self, x, y)
        if self.epoch == 1 and self.step_in_epoch == 13:  # this call was batch 14
            self.stop.signum = signal.SIGTERM
        return out

    monkeypatch.setattr(Trainer, "train_step", interrupt_inside_group)
    with pytest.raises(Interrupted, match="in epoch 2 after batch 14 of 20: saved"):
        train(compose(EXACT), run_dir=tmp_path / "first")
    monkeypatch.undo()
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    accumulated = state["partial_epoch"]["accumulated"]
    assert state["global_step"] == 7 + 4 and accumulated["examples"] == 128
    assert all(isinstance(g, torch.Tensor) and g.abs().sum() > 0 for g in accumulated["grads"])
    train(compose([*EXACT, f"resume={last}"]), run_dir=tmp_path / "resumed")
    assert rows(tmp_path / "resumed") == rows(straight)
    resumed, expected = (load_checkpoint(run / "checkpoints" / "last.pt")["model"]
                         for run in (tmp_path / "resumed", straight))
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)
    assert json.loads((tmp_path / "resumed" / "summary.json").read_text())["status"] == "completed"


def test_a_checkpoint_without_accumulated_gradients_loads():
    """A mid-epoch state from before accumulation existed (no ``accumulated`` key) loads: the
    next group starts from zero gradients."""
    trainer = trainer_for(2)
    trainer.train_epoch(TensorBatches(*data(12), 4))
    state = trainer.state_dict()
    state["partial_epoch"] = {"step": 2, "train": trainer._epoch_acc.state_dict(), "lr": 0.1, "seconds": 0.0}
    fresh = trainer_for(2)
    fresh.load_state_dict(state)
    assert fresh.accumulation.done == 0 and fresh.global_step == 2


def test_a_checkpoint_with_gradients_for_another_model_is_refused():
    """A damaged or crafted list of accumulated gradients (too few) is the RuntimeError a
    resume turns into its one line, not a zip() error."""
    trainer = trainer_for(2)
    trainer.train_epoch(TensorBatches(*data(12), 4))
    state = trainer.state_dict()
    state["partial_epoch"] = {"step": 1, "train": trainer._epoch_acc.state_dict(), "lr": 0.1, "seconds": 0.0,
                              "accumulated": {"grads": [None], "examples": 4}}
    with pytest.raises(RuntimeError, match=r"holds 1 accumulated gradients for a model of \d+ trained parameters"):
        trainer_for(2).load_state_dict(state)


def test_lbfgs_with_accumulation_is_refused_in_one_line(compose, tmp_path):
    with pytest.raises(ConfigError) as err:
        train(compose(["optim=lbfgs", "trainer.accumulate_grad_batches=2"]), run_dir=tmp_path)
    message = str(err.value)
    assert message.startswith("trainer.accumulate_grad_batches=2 cannot be used with optim=lbfgs")
    assert "\n" not in message and "trainer.accumulate_grad_batches=1" in message
    assert not (tmp_path / "metrics.csv").exists()


def test_a_checkpoint_from_before_the_key_resumes(compose, tmp_path):
    """A checkpoint whose config has no trainer.accumulate_grad_batches (written before it
    existed) continues with the default, one batch a step."""
    fast = ["model.hidden=[16]", "trainer.batch_size=256"]
    train(compose([*fast, "trainer.max_epochs=1"]), run_dir=tmp_path / "first")
    state = load_checkpoint(tmp_path / "first" / "checkpoints" / "last.pt")
    del state["config"]["trainer"]["accumulate_grad_batches"]
    torch.save(state, tmp_path / "old.pt")
    summary = train(compose([*fast, "trainer.max_epochs=2", f"resume={tmp_path / 'old.pt'}"]),
                    run_dir=tmp_path / "resumed")
    assert summary["status"] == "completed" and summary["epochs_run"] == 2
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["global_step"] == 2 * 5

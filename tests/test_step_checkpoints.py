"""``trainer.checkpoint.every_n_steps`` / ``every_n_minutes``: ``last.pt`` inside an epoch holds the
partial epoch, and resuming it equals the uninterrupted run bit for bit."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from dltrain import train
from dltrain.training import step_checkpoints
from dltrain.training.checkpoint import load_checkpoint
from dltrain.training.distributed import Ranks
from dltrain.training.guard import StepGuard
from dltrain.training.metrics import MetricAccumulator
from dltrain.training.step_checkpoints import StepCheckpoints
from dltrain.training.trainer import Trainer

from .test_resume import EXACT, rows, same_weights

STEPS = 20  # training steps an epoch of the digits at the default batch size


def test_every_n_steps_counts_optimizer_steps():
    checkpoints = StepCheckpoints("unused", every_n_steps=3)
    assert [step for step in range(1, 11) if checkpoints.due(step)] == [3, 6, 9]
    assert checkpoints.due(12)
    assert not checkpoints.due(12)  # a batch that took no optimizer step (accumulation) leaves the count as it was


def test_every_n_minutes_on_rank_0s_clock():
    now = [0.0]
    checkpoints = StepCheckpoints("unused", every_n_minutes=1, clock=lambda: now[0])
    due = []
    for step in range(1, 12):
        now[0] += 25.0  # each step takes 25 s
        if checkpoints.due(step):
            due.append(step)
            checkpoints._since = now[0]  # as write() does
    assert due == [4, 7, 10]  # once 60 s have passed since the first step, then since the last checkpoint
    other_rank = StepCheckpoints("unused", every_n_minutes=1, main=False, clock=lambda: now[0])
    assert not any(other_rank.due(step) for step in range(12, 40))  # it learns rank 0's decision in the vote


class TwoRanks(Ranks):
    """Rank 1 of two, whose peer (rank 0) votes ``due`` for a checkpoint after every step."""

    def __init__(self, due: int) -> None:
        super().__init__()
        self.due = due

    @property
    def distributed(self) -> bool:
        return True

    @property
    def is_main(self) -> bool:
        return False

    def vote(self, *values: int) -> list[int]:
        return [*values[:-1], max(values[-1], self.due)]  # the checkpoint is the vote's last question


def test_the_ranks_agree_in_the_vote_after_the_step():
    guard = StepGuard(torch.nn.Linear(1, 1), lambda: 0.1, TwoRanks(due=1))
    guard.checkpoint_due = StepCheckpoints("unused", every_n_minutes=1, main=False).due  # never due by itself
    guard.start_epoch(1, 5, 0, MetricAccumulator("classification"))
    guard.metrics.sums["loss"] = torch.tensor(1.0)
    assert guard.after_step(1, 1, torch.tensor(0.5)) is True
    guard.ranks.due = 0
    assert guard.after_step(2, 2, torch.tensor(0.5)) is False


def test_never_at_the_epochs_last_step():
    guard = StepGuard(torch.nn.Linear(1, 1), lambda: 0.1, Ranks())
    guard.checkpoint_due = lambda global_step: True
    guard.start_epoch(1, 5, 0, MetricAccumulator("classification"))
    guard.metrics.sums["loss"] = torch.tensor(1.0)
    assert guard.after_step(4, 4, torch.tensor(0.5)) is True
    assert guard.after_step(5, 5, torch.tensor(0.5)) is False  # the epoch's end writes last.pt


def kill_after(global_step: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies (a failure that saves nothing) as step ``global_step + 1`` begins."""
    step = Trainer.train_step

    def dies(self: Trainer, x: torch.Tensor, y: torch.Tensor) -> Any:
        if self.global_step == global_step:
            raise RuntimeError("killed")
        return step(self, x, y)

    monkeypatch.setattr(Trainer, "train_step", dies)


def test_a_mid_epoch_last_pt_resumes_to_the_uninterrupted_run(compose, tmp_path, monkeypatch):
    settings = [*EXACT, "trainer.max_epochs=2", "trainer.diagnostics=false", "model.hidden=[16]"]
    train(compose(settings), run_dir=tmp_path / "straight")  # writing them changes nothing either
    kill_after(STEPS + 7, monkeypatch)  # epoch 2, after step 7: the last checkpoint is step 6's
    with pytest.raises(RuntimeError, match="killed"):
        train(compose([*settings, "trainer.checkpoint.every_n_steps=2"]), run_dir=tmp_path / "first")
    monkeypatch.undo()
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    assert state["epoch"] == 1 and state["global_step"] == STEPS + 6
    assert state["partial_epoch"]["step"] == 6 and state["data_order"]["skip"] == 6
    train(compose([*settings, f"resume={last}"]), run_dir=tmp_path / "resumed")
    assert rows(tmp_path / "resumed") == rows(tmp_path / "straight")
    assert same_weights(*(tmp_path / run / "checkpoints" / "last.pt" for run in ("resumed", "straight")))


def test_every_n_minutes_writes_inside_the_epoch_with_a_patched_clock(compose, tmp_path, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(step_checkpoints, "perf_counter", lambda: now[0])
    written: list[int] = []
    write = StepCheckpoints.write

    def recorded(self: StepCheckpoints, trainer: Trainer) -> None:
        write(self, trainer)
        written.append(load_checkpoint(self.path)["global_step"])

    step = Trainer.train_step

    def slow_step(self: Trainer, x: torch.Tensor, y: torch.Tensor) -> Any:
        now[0] += 25.0  # each step takes 25 s on the patched clock
        return step(self, x, y)

    monkeypatch.setattr(StepCheckpoints, "write", recorded)
    monkeypatch.setattr(Trainer, "train_step", slow_step)
    train(compose(["model.hidden=[16]", "trainer.max_epochs=1", "trainer.checkpoint.every_n_minutes=1"]),
          run_dir=tmp_path / "run")
    assert written == [4, 7, 10, 13, 16, 19]  # every 75 s (3 steps) after the first; step 20 ends the epoch


@pytest.mark.slow
def test_two_ranks_write_every_minute_on_rank_0s_clock(tmp_path):
    """Under torchrun rank 0's clock decides and the vote tells rank 1: both gather the state
    after the same steps (a rank that did not would wait in its collective for ever)."""
    import json
    import os
    import subprocess
    import sys

    from .test_distributed import LAUNCH_VARS, ROOT

    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "dltrain", "device=cpu", "trainer.max_epochs=2", "trainer.diagnostics=false",
                             "trainer.checkpoint.every_n_minutes=1e-9", "trainer.profiler=simple", "hydra.run.dir=run"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "completed"
    # after every step but each epoch's last and the run's first (the clock starts there), and at each epoch's end
    assert summary["profile"]["checkpointing"]["calls"] == 2 * (STEPS - 1) - 1 + 2

"""The checks after each training step (``StepGuard``), the data a divergence error carries,
and the step's grad scaler in the checkpoint.

The guard is driven here step by step, as the trainer's loop drives it: a loss per step,
summed on the device by the epoch's ``MetricAccumulator``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
from typing import Any

import pytest
import torch
from torch import nn

from dltrain.cli.app import describe_error
from dltrain.errors import TrainingDiverged
from dltrain.messages import describe_divergence
from dltrain.training.callbacks import EarlyStopping
from dltrain.training.distributed import Environment, Ranks
from dltrain.training.guard import StepGuard
from dltrain.training.metrics import MetricAccumulator
from dltrain.training.signals import Interrupted, StopRequest
from dltrain.training.trainer import Hooks, StepOptions, Trainer


class PeerRanks(Ranks):
    """Rank 0 of 2, alone in this process: each vote also counts the other rank's values,
    the next of ``peer`` (all zero once they run out)."""

    def __init__(self) -> None:
        super().__init__(Environment(0, 2, 0, 2))
        self.peer: list[tuple[int, ...]] = []
        self.votes: list[list[int]] = []

    def vote(self, *values: int) -> list[int]:
        self.votes.append(list(values))
        theirs = self.peer.pop(0) if self.peer else ()
        theirs = (*theirs, *(0,) * (len(values) - len(theirs)))  # the questions a test leaves out: all 0
        return [max(a, b) for a, b in zip(values, theirs, strict=True)]


class Progress:
    """A live progress display that records its updates."""

    live = True

    def __init__(self) -> None:
        self.updates: list[tuple[int, dict[str, float] | None]] = []

    def update(self, step: int, running: dict[str, float] | None = None) -> None:
        self.updates.append((step, running))


def guarded(epoch: int = 3, steps: int = 10, done: int = 0, **kwargs: Any) -> tuple[StepGuard, MetricAccumulator]:
    """A guard watching epoch ``epoch`` of ``steps`` steps, with the sums it reads."""
    model = nn.Linear(2, 1)
    metrics = MetricAccumulator("regression")
    guard = StepGuard(model, lambda: 0.05, kwargs.pop("ranks", Ranks()), **kwargs)
    guard.start_epoch(epoch, steps, done, metrics)
    return guard, metrics


def take_step(guard: StepGuard, metrics: MetricAccumulator, step: int, global_step: int, loss: float) -> None:
    """What the loop does after one step whose loss is ``loss``."""
    loss_t = torch.tensor(loss)
    metrics.update(torch.zeros(4, 1), torch.zeros(4, 1), loss_t)
    guard.after_step(step, global_step, loss_t)


def test_a_nan_at_step_k_is_named_as_step_k_at_the_next_logging_step():
    guard, metrics = guarded(log_every=4)
    losses = [1.0, 0.9, 0.8, 0.7, 0.6, math.nan, 0.5, 0.4]
    for step, loss in enumerate(losses[:-1], start=1):  # read at global steps 24 (finite) and 28
        take_step(guard, metrics, step, 20 + step, loss)
    with pytest.raises(TrainingDiverged) as raised:
        take_step(guard, metrics, 8, 28, losses[-1])
    err = raised.value
    assert (err.what, err.epoch, err.step, err.steps, err.global_step) == (TrainingDiverged.LOSS, 3, 6, 10, 26)
    assert math.isnan(err.value) and err.lr == 0.05 and err.exact
    assert str(err) == "the training loss became nan in epoch 3 at step 6 of 10 (global step 26)"


def test_a_resumed_epoch_names_the_step_counted_from_the_epoch_start():
    guard, metrics = guarded(steps=10, done=5, log_every=50)  # resumed after step 5 of 10
    for step in range(6, 10):
        take_step(guard, metrics, step, 20 + step, math.inf if step == 7 else 1.0)
    with pytest.raises(TrainingDiverged) as raised:
        take_step(guard, metrics, 10, 30, 1.0)  # the epoch's last step is always read
    assert (raised.value.step, raised.value.global_step, raised.value.value) == (7, 27, math.inf)


def test_a_stop_request_stops_after_the_step_it_arrived_in():
    stop = StopRequest()  # never entered: no signal handlers, only its ``signum``
    guard, metrics = guarded(stop=stop, log_every=50)
    take_step(guard, metrics, 1, 21, 1.0)
    take_step(guard, metrics, 2, 22, 1.0)
    stop.signum = signal.SIGTERM
    with pytest.raises(Interrupted) as raised:
        take_step(guard, metrics, 3, 23, 1.0)
    assert raised.value.signum == signal.SIGTERM
    assert str(raised.value) == "interrupted by SIGTERM in epoch 3 after batch 3 of 10"


def test_another_ranks_stop_vote_stops_this_rank_after_the_same_step():
    ranks = PeerRanks()
    guard, metrics = guarded(ranks=ranks, log_every=50)
    take_step(guard, metrics, 1, 21, 1.0)
    ranks.peer = [(int(signal.SIGUSR1), 0)]  # the other rank was asked to stop during step 2
    with pytest.raises(Interrupted, match="by SIGUSR1 in epoch 3 after batch 2 of 10"):
        take_step(guard, metrics, 2, 22, 1.0)
    # One vote per step (stop, diverged, then the others' questions), then one on the loss before
    # the state is saved.
    assert [vote[:2] for vote in ranks.votes] == [[0, 0], [0, 0], [0]]


def test_another_ranks_diverged_loss_stops_this_rank_with_its_data():
    ranks = PeerRanks()
    guard, metrics = guarded(ranks=ranks, log_every=2)
    take_step(guard, metrics, 1, 21, 1.0)
    ranks.peer = [(0, 1)]  # the other rank's loss sum is not finite at the logging step
    with pytest.raises(TrainingDiverged) as raised:
        take_step(guard, metrics, 2, 22, 1.0)  # a logging step: the ranks compare their losses
    err = raised.value
    assert (err.what, err.epoch, err.step, err.steps, err.exact) == (TrainingDiverged.PEER, 3, 2, 10, False)
    assert str(err) == "the training loss of another rank became NaN or infinite in epoch 3 by step 2 of 10"


def test_progress_gets_the_running_metrics_at_logging_steps_only():
    progress = Progress()
    guard, metrics = guarded(steps=7, progress=progress, log_every=3)
    for step in range(1, 8):
        take_step(guard, metrics, step, 20 + step, 1.0)
    assert [step for step, _ in progress.updates] == list(range(1, 8))  # the bar moves every step
    with_metrics = [step for step, running in progress.updates if running is not None]
    assert with_metrics == [1, 4, 7]  # global steps 21 and 24, and the epoch's last step
    assert progress.updates[-1][1]["loss"] == 1.0  # the epoch's running mean


def test_a_trainer_epoch_names_the_step_whose_loss_was_nan():
    """Through the loop: the loss of the 5th step is NaN, read at the logging step 8."""
    calls = 0

    def loss_fn(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        loss = nn.functional.mse_loss(output, target)
        return loss * math.nan if calls == 5 else loss

    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.01), loss_fn, "regression", max_epochs=1,
                      stopper=EarlyStopping("val_loss"), hooks=Hooks(log_every_n_steps=8))
    x, y = torch.randn(40, 3), torch.randn(40, 1)
    with pytest.raises(TrainingDiverged) as raised:
        trainer.train_epoch([(x[i:i + 4], y[i:i + 4]) for i in range(0, 40, 4)])
    assert (raised.value.step, raised.value.global_step, raised.value.lr) == (5, 5, 0.01)
    assert trainer.global_step == 8  # it stopped at the logging step that read the sum


@pytest.mark.parametrize(("err", "facts", "worded"), [
    (TrainingDiverged(TrainingDiverged.LOSS, 3, step=6, steps=20, global_step=46, value=math.nan, lr=0.1),
     "the training loss became nan in epoch 3 at step 6 of 20 (global step 46)",
     ": lower optim.lr (it is 0.1), clip the gradients (regularization.grad_clip=1.0), or pick a more stable "
     "optimizer (optim=adam)"),
    (TrainingDiverged(TrainingDiverged.WEIGHTS, 2, step=7, steps=20, global_step=27, lr=0.1, exact=False),
     "the weights became NaN or infinite in epoch 2 by step 7",
     ": lower optim.lr or clip the gradients (regularization.grad_clip=1.0)"),
    (TrainingDiverged(TrainingDiverged.WEIGHTS, 2, step=20, steps=20, global_step=40, lr=0.5),
     "the weights became NaN or infinite in epoch 2 at its last step",
     ": lower optim.lr (it is 0.5) or clip the gradients (regularization.grad_clip=1.0)"),
    (TrainingDiverged(TrainingDiverged.PEER, 1, step=2, steps=10, global_step=2, lr=0.1, exact=False),
     "the training loss of another rank became NaN or infinite in epoch 1 by step 2 of 10",
     ": lower optim.lr or clip the gradients (regularization.grad_clip=1.0)"),
    (TrainingDiverged(TrainingDiverged.METRIC, 4, metric="val_loss", value=math.inf, lr=1e-3),
     "val_loss became inf at epoch 4",
     " (trainer.early_stopping.check_finite): lower optim.lr (it is 0.001) or clip the gradients "
     "(regularization.grad_clip=1.0)"),
])
def test_a_divergence_error_states_facts_and_the_command_line_says_what_to_change(err, facts, worded):
    assert str(err) == facts and "optim" not in facts and "regularization" not in facts
    assert describe_divergence(err) == facts + worded
    assert describe_error(err) == facts + worded  # the command's one line
    assert err.exit_code == 3


def test_a_divergence_error_keeps_its_data_through_pickling():
    err = TrainingDiverged(TrainingDiverged.LOSS, 3, step=6, steps=20, global_step=46, value=math.inf, lr=0.1)
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is TrainingDiverged and str(copy) == str(err)
    assert (copy.what, copy.epoch, copy.step, copy.steps, copy.global_step, copy.value, copy.lr, copy.exact) == \
        (err.what, 3, 6, 20, 46, math.inf, 0.1, True)


@pytest.mark.parametrize(("dtype", "saved"), [(None, False), (torch.bfloat16, False), (torch.float16, True)])
def test_the_grad_scaler_is_saved_for_float16_only_and_resumes(dtype, saved):
    """The trainer's own grad scaler: enabled for float16 alone, its state in the checkpoint
    then and None otherwise (as checkpoints always held), and loaded back on resume."""
    def trainer() -> Trainer:
        torch.manual_seed(0)
        model = nn.Linear(3, 2)
        return Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), "multiclass",
                       max_epochs=1, stopper=EarlyStopping("val_loss"), options=StepOptions(autocast_dtype=dtype))

    first = trainer()
    for _ in range(3):
        first.train_step(torch.randn(4, 3), torch.randint(0, 2, (4,)))
    state = first.state_dict()
    assert (state["grad_scaler"] is not None) == saved
    resumed = trainer()
    resumed.load_state_dict(state)
    assert resumed.step.scaler.state_dict() == first.step.scaler.state_dict()
    if saved:
        assert state["grad_scaler"]["_growth_tracker"] == 3  # three steps without an overflow


def test_a_trainer_given_lbfgs_alone_steps_through_its_closure():
    """Without ``StepOptions``, the trainer asks the optimizer: LBFGS's step requires a closure."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    trainer = Trainer(model, torch.optim.LBFGS(model.parameters(), lr=0.5), nn.MSELoss(), "regression",
                      max_epochs=1, stopper=EarlyStopping("val_loss"))
    before = nn.functional.mse_loss(model(x), y).item()
    _, loss = trainer.train_step(x, y)
    assert loss.item() == pytest.approx(before)  # the loss before the step, read inside the closure
    assert nn.functional.mse_loss(model(x), y).item() < before


def _stop_in_a_broken_state(monkeypatch: pytest.MonkeyPatch, break_state: Any, at: int = 3) -> list[int]:
    """The run's optimizer step number ``at`` (not a logging step) sends this process SIGUSR1
    and leaves the state broken by ``break_state(step, output, loss)``, which returns the loss
    the loop sees. Returns the list of the steps taken, filled as the run goes."""
    from dltrain.training import step as step_module

    original, steps = step_module.OptimizerStep.__call__, []

    def call(self: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output, loss = original(self, x, y)
        steps.append(len(steps) + 1)
        if len(steps) == at:
            loss = break_state(self, output, loss)
            os.kill(os.getpid(), signal.SIGUSR1)  # the run's StopRequest records it
        return output, loss

    monkeypatch.setattr(step_module.OptimizerStep, "__call__", call)
    return steps


def _nan_loss(step: Any, output: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    return loss * math.nan


def _nan_weights(step: Any, output: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        next(step.model.parameters()).fill_(math.nan)
    return loss


RUN = ["trainer.max_epochs=2", "trainer.log_every_n_steps=50"]


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")
@pytest.mark.parametrize(("break_state", "message"), [
    (_nan_loss, "the training loss became nan in epoch 1 at step 3 of "),
    (_nan_weights, "the weights became NaN or infinite in epoch 1 by step 3"),
])
def test_a_stop_in_a_diverged_state_raises_the_divergence_and_saves_no_last_pt(
        compose, tmp_path, monkeypatch, break_state, message):
    """A stop request granted after a step whose loss (not yet read: no logging step) or
    weights are NaN: the run reports the divergence and never saves that state to resume."""
    from dltrain import train

    steps = _stop_in_a_broken_state(monkeypatch, break_state)
    with pytest.raises(TrainingDiverged) as raised:
        train(compose(RUN), run_dir=tmp_path)
    assert str(raised.value).startswith(message)
    assert (raised.value.epoch, raised.value.step) == (1, 3)
    assert steps == [1, 2, 3]  # stopped after the step the signal came in, not at a later check
    assert not (tmp_path / "checkpoints" / "last.pt").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "diverged"


def test_the_trainer_and_its_guard_share_one_stop_request_and_one_display():
    """Replacing the stop request or the display on the trainer is what the loop then reads."""
    model = nn.Linear(3, 1)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss(), "regression",
                      max_epochs=1, stopper=EarlyStopping("val_loss"))
    stop, progress = StopRequest(), Progress()
    trainer.stop, trainer.progress = stop, progress
    assert (trainer.guard.stop, trainer.guard.progress) == (stop, progress)
    stop.signum = signal.SIGTERM
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    with pytest.raises(Interrupted, match="after batch 1 of 2"):
        trainer.train_epoch([(x[:4], y[:4]), (x[4:], y[4:])])
    assert progress.updates == [(1, None)]

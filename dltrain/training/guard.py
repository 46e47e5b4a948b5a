"""What the training loop checks after every step: a stop request, a diverged loss, and the
progress bar.

Reading a number from the device waits for it, so the loss sum is read only at logging
steps (every ``log_every`` global steps) and at the epoch's last step. The losses since the
last read are kept as references (no device work) to name the step a divergence began at.
With several ranks, all vote after every step on a stop and on a diverged loss, so every
rank stops after the same step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dltrain.errors import TrainingDiverged
from dltrain.training.budget import TimeLimitReached
from dltrain.training.distributed import Ranks
from dltrain.training.metrics import MetricAccumulator
from dltrain.training.progress import ProgressDisplay
from dltrain.training.signals import Interrupted, StopRequest, signal_name


def weights_finite(model: nn.Module) -> bool:
    """Whether every floating-point parameter of ``model`` is finite (one read from the device)."""
    flags = [torch.isfinite(p).all() for p in model.parameters() if p.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


class StepGuard:
    """Called once after each training step; raises when the loop must stop.

    Args:
        model: whose weights are checked before a stop is granted (a checkpoint follows).
        lr: the learning rate now, for the divergence error.
        ranks: the processes training together; they vote after every step.
        stop: read after every step; once it holds a signal, the loop stops after this step.
        progress: the console display; None for silence.
        log_every: the running loss is read (and shown) every this many global steps.
        accumulate: batches to an optimizer step (``trainer.accumulate_grad_batches``).
    """

    def __init__(self, model: nn.Module, lr: Callable[[], float], ranks: Ranks, stop: StopRequest | None = None,
                 progress: ProgressDisplay | None = None, log_every: int = 50, accumulate: int = 1) -> None:
        self.model, self.lr, self.ranks, self.stop = model, lr, ranks, stop
        self.progress, self.log_every, self.accumulate = progress, log_every, accumulate
        self.epoch = self.steps = 0
        self.metrics: MetricAccumulator | None = None  # the epoch's running sums (start_epoch)
        self.checked = 0  # the loss sum was finite up to this step of the epoch
        self.recent: list[torch.Tensor] = []  # the losses of the steps since then
        # trainer.max_time: whether the budget ran out, on rank 0's clock (None on the others:
        # the vote tells them); set by the trainer, None without a budget.
        self.out_of_time: Callable[[], bool] | None = None
        # trainer.checkpoint.every_n_steps / every_n_minutes: whether last.pt is due after an
        # optimizer step (rank 0's clock decides minutes; the vote tells the others); set by the trainer.
        self.checkpoint_due: Callable[[int], bool] | None = None

    def start_epoch(self, epoch: int, steps: int, done: int, metrics: MetricAccumulator) -> None:
        """Watch epoch ``epoch`` of ``steps`` steps, ``done`` of them before (a resume), whose
        running sums ``metrics`` holds."""
        self.epoch, self.steps, self.metrics = epoch, steps, metrics
        self.checked, self.recent = done, []

    def after_step(self, step: int, global_step: int, loss: torch.Tensor, stepped: bool = True) -> bool:
        """Check the step just taken (``step`` of the epoch, ``global_step`` of the run); with
        gradient accumulation a micro-step, which ``stepped`` the optimizer if it ended its group
        (``log_every`` counts optimizer steps).

        Raises:
            TrainingDiverged: the loss sum is no longer finite (read at logging steps), here
                or on another rank.
            Interrupted: a stop was requested on any rank; the weights are those after ``step``.
            TimeLimitReached: ``trainer.max_time`` ran out (rank 0's clock); the same holds.

        Returns:
            Whether every rank is to write a mid-epoch checkpoint now (never at the epoch's last step:
            its end writes one).
        """
        self.recent.append(loss.detach())  # a reference, not a device operation
        logging_step = (stepped and global_step % self.log_every == 0) or step == self.steps
        bad = logging_step and not self._loss_finite()
        signum = self.stop.signum if self.stop is not None else None
        late = self.out_of_time is not None and self.out_of_time()
        due = stepped and step < self.steps and self.checkpoint_due is not None and self.checkpoint_due(global_step)
        if self.ranks.distributed:  # every rank takes the same decision after the same step
            signum, bad_anywhere, late, due = self.ranks.vote(signum or 0, int(bad), int(late), int(due))
            signum = signum or None
            if bad_anywhere and not bad:
                raise self._peer_diverged(step, global_step)
        if bad:
            raise self._diverged(global_step)
        if logging_step:
            self.checked = step
            self.recent.clear()
        if self.progress is not None and self.progress.live:
            self.progress.update(step, self.metrics.compute() if logging_step else None)
        if signum is not None or late:
            self._grant_stop(signum, step, global_step)
        return bool(due)

    def after_validation_batch(self, epoch: int) -> None:
        """In one process, stop validating epoch ``epoch`` at once when asked. Ranks may hold
        different numbers of validation batches: they agree on a stop once, after them."""
        if not self.ranks.distributed and self.stop is not None and self.stop.signum is not None:
            raise _validation_stopped(self.stop.signum, epoch)

    def after_validation(self, epoch: int) -> None:
        """With several ranks, agree on a stop asked for while validating epoch ``epoch``."""
        if self.ranks.distributed:
            signum = self.ranks.vote((self.stop.signum or 0) if self.stop is not None else 0)[0]
            if signum:
                raise _validation_stopped(signum, epoch)

    def _grant_stop(self, signum: int | None, step: int, global_step: int) -> None:
        """Stop for ``signum`` (None: ``trainer.max_time`` ran out), unless the state is diverged:
        that is never saved to resume from."""
        bad = not self._loss_finite()
        if self.ranks.distributed and self.ranks.vote(int(bad))[0] and not bad:
            raise self._peer_diverged(step, global_step)
        if bad:
            raise self._diverged(global_step)
        if not weights_finite(self.model):
            raise TrainingDiverged(TrainingDiverged.WEIGHTS, self.epoch, step=step, steps=self.steps,
                                   global_step=global_step, lr=self.lr(), exact=False)
        if signum is None:
            raise TimeLimitReached(self.epoch, step, self.steps)
        raise Interrupted(signum, f"interrupted by {signal_name(signum)} in epoch {self.epoch} after batch {step} "
                                  f"of {self.steps}")

    def _loss_finite(self) -> bool:
        return bool(torch.isfinite(self.metrics.sums["loss"]).item())

    def _diverged(self, global_step: int) -> TrainingDiverged:
        """The error naming the first step since the last check whose loss is not finite."""
        step = self.checked + len(self.recent)
        losses = torch.stack(self.recent) if self.recent else torch.empty(0)
        bad = (~torch.isfinite(losses)).nonzero()
        first = self.checked + int(bad[0]) + 1 if len(bad) else step  # else finite losses whose sum overflowed
        value = float(losses[first - self.checked - 1]) if len(bad) else float("nan")
        return TrainingDiverged(TrainingDiverged.LOSS, self.epoch, step=first, steps=self.steps,
                                global_step=global_step - self._groups(step) + self._groups(first, True), value=value,
                                lr=self.lr())

    def _groups(self, step: int, begun: bool = False) -> int:
        """The optimizer steps of the epoch through batch ``step``: those ended, or ``begun``
        (the epoch's last batch always ends one)."""
        k = self.accumulate
        return -(-step // k) if begun or step == self.steps else step // k

    def _peer_diverged(self, step: int, global_step: int) -> TrainingDiverged:
        return TrainingDiverged(TrainingDiverged.PEER, self.epoch, step=step, steps=self.steps,
                                global_step=global_step, lr=self.lr(), exact=False)


def _validation_stopped(signum: int, epoch: int) -> Interrupted:
    return Interrupted(signum, f"interrupted by {signal_name(signum)} while validating epoch {epoch}")

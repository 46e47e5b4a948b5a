"""The training loop: ``fit`` runs epochs of ``train_epoch`` then ``evaluate``.

Phases follow the notes: ``model.train()`` with gradients while training, ``model.eval()``
under ``torch.no_grad()`` for validation and test. Losses and metrics are summed on the
device and read once per epoch (and at ``log_every_n_steps``), never per step.

One training step: [augment the batch] -> forward (under autocast for bf16/fp16) -> loss
(+ weight penalty) -> backward -> [clip] -> optimizer step -> [scheduler batch step]. LBFGS
takes the same path inside the closure it re-evaluates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from dltrain.callbacks import EarlyStopping
from dltrain.errors import UserError
from dltrain.metrics import MetricAccumulator
from dltrain.progress import ProgressDisplay

if TYPE_CHECKING:
    from dltrain.schedulers import LRSchedule


class Batches(Protocol):
    """What the trainer reads: ``(x, y)`` pairs and how many there are (TensorBatches)."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""

    exit_code = 3


class Trainer:
    """Runs the epochs of one experiment.

    Args:
        model, optimizer, loss_fn: what to train, how, and against what.
        task: the data's task, for the metrics.
        max_epochs: upper bound on epochs.
        stopper: tracks the monitored metric and decides early stops.
        log_every_n_steps: how often the progress bar reads the running loss.
        on_epoch_end: called as ``on_epoch_end(trainer, row, improved)`` after each epoch,
            to write metrics and checkpoints.
        progress: the console display; None for silence.
        scheduler: the learning-rate schedule, stepped after each batch and epoch.
        penalty: returns the weight penalty added to the training loss (L1, or L2 for LBFGS).
        augment: transforms each training batch of inputs (never validation or test).
        grad_clip: clip the gradients' total norm to this value.
        grad_clip_value: clip every gradient element to ``[-value, value]``.
        autocast_dtype: run forward passes under autocast to this dtype (bf16, fp16).
        scaler: a ``torch.amp.GradScaler`` for float16 training.
        forward: what computes the outputs, e.g. ``torch.compile(model)``; defaults to
            ``model``, which keeps the weights, modes and state dict either way.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: nn.Module,
        task: str,
        *,
        max_epochs: int,
        stopper: EarlyStopping,
        log_every_n_steps: int = 50,
        on_epoch_end: Callable[[Trainer, dict[str, Any], bool], None] | None = None,
        progress: ProgressDisplay | None = None,
        scheduler: LRSchedule | None = None,
        penalty: Callable[[], torch.Tensor] | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        grad_clip: float | None = None,
        grad_clip_value: float | None = None,
        autocast_dtype: torch.dtype | None = None,
        scaler: torch.amp.GradScaler | None = None,
        forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.task = task
        self.max_epochs = max_epochs
        self.stopper = stopper
        self.log_every_n_steps = log_every_n_steps
        self.on_epoch_end = on_epoch_end
        self.progress = progress
        self.scheduler = scheduler
        self.penalty = penalty or None  # a penalty with nothing to add costs nothing per step
        self.augment = augment
        self.grad_clip = grad_clip
        self.grad_clip_value = grad_clip_value
        self.autocast_dtype = autocast_dtype
        self.scaler = scaler
        self.forward = forward if forward is not None else model  # a compiled module has no truth value
        # LBFGS evaluates the loss several times per step, through a closure.
        self.uses_closure = isinstance(optimizer, torch.optim.LBFGS)
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.best_state: dict[str, torch.Tensor] | None = None

    def _outputs_and_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.autocast_dtype is None:
            output = self.forward(x)  # (B, num_outputs)
            return output, self.loss_fn(output, y)
        device_type = x.device.type
        with torch.autocast(device_type, dtype=self.autocast_dtype):
            output = self.forward(x)
            return output, self.loss_fn(output, y)

    def _clip(self) -> None:
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        if self.grad_clip_value is not None:
            nn.utils.clip_grad_value_(self.model.parameters(), self.grad_clip_value)

    def _closure_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first: list[tuple[torch.Tensor, torch.Tensor]] = []

        def closure() -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            output, loss = self._outputs_and_loss(x, y)
            total = loss + self.penalty() if self.penalty is not None else loss
            total.backward()
            self._clip()
            if not first:  # the metrics report the loss before the step, as for other optimizers
                first.append((output.detach(), loss.detach()))
            return total

        self.optimizer.step(closure)
        return first[0]

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on a batch; returns the outputs and the data loss (no penalty)."""
        if self.augment is not None:
            x = self.augment(x)
        if self.uses_closure:
            output, loss = self._closure_step(x, y)
        else:
            output, loss = self._outputs_and_loss(x, y)
            total = loss + self.penalty() if self.penalty is not None else loss
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(total).backward()
                self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
                self._clip()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                total.backward()
                self._clip()
                self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step_batch()
        return output, loss

    def train_epoch(self, batches: Batches) -> dict[str, float]:
        """One pass over the training batches with gradient steps."""
        self.model.train()
        acc = MetricAccumulator(self.task)
        num_batches = len(batches)
        for step, (x, y) in enumerate(batches, start=1):
            output, loss = self.train_step(x, y)
            acc.update(output, y, loss)
            self.global_step += 1
            if self.progress is not None and self.progress.live:
                # Reading metrics syncs with the device: only at logging steps.
                log_now = self.global_step % self.log_every_n_steps == 0 or step == num_batches
                self.progress.update(step, acc.compute() if log_now else None)
        return acc.compute()

    @torch.no_grad()
    def evaluate(self, batches: Batches, outputs: list[torch.Tensor] | None = None) -> dict[str, float]:
        """Loss and metrics over ``batches`` in eval mode, without gradients.

        Args:
            batches: the split to evaluate.
            outputs: if given, each batch's model outputs are appended to it (on the device),
                so one pass gives both the metrics and the predictions.
        """
        self.model.eval()
        acc = MetricAccumulator(self.task)
        for x, y in batches:
            output, loss = self._outputs_and_loss(x, y)
            acc.update(output, y, loss)
            if outputs is not None:
                outputs.append(output.detach())
        return acc.compute()

    def fit(self, train_batches: Batches, val_batches: Batches) -> str:
        """Train until ``max_epochs`` or an early stop.

        Returns:
            ``completed`` or ``early_stopped``.

        Raises:
            TrainingDiverged: the training loss became NaN or infinite.
        """
        while self.epoch < self.max_epochs:
            self.epoch += 1
            start = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]  # the LR this epoch trains with
            if self.progress is not None:
                self.progress.start_epoch(self.epoch, len(train_batches))
            train = self.train_epoch(train_batches)
            val = self.evaluate(val_batches)
            row: dict[str, Any] = {"epoch": self.epoch}
            row.update({f"train_{k}": v for k, v in train.items()})
            row.update({f"val_{k}": v for k, v in val.items()})
            row["lr"] = lr
            row["epoch_seconds"] = time.perf_counter() - start  # train + validation
            self.history.append(row)
            if not math.isfinite(row["train_loss"]):
                # Checked once per epoch, not per step: a per-step check would stall on the device.
                if self.progress is not None:
                    self.progress.close()
                if self.on_epoch_end is not None:
                    self.on_epoch_end(self, row, False)
                raise TrainingDiverged(
                    f"the training loss became {row['train_loss']} during epoch {self.epoch} "
                    f"(by step {self.global_step}): lower optim.lr, or pick a more stable optimizer (optim=adam).")
            if self.scheduler is not None:
                self.scheduler.step_epoch(row)
            improved = self.stopper.update(self.epoch, row[self.stopper.monitor])
            if improved:
                self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            if self.progress is not None:
                self.progress.end_epoch(row, improved)
            if self.on_epoch_end is not None:
                self.on_epoch_end(self, row, improved)
            if self.stopper.should_stop:
                return "early_stopped"
        return "completed"

    def restore_best(self) -> bool:
        """Load the best epoch's weights into the model; False if no epoch improved."""
        if self.best_state is None:
            return False
        self.model.load_state_dict(self.best_state)
        return True

    def state_dict(self) -> dict[str, Any]:
        """The training state a checkpoint holds (plain data and tensors only)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "early_stopping": self.stopper.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "history": [dict(row) for row in self.history],
        }

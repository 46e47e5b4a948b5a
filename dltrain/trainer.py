"""The training loop: ``fit`` runs epochs of ``train_epoch`` then ``evaluate``.

Phases follow the notes: ``model.train()`` with gradients while training, ``model.eval()``
under ``torch.no_grad()`` for validation and test. Losses and metrics are summed on the
device and read once per epoch (and at ``log_every_n_steps``), never per step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch import nn

from dltrain.callbacks import EarlyStopping
from dltrain.errors import UserError
from dltrain.metrics import MetricAccumulator
from dltrain.progress import ProgressDisplay


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
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.best_state: dict[str, torch.Tensor] | None = None

    def train_epoch(self, batches: Batches) -> dict[str, float]:
        """One pass over the training batches with gradient steps."""
        self.model.train()
        acc = MetricAccumulator(self.task)
        num_batches = len(batches)
        for step, (x, y) in enumerate(batches, start=1):
            output = self.model(x)  # (B, num_outputs)
            loss = self.loss_fn(output, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            acc.update(output, y, loss)
            self.global_step += 1
            if self.progress is not None and self.progress.live:
                # Reading metrics syncs with the device: only at logging steps.
                log_now = self.global_step % self.log_every_n_steps == 0 or step == num_batches
                self.progress.update(step, acc.compute() if log_now else None)
        return acc.compute()

    @torch.no_grad()
    def evaluate(self, batches: Batches) -> dict[str, float]:
        """Loss and metrics over ``batches`` in eval mode, without gradients."""
        self.model.eval()
        acc = MetricAccumulator(self.task)
        for x, y in batches:
            output = self.model(x)
            acc.update(output, y, self.loss_fn(output, y))
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
            if self.progress is not None:
                self.progress.start_epoch(self.epoch, len(train_batches))
            train = self.train_epoch(train_batches)
            val = self.evaluate(val_batches)
            row: dict[str, Any] = {"epoch": self.epoch}
            row.update({f"train_{k}": v for k, v in train.items()})
            row.update({f"val_{k}": v for k, v in val.items()})
            row["lr"] = self.optimizer.param_groups[0]["lr"]
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
            "history": [dict(row) for row in self.history],
        }

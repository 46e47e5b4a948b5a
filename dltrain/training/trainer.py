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

from dltrain.training.callbacks import EarlyStopping
from dltrain.training.checkpoint import to_cpu
from dltrain.training.distributed import Ranks
from dltrain.errors import UserError
from dltrain.training.metrics import MetricAccumulator
from dltrain.training.progress import ProgressDisplay
from dltrain.training.rng import fork_rng, rng_state, set_rng_state
from dltrain.training.signals import Interrupted, StopRequest, signal_name

if TYPE_CHECKING:
    from dltrain.schedulers import LRSchedule


class Batches(Protocol):
    """What the trainer reads: ``(x, y)`` pairs and how many there are (TensorBatches)."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...


class TrainingDiverged(UserError):
    """The loss, the weights or the monitored metric became NaN or infinite."""

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
        train_forward: what computes the outputs of training steps, when not ``forward``:
            the DistributedDataParallel wrapper, whose backward averages the gradients over
            the ranks (evaluation runs without it: no rank waits for another's batches).
        ranks: the processes training together (``Ranks()``: this one alone). With several,
            each trains on its shard, the epoch's metrics are summed over all of them, and
            they agree after every step on a stop signal and at logging steps on a diverged
            loss, so all stop after the same step; :meth:`checkpoint` must then be called on
            every rank (it gathers their random states).
        memory_format: the layout of every batch the model sees (``torch.channels_last``
            for ``trainer.channels_last``); a batch already in it is used as it is, others
            (the affine augmentations' output, DataLoader batches) are converted.
        restore_best_weights: keep a copy of the best epoch's weights for :meth:`restore_best`.
        stop: read after every step; once it holds a signal, the loop stops cleanly.
        meta: what every checkpoint holds besides the training state (config, versions, data).
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
        train_forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
        ranks: Ranks | None = None,
        memory_format: torch.memory_format | None = None,
        restore_best_weights: bool = True,
        stop: StopRequest | None = None,
        meta: dict[str, Any] | None = None,
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
        self.train_forward = train_forward if train_forward is not None else self.forward
        self.ranks = ranks or Ranks()
        self.memory_format = memory_format
        # LBFGS evaluates the loss several times per step, through a closure.
        self.uses_closure = isinstance(optimizer, torch.optim.LBFGS)
        self.restore_best_weights = restore_best_weights
        self.stop = stop
        self.meta = meta or {}
        self.device = next(model.parameters()).device
        self.epoch = 0  # epochs completed
        self.step_in_epoch = 0  # training steps done in the epoch under way
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.healthy = True  # false once the monitored metric is non-finite: no checkpoint then
        self.train_batches: Batches | None = None
        self.validates = True  # false for a run without a validation split: no val_* metrics then
        self._epoch_acc = MetricAccumulator(task)
        self._epoch_lr = 0.0
        self._epoch_started = time.perf_counter()
        self._resume_partial: dict[str, Any] | None = None
        self._pending: tuple[Any, Any] | None = None
        self._seconds_before = 0.0  # in fit() before this one: earlier segments of a resumed run, or earlier calls
        self._fit_started: float | None = None

    def _outputs_and_loss(self, x: torch.Tensor, y: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor]
                          | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if forward is None:  # not `or`: a compiled module has no truth value
            forward = self.forward
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)  # no copy when the batch is in it already
        if self.autocast_dtype is None:
            output = forward(x)  # (B, num_outputs)
            return output, self.loss_fn(output, y)
        device_type = x.device.type
        with torch.autocast(device_type, dtype=self.autocast_dtype):
            output = forward(x)
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
            output, loss = self._outputs_and_loss(x, y, self.train_forward)
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
            output, loss = self._outputs_and_loss(x, y, self.train_forward)
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
        """One pass over the training batches with gradient steps (continuing an epoch a
        mid-epoch checkpoint stopped in, after a resume).

        Raises:
            TrainingDiverged: the loss became NaN or infinite (checked at logging steps and at
                the end of the epoch, where reading it from the device costs nothing extra).
            Interrupted: a stop was requested (SIGINT, SIGTERM, SIGUSR1, SIGUSR2); the state after the
                last finished step is in :meth:`state_dict`.
        """
        self.model.train()
        acc = self._epoch_acc
        num_batches = len(batches)
        log_every, progress = self.log_every_n_steps, self.progress
        distributed = self.ranks.distributed
        checked = self.step_in_epoch  # the loss sum was finite up to this step
        recent: list[torch.Tensor] = []  # the losses since then, to name the step a divergence began
        for step, (x, y) in enumerate(batches, start=self.step_in_epoch + 1):
            output, loss = self.train_step(x, y)
            acc.update(output, y, loss)
            recent.append(loss.detach())  # a reference, not a device operation
            self.global_step += 1
            self.step_in_epoch = step
            # Reading from the device waits for it: only at logging steps and the epoch's end.
            logging_step = self.global_step % log_every == 0 or step == num_batches
            bad = logging_step and not torch.isfinite(acc.sums["loss"]).item()
            signum = self.stop.signum if self.stop is not None else None
            if distributed:  # every rank takes the same decision after the same step
                signum, bad_anywhere = self.ranks.vote(signum or 0, int(bad))
                signum = signum or None
                if bad_anywhere and not bad:
                    raise self._peer_diverged(step, num_batches)
            if bad:
                self._diverged(recent, checked, num_batches)
            if logging_step:
                checked = step
                recent.clear()
                if progress is not None and progress.live:
                    progress.update(step, acc.compute())
            elif progress is not None and progress.live:
                progress.update(step, None)
            if signum is not None:
                # Never save a diverged state as a checkpoint to resume from.
                bad = not torch.isfinite(acc.sums["loss"]).item()
                if distributed and self.ranks.vote(int(bad))[0] and not bad:
                    raise self._peer_diverged(step, num_batches)
                if bad:
                    self._diverged(recent, checked, num_batches)
                if not self._weights_finite():
                    raise TrainingDiverged(f"the weights became NaN or infinite in epoch {self.epoch + 1} by step "
                                           f"{step}: lower optim.lr or clip the gradients "
                                           "(regularization.grad_clip=1.0)")
                raise Interrupted(signum, f"interrupted by {signal_name(signum)} in epoch "
                                          f"{self.epoch + 1} after step {step} of {num_batches}")
        return self._reduce(acc)

    def _peer_diverged(self, step: int, num_batches: int) -> TrainingDiverged:
        return TrainingDiverged(f"the training loss of another rank became NaN or infinite in epoch {self.epoch + 1} "
                               f"by step {step} of {num_batches}: lower optim.lr or clip the gradients "
                               "(regularization.grad_clip=1.0)")

    def _reduce(self, acc: MetricAccumulator) -> dict[str, float]:
        """The metrics of ``acc`` over every rank's examples (this rank's alone in one process)."""
        if not self.ranks.distributed:
            return acc.compute()
        return MetricAccumulator.merged(self.task, self.ranks.all_gather(to_cpu(acc.state_dict()))).compute()

    def _diverged(self, recent: list[torch.Tensor], checked: int, num_batches: int) -> None:
        """Raise for a loss sum that is no longer finite; ``recent`` holds the losses of the
        steps after ``checked``, the last one at which it still was."""
        step = checked + len(recent)
        losses = torch.stack(recent) if recent else torch.empty(0)
        bad = (~torch.isfinite(losses)).nonzero()
        first = checked + int(bad[0]) + 1 if len(bad) else step  # else finite losses whose sum overflowed
        value = float(losses[first - checked - 1]) if len(bad) else math.nan
        raise TrainingDiverged(
            f"the training loss became {value} in epoch {self.epoch + 1} at step {first} of {num_batches} "
            f"(global step {self.global_step - step + first}): lower optim.lr (it is "
            f"{self.optimizer.param_groups[0]['lr']:g}), clip the gradients (regularization.grad_clip=1.0), "
            "or pick a more stable optimizer (optim=adam)")

    @torch.no_grad()
    def evaluate(self, batches: Batches, outputs: list[torch.Tensor] | None = None,
                 stoppable: bool = False) -> dict[str, float]:
        """Loss and metrics over ``batches`` in eval mode, without gradients.

        Args:
            batches: the split to evaluate.
            outputs: if given, each batch's model outputs are appended to it (on the device),
                so one pass gives both the metrics and the predictions.
            stoppable: check for a stop request after each batch (validation).
        """
        self.ranks.sync_buffers(self.model)  # one model for every rank's share of the split
        self.model.eval()
        acc = MetricAccumulator(self.task)
        # Ranks may hold different numbers of evaluation batches: they agree on a stop once, after.
        check_each = stoppable and self.stop is not None and not self.ranks.distributed
        for x, y in batches:
            output, loss = self._outputs_and_loss(x, y)
            acc.update(output, y, loss)
            if outputs is not None:
                outputs.append(output.detach())
            if check_each and self.stop.signum is not None:
                raise Interrupted(self.stop.signum, f"interrupted by {signal_name(self.stop.signum)} while "
                                                    f"validating epoch {self.epoch + 1}")
        if stoppable and self.ranks.distributed:
            signum = self.ranks.vote((self.stop.signum or 0) if self.stop is not None else 0)[0]
            if signum:
                raise Interrupted(signum, f"interrupted by {signal_name(signum)} while validating epoch "
                                          f"{self.epoch + 1}")
        return self._reduce(acc)

    def fit(self, train_batches: Batches, val_batches: Batches | None) -> str:
        """Train until ``max_epochs`` or an early stop (continuing where :meth:`load_state_dict`
        left off). With ``val_batches`` None (no validation split) no epoch validates: every
        rank skips it alike, so none waits on another's validation metrics.

        Returns:
            ``completed`` or ``early_stopped``.

        Raises:
            TrainingDiverged: the training loss, the weights or (with ``check_finite``) the
                monitored metric became NaN or infinite.
            Interrupted: a stop was requested; :meth:`state_dict` holds the state to resume.
        """
        self.train_batches = train_batches
        self.validates = val_batches is not None
        if self._pending is not None:  # a resume: the data order and RNGs as they were saved
            order, rng = self._pending
            self._pending = None
            if order is not None and hasattr(train_batches, "order"):
                train_batches.order.load_state_dict(order)
            rng() if callable(rng) else set_rng_state(rng)
        self._fit_started = time.perf_counter()
        try:
            while self.epoch < self.max_epochs and not self.stopper.should_stop:
                self._run_epoch(train_batches, val_batches)
        finally:
            self._seconds_before, self._fit_started = self.train_seconds, None
        return "early_stopped" if self.stopper.should_stop else "completed"

    @property
    def train_seconds(self) -> float:
        """Seconds spent in :meth:`fit` over the whole run: every segment of a resumed run
        (from the checkpoint) and this one so far."""
        running = time.perf_counter() - self._fit_started if self._fit_started is not None else 0.0
        return self._seconds_before + running

    def _run_epoch(self, train_batches: Batches, val_batches: Batches | None) -> None:
        number = self.epoch + 1
        partial, self._resume_partial = self._resume_partial, None
        self._epoch_acc = MetricAccumulator(self.task)
        if partial:
            if self.ranks.is_main:  # the sums of every rank's steps so far (merged when saved)
                self._epoch_acc.load_state_dict(partial["train"], self.device)
            self.step_in_epoch = int(partial["step"])
            self._epoch_lr = float(partial["lr"])
            self._epoch_started = time.perf_counter() - float(partial["seconds"])
        else:
            self.step_in_epoch = 0
            self._epoch_lr = self.optimizer.param_groups[0]["lr"]  # the LR this epoch trains with
            self._epoch_started = time.perf_counter()
        if self.progress is not None:
            self.progress.start_epoch(number, len(train_batches))
        try:
            train = self.train_epoch(train_batches)
        except TrainingDiverged:
            self._record_diverged(self._row(number, self._epoch_acc.compute(), None))
            raise
        val = self.evaluate(val_batches, stoppable=True) if val_batches is not None else None
        # Rank 0's row on every rank (the metrics are the same, the timings not): every
        # decision taken from it (early stopping, the schedule, checkpoints) is the same.
        row = self.ranks.broadcast(self._row(number, train, val))
        if not self._weights_finite():  # the last step's gradients overflowed
            self._record_diverged(row)
            raise TrainingDiverged(
                f"the weights became NaN or infinite in epoch {number} at its last step: lower optim.lr (it is "
                f"{self.optimizer.param_groups[0]['lr']:g}) or clip the gradients (regularization.grad_clip=1.0)")
        self.history.append(row)
        self.epoch, self.step_in_epoch = number, 0
        if self.scheduler is not None:
            self.scheduler.step_epoch(row)
        monitor = self.stopper.monitor  # None: a validation monitor in a run without validation
        improved = monitor is not None and self.stopper.update(number, row[monitor])
        if improved and self.restore_best_weights:
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.healthy = not self.stopper.non_finite
        if self.progress is not None:
            self.progress.end_epoch(row, improved)
        if self.on_epoch_end is not None:
            self.on_epoch_end(self, row, improved)
        if self.stopper.non_finite:
            raise TrainingDiverged(f"{self.stopper.stop_reason}: lower optim.lr (it is "
                                   f"{self.optimizer.param_groups[0]['lr']:g}) or clip the gradients "
                                   "(regularization.grad_clip=1.0)")

    def _row(self, number: int, train: dict[str, float], val: dict[str, float] | None) -> dict[str, Any]:
        """The epoch's line of metrics.csv; a validation that did not run reads NaN, and a run
        without a validation split has no val_* columns."""
        row: dict[str, Any] = {"epoch": number}
        row.update({f"train_{k}": v for k, v in train.items()})
        if self.validates:
            row.update({f"val_{k}": val[k] if val is not None else math.nan for k in train})
        row["lr"] = self._epoch_lr
        row["epoch_seconds"] = time.perf_counter() - self._epoch_started  # train + validation
        return row

    def _record_diverged(self, row: dict[str, Any]) -> None:
        """The epoch a divergence stopped still gets its metrics line (no checkpoint)."""
        self.healthy = False
        if self.progress is not None:
            self.progress.close()
        if self.on_epoch_end is not None:
            self.on_epoch_end(self, row, False)

    def _weights_finite(self) -> bool:
        flags = [torch.isfinite(p).all() for p in self.model.parameters() if p.is_floating_point()]
        return bool(torch.stack(flags).all()) if flags else True

    def restore_best(self) -> bool:
        """Load the best epoch's weights into the model; False if no epoch improved."""
        if self.best_state is None:
            return False
        self.model.load_state_dict(self.best_state)
        return True

    def state_dict(self) -> dict[str, Any]:
        """The whole training state, as tensors and plain data (``weights_only=True`` loads it):
        weights, optimizer, schedule, grad scaler, counters, early stopping, the best weights
        (when they are not the current ones), the metrics history, the training seconds so far,
        every RNG, the data order, and inside an epoch (after an interrupt) the steps done and
        the metric sums so far."""
        inside = self.step_in_epoch > 0
        best = self.best_state
        if best is not None and self.stopper.best_epoch == self.epoch and not inside:
            best = None  # the current weights are the best ones: no second copy
        order = self.train_batches.order.state_dict(self.step_in_epoch) if hasattr(self.train_batches, "order") \
            else None
        partial_train = self._epoch_acc.state_dict() if inside else None
        rng = rng_state()
        extra: dict[str, Any] = {}
        if self.ranks.distributed:  # one file for all ranks: their random states, their partial sums merged
            extra = {"world_size": self.ranks.world_size, "rng_ranks": self.ranks.all_gather(to_cpu(rng))}
            if inside:
                partial_train = MetricAccumulator.merged(
                    self.task, self.ranks.all_gather(to_cpu(partial_train))).state_dict()
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "early_stopping": self.stopper.state_dict(),
            "best_value": self.stopper.best,
            "best_model": best,
            "history": [dict(row) for row in self.history],
            "train_seconds": self.train_seconds,
            "rng": rng,
            "data_order": order,
            "partial_epoch": {
                "step": self.step_in_epoch, "train": partial_train, "lr": self._epoch_lr,
                "seconds": time.perf_counter() - self._epoch_started,
            } if inside else None,
            **extra,
        }

    def checkpoint(self) -> dict[str, Any]:
        """What a checkpoint file holds: :meth:`state_dict` and ``meta``, every tensor on the CPU."""
        return to_cpu({**self.state_dict(), **self.meta})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`. Weights, optimizer and counters are restored now;
        the data order and the RNGs when :meth:`fit` starts, after everything that draws
        random numbers while a run is set up."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        _match_layouts(self.optimizer)
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("grad_scaler") is not None:
            self.scaler.load_state_dict(state["grad_scaler"])
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.stopper.load_state_dict(state["early_stopping"])
        self.history = [dict(row) for row in state["history"]]
        self.best_state = None
        if self.restore_best_weights and self.stopper.best_epoch is not None:
            saved = state.get("best_model")
            self.best_state = ({k: v.to(self.device) for k, v in saved.items()} if saved is not None else
                               {k: v.detach().clone() for k, v in self.model.state_dict().items()})
        self._resume_partial = state.get("partial_epoch")
        self._seconds_before = _seconds_so_far(state)
        # The data order and the step count carry over to any world size: trainer.batch_size is
        # the global batch, so step k of an epoch is the same batch of examples on 1 rank or 8.
        self._pending = (state.get("data_order"), self._rng_for(state))

    def _rng_for(self, state: dict[str, Any]) -> dict[str, Any] | Callable[[], None]:
        """This rank's random state in ``state``: its own when the checkpoint has one per rank
        of a run of this size, else the saved one, forked per rank (a resume at another world
        size cannot draw exactly what the saved run would have)."""
        saved = state.get("rng_ranks")
        if saved is not None and len(saved) == self.ranks.world_size:
            return saved[self.ranks.rank]
        if not self.ranks.distributed:
            return state["rng"]
        return lambda: (set_rng_state(state["rng"]), fork_rng(self.ranks.rank))


def _seconds_so_far(state: dict[str, Any]) -> float:
    """The training seconds a checkpoint's run spent; for one written before checkpoints
    kept them, what its history says: its epochs' times, and the steps of an epoch under way."""
    if state.get("train_seconds") is not None:
        return float(state["train_seconds"])
    partial = state.get("partial_epoch") or {}
    return sum(float(row.get("epoch_seconds") or 0.0) for row in state["history"]) + float(partial.get("seconds", 0.0))


def _match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (moments, momentum buffers) its parameter's
    memory layout. A checkpoint's state comes back in the layout it was saved in; after a
    resume that changes ``trainer.channels_last``, a fused step, which reads the tensors as
    flat memory, would pair a weight's elements with the wrong moments."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    optimizer.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)

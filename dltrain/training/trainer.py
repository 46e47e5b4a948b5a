"""The training loop: ``fit`` runs epochs of ``train_epoch`` then ``evaluate``.

Phases follow the notes: ``model.train()`` with gradients while training, ``model.eval()``
under ``torch.no_grad()`` for validation and test. Losses and metrics are summed on the
device and read once per epoch (and at ``log_every_n_steps``), never per step.

Each training step is an :class:`~dltrain.training.step.OptimizerStep` (forward, loss,
backward, clip, update), then the schedule's batch step; after it, a
:class:`~dltrain.training.guard.StepGuard` says whether the loop goes on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from dltrain.errors import TrainingDiverged
from dltrain.tasks import Task
from dltrain.training.accumulate import Accumulation, group_end
from dltrain.training.budget import Budget
from dltrain.training.callbacks import EarlyStopping
from dltrain.training.checkpoint import to_cpu
from dltrain.training.distributed import Ranks
from dltrain.training.epoch_end import validate_epoch, watch
from dltrain.training.guard import StepGuard, weights_finite
from dltrain.training.metrics import MetricAccumulator
from dltrain.training.profiler import Profiler
from dltrain.training.progress import ProgressDisplay
from dltrain.training.signals import StopRequest
from dltrain.training.state import load_trainer_state, restore_data_order, start_epoch, trainer_state
from dltrain.training.step import OptimizerStep, StepOptions

if TYPE_CHECKING:
    from dltrain.schedulers import LRSchedule
    from dltrain.training.averaging import WeightAverage
    from dltrain.training.diagnostics import Diagnostics
    from dltrain.training.step_checkpoints import StepCheckpoints
    from dltrain.training.top_k import TopKCheckpoints

__all__ = ["Batches", "Hooks", "StepOptions", "Trainer", "TrainingDiverged"]


class Batches(Protocol):
    """What the trainer reads: ``(x, y)`` pairs and how many there are (TensorBatches)."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class Hooks:
    """What watches the loop from outside; nothing by default.

    Attributes:
        on_epoch_end: called as ``on_epoch_end(trainer, row, improved)`` after each epoch,
            to write metrics and checkpoints.
        progress: the console display; None for silence.
        stop: read after every step; once it holds a signal, the loop stops cleanly.
        log_every_n_steps: how often the running loss is read from the device, for the
            progress bar and the divergence check.
        on_epoch_start: called with the epoch's number before it trains, also when a resume
            continues it (the fine-tune schedule sets what is frozen from it).
        diagnostics: measures the first step of every epoch, layer by layer
            (``trainer.diagnostics``); None measures nothing.
        step_checkpoints: writes ``last.pt`` inside an epoch (``trainer.checkpoint.every_n_*``).
        top_k: the k best epochs' checkpoints (``trainer.checkpoint.save_top_k``); its list
            of kept files is part of the training state.
        profiler: times the phases of the loop (``trainer.profiler``); None times nothing.
    """

    on_epoch_end: Callable[[Trainer, dict[str, Any], bool], None] | None = None
    progress: ProgressDisplay | None = None
    stop: StopRequest | None = None
    log_every_n_steps: int = 50
    on_epoch_start: Callable[[int], None] | None = None
    diagnostics: Diagnostics | None = None
    step_checkpoints: StepCheckpoints | None = None
    top_k: TopKCheckpoints | None = None
    profiler: Profiler | None = None


class Trainer:
    """Runs the epochs of one experiment.

    Args:
        model, optimizer, loss_fn: what to train, how, and against what.
        task: the metrics' kind (the data's task for supervised training; ``objective.metric_kind``).
        max_epochs: upper bound on epochs.
        stopper: tracks the monitored metric and decides early stops.
        scheduler: the learning-rate schedule, stepped after each batch and epoch.
        options: how each step runs (:class:`StepOptions`).
        hooks: what watches the loop (:class:`Hooks`).
        ranks: the processes training together (``Ranks()``: this one alone). With several,
            each trains on its shard, the epoch's metrics are summed over all of them, and
            they agree after every step on a stop signal and at logging steps on a diverged
            loss, so all stop after the same step; :meth:`checkpoint` must then be called on
            every rank (it gathers their random states).
        restore_best_weights: keep a copy of the best epoch's weights for :meth:`restore_best`.
        meta: what every checkpoint holds besides the training state (config, versions, data).
        budget: max_steps, max_time and which epochs validate (:class:`Budget`); none by default.
        averaging: the EMA or SWA of the weights (:class:`WeightAverage`): updated after each
            optimizer step and epoch; what validation, ``best_state`` and the test use while it
            is :attr:`~WeightAverage.evaluated`. None: no averaging.
        objective: the ``task=`` (:class:`~dltrain.tasks.Task`): it makes the training step,
            adds its metrics to each epoch's row (``end_epoch``) and has its state in every
            checkpoint. None: supervised training.
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
        scheduler: LRSchedule | None = None,
        options: StepOptions | None = None,
        hooks: Hooks | None = None,
        ranks: Ranks | None = None,
        restore_best_weights: bool = True,
        meta: dict[str, Any] | None = None,
        budget: Budget | None = None,
        averaging: WeightAverage | None = None,
        objective: Task | None = None,
    ) -> None:
        hooks = hooks or Hooks()
        self.model, self.optimizer, self.loss_fn, self.task = model, optimizer, loss_fn, task
        self.max_epochs, self.stopper, self.scheduler = max_epochs, stopper, scheduler
        self.on_epoch_end, self.on_epoch_start = hooks.on_epoch_end, hooks.on_epoch_start
        self.diagnostics = hooks.diagnostics
        self.ranks = ranks or Ranks()
        self.restore_best_weights = restore_best_weights
        self.meta = meta or {}
        self.averaging = averaging
        self.device = next(model.parameters()).device
        self.profiler = hooks.profiler or Profiler()
        self.objective = objective if objective is not None else Task()
        self.step: OptimizerStep = self.objective.make_step(model, optimizer, loss_fn, options or StepOptions(),
                                                            self.profiler)
        k = self.step.options.accumulate_grad_batches
        self.accumulation = Accumulation(self.step, k, self.ranks) if k > 1 else None  # None: a step per batch
        self.guard = StepGuard(model, self._lr, self.ranks, hooks.stop, hooks.progress, hooks.log_every_n_steps, k)
        self.budget = budget or Budget()
        if self.budget.max_seconds is not None and self.ranks.is_main:  # rank 0's clock decides for all
            self.guard.out_of_time = lambda: self.train_seconds >= self.budget.max_seconds
        self.step_checkpoints, self.top_k = hooks.step_checkpoints, hooks.top_k
        if self.step_checkpoints is not None:
            self.guard.checkpoint_due = self.step_checkpoints.due
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

    # The guard owns the stop request and the display (it reads them after every step); the
    # trainer reads them through it, so replacing one on either is never silently ignored.
    @property
    def progress(self) -> ProgressDisplay | None:
        """The console display; None for silence."""
        return self.guard.progress

    @progress.setter
    def progress(self, value: ProgressDisplay | None) -> None:
        self.guard.progress = value

    @property
    def stop(self) -> StopRequest | None:
        """The stop request read after every step."""
        return self.guard.stop

    @stop.setter
    def stop(self, value: StopRequest | None) -> None:
        self.guard.stop = value

    def _lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on a batch, or with accumulation one micro-step of the group under
        way (the optimizer steps after its last); returns the outputs and the data loss (no penalty)."""
        output, loss = (self.step if self.accumulation is None else self.accumulation)(x, y)
        if self.accumulation is None or self.accumulation.stepped:
            self.after_optimizer_step()
        return output, loss

    def after_optimizer_step(self) -> None:
        """The schedule's batch step, the averaging's update and the profiler's step."""
        if self.scheduler is not None:
            self.scheduler.step_batch()
        if self.averaging is not None:  # after the optimizer step, as the schedule
            with self.profiler.phase("averaging"):
                self.averaging.after_step()
        self.profiler.step()  # trainer.profiler=pytorch: its steps are optimizer steps

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
        self.guard.start_epoch(self.epoch + 1, len(batches), self.step_in_epoch, acc)
        accumulation, count = self.accumulation, len(batches)
        k = accumulation.k if accumulation is not None else 1
        # The epoch's first optimizer step is measured layer by layer (trainer.diagnostics): with
        # accumulation its group's last micro-step, whose gradients are the whole group's.
        measured = group_end(self.step_in_epoch, k, count) if self.diagnostics is not None else None  # None: never
        timed = self.profiler.batches(batches)  # trainer.profiler: the wait for each batch
        source = timed if accumulation is None else accumulation.batches(timed, count, self.step_in_epoch)
        for step, (x, y) in enumerate(() if self.budget.steps_done(self.global_step) else source,
                                      start=self.step_in_epoch + 1):
            if step == measured:
                output, loss = self.diagnostics.measure(self.train_step, x, y)
            else:
                output, loss = self.train_step(x, y)
            acc.update(output, y, loss)
            stepped = accumulation is None or accumulation.stepped  # global_step counts optimizer steps
            self.global_step, self.step_in_epoch = self.global_step + stepped, step
            if self.guard.after_step(step, self.global_step, loss, stepped):  # trainer.checkpoint.every_n_*
                self.step_checkpoints.write(self)
            if self.global_step == self.budget.max_steps:  # trainer.max_steps: the epoch ends here
                break
        return self.reduce(acc)

    def reduce(self, acc: MetricAccumulator) -> dict[str, float]:
        """The metrics of ``acc`` over every rank's examples (this rank's alone in one process)."""
        if not self.ranks.distributed:
            return acc.compute()
        return MetricAccumulator.merged(self.task, self.ranks.all_gather(to_cpu(acc.state_dict()))).compute()

    @property
    def evaluated_model(self) -> nn.Module:
        """The module whose weights the run evaluates now: the averaged copy, or the model."""
        averaging = self.averaging
        return averaging.module if averaging is not None and averaging.evaluated else self.model

    @torch.no_grad()
    def evaluate(self, batches: Batches, outputs: list[torch.Tensor] | None = None,
                 stoppable: bool = False, model: nn.Module | None = None) -> dict[str, float]:
        """Loss and metrics over ``batches`` in eval mode, without gradients.

        Args:
            batches: the split to evaluate.
            outputs: if given, each batch's model outputs are appended to it (on the device),
                so one pass gives both the metrics and the predictions.
            stoppable: check for a stop request after each batch (validation).
            model: the module to evaluate; by default :attr:`evaluated_model`.
        """
        model = model if model is not None else self.evaluated_model
        self.ranks.sync_buffers(model)  # one model for every rank's share of the split
        model.eval()
        forward = None if model is self.model else model  # the model's own forward may be compiled
        acc = MetricAccumulator(self.task)
        self.step.begin_evaluation()
        for x, y in batches:
            output, loss = self.step.eval_outputs_and_loss(x, y, forward)
            acc.update(output, y, loss)
            if outputs is not None:
                outputs.append(output.detach())
            if stoppable:
                self.guard.after_validation_batch(self.epoch + 1)
        if stoppable:
            self.guard.after_validation(self.epoch + 1)
        return self.reduce(acc)

    def fit(self, train_batches: Batches, val_batches: Batches | None) -> str:
        """Train until ``max_epochs``, ``budget.max_steps`` or an early stop (continuing where :meth:`load_state_dict`
        left off). With ``val_batches`` None (no validation split) no epoch validates: every
        rank skips it alike, so none waits on another's validation metrics.

        Returns:
            ``completed`` or ``early_stopped``.

        Raises:
            TrainingDiverged: the training loss, the weights or (with ``check_finite``) the
                monitored metric became NaN or infinite.
            Interrupted: a stop was requested; :meth:`state_dict` holds the state to resume.
            TimeLimitReached: ``budget.max_seconds`` ran out; the same holds.
        """
        self.train_batches = train_batches
        self.validates = val_batches is not None
        restore_data_order(self, train_batches)  # after a resume
        self._fit_started = time.perf_counter()
        self.profiler.start()
        try:
            # An epoch a stop cut short right at max_steps still ends (validates, is written).
            while (self.epoch < self.max_epochs and not self.stopper.should_stop
                   and (self._resume_partial is not None or not self.budget.steps_done(self.global_step))):
                self._run_epoch(train_batches, val_batches)
        finally:
            self.profiler.stop()
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
        start_epoch(self)  # or continue the one a mid-epoch checkpoint saved
        if self.on_epoch_start is not None:
            self.on_epoch_start(number)
        if self.progress is not None:
            self.progress.start_epoch(number, len(train_batches))
        try:
            train = self.train_epoch(train_batches)
        except TrainingDiverged:
            self._record_diverged(self.epoch_row(number, self._epoch_acc.compute(), None))
            raise
        row, validates = validate_epoch(self, number, train, train_batches, val_batches)
        self.objective.end_epoch(self, row)  # the task's own metrics, before anything reads the row
        if not weights_finite(self.model):  # the last step's gradients overflowed
            self._record_diverged(row)
            raise TrainingDiverged(TrainingDiverged.WEIGHTS, number, step=self.step_in_epoch, steps=len(train_batches),
                                   global_step=self.global_step, lr=self._lr())
        self.history.append(row)
        self.epoch, self.step_in_epoch = number, 0
        if self.scheduler is not None:
            self.scheduler.step_epoch(row, validated=validates)
        improved = watch(self, number, row, validates)
        self.healthy = not self.stopper.non_finite
        if self.progress is not None:
            self.progress.end_epoch(row, improved)
        if self.on_epoch_end is not None:
            self.on_epoch_end(self, row, improved)
        if self.stopper.non_finite:
            raise TrainingDiverged(TrainingDiverged.METRIC, number, metric=self.stopper.monitor,
                                   value=self.stopper.non_finite_value, lr=self._lr())

    def epoch_row(self, number: int, train: dict[str, float], val: dict[str, float] | None) -> dict[str, Any]:
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

    def restore_best(self) -> bool:
        """Load the best epoch's weights into the model evaluated (:attr:`evaluated_model`);
        False if no epoch improved."""
        if self.best_state is None:
            return False
        self.evaluated_model.load_state_dict(self.best_state)
        return True

    def state_dict(self) -> dict[str, Any]:
        """The whole training state (:func:`~dltrain.training.state.trainer_state`)."""
        return trainer_state(self)

    def checkpoint(self) -> dict[str, Any]:
        """What a checkpoint file holds: :meth:`state_dict` and ``meta``, every tensor on the CPU."""
        return to_cpu({**self.state_dict(), **self.meta})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (:func:`~dltrain.training.state.load_trainer_state`)."""
        load_trainer_state(self, state)

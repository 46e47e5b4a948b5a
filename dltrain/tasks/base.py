"""The task interface (``task=``) and the supervised default.

A task decides what a training step computes; the loop (:class:`~dltrain.training.trainer.Trainer`),
checkpoints, exact resume, signals, divergence checks and the run directory are shared. A task is
built by the build step from ``cfg.task`` (``TASKS.build(cfg.task.name, **options)``: its keys as
keyword arguments, no config) and travels as :attr:`~dltrain.build.Experiment.task` to the run
and as ``Trainer(..., objective=task)`` to the loop. Every hook below has a default that does
what supervised training always did, so a task overrides only where it differs.

When each hook is called, in a run's order:

1. :meth:`Task.check` (build step, after the data is read, before the model is built): refuse
   data or options it cannot train, as one-line ``ConfigError``. The model/task match is
   checked before it from the model's registered facts (``ModelFacts.tasks``; see
   :func:`check_model_task`), and the data's kind of input and the processes training together
   from its own (``TaskFacts.inputs``, ``distributed``; see :func:`check_task_fits`). On a resume,
   :meth:`Task.check_resumed` first compares the files the checkpoint's task state identifies with
   those the config names now, before anything is built or written.
2. :meth:`Task.loss` (build step): the loss the task trains with, or None for the ``loss=``
   group's. Its ``output_width`` is the model's ``num_outputs``.
   :meth:`Task.make_optimizer` (build step): the run's optimizer, when the task makes its own.
3. :meth:`Task.metric_kind` (build step and trainer): the :class:`~dltrain.training.metrics.MetricAccumulator`
   kind of every split's metrics (``metrics.csv``'s columns, what early stopping may watch);
   :meth:`Task.watched`: the metric early stopping and ``best.pt`` follow.
4. :meth:`Task.make_step` (trainer construction): the training step, called ``step(x, y)`` ->
   ``(output, loss)`` per batch; :meth:`~dltrain.training.step.OptimizerStep.eval_outputs_and_loss`
   is what validation and the test call per batch. :meth:`Task.target` (``dltrain-eval``): what
   the loss compares the outputs with (``y``; an autoencoder's inputs).
5. :meth:`Task.start` (run start, every rank, before any epoch): the run directory and whether
   this rank writes files.
6. :meth:`Task.state_dict` / :meth:`Task.load_state_dict` (every checkpoint / a resume):
   the task's own state, saved under the checkpoint's ``task`` key.
7. :meth:`Task.end_epoch` (after each epoch's validation, every rank, before early stopping,
   the schedule and the checkpoint see the row): may add metrics to the row.
8. :meth:`Task.after_test` (after the test evaluation, every rank): extra test metrics and
   the task's own files (rank 0 writes them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dltrain.errors import ConfigError
from dltrain.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

    from dltrain.data import DataSplits
    from dltrain.losses import Loss
    from dltrain.training.profiler import Profiler
    from dltrain.training.step import OptimizerStep, StepOptions


class BadTaskState(ValueError):
    """A checkpoint's ``task`` entry is not what the task saves (damaged or crafted): the
    message says what is wrong, in words that follow ``resume=<file>: the checkpoint's``."""


@dataclass(frozen=True)
class TaskFacts:
    """What dltrain needs to know about a task option, registered with its builder.

    Attributes:
        default_model: the model its preset selects (``conf/task/<name>.yaml``), named in
            the one-line refusal of a model that cannot serve it.
        inputs: the kinds of input (``DatasetFacts.inputs``) it trains on; None: any.
        distributed: it trains on several processes (torchrun, Slurm); False refuses them.
        refuses_serving: why its checkpoint's model serves nothing through ``dltrain-predict`` and
            ``dltrain-export`` (words after ``is a checkpoint of task=<name>:``); None: it serves its outputs.
        path_keys: its ``task.*`` keys that name files, stored absolute when a run starts, so that
            the tools read them from any folder.
    """

    default_model: str | None = None
    inputs: tuple[str, ...] | None = None
    distributed: bool = True
    refuses_serving: str | None = None
    path_keys: tuple[str, ...] = ()


#: Task builders: ``TASKS.build(name, **cfg.task options)`` -> :class:`Task`.
TASKS: Registry[TaskFacts] = Registry("task", TaskFacts)


class Task:
    """Supervised training: the model's output is compared with the data's targets by
    ``loss=``. Subclass it for another objective and override the hooks that differ.

    Attributes:
        name: the option's name (``task=<name>``).
        writes_predictions: the test writes ``predictions.csv`` and the run's report from the
            test outputs (supervised); a task whose outputs are not predictions of ``y`` turns
            it off and writes its own files in :meth:`after_test`.
        run_dir: where the run writes (set by :meth:`start`; None before).
        is_main: whether this rank writes the run's files (set by :meth:`start`).
    """

    name = "supervised"
    writes_predictions = True

    def __init__(self) -> None:
        self.run_dir: Path | None = None
        self.is_main = True

    def check(self, data: DataSplits) -> None:
        """Refuse data this task cannot train on (build step, after the data is read).

        Raises:
            ConfigError: one line naming the key and what to do.
        """

    def check_resumed(self, state: Any) -> None:
        """On a resume, before :meth:`check` and before the run writes anything: refuse what the
        checkpoint's task entry (``state``, as :meth:`state_dict` saved it; hostile input, None
        when absent) says has changed since the run started (a GAN's ``task.scorer`` file).
        Nothing by default.

        Raises:
            ConfigError: one line naming the key and file, and what to do.
        """

    def make_optimizer(self, model: nn.Module,
                       saved_groups: list[dict[str, Any]] | None = None) -> torch.optim.Optimizer | None:
        """The run's optimizer when the task makes its own (``saved_groups``: a resumed
        checkpoint's, as :func:`~dltrain.optim.build_optimizer` takes them); None: the ``optim=`` group's."""
        return None

    def loss(self, data: DataSplits) -> tuple[str, Loss] | None:
        """The loss's name (as ``summary.json`` reports it) and the loss the task trains with; None:
        the ``loss=`` group's, resolved for the data's task."""
        return None

    def metric_kind(self, data_task: str) -> str:
        """The metrics' kind (:class:`~dltrain.training.metrics.MetricAccumulator`): the data's task
        (``binary``, ``multiclass``, ``multilabel``, ``regression``) for supervised training."""
        return data_task

    def target(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What the loss compares a batch's outputs with outside training (``dltrain-eval``): ``y``
        for supervised training, the inputs ``x`` for an autoencoder (the step does the same in training)."""
        return y

    def evaluate_batch(self, model: nn.Module, loss_fn: nn.Module, x: torch.Tensor,
                       y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``dltrain-eval``'s outputs and loss on one batch (no gradients, after :meth:`check` of
        the data): the model's outputs and their loss against :meth:`target`."""
        output = model(x)  # (B, width)
        return output, loss_fn(output, self.target(x, y))

    def evaluate_model(self, model: nn.Module) -> dict[str, float]:
        """``dltrain-eval``'s metrics of the model itself, beside the split's (after :meth:`check`):
        none by default; a GAN's sample score with its ``task.scorer``."""
        return {}

    def watched(self, monitor: str, mode: str) -> tuple[str | None, str, str | None]:
        """What early stopping, ``best.pt`` and top-k follow, given ``trainer.early_stopping``'s
        ``monitor`` and ``mode`` (build step, and wherever the stopper is made): the metric (None:
        nothing, the last epoch is tested), its mode, and a note said once in the log and in
        ``summary.json``'s warnings (None: nothing to say). As configured by default.

        Raises:
            ConfigError: a monitor this task cannot log as configured.
        """
        return monitor, mode, None

    def check_for_evaluation(self, data: DataSplits, state: Any = None) -> str | None:
        """:meth:`check` for ``dltrain-eval``, which may go on without what only adds to its
        report; returns a warning saying what it left out (None: nothing). ``state``: the
        checkpoint's task entry (hostile input, None when absent), for what it recorded of the
        task's files."""
        self.check(data)
        return None

    def needs_validation(self, monitor: str) -> bool:
        """Whether the watched ``monitor`` is computed on the validation split (a run without one
        watches nothing then); a task may log ``val_*`` metrics of its own that need none."""
        return monitor.startswith("val_")

    def make_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                  options: StepOptions, profiler: Profiler | None = None) -> OptimizerStep:
        """The training step the trainer calls per batch, ``step(x, y) -> (output, loss)``, with
        ``options`` (augmentation, clipping, precision, accumulation, DDP forward) applied as
        :class:`~dltrain.training.step.OptimizerStep` applies them. A subclass of it keeps the
        accumulation (``micro_step``), the closure optimizers and the grad scaler."""
        from dltrain.training.step import OptimizerStep

        return OptimizerStep(model, optimizer, loss_fn, options, profiler)

    def start(self, run_dir: Path, is_main: bool) -> None:
        """Called once per rank before the first epoch (also of a resumed run): where files go."""
        self.run_dir, self.is_main = run_dir, is_main

    def carry_from(self, run_dir: Path, epoch: int) -> None:
        """A run resumed into another directory (rank 0, after :meth:`start`): copy the files this
        task wrote for epochs ``1..epoch`` in the run it continues (``run_dir``). Nothing by default."""

    def state_dict(self) -> dict[str, Any] | None:
        """The task's own training state for a checkpoint, as tensors and plain data
        (``weights_only=True`` loads it); None: none (supervised)."""
        return None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state_dict` on resume. ``state`` is None for a checkpoint written
        without one (an older one). It is hostile input: check each entry's type, shape and
        dtype before using it, and raise :class:`BadTaskState` saying what is wrong (the resume
        turns it into one line naming the checkpoint file)."""

    def end_epoch(self, trainer: Any, row: dict[str, Any]) -> None:
        """After the epoch's validation (every rank, in step), before early stopping, the schedule
        and the checkpoint read ``row``: add this epoch's own metrics to it (``row[name] = value``,
        plain floats). ``trainer`` gives the model, ``trainer.epoch + 1`` the epoch's number."""

    def after_test(self, trainer: Any, data: DataSplits, batches: Any,
                   outputs: list[torch.Tensor]) -> dict[str, float]:
        """After the test evaluation (every rank; rank 0, :attr:`is_main`, writes files into
        :attr:`run_dir`). ``outputs`` are the test batches' outputs (this rank's, in order),
        ``batches`` the test batches, ``trainer.evaluated_model`` the weights tested. Returns
        metrics added to ``summary.json``'s ``test`` (may be empty)."""
        return {}


@TASKS.register("supervised")
def supervised() -> Task:
    """``task=supervised``: today's training, unchanged."""
    return Task()


def check_task_fits(task: str, data: str, data_inputs: str | None, world_size: int) -> None:
    """Refuse data whose kind of input ``task=task`` cannot train on, and several processes
    for a task that trains in one (its :class:`TaskFacts`), naming the data that would do.

    Raises:
        ConfigError: one line naming ``data=`` or the processes, and what to do.
    """
    from dltrain.config.task_conflicts import refuse_data
    from dltrain.data import DATASETS

    facts = TASKS.facts(task)
    refuse_data(task, data, data_inputs, facts.inputs, {name: DATASETS.facts(name).inputs for name in DATASETS.names()})
    if world_size > 1 and not facts.distributed:
        raise ConfigError(f"task={task} trains in one process, and this run has {world_size} (torchrun or Slurm): "
                          "run it as one process.")


def check_model_task(task: str, model: str, model_tasks: tuple[str, ...]) -> None:
    """A model that cannot serve ``task=task`` (``model_tasks``: the tasks its registration
    says it serves) is one line naming both and what to use instead.

    Raises:
        ConfigError: the model does not serve the task.
    """
    from dltrain.config.task_conflicts import refuse_model_task

    refuse_model_task(task, model, model_tasks, TASKS.facts(task).default_model)

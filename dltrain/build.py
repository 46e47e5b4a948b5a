"""The build step: a validated config turned into the experiment's objects (data, model,
loss, optimizer, schedule, regularizers, batches), the one place where config keys become
builder calls. Training, ``dltrain-eval`` and ``dltrain-predict`` all build through it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dltrain.config.conflicts import check_conflicts, check_deterministic
from dltrain.config.hydra_job import command_line_keys, from_start
from dltrain.config.schemas import GROUP_SCHEMAS, TransferConfig
from dltrain.data import DATASETS, Augment, DataSplits, LoaderBatches, TensorBatches, build_augment
from dltrain.data.limits import BatchLimits, overfit_splits
from dltrain.data.mixing import Mix, build_mix
from dltrain.data.preprocessing import Images
from dltrain.errors import ConfigError
from dltrain.init import apply_init
from dltrain.loggers import HParams
from dltrain.losses import LOSSES, Loss, trap_warnings
from dltrain.models import MODELS
from dltrain.models.registry import InputNormalization
from dltrain.models.start_weights import is_checkpoint_file, start_model
from dltrain.models.summary import LayerRow, mark_frozen, summarize
from dltrain.models.transfer import Freeze, TransferOptions, TransferParts, parts, split_options, stages_to_freeze
from dltrain.optim import OPTIMIZERS, build_optimizer
from dltrain.regularization import WeightPenalty
from dltrain.report.tables import versions
from dltrain.schedulers import SCHEDULERS, LRSchedule, build_scheduler
from dltrain.tasks import TASKS, Task
from dltrain.tasks.base import check_model_task, check_task_fits
from dltrain.training.accumulate import check_accumulation, optimizer_steps
from dltrain.training.averaging import SwaSchedule, check_averaging, with_swa
from dltrain.training.budget import parse_max_time, schedule_length
from dltrain.training.callbacks import EarlyStopping
from dltrain.training.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, plain
from dltrain.training.checks import (
    channels_last_warnings,
    check_combinations,
    check_model,
    check_monitor,
    check_top_k,
    check_transfer,
    schedule_warnings,
    transfer_warnings,
    validation_warnings,
)
from dltrain.training.device import resolve_memory_format, resolve_precision, set_cudnn_benchmark
from dltrain.training.distributed import Ranks, check_world, sync_batchnorm
from dltrain.training.fine_tune import FineTuneSchedule
from dltrain.training.signals import Interrupted
from dltrain.training.step import StepOptions

FAST_DEV_BATCHES = 2  # fast_dev_run: this many batches of train, val and test, one epoch


def group_options(node: DictConfig) -> dict[str, Any]:
    """A group's config as its builder's keyword arguments (without its ``name``)."""
    opts = OmegaConf.to_container(node, resolve=True)
    opts.pop("name", None)
    return opts


def run_hparams(cfg: DictConfig) -> HParams:
    """The run's main hyperparameters, flat, for a logger's hyperparameter table: each
    group's option, the usual knobs, and every key the command line set. Read from the
    config here, so the loggers take plain values."""
    reg, tcfg = cfg.regularization, cfg.trainer
    hparams: dict[str, Any] = {group: cfg[group].name for group in ("model", "data", "optim", "loss", "init",
                                                                    "scheduler", "task")}
    hparams.update({"optim.lr": cfg.optim.lr, "trainer.batch_size": tcfg.batch_size,
                    "trainer.max_epochs": tcfg.max_epochs, "regularization.dropout": reg.dropout,
                    "regularization.l1": reg.l1, "regularization.l2": reg.l2,
                    "regularization.batch_norm": reg.batch_norm, "seed": cfg.seed,
                    "trainer.precision": tcfg.precision})
    for key in sorted(command_line_keys() or ()):
        value = OmegaConf.select(cfg, key, default=None)
        if key.endswith(".name"):
            key, value = key[:-len(".name")], value
        if value is not None and not isinstance(value, DictConfig):
            hparams[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return hparams


@dataclass
class Experiment:
    """Everything a config builds before training starts."""

    data: DataSplits
    model: nn.Module
    init_applied: dict[str, str]
    summary_rows: list[LayerRow]
    loss_name: str
    loss_fn: Loss
    optimizer: torch.optim.Optimizer
    scheduler: LRSchedule | SwaSchedule
    penalty: WeightPenalty
    augment: Augment | None
    autocast_dtype: torch.dtype | None
    batches: tuple[TensorBatches | LoaderBatches, ...]
    warnings: list[str] = field(default_factory=list)
    fine_tune: FineTuneSchedule | None = None  # model.freeze_epochs: the trainer's on_epoch_start
    summary_notes: list[str] = field(default_factory=list)  # lines after the model summary's table
    mix: Mix | None = None  # regularization.augment's mixup/cutmix: mixes each training batch and its targets
    task: Task = field(default_factory=Task)  # task=: what a step computes (supervised by default)


def build_experiment(cfg: DictConfig, device: torch.device, saved_groups: list[dict[str, Any]] | None = None,
                     ranks: Ranks | None = None, recorded: Mapping[str, Any] | None = None,
                     first_epoch: int = 1, task_state: Any = None) -> Experiment:
    """Data, loss, model, init, optimizer, schedule and regularizers from ``cfg``: the one
    place where config keys become builder arguments.

    Args:
        saved_groups: a resumed checkpoint's optimizer parameter groups: the new optimizer keeps
            their layout and implementation (see :func:`~dltrain.optim.build_optimizer`). Given,
            a missing sample ``data.path`` is an error instead of being written.
        ranks: the processes training together: each gets its shard of every split and
            ``trainer.batch_size / world_size`` examples per step; batch norm is synced
            across them with ``trainer.sync_batchnorm``.
        recorded: a resumed checkpoint's data record: the input the model declared is read
            from it, not asked of the model again (its start weights' file may be gone).
        first_epoch: the epoch the run trains first (a resumed run's next): the model is frozen
            (``model.freeze``) as the fine-tune schedule has it in that epoch.
        task_state: a resumed checkpoint's task entry: the task refuses, before the data is read,
            files it identifies that changed since (:meth:`~dltrain.tasks.base.Task.check_resumed`).

    Raises:
        ConfigError: for combinations that cannot work, before any training step.
    """
    reg, tcfg = cfg.regularization, cfg.trainer
    ranks = ranks or Ranks()
    # Asked once, before any data is read: a model that reads images is refused other data first.
    inputs = model_inputs(cfg) if recorded is None else Images.declared(recorded)
    check_options(cfg, ranks, device)
    absolute_task_paths(cfg)
    task = build_task(cfg)
    check_task_fits(cfg.task.name, cfg.data.name, DATASETS.facts(cfg.data.name).inputs, ranks.world_size)
    check_conflicts(cfg)  # train() from Python: the keys a task cannot take, as the command line checks them
    if task_state is not None:
        task.check_resumed(task_state)  # a GAN's task.scorer: the same file's content as when the run started
    set_cudnn_benchmark(tcfg.cudnn_benchmark, device)
    # A resumed run goes on with the data it began with: a missing sample is an error then, since
    # sample data written now could differ from the data the checkpoint was trained on.
    data = load_data(cfg, device, ranks, make_samples=saved_groups is None, recorded=recorded, inputs=inputs)
    task.check(data)
    metric_kind = task.metric_kind(data.task)
    check_monitor("trainer.early_stopping.monitor", tcfg.early_stopping.monitor, metric_kind)
    autocast_dtype = resolve_precision(tcfg.precision, device, cfg.optim.name,
                                       closure=OPTIMIZERS.facts(cfg.optim.name).closure)

    # The loss first: it decides how wide the model's output layer is.
    loss_name, loss_fn = build_loss(cfg, data, task)
    mix = build_mix(list(reg.augment), OmegaConf.to_container(reg.augment_params), data, loss_name, loss_fn,
                    class_weights=cfg.loss.get("class_weights"))
    loss_fn = loss_fn.to(device)
    scheduler_monitor = ((cfg.scheduler.monitor or tcfg.early_stopping.monitor)
                         if SCHEDULERS.facts(cfg.scheduler.name).needs_monitor else None)
    watched = task.watched(tcfg.early_stopping.monitor, tcfg.early_stopping.mode)[0]
    # A task's own val_* metric that needs no validation split (a GAN's sample score) is watched without one.
    unsplit = watched is not None and not task.needs_validation(watched)
    warnings: list[str] = list(data.warnings) + validation_warnings(
        data.has_validation, tcfg.early_stopping.monitor, scheduler_monitor, watched_without_validation=unsplit)
    check_top_k(tcfg.checkpoint.save_top_k, data.has_validation, tcfg.early_stopping.monitor,
                watched_without_validation=unsplit)
    if (note := task.watched(tcfg.early_stopping.monitor, tcfg.early_stopping.mode)[2]) is not None:
        warnings.append(note)  # e.g. a GAN without a scorer: nothing to stop on
    # A resumed run continues its checkpoint's weights: no start weights are read, none downloaded.
    start_weights = saved_groups is None
    # Rank 0 builds first: trained weights it downloads are in torch's cache for the others.
    model = main_first(ranks, "building the model", lambda: build_model(cfg, data, loss_fn.output_width, warnings,
                                                                        start_weights=start_weights)).to(device)
    # One forward pass on two training examples first: it fails here, with one line, for a
    # model that cannot work, and it gives lazy layers their shapes before the init touches them.
    example = data.example(2).to(device)
    check_model(model, example, loss_fn, loss_name, autocast_dtype, name=cfg.model.name,
                batch_size=tcfg.batch_size, precision=tcfg.precision, deterministic=tcfg.deterministic)
    summary_rows = summarize(model, example)  # layers in the order they run
    last_layer = summary_rows[-1].kind if summary_rows else ""
    warnings += trap_warnings(loss_name, last_layer)
    if loss_fn.log_probs and last_layer != "LogSoftmax":
        summary_rows.append(add_log_softmax(model, loss_fn.output_width))
    # The scheme's gain follows the model's activation, or the one it computes with (tanh for LSTM and GRU).
    activation = cfg.model.get("activation") or cfg.model.get("nonlinearity") or \
        MODELS.facts(cfg.model.name).init_activation
    transfer = transfer_options(cfg)
    init_applied = start_and_init(cfg, model, transfer if start_weights else None, activation, warnings)
    for row in summary_rows:
        row.init = init_applied.get(row.name, "-" if row.params == 0 else "default")
    if tcfg.sync_batchnorm:
        warnings += sync_batchnorm(model, ranks)  # the same parameters: before or after the init alike
    # After the init (orthogonal_ views each weight as a matrix) and before the optimizer.
    warnings += channels_last_warnings(tcfg.channels_last, data.input_shape, model, data=cfg.data.name,
                                       model_name=cfg.model.name)
    memory_format = resolve_memory_format(tcfg.channels_last, data.input_shape, model)
    if memory_format is not None:
        model.to(memory_format=memory_format)  # converts its 4-D weights (convolutions) only
        if data.in_memory:
            # Indexing (x[idx]) and slicing keep a tensor's layout, so after this one conversion
            # every batch TensorBatches draws is channels_last already; the trainer converts
            # only batches that are not (after rotate/shift/zoom, or from a DataLoader).
            for name in ("x_train", "x_val", "x_test"):
                setattr(data, name, getattr(data, name).contiguous(memory_format=memory_format))

    closure = OPTIMIZERS.facts(cfg.optim.name).closure
    found = stages_of(cfg.model.name, model, transfer)  # after sync_batchnorm: the layers trained
    backbone = found.stages if found is not None and transfer.backbone_lr != 1.0 else None
    # Every parameter, frozen or not: one frozen has no gradient, so the optimizer skips it until it is unfrozen.
    optimizer = task.make_optimizer(model, saved_groups)  # task=gan: the generator's, with the discriminator's beside
    if optimizer is None:
        optimizer = build_optimizer(cfg.optim.name, model, l2=0.0 if closure else reg.l2,
                                    saved_groups=saved_groups, backbone=backbone,
                                    backbone_lr=transfer.backbone_lr if transfer else 1.0, **group_options(cfg.optim))
    penalty = WeightPenalty(model, l1=reg.l1, l2=reg.l2 if closure else 0.0)  # LBFGS: L2 as a loss term
    fine_tune, notes = freeze_stages(found, transfer, summary_rows, model, first_epoch)
    own_init = MODELS.facts(cfg.model.name).own_init
    if own_init is not None and any(row.init == "default" for row in summary_rows):  # not PyTorch's defaults
        notes = [*notes, f"Init default: {own_init(OmegaConf.to_container(cfg.model, resolve=True))}"]
    augment = build_augment(list(reg.augment), OmegaConf.to_container(reg.augment_params), data.input_shape)
    limits = BatchLimits(tcfg.limit_train_batches, tcfg.limit_val_batches, tcfg.overfit_batches)
    batches = make_batches(data, tcfg.batch_size, tcfg.eval_batch_size, cfg.seed, device, ranks,
                           limit=FAST_DEV_BATCHES if tcfg.fast_dev_run else None, limits=limits)

    sched = group_options(cfg.scheduler)
    if scheduler_monitor is not None:
        sched["monitor"] = scheduler_monitor
        check_monitor("scheduler.monitor", scheduler_monitor, metric_kind)
    max_epochs = 1 if tcfg.fast_dev_run else tcfg.max_epochs
    # Sized on the steps the run takes: max_steps, when that comes before max_epochs.
    schedule_epochs, schedule_steps = schedule_length(
        max_epochs, optimizer_steps(len(batches[0]), tcfg.accumulate_grad_batches), tcfg.max_steps)
    scheduler = build_scheduler(cfg.scheduler.name, optimizer, max_epochs=schedule_epochs,
                                steps_per_epoch=schedule_steps, **sched)
    # regularization.swa_lr: from swa_start the LR anneals to it
    scheduler = with_swa(scheduler, optimizer, swa_start=reg.swa_start, swa_lr=reg.swa_lr,
                         anneal_epochs=reg.swa_anneal_epochs, epochs=schedule_epochs, max_epochs=max_epochs,
                         max_steps=tcfg.max_steps)
    if not tcfg.fast_dev_run:
        warnings += schedule_warnings(cfg.scheduler.name, group_options(cfg.scheduler), max_epochs)
        warnings += transfer_warnings(transfer, max_epochs)
    return Experiment(data, model, init_applied, summary_rows, loss_name, loss_fn, optimizer, scheduler,
                      penalty, augment, autocast_dtype, batches, warnings, fine_tune, notes, mix=mix, task=task)


def transfer_options(cfg: DictConfig) -> TransferOptions | None:
    """The model's transfer keys (``model.weights``, ``freeze``, ...); None for a model without them."""
    return split_options(group_options(cfg.model), takes_weights=False, has_keys=_has_transfer_keys(cfg.model.name))[1]


def start_and_init(cfg: DictConfig, model: nn.Module, transfer: TransferOptions | None, activation: str | None,
                   warnings: list[str]) -> dict[str, str]:
    """Load the start weights the build step reads (``model.weights``: a dltrain checkpoint, or a
    state dict for a model whose builder takes no weights), then ``init=``: on the whole model
    when it starts from no weights, on its head alone when it does. Returns the Init column's labels.

    Args:
        transfer: the model's transfer keys; None when no start weights apply (a model without
            them, or a resumed run, whose checkpoint holds its weights).
    """
    def init(module: nn.Module) -> dict[str, str]:
        return apply_init(module, cfg.init.name, activation=activation, **group_options(cfg.init))

    if transfer is None or transfer.weights == "none":
        return init(model)
    return start_model(model, transfer.weights, read_here=build_step_loads(cfg.model.name, transfer.weights),
                       init=cfg.init.name, apply=init, model_name=cfg.model.name, warnings=warnings)


def build_step_loads(name: str, weights: str) -> bool:
    """Whether the build step loads ``model.weights`` (a dltrain checkpoint, for every model; any
    file for a model whose builder takes no ``weights``), rather than the model's builder."""
    return weights != "none" and (not _takes(name, "weights") or is_checkpoint_file(weights))


def stages_of(name: str, model: nn.Module, transfer: TransferOptions | None) -> TransferParts | None:
    """The stages and head of a model whose transfer keys freeze or set a backbone learning rate.

    Raises:
        ConfigError: those keys are set on a model without stages and a head.
    """
    if transfer is None or not transfer.used:
        return None
    found = parts(model)
    if found is None:
        raise ConfigError(f"model={name} has no stages and head dltrain can tell apart, so model.freeze, "
                          "model.freeze_epochs and model.backbone_lr cannot apply: leave them at none, 0 and 1.")
    return found


def freeze_stages(found: TransferParts | None, transfer: TransferOptions | None, rows: list[LayerRow],
                  model: nn.Module, first_epoch: int = 1) -> tuple[FineTuneSchedule | None, list[str]]:
    """Freeze the stages ``model.freeze`` names, as they are in ``first_epoch`` (a resumed run
    may start after the unfreeze), and mark them in the summary's rows; returns the fine-tune
    schedule (``model.freeze_epochs`` > 0) and its summary line."""
    if found is None or transfer.freeze == "none":
        return None, []
    freeze = Freeze(stages_to_freeze(found, transfer.freeze))
    if transfer.freeze_epochs == 0 or first_epoch <= transfer.freeze_epochs:
        freeze.apply()
        mark_frozen(rows, model)
    if transfer.freeze_epochs == 0:
        return None, [f"Frozen for the whole run (model.freeze={transfer.freeze}, model.freeze_epochs=0)"]
    schedule = FineTuneSchedule(freeze, transfer.freeze_epochs)
    return schedule, [schedule.describe()]


def _has_transfer_keys(name: str) -> bool:
    """Whether ``model=name``'s schema has the transfer keys (:class:`TransferConfig`)."""
    return issubclass(GROUP_SCHEMAS["model"].get(name, object), TransferConfig)


def _takes(name: str, key: str) -> bool:
    """Whether ``model=name``'s builder takes the keyword ``key``."""
    return key in inspect.signature(MODELS.get(name)).parameters


def check_options(cfg: DictConfig, ranks: Ranks, device: torch.device) -> None:
    """The checks of options that are each valid but cannot work together, before any data
    is loaded (:func:`~dltrain.training.checks.check_combinations`), and of what a run of
    several ``ranks`` on ``device`` needs (:func:`~dltrain.training.distributed.check_world`).

    The schema checks each key on its own when the config is validated; these checks of
    combinations live in the build step, beside the builders they protect, and like those take
    the config's values as plain arguments (their messages name the keys). The model's input
    and the data are checked together by :func:`model_inputs`.

    Raises:
        ConfigError: naming the keys that cannot go together.
    """
    reg, optim = cfg.regularization, cfg.optim.name
    check_combinations(cfg.init.name, group_options(cfg.init), optim, reg.grad_clip, reg.grad_clip_value)
    check_transfer(transfer_options(cfg), optim, closure=OPTIMIZERS.facts(optim).closure,
                   world_size=ranks.world_size)
    check_world(ranks, device, device_option=cfg.device, optim=optim, closure=OPTIMIZERS.facts(optim).closure,
                batch_size=cfg.trainer.batch_size, sync_batchnorm=cfg.trainer.sync_batchnorm)
    check_accumulation(cfg.trainer.accumulate_grad_batches, optim, OPTIMIZERS.facts(optim).closure)
    check_deterministic(cfg.trainer.deterministic, cfg.trainer.cudnn_benchmark)
    parse_max_time(cfg.trainer.max_time)  # a value the schema's pattern let through but no clock reads
    check_averaging(ema_decay=reg.ema_decay, ema_warmup=reg.ema_warmup, swa_start=reg.swa_start, swa_lr=reg.swa_lr,
                    max_epochs=cfg.trainer.max_epochs, swa_anneal_epochs=reg.swa_anneal_epochs)


def absolute_task_paths(cfg: DictConfig) -> None:
    """The task's file keys (``TaskFacts.path_keys``: a GAN's ``task.scorer``) made absolute as the
    command meant them, in the config the run stores: ``dltrain-eval`` reads them from any folder."""
    for key in TASKS.facts(cfg.task.name).path_keys:
        if cfg.task.get(key) and from_start(cfg.task[key]).is_file():  # a missing one's error names it as given
            cfg.task[key] = str(from_start(cfg.task[key]))


def build_task(cfg: DictConfig) -> Task:
    """``task=...`` (supervised by default), once ``model=`` is known to serve it.

    Raises:
        ConfigError: the model cannot be trained by the task.
    """
    check_model_task(cfg.task.name, cfg.model.name, MODELS.facts(cfg.model.name).tasks)
    return TASKS.build(cfg.task.name, **group_options(cfg.task))


def build_loss(cfg: DictConfig, data: DataSplits, task: Task | None = None) -> tuple[str, Loss]:
    """``loss=...`` for ``data`` (``auto`` resolved from its task), or the loss ``task`` trains
    with when it has its own; returns the name and the loss."""
    own = task.loss(data) if task is not None else None
    if own is not None:
        return own
    picks = LOSSES.facts(cfg.loss.name).picks
    loss_name = picks(data.task) if picks is not None else cfg.loss.name
    return loss_name, LOSSES.build(loss_name, task=data.task, num_outputs=data.num_outputs,
                                   label_smoothing=cfg.regularization.label_smoothing,
                                   class_counts=data.class_counts(), **group_options(cfg.loss))


def model_inputs(cfg: DictConfig) -> InputNormalization | None:
    """The input ``model=...`` declares for its options (a pretrained backbone's statistics,
    size and channels), which the images' preprocessing then applies; None when it declares
    none (the statistics are fitted on the training split).

    Raises:
        ConfigError: the model declares one and ``data=...`` does not give images.
    """
    declares = MODELS.facts(cfg.model.name).input_normalization
    inputs = None if declares is None else declares(OmegaConf.to_container(cfg.model, resolve=True))
    if inputs is not None and DATASETS.facts(cfg.data.name).inputs != "images":
        images = [name for name in DATASETS.names() if DATASETS.facts(name).inputs == "images"]
        raise ConfigError(f"model={cfg.model.name} reads images, which data={cfg.data.name} does not give: use "
                          f"data={', '.join(images[:-1])} or {images[-1]}.")
    return inputs


def load_data(cfg: DictConfig, device: torch.device, ranks: Ranks | None = None, *,
              make_samples: bool = False, recorded: Mapping[str, Any] | None = None,
              inputs: InputNormalization | None = None) -> DataSplits:
    """``data=...``, its tensors moved to ``device`` (data read from disk stays there). Of
    several ranks, rank 0 reads first (and downloads what is missing), the others after it
    succeeded, so no two processes write the same files. With ``make_samples`` (training), a
    missing ``data.path`` of ``samples/fraud.csv``, ``samples/reviews.csv`` or ``samples/shapes``
    is written first (:func:`~dltrain.data.samples.provide`). Images get the input the model
    declares (:func:`model_inputs`), or with ``recorded``, a checkpoint's data record, the one
    it recorded (the model's weights, a file or a download, are not needed again); ``inputs``:
    that input, already asked by the caller (:func:`build_experiment`), so it is asked once.

    Raises:
        ConfigError: for bad data keys or files, or data too large for the device.
    """
    from dltrain.data.samples import provide

    ranks = ranks or Ranks()
    if not ranks.is_main:
        ranks.check(None, "loading the data")  # waits for rank 0's outcome
    try:
        if inputs is None:  # a model that declares none is cheap to ask again
            inputs = model_inputs(cfg) if recorded is None else Images.declared(recorded)
        if "path" in cfg.data:
            provide(cfg.data.path, create=make_samples)
        declared = {} if inputs is None else {"model_inputs": inputs}  # only image datasets take it
        data = DATASETS.build(cfg.data.name, seed=cfg.seed, **group_options(cfg.data), **declared)
        try:
            data = data.to(device)
        except torch.OutOfMemoryError as err:
            hint = "set data.in_memory=false" if "in_memory" in cfg.data else "use device=cpu or a smaller dataset"
            raise ConfigError(f"data={cfg.data.name} does not fit in the memory of {device}: {hint}.") from err
    except (Exception, Interrupted) as err:  # a stop too: the other ranks wait for rank 0's outcome
        if ranks.is_main:
            ranks.check(err, "loading the data")
        raise
    if ranks.is_main:
        ranks.check(None, "loading the data")
    return data


T = TypeVar("T")


def main_first(ranks: Ranks, what: str, step: Callable[[], T]) -> T:
    """``step()`` on rank 0, then on the other ranks once it worked there (what it wrote, a
    download, is there for them), as :func:`load_data` reads the data; one rank: just ``step()``."""
    if not ranks.is_main:
        ranks.check(None, what)  # waits for rank 0's outcome
    try:
        result = step()
    except (Exception, Interrupted) as err:  # a stop too: the other ranks wait for rank 0's outcome
        if ranks.is_main:
            ranks.check(err, what)
        raise
    if ranks.is_main:
        ranks.check(None, what)
    return result


def build_model(cfg: DictConfig, data: DataSplits, num_outputs: int, warnings: list[str], *,
                start_weights: bool = True) -> nn.Module:
    """``model=...`` for ``data``'s examples, with ``regularization.dropout`` and ``batch_norm``
    passed to the built-in models (a recurrent model's own ``model.dropout`` sits between its
    layers, so the regularization one reaches it as ``head_dropout``). Token ids (text data)
    go to the models registered with ``reads_tokens`` (the recurrent ones embed them; a custom
    model gets ``vocab_size`` when it takes it).

    The transfer keys (``model.freeze``, ...) are the build step's; a builder that takes
    ``weights`` gets ``model.weights`` unless the build step loads it (:func:`build_step_loads`),
    and without ``start_weights`` (a model rebuilt to receive a checkpoint's own weights:
    ``dltrain-eval``, ``dltrain-predict``, a resume) ``start_weights=False`` where it takes
    that (the weights' name may decide its shape), else ``none``: it reads no start weights and
    downloads nothing.
    """
    opts, _ = split_options(group_options(cfg.model), takes_weights=_takes(cfg.model.name, "weights"),
                            has_keys=_has_transfer_keys(cfg.model.name))
    if not start_weights and _takes(cfg.model.name, "start_weights"):
        opts["start_weights"] = False  # model.weights still decides its shape (a vit's size)
    elif "weights" in opts and (not start_weights or build_step_loads(cfg.model.name, opts["weights"])):
        opts["weights"] = "none"
    reg = cfg.regularization
    name = cfg.model.name
    facts = MODELS.facts(name)
    for key in ("input_shape", "num_outputs"):  # only an open schema (model=custom) lets these through
        if key in opts:
            raise ConfigError(f"model.{key} is passed by dltrain from the data: remove +model.{key}.")
    if data.vocab_size is not None:
        if not facts.reads_tokens:
            raise ConfigError(f"data={cfg.data.name} gives sequences of token ids, which model={name} cannot read: "
                              "use model=lstm, gru, rnn or transformer (they embed the tokens first), or model=custom.")
        opts["vocab_size"] = data.vocab_size
    if facts.regularization_layers:
        opts["head_dropout" if "dropout" in opts else "dropout"] = reg.dropout
        opts["batch_norm"] = reg.batch_norm
    else:
        for key, off in (("dropout", 0.0), ("batch_norm", False)):
            if reg[key] != off:
                warnings.append(f"regularization.{key}={reg[key]} does not apply to model={name}: "
                                f"{facts.regularization_hint}")
    try:
        return MODELS.build(name, input_shape=data.input_shape, num_outputs=num_outputs, **opts)
    except (MemoryError, RuntimeError) as err:
        if not isinstance(err, MemoryError) and "allocate" not in str(err):
            raise
        raise ConfigError(f"model={cfg.model.name} is too large to build in memory: "
                          f"make it smaller (model.* sizes) ({str(err).splitlines()[0]}).") from err


def add_log_softmax(model: nn.Module, width: int) -> LayerRow:
    """End ``model`` in log-softmax, for ``loss=nll``, without renaming its weights: an
    ``nn.Sequential`` gets a last layer (it has no parameters), any other module a forward
    hook. Returns the summary row of the added step."""
    if isinstance(model, nn.Sequential):
        model.add_module("log_softmax", nn.LogSoftmax(dim=1))
    else:
        model.register_forward_hook(_log_softmax_hook)
    return LayerRow("log_softmax", "LogSoftmax", f"(-1, {width})", 0, "-")


def _log_softmax_hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(output, dim=1)


def make_batches(data: DataSplits, batch_size: int, eval_batch_size: int, seed: int, device: torch.device,
                 ranks: Ranks | None = None, *, limit: int | None = None,
                 limits: BatchLimits | None = None) -> tuple[TensorBatches | LoaderBatches, ...]:
    """Train (shuffled), validation and test batches; ``limit`` keeps that many of each
    (``FAST_DEV_BATCHES`` for ``trainer.fast_dev_run``, which wins over ``limits``: the
    ``trainer.limit_*_batches`` and ``trainer.overfit_batches``, whose training and
    validation batches are the first training batches, unshuffled).

    Data in memory is batched by index on its device; data read from disk goes through a
    DataLoader with ``data.num_workers`` processes. Of several ranks, each takes its shard:
    of every epoch's training order (``batch_size / world_size`` examples per step: the
    global batch), and a contiguous part of validation and test, whose metrics are then
    summed over ranks."""
    ranks = ranks or Ranks()
    # The data order depends on this alone; every rank draws the same one and takes its shard.
    generator = torch.Generator().manual_seed(seed)
    batch_size = batch_size // ranks.world_size
    shard = {"rank": ranks.rank, "world_size": ranks.world_size}
    limits = limits if limits is not None and limit is None else BatchLimits()
    # trainer.overfit_batches: the same first examples, in order, to train and to validate on
    train, val = overfit_splits(limits.overfit, data, batch_size * ranks.world_size, ranks.world_size)
    shuffle = {"shuffle": True, "generator": generator} if not limits.overfit else {}
    if not data.in_memory:
        def loader(x, batch_size, **kw):
            return LoaderBatches(x, batch_size, device=device, num_workers=data.num_workers, limit_batches=limit,
                                 **shard, **kw)

        batches = (loader(train[0], batch_size, min_batch_size=2, **shuffle),
                   loader(val[0], eval_batch_size),
                   loader(data.x_test, eval_batch_size, persistent=False))  # read once
    else:
        batches = (
            # A last training batch of one example is dropped: batch norm cannot normalise it,
            # and its gradient would be the noisiest step of the epoch.
            TensorBatches(*train, batch_size, limit_batches=limit, min_batch_size=2, **shuffle, **shard),
            TensorBatches(*val, eval_batch_size, limit_batches=limit, **shard),
            TensorBatches(data.x_test, data.y_test, eval_batch_size, limit_batches=limit, **shard),
        )
    limits.apply(batches[0], batches[1])
    return batches



def checkpoint_meta(cfg: DictConfig, exp: Experiment) -> dict[str, Any]:
    """What a checkpoint holds besides the training state: enough to rebuild the model and
    its input preprocessing without the training data (``dltrain-eval``, ``dltrain-predict``)."""
    return {
        "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
        "config": OmegaConf.to_container(cfg, resolve=True), "versions": versions(),
        "data": plain(describe_data(cfg, exp.data)),
        "model_spec": {"output_width": exp.loss_fn.output_width, "log_softmax": bool(exp.loss_fn.log_probs)},
    }


def step_options(cfg: DictConfig, exp: Experiment, train_forward: nn.Module | None = None) -> StepOptions:
    """How each training step runs: the penalty, augmentation, clipping, precision, memory
    format, the optimizer's closure and (``trainer.compile``) the compiled forwards.

    Args:
        train_forward: the DistributedDataParallel forward the ranks train through; None for one process.
    """
    tcfg = cfg.trainer
    return StepOptions(
        penalty=exp.penalty, augment=exp.augment, mix=exp.mix, grad_clip=cfg.regularization.grad_clip,
        grad_clip_value=cfg.regularization.grad_clip_value, autocast_dtype=exp.autocast_dtype,
        memory_format=resolve_memory_format(tcfg.channels_last, exp.data.input_shape, exp.model),
        closure=OPTIMIZERS.facts(cfg.optim.name).closure, accumulate_grad_batches=tcfg.accumulate_grad_batches,
        forward=torch.compile(exp.model) if tcfg.compile else None,
        train_forward=torch.compile(train_forward) if tcfg.compile and train_forward else train_forward)


def describe_data(cfg: DictConfig, data: DataSplits) -> dict[str, Any]:
    """``data.json``: what the model was trained on and how it was preprocessed."""
    info = {k: v for k, v in data.info.items() if k not in ("test_rows", "val_rows")}  # a name per example
    return {"dataset": cfg.data.name, "task": data.task, "num_outputs": data.num_outputs,
            "input_shape": list(data.input_shape), "class_names": data.class_names, **data.sizes,
            "in_memory": data.in_memory, "vocab_size": data.vocab_size,
            "target_scale": list(data.target_scale) if data.target_scale else None, **info}


def make_stopper(cfg: DictConfig, has_validation: bool = True, task: Task | None = None) -> EarlyStopping:
    """The early-stopping policy of ``trainer.early_stopping`` (never stopping a fast_dev_run),
    on the metric the run's ``task`` watches (:meth:`Task.watched`; built from ``cfg`` when not
    given); without a validation split, a ``val_*`` monitor watches nothing and nothing stops."""
    es = cfg.trainer.early_stopping
    task = task if task is not None else build_task(cfg)
    monitor, mode, _ = task.watched(es.monitor, es.mode)
    monitor = monitor if monitor is not None and (has_validation or not task.needs_validation(monitor)) else None
    return EarlyStopping(monitor, mode, es.min_delta, es.patience,
                         enabled=es.enabled and not cfg.trainer.fast_dev_run, baseline=es.baseline,
                         start_from_epoch=es.start_from_epoch, check_finite=es.check_finite)


def watched_mode(stopper: EarlyStopping) -> str | None:
    """Whether the monitored value improves down (``min``) or up (``max``); None when nothing
    is monitored (no validation split for a ``val_*`` monitor)."""
    return stopper.mode if stopper.monitor is not None else None

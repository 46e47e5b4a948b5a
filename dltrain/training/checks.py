"""Checks of a config against the data and the built model, before the first step.

The schema (``dltrain.config.schemas``) checks each key on its own; what can only be known once
the data is loaded and the model built (a monitor never logged, a custom model whose
output does not fit the loss, options that cannot work together) is checked here, so a
run fails at start-up with one line instead of a traceback several epochs in.

The build step (``dltrain.build``) calls these with the config's values: like the builders,
they take plain arguments and no config, and their messages name the keys those values
came from.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dltrain.errors import ConfigError, first_line
from dltrain.init import INITS
from dltrain.losses import Loss
from dltrain.models import MODELS
from dltrain.models.summary import dummy_forward
from dltrain.models.transfer import TransferOptions
from dltrain.optim import OPTIMIZERS
from dltrain.schedulers import SCHEDULERS
from dltrain.training.determinism import nondeterministic_error
from dltrain.training.metrics import metric_names


def check_monitor(key: str, monitor: str, task: str) -> None:
    """A monitor that is never logged is an error now, not a silent no-op later."""
    logged = metric_names(task)
    if monitor not in logged:
        raise ConfigError(f"{key}={monitor} is never logged for this {task} task: "
                          f"choose one of {', '.join(logged)}.")


#: The warning of a run without a validation split whose monitor is the default ``val_loss``.
NO_VALIDATION = ("data.val_fraction=0: no validation split, so early stopping is off (set "
                 "trainer.early_stopping.monitor=train_loss to stop on the training loss); the last epoch's weights "
                 "are tested")


def validation_warnings(has_validation: bool, monitor: str, scheduler_monitor: str | None = None, *,
                        watched_without_validation: bool = False) -> list[str]:
    """What a run without a validation split (``data.val_fraction=0``) cannot do: watch a
    ``val_*`` metric. The default early-stopping ``monitor``, ``val_loss``, then watches
    nothing (a warning says so); any other ``val_*`` monitor, of early stopping or the
    ``scheduler_monitor`` of a schedule that needs one (``scheduler=plateau``), is an error.
    ``watched_without_validation``: early stopping watches a task's metric that needs no
    validation split (a GAN's sample score), so its monitor is excused; the scheduler's is not.

    Raises:
        ConfigError: naming the monitor's key and ``data.val_fraction``.
    """
    if has_validation:
        return []
    watched = {} if watched_without_validation else {"trainer.early_stopping.monitor": monitor}
    if scheduler_monitor is not None:  # e.g. plateau has no "off": it needs a logged metric
        watched["scheduler.monitor"] = scheduler_monitor
    for key, monitor in watched.items():
        if monitor.startswith("val_") and (key != "trainer.early_stopping.monitor" or monitor != "val_loss"):
            raise ConfigError(f"{key}={monitor} needs a validation split, but data.val_fraction=0 leaves none: "
                              f"set {key}=train_{monitor[4:]}, or hold out data for validation "
                              "(data.val_fraction=0.1).")
    return [NO_VALIDATION] if watched.get("trainer.early_stopping.monitor", "").startswith("val_") else []


def check_top_k(save_top_k: int, has_validation: bool, monitor: str, *, watched_without_validation: bool = False
                ) -> None:
    """``trainer.checkpoint.save_top_k`` ranks epochs by the early-stopping monitor: a
    validation metric in a run without a validation split leaves nothing to rank (unless
    ``watched_without_validation``: the task's watched metric needs no validation split).

    Raises:
        ConfigError: naming save_top_k, the monitor and ``data.val_fraction``.
    """
    if save_top_k and not has_validation and not watched_without_validation and monitor.startswith("val_"):
        raise ConfigError(f"trainer.checkpoint.save_top_k={save_top_k} ranks epochs by "
                          f"trainer.early_stopping.monitor={monitor}, but data.val_fraction=0 leaves no validation "
                          f"split: set trainer.early_stopping.monitor=train_{monitor[4:]}, hold out data for "
                          "validation (data.val_fraction=0.1), or set trainer.checkpoint.save_top_k=0.")


def check_model(model: nn.Module, example: torch.Tensor, loss_fn: Loss, loss_name: str,
                autocast_dtype: torch.dtype | None, *, name: str, batch_size: int, precision: str,
                deterministic: bool = False) -> None:
    """One forward pass on ``example`` (a batch of two training inputs), in the run's
    precision (``autocast_dtype``, from ``trainer.precision=precision``): an error now for
    ``model=name`` if it fails on the data's shape, returns something other than a tensor,
    has the wrong output width for the loss, cannot run in the precision asked for, cannot
    normalise batches of ``batch_size``, or has nothing to train; an op without a deterministic
    version is named where ``trainer.deterministic=true`` (``deterministic``)."""
    facts = MODELS.facts(name)
    if batch_size < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        # Batch norm comes from regularization.batch_norm, or from a model that has its own layers.
        own = f"model={name} has batch norm layers, which"
        what = "regularization.batch_norm=true" if facts.regularization_layers else own
        raise ConfigError(f"{what} cannot normalise batches of one example (trainer.batch_size=1): "
                          "use trainer.batch_size=2 or more, or turn batch norm off.")
    try:
        output = dummy_forward(model, example, autocast_dtype)
    except Exception as err:
        if autocast_dtype is not None:  # e.g. oneDNN has no bfloat16 LSTM on some CPUs
            try:
                dummy_forward(model, example)
            except Exception:
                pass
            else:
                raise ConfigError(f"trainer.precision={precision}: model={name} cannot run in "
                                  f"{str(autocast_dtype).removeprefix('torch.')} on this device "
                                  f"({first_line(err)}): use trainer.precision=32.") from err
        if (explained := nondeterministic_error(err, deterministic)) is not None:
            raise explained from err
        if not facts.user_code:  # a bug of dltrain's own: keep the traceback
            raise
        if isinstance(err, TypeError) and "forward()" in str(err):
            raise ConfigError(f"model={name}: dltrain calls forward(x) with one tensor, but {first_line(err)}: "
                              "give forward's other arguments default values.") from err
        raise ConfigError(f"model={name} failed on a batch of shape {tuple(example.shape)}: "
                          f"{first_line(err)} (make it accept inputs of that shape).") from err
    if not torch.is_tensor(output):
        raise ConfigError(f"model={name} returned a {type(output).__name__}, not a tensor: make forward() "
                          "return the outputs (logits) as one tensor.")
    width, n = loss_fn.output_width, example.shape[0]
    shape = getattr(loss_fn, "output_shape", None) or (width,)  # a reconstruction's: the input's shape
    if output.ndim != len(shape) + 1 or tuple(output.shape[1:]) != tuple(shape):
        raise ConfigError(f"model={name} outputs shape {tuple(output.shape)} for a batch of {n}, but loss={loss_name} "
                          f"on this data needs ({n}, {', '.join(map(str, shape))}): make the model's last layer "
                          f"{width} wide (use the num_outputs argument dltrain passes).")
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"model={name} has no trainable parameters: give it layers with weights.")


def check_combinations(init: str, init_options: dict[str, Any], optim: str, grad_clip: float | None,
                       grad_clip_value: float | None) -> None:
    """Options that are each valid but cannot work together: ``init=init`` with its keys
    ``init_options``, and ``optim=optim`` with the ``regularization.grad_clip*`` values."""
    check_init = INITS.facts(init).check
    if check_init is not None:  # e.g. init.gain and init.nonlinearity both set
        check_init(**init_options)
    if OPTIMIZERS.facts(optim).closure:
        for key, value in (("grad_clip", grad_clip), ("grad_clip_value", grad_clip_value)):
            if value is not None:
                raise ConfigError(f"regularization.{key} would hand optim={optim}'s line search gradients "
                                  f"that do not match the loss: remove regularization.{key} (or pick another "
                                  "optimizer).")


def schedule_warnings(scheduler: str, options: dict[str, Any], max_epochs: int) -> list[str]:
    """Schedules (``scheduler=scheduler`` with its keys ``options``) that will not do what
    their presets describe within ``max_epochs``."""
    warnings = []
    warmup = options.get("warmup_epochs")
    if warmup and warmup >= max_epochs:
        warnings.append(f"scheduler.warmup_epochs={warmup} is not shorter than the {max_epochs} "
                        "epochs of this run: the learning rate never reaches optim.lr")
    option_warnings = SCHEDULERS.facts(scheduler).warnings
    if option_warnings is not None:
        warnings += option_warnings(max_epochs, **options)
    return warnings


def channels_last_warnings(channels_last: bool, input_shape: tuple[int, ...], model: nn.Module, *, data: str,
                           model_name: str) -> list[str]:
    """``trainer.channels_last=true`` where it changes nothing (see
    ``dltrain.training.device.resolve_memory_format``) for ``data=data`` and ``model=model_name``."""
    if not channels_last:
        return []
    if len(input_shape) != 3:
        return [f"trainer.channels_last=true only changes image models; ignored for data={data}, whose "
                f"examples have shape {tuple(input_shape)}, not (channels, height, width)"]
    if not any(p.dim() == 4 for p in model.parameters()):
        return [f"trainer.channels_last=true only changes convolutions; ignored for model={model_name}, "
                "which has none"]
    return []


def check_transfer(transfer: TransferOptions | None, optim: str, *, closure: bool, world_size: int) -> None:
    """The transfer keys (``model.freeze``, ``freeze_epochs``, ``backbone_lr``) against each
    other, the optimizer (``closure``: one parameter group) and the number of ranks.

    Raises:
        ConfigError: naming the keys that cannot go together.
    """
    if transfer is None:
        return
    if transfer.freeze_epochs > 0 and transfer.freeze == "none":
        raise ConfigError(f"model.freeze_epochs={transfer.freeze_epochs} trains that many epochs frozen, but "
                          "model.freeze=none freezes nothing: set model.freeze=backbone (or N stages), or "
                          "model.freeze_epochs=0.")
    if transfer.backbone_lr != 1.0 and closure:
        raise ConfigError(f"model.backbone_lr={transfer.backbone_lr:g} needs a parameter group of its own, and "
                          f"optim={optim} takes one: set model.backbone_lr=1 or use another optimizer.")
    if transfer.freeze_epochs > 0 and world_size > 1:
        # DistributedDataParallel registers the parameters that require grad when it wraps the
        # model: those unfrozen later would train on each rank alone, never averaged.
        raise ConfigError(f"model.freeze_epochs={transfer.freeze_epochs} unfreezes the backbone mid-run, which "
                          f"the {world_size} ranks cannot follow (DistributedDataParallel syncs only the parameters "
                          "trainable when it starts): train in one process, or set model.freeze_epochs=0.")


def transfer_warnings(transfer: TransferOptions | None, max_epochs: int) -> list[str]:
    """Freezing the random weights of a model that starts from none, and a fine-tune schedule
    that never unfreezes within ``max_epochs``."""
    if transfer is None:
        return []
    warnings = []
    if transfer.freeze != "none" and transfer.weights == "none":
        warnings.append(f"model.freeze={transfer.freeze} with model.weights=none freezes randomly drawn weights: "
                        "give model.weights trained weights to start from, or set model.freeze=none")
    if transfer.freeze_epochs and transfer.freeze_epochs >= max_epochs:
        warnings.append(f"model.freeze_epochs={transfer.freeze_epochs} is not shorter than the {max_epochs} epochs "
                        f"of this run: the backbone is never unfrozen (model.freeze={transfer.freeze} for the whole "
                        "run)")
    return warnings

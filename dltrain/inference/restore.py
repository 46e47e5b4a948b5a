"""What ``dltrain-eval`` and ``dltrain-predict`` share: a model rebuilt from a checkpoint
alone (:func:`load_model`), and the checkpoint's config overridden by their arguments
(:func:`apply_overrides`). Their ``key=value`` arguments and error boundary are
:mod:`dltrain.inference.tool`'s (imported from here too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dltrain.errors import UserError
from dltrain.inference.tool import (  # noqa: F401  (imported from here by the tools)
    DATA_LOCATION,
    OVERRIDABLE,
    REQUIRED,
    TOOL_ALIASES,
    TRUST_KEYS,
    Key,
    parse_args,
    run_tool,
    usage,
)
from dltrain.models.start_weights import differences, few
from dltrain.training.averaging import weights_to_use
from dltrain.training.checkpoint import CHECKPOINT_VERSION, load_checkpoint
from dltrain.training.device import resolve_device

_UNSET = object()


@dataclass
class Restored:
    """A model rebuilt from a checkpoint.

    Attributes:
        cfg: the run's resolved config (``state["config"]``).
        model: the model with the checkpoint's weights, on its device, in eval mode.
        data: what the model was trained on and how the inputs were preprocessed (``data.json``).
        state: the loaded checkpoint.
        path: the checkpoint file.
    """

    cfg: DictConfig
    model: nn.Module
    data: dict[str, Any]
    state: dict[str, Any]
    path: Path


def load_model(path: str | Path, device: str | torch.device = "cpu", *, target: str | None = None,
               trust_code: bool = False) -> Restored:
    """Rebuild the model a checkpoint was trained as, and load its weights, without the
    training data: the checkpoint's config and ``model_spec`` say how to build it, its
    ``data`` the shape of the inputs.

    Args:
        path: a ``best.pt`` or ``last.pt`` written by ``dltrain``.
        device: where to put the model (``auto``, ``cpu``, ``cuda:N``, or a torch device).
        target: the ``model._target_`` the user names: a ``model=custom`` checkpoint is
            rebuilt only when it is the stored one (or with ``trust_code``).
        trust_code: import and call whatever ``model._target_`` the checkpoint names.

    Raises:
        UserError: the file is missing, damaged, refused (it holds code, or its config names
            code the user did not allow), not written by the trainer, or its weights do not
            fit the model its config describes.
    """
    path = Path(path)
    device = resolve_device(device) if isinstance(device, str) else device
    state = load_checkpoint(path, map_location="cpu")
    missing = [key for key in ("config", "model_spec", "data") if key not in state]
    if missing:
        raise UserError(f"checkpoint {path} has no {', '.join(missing)}: it holds weights only, so the model cannot "
                        "be rebuilt from it; use a best.pt or last.pt written by dltrain training.")
    if state.get("format_version", 1) > CHECKPOINT_VERSION:
        raise UserError(f"checkpoint {path} has format version {state['format_version']}, newer than this dltrain "
                        f"reads ({CHECKPOINT_VERSION}): upgrade dltrain.")
    from dltrain.build import add_log_softmax, build_model
    from dltrain.config.trust import check_data_record, check_stored_config, stored_config
    from dltrain.models.summary import summarize

    check_stored_config(path, state["config"], target=target, trust_code=trust_code)
    cfg = stored_config(path, state["config"])
    _check_model_task(path, cfg)
    check_data_record(path, state["data"])
    data, spec = state["data"], state["model_spec"]
    _check_input_size(path, data)
    inputs = SimpleNamespace(input_shape=tuple(data["input_shape"]), vocab_size=data.get("vocab_size"))
    # start_weights=False: the checkpoint holds the trained weights; none are read or downloaded to start from
    model = build_model(cfg, inputs, spec["output_width"], [], start_weights=False).to(device)
    # One forward pass gives lazy layers their shapes before the weights are loaded.
    example = (torch.ones((2, *inputs.input_shape), dtype=torch.long) if inputs.vocab_size is not None
               else torch.zeros((2, *inputs.input_shape)))
    rows = summarize(model, example.to(device))
    if spec["log_softmax"] and (not rows or rows[-1].kind != "LogSoftmax"):  # as training added it
        add_log_softmax(model, spec["output_width"])
    # The weights the run evaluated: the averaged ones (EMA, SWA) unless regularization.evaluate_averaged=false
    averaging = any(OmegaConf.select(cfg, f"regularization.{key}", default=None) is not None
                    for key in ("ema_decay", "swa_start"))
    try:
        weights = weights_to_use(state, bool(OmegaConf.select(cfg, "regularization.evaluate_averaged", default=True)),
                                 averaging)
    except ValueError as err:
        raise UserError(f"checkpoint {path}: {err}: the file was changed after training; use the checkpoint as "
                        "dltrain wrote it.") from None
    _check_weights(path, model, weights)
    model.load_state_dict(weights, strict=True)
    return Restored(cfg, model.eval(), data, state, path)


def _check_model_task(path: Path, cfg: DictConfig) -> None:
    """Refuse a config whose model its task could not have trained (a relabelled checkpoint), as
    training and ``dltrain-eval`` do, before the tools call what the task's model would have.

    Raises:
        UserError: naming the checkpoint, the model and the task.
    """
    from dltrain.errors import ConfigError
    from dltrain.models import MODELS
    from dltrain.tasks.base import check_model_task

    task = OmegaConf.select(cfg, "task.name", default="supervised")  # written before task= existed
    try:
        check_model_task(str(task), str(cfg.model.name), MODELS.facts(cfg.model.name).tasks)
    except (ConfigError, KeyError):
        raise UserError(f"checkpoint {path}: its config's model={cfg.model.name} cannot be trained by its "
                        f"task={task}: the file was changed after training; use the checkpoint as dltrain "
                        "wrote it.") from None


def check_serves(path: str | Path, cfg: DictConfig) -> None:
    """Refuse, for ``dltrain-predict`` and ``dltrain-export``, a checkpoint whose task's model serves
    nothing (its :class:`~dltrain.tasks.base.TaskFacts` ``refuses_serving``: a GAN's discriminator).

    Raises:
        UserError: naming the checkpoint, its task and why.
    """
    from dltrain.tasks import TASKS

    task = str(OmegaConf.select(cfg, "task.name", default="supervised"))  # checked by load_model
    why = TASKS.facts(task).refuses_serving
    if why is not None:
        raise UserError(f"{path} is a checkpoint of task={task}: {why}")


def _check_weights(path: Path, model: nn.Module, weights: Any) -> None:
    """Refuse weights that do not fit ``model``, or that are not finite, naming a few at fault.

    Raises:
        UserError: naming the checkpoint and the weights missing, unexpected, of another shape,
            or holding NaN or infinite values.
    """
    if not isinstance(weights, dict) or not all(torch.is_tensor(v) for v in weights.values()):
        raise UserError(f"checkpoint {path}: its model entry is not a state dict of tensors: "
                        "use a checkpoint written by dltrain training.")
    problems = differences(model.state_dict(), weights).describe(missing="missing", extra="unexpected",
                                                                 shapes="shape (checkpoint vs model) of")
    if problems:
        raise UserError(f"checkpoint {path}: its weights do not fit the model its config describes "
                        f"({problems}): the file was changed after training, or another version "
                        "of dltrain wrote it; use the checkpoint as dltrain wrote it, with that version.")
    # A diverged or tampered model still runs, and would report chance-level metrics or NaN confidences.
    if broken := [k for k, v in weights.items()
                  if (v.is_floating_point() or v.is_complex()) and not torch.isfinite(v).all()]:
        raise UserError(f"checkpoint {path}: its weights hold NaN or infinite values ({few(broken)}), so the model "
                        "cannot compute anything from them; use an earlier checkpoint (best.pt, an epoch-NNNN.pt) "
                        "or retrain.")


def _check_input_size(path: Path, data: dict[str, Any]) -> None:
    """Refuse a stored input shape or image size no config could have produced, before a model
    and an example input of that size are allocated.

    Raises:
        UserError: naming the checkpoint, the shape and the bound.
    """
    from dltrain.config.schemas import MAX_IMAGE_SIDE

    shape, size = data.get("input_shape"), data.get("image_size") or [1, 1]
    limit = 3 * MAX_IMAGE_SIDE**2  # the values of the largest image data.image_size allows
    sizes_ok = all(isinstance(v, list) and all(type(n) is int and n >= 1 for n in v) for v in (shape, size))
    if not sizes_ok or math.prod(shape) > limit or max(size) > MAX_IMAGE_SIDE:
        raise UserError(f"checkpoint {path}: its input shape {shape} (image size {size}) is not one dltrain "
                        f"trains on (at most {limit} values, {MAX_IMAGE_SIDE} pixels a side): the file was changed "
                        "after training; use the checkpoint as dltrain wrote it.")


def apply_overrides(cfg: DictConfig, overrides: dict[str, Any]) -> None:
    """Set ``overrides`` (from :func:`parse_args`) in ``cfg``, in place.

    Raises:
        UserError: a key the checkpoint's config does not have, or a batch size below 1.
    """
    for key, value in overrides.items():
        if OmegaConf.select(cfg, key, default=_UNSET) is _UNSET:
            group = key.split(".")[0]
            known = ", ".join(f"{group}.{k}" for k in cfg.get(group, {}) if k != "name")
            raise UserError(f"{key} is not a key of this checkpoint's data={cfg.data.name} config: "
                            f"choose one of {known}")
        if key == "trainer.eval_batch_size" and (not isinstance(value, int) or value < 1):
            raise UserError(f"{key}={value} is not a whole number of at least 1")
        OmegaConf.update(cfg, key, value, merge=False)

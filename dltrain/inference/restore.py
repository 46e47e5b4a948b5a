"""What ``dltrain-eval`` and ``dltrain-predict`` share: a model rebuilt from a checkpoint
alone (:func:`load_model`), their ``key=value`` arguments (:func:`parse_args`), and the
boundary where a user error becomes one line on stderr (:func:`run_tool`).
"""

from __future__ import annotations

import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dltrain.errors import UserError
from dltrain.models.start_weights import differences, few
from dltrain.training.checkpoint import CHECKPOINT_VERSION, load_checkpoint
from dltrain.training.device import resolve_device
from dltrain.training.signals import Interrupted

T = TypeVar("T")

#: Config keys a tool may override besides ``device``: where the same data lives now, and the
#: batch size. Keys that would change the split (fractions, samples, seed) are refused: the
#: "test" metrics would no longer be those of held-out examples.
DATA_LOCATION = ("data.path", "data.root", "data.download", "data.num_workers", "data.in_memory")
OVERRIDABLE = ("trainer.eval_batch_size",)
REQUIRED = object()  # the default of a key that has none
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
    _check_weights(path, model, state["model"])
    model.load_state_dict(state["model"], strict=True)
    return Restored(cfg, model.eval(), data, state, path)


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


@dataclass(frozen=True)
class Key:
    """One ``key=value`` argument of a tool.

    Attributes:
        default: its value when not given (:data:`REQUIRED` for none); its type converts the value given.
        meaning: one line for ``--help``.
    """

    default: Any
    meaning: str


#: The keys with which a user allows the code a ``model=custom`` checkpoint names (see ``dltrain.config.trust``).
TRUST_KEYS = {
    "model._target_": Key(None, "model=custom checkpoints: the code to build the model with; must be the "
                                "checkpoint's own"),
    "trust_code": Key(False, "true: import and run whatever model._target_ the checkpoint names"),
}


def parse_args(argv: Sequence[str], tool: str, defaults: dict[str, Key], *, about: str, example: str,
               config_keys: bool = True) -> dict[str, Any]:
    """Read ``key=value`` arguments; ``--help`` (or ``-h``) prints the usage and exits 0.

    Args:
        argv: the arguments (without the program name).
        tool: the command's name, for the usage text.
        defaults: every key the tool takes, with its default and meaning.
        about: what the tool does, for the usage text.
        example: one example command line.
        config_keys: also take ``data.*`` and ``trainer.eval_batch_size``, overrides of the
            checkpoint's config (see :func:`apply_overrides`).

    Returns:
        Every key of ``defaults`` with its value, and ``overrides``: the config keys given, with
        their values read as on ``dltrain``'s command line (numbers, lists, strings).

    Raises:
        UserError: an argument that is not ``key=value``, an unknown key, a value of the wrong
            type, or a required key missing.
    """
    if any(arg in ("-h", "--help") for arg in argv):
        print(usage(tool, defaults, about=about, example=example, config_keys=config_keys))
        sys.exit(0)
    values: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or not key:
            raise UserError(f"argument {arg!r} is not key=value: write each argument as key=value, "
                            f"e.g. {next(iter(defaults))}=...; see {tool} --help")
        if key in defaults:
            values[key] = _convert(key, value, defaults[key].default)
        elif "." in key and config_keys:
            overrides[key] = _config_value(arg, key)
        else:
            known = ", ".join([*defaults, *(("data.path", "data.root", "...") if config_keys else ())])
            meant = _meant(key, value, defaults, (*DATA_LOCATION, *OVERRIDABLE) if config_keys else ())
            raise UserError(f"unknown key {key}: {meant}{tool} takes {known}; see {tool} --help")
    if lacking := [key for key, spec in defaults.items() if spec.default is REQUIRED and key not in values]:
        raise UserError(f"{', '.join(f'{k}=...' for k in lacking)} {'is' if len(lacking) == 1 else 'are'} required: "
                        f"e.g. {example}")
    return {**{k: spec.default for k, spec in defaults.items()}, **values, "overrides": overrides}


def _convert(key: str, value: str, default: Any) -> Any:
    """``value`` as the type of ``default``: true or false for flags, a whole number of at least 1
    for numbers, else the text."""
    if isinstance(default, bool):
        if value.lower() not in ("true", "false"):
            raise UserError(f"{key}={value} is not true or false: e.g. {key}=true")
        return value.lower() == "true"
    if isinstance(default, int):
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number < 1:
            raise UserError(f"{key}={value} is not a whole number of at least 1: e.g. {key}={default}")
        return number
    return value


#: Names users bring for the tools' keys (and the config key meant where the tool takes it).
TOOL_ALIASES = {"checkpoint": "ckpt", "batch_size": "trainer.eval_batch_size"}


def _meant(key: str, value: str, defaults: dict[str, Key], config_keys: Sequence[str]) -> str:
    """``did you mean KEY=VALUE? `` for a ``key`` spelled like one the tool takes (the key
    alone when ``value`` does not fit it); empty when none is."""
    from dltrain.config.suggest import closest, fits

    known = [*defaults, *config_keys]
    meant = TOOL_ALIASES.get(key.lower()) if TOOL_ALIASES.get(key.lower()) in known else closest(key, known)
    if meant is None:
        return ""
    try:
        if meant in defaults:
            _convert(meant, value, defaults[meant].default)
        elif not fits(meant, value, sweep=False):
            return f"did you mean {meant}? "
    except UserError:
        return f"did you mean {meant}? "
    return f"did you mean {meant}={value}? "


def _config_value(arg: str, key: str) -> Any:
    """The value of a config override, read with Hydra's grammar as ``dltrain`` reads it."""
    if key not in DATA_LOCATION and key not in OVERRIDABLE:
        meant = _meant(key, arg.partition("=")[2], {}, (*DATA_LOCATION, *OVERRIDABLE))
        raise UserError(f"{key} cannot be changed here: {meant}only where the data lives ({', '.join(DATA_LOCATION)}), "
                        f"device and {', '.join(OVERRIDABLE)} override the checkpoint's config, whose other keys "
                        "made the model and its test split")
    from hydra.core.override_parser.overrides_parser import OverridesParser

    override = OverridesParser.create().parse_override(arg)
    if override.is_sweep_override():
        raise UserError(f"{arg} is a sweep: give one value")
    return override.value()


def usage(tool: str, defaults: dict[str, Key], *, about: str, example: str, config_keys: bool = True) -> str:
    """The ``--help`` text: what the tool does, every key with its default and meaning, one example."""
    width = max(len(key) for key in [*defaults, *(OVERRIDABLE if config_keys else ())]) + 2
    lines = [f"usage: {tool} " + " ".join(f"{k}=..." if s.default is REQUIRED else f"[{k}={s.default}]"
                                          for k, s in defaults.items()), "", about, "", "keys:"]
    for key, spec in defaults.items():
        default = "required" if spec.default is REQUIRED else f"default {spec.default}"
        lines.append(f"  {key.ljust(width)}{spec.meaning} ({default})")
    if config_keys:
        lines.append(f"  {'data.path'.ljust(width)}where the training data lives now, if it moved: data.path, "
                     "data.root (also data.download, data.num_workers, data.in_memory; default: as trained)")
        lines.append(f"  {OVERRIDABLE[0].ljust(width)}examples per batch (default: as trained)")
    lines += ["", "example:", f"  {example}"]
    return "\n".join(lines)


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


def run_tool(tool: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` as the console script ``tool``: a user error (or config error) is printed
    as ``{tool}: error: ...`` on one line and exits with code 2, Ctrl-C exits with 130 (a
    stop signal dltrain handles, :class:`Interrupted`, with 128 + its number); anything else
    is a bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` prints the traceback of user
    errors too."""
    from dltrain.cli.app import describe_error

    try:
        return fn()
    except KeyboardInterrupt:
        print(f"{tool}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Interrupted as err:  # dltrain's own stop signal: no error, and its signal's exit code
        print(f"{tool}: {describe_error(err).rstrip('.')}.", file=sys.stderr)
        sys.exit(err.exit_code)
    except Exception as err:
        message = describe_error(err)
        if message is None:
            raise
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            traceback.print_exception(err)
        print(f"{tool}: error: {message.rstrip('.')}.", file=sys.stderr)
        sys.exit(2)

"""What a checkpoint's stored config may make dltrain do.

A checkpoint is loaded as plain data, but its config names what to build. The model is
rebuilt only through the model registry; ``model=custom`` imports and calls its
``_target_``, so a checkpoint that wants one is rebuilt only when the user names the same
target on the command line or passes ``trust_code=true``. Anything else in the stored
config that names code (Hydra's ``_target_``-style keys) or would be resolved (an
``${...}`` interpolation, such as ``${oc.env:SECRET}``) is refused. ``resume=``,
``dltrain-eval`` and ``dltrain-predict`` all ask :func:`check_stored_config` first.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dltrain.config.loggers import logger_node
from dltrain.config.schemas import ONE_OPTION_GROUPS
from dltrain.config.validation import GROUP_SCHEMAS, group_node, validate
from dltrain.data import expression
from dltrain.data.splits import TASKS
from dltrain.data.synthetic import FUNCTIONS
from dltrain.errors import ConfigError, UserError, first_line
from dltrain.config.schemas import TrainConfig
from dltrain.models import MODELS

#: Keys with which Hydra's ``instantiate`` imports or calls code.
CODE_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")
#: Stored keys whose text is an expression in ``x``: parsed (never run) before anything is built.
EXPRESSIONS = ("data.function",)
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


def check_stored_config(path: str | Path, saved: Any, *, target: str | None = None, trust_code: bool = False,
                        naming: str = "model._target_=") -> None:
    """Refuse a stored config that would import, call or resolve anything the user did not allow.

    Args:
        path: the checkpoint, for the message.
        saved: its stored config (``state["config"]``).
        target: the ``model._target_`` the user gave on the command line, or None.
        trust_code: the user's opt-in to run whatever code the checkpoint names.
        naming: how the user names a target on this command line (for the message).

    Raises:
        UserError: one line naming the checkpoint, the key, and how to allow it where that is possible.
    """
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        raise UserError(f"checkpoint {path}: its config is not a config with a model node: "
                        "use a checkpoint written by dltrain training")
    model = saved["model"]
    name = model.get("name")
    if not isinstance(name, str) or name not in MODELS:
        raise UserError(f"checkpoint {path} was trained with model={name}, which is not a model of this dltrain "
                        f"version ({', '.join(MODELS.names())}): use a checkpoint written by dltrain training")
    user_code = MODELS.facts(name).user_code  # the model's own code is named by model._target_
    stored_target = model.get("_target_") if user_code else None
    for key, value in _walk(saved):
        if key.rpartition(".")[2] in CODE_KEYS and not (key == "model._target_" and user_code):
            raise UserError(f"checkpoint {path}: its config sets {key}={_short(value)}, which names code to run; "
                            "a checkpoint's config never does that: use a checkpoint written by dltrain training")
        if isinstance(value, str) and "${" in value:
            raise UserError(f"checkpoint {path}: its config sets {key}={_short(value)}, an interpolation that "
                            "would be resolved; a checkpoint's config is never resolved: use a checkpoint written "
                            "by dltrain training")
        if key in EXPRESSIONS and not (isinstance(value, str) and value in FUNCTIONS):
            try:
                expression.parse(value)
            except expression.ExpressionError as err:
                raise UserError(f"checkpoint {path}: its config sets {key}={_short(value)}, which is not an allowed "
                                f"expression ({err}): use a checkpoint written by dltrain training") from None
    if user_code:
        _check_target(path, name, stored_target, target, trust_code, naming)


def stored_config(path: str | Path, saved: dict[str, Any]) -> DictConfig:
    """The stored config (checked by :func:`check_stored_config` first) typed by the schemas and
    validated as a composed one is: a value out of range (``data.samples`` of a billion points,
    a negative batch size) is refused before anything is built from it. ``trust_code`` is never
    taken from the file.

    Raises:
        UserError: naming the checkpoint and the first key that does not fit this version's schemas.
    """
    where = ""  # the node being merged: OmegaConf names keys relative to it
    try:
        cfg = OmegaConf.structured(TrainConfig)
        for group, options in ONE_OPTION_GROUPS.items():
            where = f"{group}."
            node = saved.get(group)
            schema = options.get(node.get("name")) if isinstance(node, dict) else None
            if schema is None:
                raise ConfigError(f"{group}={node.get('name') if isinstance(node, dict) else node} is not an option "
                                  "of this dltrain version")
            cfg[group] = group_node(schema, node)
        where = "logger."
        cfg.logger = logger_node(saved.get("logger"))  # either shape: runs written with one logger too
        where = ""
        cfg = OmegaConf.merge(cfg, {k: v for k, v in saved.items() if k not in GROUP_SCHEMAS})
        cfg.trust_code = False
        validate(cfg)
    except (ConfigError, OmegaConfBaseException) as err:
        key = getattr(err, "full_key", None)  # OmegaConf's errors name the key apart from their message
        problem = f"{where}{key}: {first_line(err)}" if key else first_line(err)
        raise UserError(f"checkpoint {path}: its config does not fit this dltrain version "
                        f"({problem.rstrip('.')}): use a checkpoint written by dltrain training") from None
    return cfg


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(v: Any) -> bool:
    return isinstance(v, list) and all(_number(x) for x in v)


def _strings(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _scaling(v: Any) -> bool:
    return isinstance(v, dict) and _numbers(v.get("mean")) and _numbers(v.get("std")) \
        and len(v["mean"]) == len(v["std"])


def _cells(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and (_number(x) or isinstance(x, str)) for k, x in v.items())


#: What each entry of a checkpoint's ``data`` record (the preprocessing ``dltrain-eval`` and
#: ``dltrain-predict`` apply to new inputs) must be: it is read from the file, so it is checked
#: before any of it is used, and a damaged or crafted one is one line instead of a traceback.
DATA_RECORD: dict[str, tuple[Any, str]] = {
    "task": (lambda v: v in TASKS, f"one of {', '.join(TASKS)}"),
    "num_outputs": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a whole number >= 1"),
    "class_names": (lambda v: v is None or (isinstance(v, list) and all(isinstance(x, str) or _number(x) for x in v)),
                    "a list of names"),
    "target_scale": (lambda v: v is None or (_numbers(v) and len(v) == 2), "[mean, std]"),
    "vocab_size": (lambda v: v is None or (isinstance(v, int) and v >= 1), "a whole number"),
    "padded_length": (lambda v: v is None or (isinstance(v, int) and v >= 1), "a whole number"),
    "vocabulary": (_strings, "a list of tokens"),
    "features": (_strings, "a list of column names"),
    "encoded_features": (_strings, "a list of column names"),
    "numeric_scaling": (lambda v: isinstance(v, dict) and all(
        isinstance(s, dict) and _number(s.get("mean")) and _number(s.get("std")) for s in v.values()),
        "{column: {mean, std}}"),
    "categorical": (lambda v: isinstance(v, dict) and all(isinstance(c, list) for c in v.values()),
                    "{column: [categories]}"),
    "fill_values": (_cells, "{column: value}"),
    "fill_values_new_rows": (_cells, "{column: value}"),
    "input_scaling": (lambda v: v is None or _scaling(v), "{mean: [...], std: [...]}"),
    "normalization": (_scaling, "{mean: [...], std: [...]}"),
    "pixel_scaling": (_scaling, "{mean: [...], std: [...]}"),
    "pixel_max": (lambda v: _number(v) and v > 0, "a number > 0"),
    "color": (lambda v: v in ("grayscale", "rgb"), "grayscale or rgb"),
    "channels": (lambda v: type(v) is int and v >= 1, "a whole number >= 1"),
    "normalization_source": (lambda v: isinstance(v, str), "a name"),
    "brightness": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "numeric_range": (lambda v: isinstance(v, dict) and all(
        _numbers(r) and len(r) == 2 and r[0] <= r[1] for r in v.values()), "{column: [min, max]}"),
    "input_range": (lambda v: isinstance(v, dict) and _numbers(v.get("min")) and _numbers(v.get("max"))
                    and len(v["min"]) == len(v["max"]) and all(lo <= hi for lo, hi in zip(v["min"], v["max"])),
                    "{min: [...], max: [...]}"),
    "native_sizes": (lambda v: isinstance(v, dict) and all(
        isinstance(v.get(k), list) and len(v[k]) == 2 and all(type(n) is int and n >= 1 for n in v[k])
        for k in ("min", "max")), "{min: [height, width], max: [height, width]}"),
}


def check_data_record(path: str | Path, data: Any) -> None:
    """Refuse a checkpoint whose ``data`` record (classes, scaling, vocabulary, ...) is not
    what dltrain writes, naming the first entry at fault.

    Raises:
        UserError: one line naming the checkpoint, the entry and what it should be.
    """
    if not isinstance(data, dict):
        raise UserError(f"checkpoint {path}: its data record is not a record: use a checkpoint written by "
                        "dltrain training")
    for key, (ok, what) in DATA_RECORD.items():
        if key in data and not ok(data[key]):
            raise UserError(f"checkpoint {path}: its data record's {key}={_short(data[key])} is not {what}: the "
                            "file was changed after training; use a checkpoint written by dltrain training")
    if "channels" in data:  # the channels a model reads: those of its inputs and of their statistics
        shape, scaling = data.get("input_shape"), data.get("normalization") or {}
        if not (isinstance(shape, list) and shape and data["channels"] == shape[0] == len(scaling.get("mean", []))):
            raise UserError(f"checkpoint {path}: its data record's channels={data['channels']} are not those of its "
                            "input shape and normalization: the file was changed after training; use a checkpoint "
                            "written by dltrain training")


def named_target(model: DictConfig) -> str | None:
    """The ``model._target_`` of the user's own config (``model=custom``), or None."""
    name = model.get("name")
    if name not in MODELS or not MODELS.facts(name).user_code or OmegaConf.is_missing(model, "_target_"):
        return None
    return model.get("_target_")


def _check_target(path: str | Path, name: str, stored: Any, given: str | None, trust_code: bool, naming: str) -> None:
    """A custom model's target is imported only when the user named the same one or trusts the file."""
    if not isinstance(stored, str) or not _DOTTED.fullmatch(stored):
        raise UserError(f"checkpoint {path}: its model._target_={_short(stored)} is not a dotted import path: "
                        "use a checkpoint written by dltrain training")
    if trust_code or given == stored:
        return
    if given is not None:
        raise UserError(f"checkpoint {path} was trained with model._target_={stored}, not the model._target_={given} "
                        f"given: name the same code ({naming}{stored}) if you trust it, or use another checkpoint")
    raise UserError(f"checkpoint {path} was trained with model={name} model._target_={stored}, which would import "
                    f"and run that code: if you trust it, name it on the command line ({naming}{stored}) or pass "
                    "trust_code=true")


def _walk(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, value)`` of every entry of nested dicts and lists, inner nodes included."""
    items: list[tuple[str, Any]] = []
    entries = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in entries:
        name = f"{prefix}{key}"
        items.append((name, value))
        items += _walk(value, name + ".")
    return items


def _short(value: Any, limit: int = 60) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit] + "..."

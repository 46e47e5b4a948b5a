"""A schema field's type in dltrain's words, and OmegaConf's type errors told in them:
``optim.lr=abc`` names the key, the value and what the key takes, not the Python type that
failed to convert.

Imports nothing heavy: the command line uses it before torch is loaded.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from dltrain.errors import ConfigError

#: Per scalar type: what a value that does not convert is not, what the key takes, and a
#: sample value for a key whose default is null.
WORDS: dict[type, tuple[str, str, str | None]] = {
    bool: ("a boolean", "true or false", None),
    int: ("a whole number", "an integer", "1"),
    float: ("a number", "a float", "0.1"),
    str: ("a single value", "text", None),
}
PLURALS = {bool: "true or false values", int: "integers", float: "numbers", str: "strings"}
_SYMBOLS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def render(value: Any) -> str:
    """``value`` as it is written on the command line: ``true``, ``null``, ``[1, 2]``."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {render(v)}" for k, v in value.items()) + "}"
    return str(value)


def unwrap(tp: Any) -> tuple[Any, bool]:
    """``tp`` without ``| None``, and whether it allows null."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Any), True
    return tp, False


def list_item(tp: Any) -> Any | None:
    """The item type of a list type (``list[int]`` -> ``int``); None for any other type."""
    return (typing.get_args(tp) or (Any,))[0] if typing.get_origin(tp) in (list, typing.List) else None


def takes(tp: Any, meta: typing.Mapping[str, Any] | None = None) -> str | None:
    """What a key of type ``tp`` takes, in words (``an integer >= 1``, ``one of min, max``,
    ``a list of integers``, ``a float or null``); None for a type dltrain does not name."""
    meta = meta or {}
    base, nullable = unwrap(tp)
    item = list_item(base)
    if item is not None:
        words = f"a list of {PLURALS.get(item, 'values')}"
    elif base is str and meta.get("choices"):
        words = f"one of {', '.join(meta['choices'])}"
    elif base is str and meta.get("help"):
        words = meta["help"]
    elif base in WORDS:
        words = WORDS[base][1]
        bounds = [f"{_SYMBOLS[name]} {meta[name]}" for name in _SYMBOLS if name in meta]
        words += " " + " and ".join(bounds) if bounds else ""
    else:
        return None
    if nullable and not (base is str and meta.get("help")):  # a description says what it takes
        words = "true, false or null" if base is bool else f"{words} or null"
    return words


def _example(field: dataclasses.Field, tp: Any) -> str | None:
    """A value ``field`` takes: its default, else a sample of its type."""
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    if default is not None and default is not dataclasses.MISSING and default != MISSING:
        return render(default)
    base, _ = unwrap(tp)
    return WORDS.get(base, (None, None, None))[2]


def _field(schema: Any, name: Any) -> tuple[dataclasses.Field, Any] | None:
    """The field ``name`` of the dataclass ``schema``, and its type."""
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        return None
    found = [f for f in dataclasses.fields(schema) if f.name == name]
    if not found:
        return None
    return found[0], typing.get_type_hints(schema).get(name, found[0].type)


def describe_type_error(err: ValidationError, typed: str | None = None) -> str | None:
    """One line for a value OmegaConf could not convert to its key's type (``optim.lr=abc``,
    ``trainer.max_epochs=2.5``, ``model.hidden=[a]``, ``trainer=3``), read from the error's
    key and value and the schema's field type; None when the key is not a schema field.
    ``typed``: the value as the user wrote it (``1e3`` where OmegaConf has ``1000.0``)."""
    key, value = err.full_key, typed or render(err.value)
    if isinstance(err.parent_node, ListConfig) and isinstance(err.key, int):  # an item of a list
        owner = err.parent_node._get_parent()
        list_key = key.rpartition("[")[0]
        found = _field(OmegaConf.get_type(owner), list_key.rpartition(".")[2]) if owner is not None else None
        if found is None or list_item(unwrap(found[1])[0]) not in WORDS:
            return None
        field, tp = found
        item = list_item(unwrap(tp)[0])
        example = _example(field, tp)
        return (f"{key}={value} is not {WORDS[item][0]}: {list_key} takes {takes(tp, field.metadata)}"
                + (f" (e.g. {list_key}={example})" if example else "") + ".")
    found = _field(err.object_type, err.key)
    if found is None:
        return None
    field, tp = found
    base, _ = unwrap(tp)
    if dataclasses.is_dataclass(base):
        inner = dataclasses.fields(base)[0]
        example = _example(inner, typing.get_type_hints(base)[inner.name]) or "..."
        return (f"{key}={value} cannot be set: {key} is a group of keys; set them one by one, "
                f"e.g. {key}.{inner.name}={example}.")
    words = takes(tp, field.metadata)
    if words is None:
        return None
    is_not = "a list" if list_item(base) is not None else WORDS.get(base, ("a valid value",))[0]
    example = _example(field, tp) if base is not bool else None
    if base is int and isinstance(err.value, float) and err.value.is_integer():  # 1e3, 1.0: a float that is whole
        return f"{key}={value} is not a whole number: {key} takes {words} (write {key}={int(err.value)})."
    return (f"{key}={value} is not {is_not}: {key} takes {words}"
            + (f" (e.g. {key}={example})" if example else "") + ".")


_BOUNDS = {
    "ge": (lambda v, b: v >= b, ">="),
    "gt": (lambda v, b: v > b, ">"),
    "le": (lambda v, b: v <= b, "<="),
    "lt": (lambda v, b: v < b, "<"),
}


def check_value(key: str, value: Any, meta: dict[str, Any]) -> None:
    """Raise a one-line ConfigError when ``value`` breaks the range, choices, length or pattern in
    ``meta`` (a schema field's metadata: see :func:`dltrain.config.schemas.spec`)."""
    hint = f" ({meta['help']})" if meta.get("help") else ""
    if value is None:
        return
    if "items" in meta or "length" in meta:
        if not isinstance(value, list):
            raise ConfigError(f"{key}={value} is not valid: expected a list such as [1, 2].")
        if "length" in meta and len(value) != meta["length"]:
            raise ConfigError(f"{key}={value} is not valid: expected a list of {meta['length']} values.")
        for i, item in enumerate(value):
            check_value(f"{key}[{i}]", item, meta.get("items", {}))
        return
    if any(name in meta for name in _BOUNDS) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"{key}={value} is not valid: expected a number.")
    if isinstance(value, float) and not math.isfinite(value):  # no key of dltrain's takes inf or nan
        raise ConfigError(f"{key}={value} is not valid: expected a finite number.")
    for name, (ok, symbol) in _BOUNDS.items():
        if name in meta and not ok(value, meta[name]):
            raise ConfigError(f"{key}={value} is out of range: it must be {symbol} {meta[name]}{hint}.")
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{key}={value} is not a known value: choose one of {', '.join(meta['choices'])}.")
    if "pattern" in meta and not re.fullmatch(meta["pattern"], str(value)):
        raise ConfigError(f"{key}={value} is not valid: expected {meta.get('help') or meta['pattern']}.")


def value_error(schema: type, name: str, value: Any) -> str | None:
    """Why ``value`` cannot be key ``name`` of the dataclass ``schema`` (its type, range or
    choices), or None when it can."""
    node = OmegaConf.structured(schema)
    meta = {f.name: f.metadata for f in dataclasses.fields(schema)}
    try:
        node[name] = value
        typed = node[name]
        if isinstance(typed, (DictConfig, ListConfig)):
            typed = OmegaConf.to_container(typed, resolve=True)
        check_value(name, typed, dict(meta.get(name, {})))
    except (ConfigError, OmegaConfBaseException) as err:
        return str(err)
    return None

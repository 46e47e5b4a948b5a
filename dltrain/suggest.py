"""Near misses: the key or option a user most likely meant, as an override to copy
(``optimizer=sgd`` -> ``optim=sgd``, ``epochs=5`` -> ``trainer.max_epochs=5``,
``model.hiden`` -> ``model.hidden``, ``optim=SGD`` -> ``optim=sgd``).

A suggestion is made only when it is a real key (or option) and the user's value fits it;
otherwise the key is named with what it takes. Imports nothing heavy: the command line uses
it before torch is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dltrain.schemas import GROUP_SCHEMAS
from dltrain.value_types import takes

#: Names users bring from other tools, and dltrain's key (or config group) for each.
ALIASES = {
    "epochs": "trainer.max_epochs", "num_epochs": "trainer.max_epochs", "n_epochs": "trainer.max_epochs",
    "lr": "optim.lr", "learning_rate": "optim.lr",
    "optimizer": "optim", "optimiser": "optim", "opt": "optim",
    "bs": "trainer.batch_size",
    # dltrain's weight decay: never on biases or norm parameters, the same for every optimizer
    "weight_decay": "regularization.l2", "wd": "regularization.l2",
    "dropout": "regularization.dropout",
    "patience": "trainer.early_stopping.patience",
    "gpus": "device", "gpu": "device", "accelerator": "device",
    "lr_scheduler": "scheduler", "sched": "scheduler",
    "net": "model", "network": "model", "arch": "model",
    "dataset": "data",
    "criterion": "loss",
    "initialization": "init",
    "gradient_clip_val": "regularization.grad_clip", "clip_grad_norm": "regularization.grad_clip",
    "augmentation": "regularization.augment",
}

#: How alike two names must be (``difflib`` ratio) to be taken for one another.
CUTOFF = 0.7


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate spelled most like ``name`` (ignoring case), if any is close enough."""
    by_lower = {c.lower(): c for c in candidates}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    found = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=CUTOFF)
    return by_lower[found[0]] if found else None


def unknown_option(group: str, option: str, options: Sequence[str]) -> str:
    """The message for ``group=option`` that is not one of ``options``, with the option meant
    when one is spelled alike (``optim=SGD`` -> ``optim=sgd``)."""
    listed = ", ".join(options)
    meant = closest(option, options)
    if meant is None:
        return f"{group}={option} is not a known option: choose one of {listed}."
    return f"{group}={option} is not a known option: did you mean {group}={meant}? (choose one of {listed})."


def did_you_mean(override: str, root: DictConfig) -> str | None:
    """``did you mean KEY=VALUE?`` for an override (``epochs=5``) whose key is not in the
    config ``root``; None when no key is near enough to suggest. The value is filled in when
    it fits the key meant; a sweep's values (``epochs=1,2``) all have to."""
    key, eq, value = override.lstrip("+~").partition("=")
    # A key appended with +key=value is in the config already: it is not its own suggestion.
    paths = [path for path in key_paths(root) if path != key and not path.startswith(f"{key}.")]
    meant = _meant_key(key.lower(), paths)
    if meant is None:
        return None
    if meant in GROUP_SCHEMAS:
        return f"did you mean {_group_override(meant, value if eq else None)}?"
    return f"did you mean {_leaf_override(meant, value if eq else None, root)}?"


def key_paths(node: DictConfig, prefix: str = "") -> list[str]:
    """Every key of ``node`` and of the nodes below it, as dotted paths (Hydra's own node left out)."""
    paths = []
    for name in node.keys():
        if not prefix and name == "hydra":
            continue
        path = f"{prefix}{name}"
        paths.append(path)
        child = node._get_node(name)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            paths += key_paths(child, f"{path}.")
    return paths


def _meant_key(key: str, paths: list[str]) -> str | None:
    """The key path meant by ``key``: its first unknown part (and what follows) replaced by
    an alias, the one key of that name, or a key spelled alike at the same level."""
    parts = key.split(".")
    known = next((i for i in range(len(parts)) if ".".join(parts[: i + 1]) not in paths), len(parts))
    if known == len(parts):
        return key
    parent, name, rest = ".".join(parts[:known]), parts[known], parts[known + 1:]
    meant = _meant_name(parent, name, paths)
    if meant is None:
        return None
    full = ".".join([meant, *rest])
    return full if full in paths else None


def _meant_name(parent: str, name: str, paths: list[str]) -> str | None:
    """The path meant by the unknown ``name`` below ``parent`` (empty at the top level)."""
    prefix = f"{parent}." if parent else ""
    alias = ALIASES.get(name)
    if alias in paths and alias.startswith(prefix):
        return alias
    siblings = [p[len(prefix):] for p in paths if p.startswith(prefix) and "." not in p[len(prefix):]]
    if match := closest(name, siblings):
        return prefix + match
    if parent:
        return None
    # At the top level: a key of that name (or spelled alike) anywhere, when only one node has it.
    owners: dict[str, list[str]] = {}
    for path in paths:
        owners.setdefault(path.rpartition(".")[2], []).append(path)
    unique = {leaf: found[0] for leaf, found in owners.items() if len(found) == 1}
    names = {**unique, **{a: t for a, t in ALIASES.items() if t in paths}}
    match = closest(name, names)
    return names[match] if match else None


def _group_override(group: str, value: str | None) -> str:
    """``group=option`` for the option (or options of a sweep) ``value`` names, matched by
    spelling; ``group=OPTION`` with the options listed when none matches."""
    options = sorted(GROUP_SCHEMAS[group])
    typed = [str(v) for v in _parsed(group, value) or []]
    meant = [closest(v, options) for v in typed]
    if typed and None not in meant:
        return f"{group}={','.join(meant)}"
    return f"{group}=OPTION (one of {', '.join(options)})"


def _leaf_override(path: str, value: str | None, root: DictConfig) -> str:
    """``path=value`` when ``value`` fits the key's type, ranges and choices; else the key
    with what it takes."""
    parent, _, name = path.rpartition(".")
    node = OmegaConf.select(root, parent) if parent else root
    schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    fields = {f.name: f for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else {}
    if name not in fields or isinstance(node._get_node(name), DictConfig):
        return path  # a node of keys, or a key the schema does not type
    values = _parsed(path, value)
    if values is not None and all(_fits(schema, name, v) for v in values):
        return f"{path}={value}"
    words = takes(typing.get_type_hints(schema)[name], fields[name].metadata)
    return f"{path} ({words})" if words else path


def _parsed(key: str, value: str | None) -> list[Any] | None:
    """The values ``key=value`` sets, read with Hydra's override grammar (several for a sweep);
    None when it cannot be read."""
    if value is None:
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        override = OverridesParser.create().parse_override(f"{key}={value}")
        return list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
    except Exception:  # any value Hydra cannot read, or a sweep it cannot list: nothing to fill in
        return None


def _fits(schema: type, name: str, value: Any) -> bool:
    """Whether ``value`` passes as key ``name`` of ``schema``: its type, ranges and choices."""
    from dltrain.config import value_error  # config uses this module for its own messages

    return value_error(schema, name, value) is None

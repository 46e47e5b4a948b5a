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

from dltrain.config.schemas import GROUP_SCHEMAS
from dltrain.config.value_types import takes, value_error

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

#: Option names users bring from other tools, per config group: only where one option is meant.
OPTION_ALIASES = {"loss": {"ce": "cross_entropy"}, "scheduler": {"cos": "cosine"}}

#: The name prefixes of torchvision's classification networks: one typed as a model option
#: (``model=resnet18``) is meant as ``model=torchvision model.arch=resnet18``. Listed here, not
#: asked of torchvision: a config error is reported without importing torch.
TORCHVISION_FAMILIES = ("alexnet", "convnext_", "densenet", "efficientnet_", "googlenet", "inception_", "maxvit_",
                        "mnasnet", "mobilenet_", "regnet_", "resnet", "resnext", "shufflenet_", "squeezenet", "swin_",
                        "vgg", "vit_", "wide_resnet")

#: How alike two names must be (``difflib`` ratio) to be taken for one another.
CUTOFF = 0.7
#: How alike a top-level name and a key deeper in the tree must be: a loose match there
#: would lead to a key of another meaning (``max_steps`` is not ``trainer.max_epochs``).
DEEP_CUTOFF = 0.85


def override_key(override: str) -> str:
    """The key an override sets, without its ``+``/``~`` prefix (``+optim.lr=1`` -> ``optim.lr``)."""
    return override.lstrip("+~").partition("=")[0]


def closest(name: str, candidates: Iterable[str], cutoff: float = CUTOFF) -> str | None:
    """The candidate spelled most like ``name`` (ignoring case), if any is close enough. A name
    of three letters or fewer matches only itself, with two neighbouring letters swapped or
    with a letter typed twice (``lrr`` is ``lr``, ``nn`` is not ``rnn``)."""
    by_lower = {c.lower(): c for c in candidates}
    name = name.lower()
    if name in by_lower:
        return by_lower[name]
    if len(name) <= 3:
        slips = [c for c in by_lower if _swapped(name, c) or _doubled(name, c)]
        return by_lower[slips[0]] if len(slips) == 1 else None
    found = difflib.get_close_matches(name, list(by_lower), n=1, cutoff=cutoff)
    return by_lower[found[0]] if found else None


def _swapped(a: str, b: str) -> bool:
    """Whether ``b`` is ``a`` with two neighbouring letters swapped (``mpl`` and ``mlp``)."""
    diff = [i for i in range(len(a)) if len(a) == len(b) and a[i] != b[i]]
    return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]


def _doubled(a: str, b: str) -> bool:
    """Whether ``a`` is ``b`` with one of its letters typed twice (``lrr`` and ``lr``)."""
    return any(a[i] == a[i - 1] and a[:i] + a[i + 1:] == b for i in range(1, len(a)))


def meant_option(group: str, option: str, options: Sequence[str]) -> str | None:
    """The option of ``group`` meant by ``option``: its alias, or one spelled alike."""
    alias = OPTION_ALIASES.get(group, {}).get(option.lower())
    return alias if alias in options else closest(option, options)


def unknown_option(group: str, option: str, options: Sequence[str], typed: Sequence[str] | None = None) -> str:
    """The message for ``group=option`` that is not one of ``options``, with the option meant
    when one is spelled alike (``optim=SGD`` -> ``optim=sgd``). ``typed``: all the values of the
    sweep ``option`` came in, each kept (or corrected) in the suggestion."""
    listed = ", ".join(options)
    values = list(typed) if typed and option in typed else [option]
    meant = [v if v in options else meant_option(group, v, options) for v in values]
    if len(values) == 1 and (network := _torchvision_network(group, option, options, meant[0])):
        return (f"{group}={option} is not a known option: did you mean model=torchvision model.arch={network}? "
                f"(choose one of {listed}).")
    if None in meant:
        return f"{group}={option} is not a known option: choose one of {listed}."
    return f"{group}={option} is not a known option: did you mean {group}={','.join(meant)}? (choose one of {listed})."


def _torchvision_network(group: str, option: str, options: Sequence[str], meant: str | None) -> str | None:
    """``option`` in lower case when it names a torchvision network typed as a model option,
    unless the option spelled alike (``meant``) is one of dltrain's of that family (``resnet_small``)."""
    name = option.lower()
    family = next((prefix for prefix in TORCHVISION_FAMILIES if name.startswith(prefix)), None)
    if group != "model" or "torchvision" not in options or family is None:
        return None
    return None if meant is not None and meant.startswith(family) else name


def did_you_mean(override: str, root: DictConfig) -> str | None:
    """``did you mean KEY=VALUE?`` for an override (``epochs=5``) whose key is not in the
    config ``root``; None when no key is near enough to suggest. The value is filled in when
    it fits the key meant; a sweep's values (``epochs=1,2``) all have to."""
    key = override_key(override)
    _, eq, value = override.partition("=")
    # A key appended with +key=value is in the config already: it is not its own suggestion.
    paths = [path for path in key_paths(root) if path != key and not path.startswith(f"{key}.")]
    found = _meant_key(key.lower(), paths, root)
    if found is None:
        return None
    meant, alike = found
    if meant in GROUP_SCHEMAS:
        options = sorted(GROUP_SCHEMAS[meant])
        chosen = _meant_options(meant, value if eq else None, options)
        if chosen:
            return f"did you mean {meant}={','.join(chosen)}?"
        # A name only spelled like a group's, whose value is none of its options, is not a near miss.
        return None if alike else f"did you mean {meant}=OPTION (one of {', '.join(options)})?"
    if alike and isinstance(OmegaConf.select(root, meant), DictConfig):
        return None  # a name spelled like a node of keys, not like a key
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


def _meant_key(key: str, paths: list[str], root: DictConfig) -> tuple[str, bool] | None:
    """The key path meant by ``key``: its first unknown part (and what follows) replaced by
    an alias, the one key of that name, or a key spelled alike; and whether it was only
    spelled alike."""
    parts = key.split(".")
    known = next((i for i in range(len(parts)) if ".".join(parts[: i + 1]) not in paths), len(parts))
    if known == len(parts):
        return key, False
    parent, name, rest = ".".join(parts[:known]), parts[known], parts[known + 1:]
    found = _meant_name(parent, name, paths, root)
    if found is None:
        return None
    full = ".".join([found[0], *rest])
    return (full, found[1]) if full in paths else None


def _meant_name(parent: str, name: str, paths: list[str], root: DictConfig) -> tuple[str, bool] | None:
    """The path meant by the unknown ``name`` below ``parent`` (empty at the top level), and
    whether it was only spelled alike."""
    prefix = f"{parent}." if parent else ""
    owners: dict[str, list[str]] = {}
    for path in paths:
        owners.setdefault(path.rpartition(".")[2], []).append(path)
    exact = owners[name][0] if not parent and len(owners.get(name, [])) == 1 else None
    # The key a name from another tool stands for, unless the one key of exactly that name is
    # in use (adamw's own weight_decay): setting both would set one thing twice.
    alias = ALIASES.get(name)
    if alias in paths and alias.startswith(prefix) and not (exact and OmegaConf.select(root, exact)):
        return alias, False
    if exact:
        return exact, False
    siblings = [p[len(prefix):] for p in paths if p.startswith(prefix) and "." not in p[len(prefix):]]
    if match := closest(name, siblings):
        return prefix + match, match.lower() != name
    if parent:
        # A key one node further down, when only one node there has it: logger.tracking_uri is
        # logger.mlflow.tracking_uri (each logger's keys sit under its name).
        below: dict[str, list[str]] = {}
        for path in paths:
            if path.startswith(prefix) and path.count(".") == prefix.count(".") + 1:
                below.setdefault(path.rpartition(".")[2], []).append(path)
        match = closest(name, [leaf for leaf, found in below.items() if len(found) == 1])
        return (below[match][0], match.lower() != name) if match else None
    # At the top level: a key spelled very like that name anywhere, when only one node has it.
    unique = {leaf: found[0] for leaf, found in owners.items() if len(found) == 1}
    match = closest(name, unique, DEEP_CUTOFF)
    return (unique[match], True) if match else None


def _meant_options(group: str, value: str | None, options: Sequence[str]) -> list[str] | None:
    """The option (or options of a sweep) of ``group`` that ``value`` names, matched by
    spelling; None unless every one matches."""
    typed = [str(v) for v in parsed_values(group, value) or []]
    meant = [found for v in typed if (found := meant_option(group, v, options))]
    return meant if typed and len(meant) == len(typed) else None


def _leaf_override(path: str, value: str | None, root: DictConfig) -> str:
    """``path=value`` when ``value`` fits the key's type, ranges and choices; else the key
    with what it takes."""
    parent, _, name = path.rpartition(".")
    node = OmegaConf.select(root, parent) if parent else root
    schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    fields = {f.name: f for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else {}
    if name not in fields or isinstance(node._get_node(name), DictConfig):
        return path  # a node of keys, or a key the schema does not type
    if fits(path, value, [schema]):
        return f"{path}={value}"
    words = takes(typing.get_type_hints(schema)[name], fields[name].metadata)
    return f"{path} ({words})" if words else path


def fits(path: str, value: str | None, schemas: Iterable[type] | None = None, *, sweep: bool = True) -> bool:
    """Whether ``path=value`` as typed passes the key's type, ranges and choices in every schema
    of ``schemas`` (by default, every one that can hold ``path``); with ``sweep=False`` it has
    to be a single value."""
    values = parsed_values(path, value)
    if values is None or (not sweep and len(values) != 1):
        return False
    name = path.rpartition(".")[2]
    found = list(schemas_of(path) if schemas is None else schemas)
    return bool(found) and all(_fits(schema, name, v) for schema in found for v in values)


def schemas_of(path: str) -> list[type]:
    """The schemas a key of dltrain's config can belong to: each option's where its group
    differs by option (``data.path``), else the one schema (``trainer.eval_batch_size``)."""
    from dltrain.config.schemas import TrainConfig

    parent, _, name = path.rpartition(".")
    if parent in GROUP_SCHEMAS:
        candidates = list(GROUP_SCHEMAS[parent].values())
    else:
        node: Any = TrainConfig
        for part in parent.split(".") if parent else []:
            node = typing.get_type_hints(node).get(part) if dataclasses.is_dataclass(node) else None
        candidates = [node]
    return [c for c in candidates if dataclasses.is_dataclass(c) and name in {f.name for f in dataclasses.fields(c)}]


def parsed_values(key: str, value: str | None) -> list[Any] | None:
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
    return value_error(schema, name, value) is None

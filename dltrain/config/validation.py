"""Config checks: the schemas (``dltrain.config.schemas``) stored in Hydra's ConfigStore, and
:func:`validate`, which checks the ranges and choices they declare.

Hydra enforces the keys and types of the schemas while it composes the config, so a typo
(``optim.lrr=0.1``) or a wrong type (``trainer.max_epochs=abc``) fails before any code
runs; :func:`validate` runs right after composition. The YAML files under ``conf/`` are
presets: each starts from its schema in its defaults list (``/schema_optim_sgd@_here_``).

This module imports neither torch nor torchvision, so ``dltrain --help`` and config
errors stay fast.
"""

import dataclasses
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from dltrain.config.schemas import ACTIVATIONS, AUGMENTATIONS, GROUP_SCHEMAS, ONE_OPTION_GROUPS, TrainConfig
from dltrain.config.suggest import did_you_mean
from dltrain.config.value_types import check_value, render
from dltrain.errors import ConfigError

__all__ = ["ACTIVATIONS", "AUGMENTATIONS", "CONFIG_MODULE", "CONFIG_NAME", "GROUP_SCHEMAS", "group_node", "register_configs",
           "schema_name", "validate", "validate_once"]

#: Where the config tree is installed, and the name of its primary config (``conf/train.yaml``).
CONFIG_MODULE = "dltrain.conf"
CONFIG_NAME = "train"


def schema_name(group: str, option: str) -> str:
    """Name under which the schema of ``group=option`` is stored in the ConfigStore."""
    return f"schema_{group}_{option}"


def group_node(schema: type, values: Any) -> DictConfig:
    """``values`` (a group's stored config, e.g. a checkpoint's ``model``) typed by ``schema``;
    a schema that takes the user's own keys (``model=custom``) takes them."""
    base = OmegaConf.structured(schema)
    if getattr(schema, "ALLOWS_EXTRA_KEYS", False):
        OmegaConf.set_struct(base, False)
    return OmegaConf.merge(base, values)


def register_configs() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for group, options in GROUP_SCHEMAS.items():
        for option, schema in options.items():
            node = schema(name=option) if "name" in {f.name for f in dataclasses.fields(schema)} else schema
            cs.store(name=schema_name(group, option), node=node)


# --- range and choice checks ---------------------------------------------------------

def _sample_hint(cfg: DictConfig, full_key: str) -> str:
    """For ``data.path`` of an experiment made for dltrain's sample data, the sample's path to try.

    The experiment's name is in Hydra's node of the config, which the command line's check sees.
    """
    if full_key != "data.path":
        return ""
    from dltrain.data.samples import path_for

    path = path_for(OmegaConf.select(cfg._get_root(), "hydra.runtime.choices.experiment", default=None))
    return f", or try dltrain's sample data with {full_key}={path}" if path else ""


def validate(cfg: DictConfig, prefix: str = "") -> None:
    """Check every value of ``cfg`` against the keys, ranges and choices of its schema.

    Raises:
        ConfigError: naming the first offending key, its value and what is allowed.
    """
    if not prefix:
        _check_group_names(cfg)
    schema = OmegaConf.get_type(cfg)
    meta_by_name = {}
    if dataclasses.is_dataclass(schema):
        meta_by_name = {f.name: f.metadata for f in dataclasses.fields(schema)}
        unknown = [key for key in cfg.keys() if key not in meta_by_name and not (key == "hydra" and not prefix)
                   and not getattr(schema, "ALLOWS_EXTRA_KEYS", False)]
        if unknown:  # appended with +key=value: Hydra lets it in, nothing would read it
            key = f"{prefix}{unknown[0]}"
            node = cfg._get_node(unknown[0])
            value = node if isinstance(node, ListConfig) else getattr(node, "_value", lambda: None)()
            typed = key if isinstance(node, DictConfig) else f"{key}={render(value)}"
            known = f"known keys there: {', '.join(meta_by_name)}"
            if meant := did_you_mean(typed, cfg._get_root()):
                raise ConfigError(f"{key} is not a config key: {meant} ({known}).")
            raise ConfigError(f"{key} is not a config key ({known}): remove +{key}.")
        removed = [name for name in meta_by_name if name not in cfg.keys()]  # `in` is False for ???
        if removed:  # deleted with ~key
            raise ConfigError(f"{prefix}{removed[0]} has no value: dltrain needs it, so set it "
                              f"({prefix}{removed[0]}=...) instead of removing it.")
    for key in cfg.keys():
        if not prefix and key == "hydra":  # Hydra's own node, present in callbacks
            continue
        full_key = f"{prefix}{key}"
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{full_key} has no value: set it on the command line ({full_key}=...)"
                              f"{_sample_hint(cfg, full_key)}.")
        if key not in meta_by_name and meta_by_name:  # a custom model's own key: its module checks it
            continue
        value = cfg[key]
        if isinstance(value, DictConfig):
            validate(value, prefix=f"{full_key}.")
            continue
        if isinstance(value, ListConfig):
            value = OmegaConf.to_container(value, resolve=True)
        check_value(full_key, value, dict(meta_by_name.get(key, {})))
    if not prefix:
        _remember(cfg)


#: What passed :func:`validate` in this process (fingerprints, the newest last, a few kept):
#: a config validated where it was made (``compose()``, the command line's start checks) is
#: not validated again where it is used (``train()``).
_passed: dict[str, None] = {}
_KEPT = 8


def validate_once(cfg: DictConfig) -> None:
    """:func:`validate`, unless a config with the same values and schemas passed it in this
    process already. Every entry point validates each config once: the command line before
    the run directory is made (a sweep's job before its run), ``compose()`` for Python
    callers, and ``train()`` whatever came in otherwise, or was changed after it was checked.

    Raises:
        ConfigError: as :func:`validate`.
    """
    if _fingerprint(cfg) not in _passed:
        validate(cfg)


def _remember(cfg: DictConfig) -> None:
    fingerprint = _fingerprint(cfg)
    if fingerprint is None:
        return
    _passed.pop(fingerprint, None)
    _passed[fingerprint] = None
    while len(_passed) > _KEPT:
        del _passed[next(iter(_passed))]


def _fingerprint(cfg: DictConfig) -> str | None:
    """What :func:`validate` reads: every resolved value and the schema of every node, without
    Hydra's own node (which only the command line's start checks see). None when a value
    cannot be resolved (validated then, which says why)."""
    try:
        values: dict[str, Any] = {}
        for key in cfg.keys():
            if key == "hydra":
                continue
            node = cfg._get_node(key)
            values[key] = (repr(OmegaConf.get_type(node)) if isinstance(node, DictConfig) else None,
                           OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig))
                           else cfg[key])
    except Exception:  # noqa: BLE001 - an interpolation that fails: validate() names it
        return None
    return repr((repr(OmegaConf.get_type(cfg)), values))


def _check_group_names(cfg: DictConfig) -> None:
    """``optim.name=sgd`` on top of ``optim=adam`` would hand Adam's keys to SGD: options
    are chosen with ``group=option``, and ``name`` must agree with the schema loaded."""
    for group, options in GROUP_SCHEMAS.items():
        node = cfg.get(group) if group in cfg and not OmegaConf.is_missing(cfg, group) else None
        if isinstance(node, DictConfig) and group in ONE_OPTION_GROUPS:
            _check_typed(group, node)
        if not isinstance(node, DictConfig) or "name" not in node:
            continue
        if node.name not in options:
            raise ConfigError(f"{group}.name={node.name} is not a known option: choose one of "
                              f"{', '.join(options)} with {group}=OPTION.")
        if OmegaConf.get_type(node) is not options[node.name]:
            raise ConfigError(f"{group}.name={node.name} does not match the {group} config loaded: "
                              f"choose the option with {group}={node.name} instead.")


def _check_typed(group: str, node: DictConfig) -> None:
    """A preset (of the user's) whose defaults list does not start from one of ``group``'s
    schemas would be taken unchecked: a typo in it would fail later, or not at all."""
    options = ONE_OPTION_GROUPS[group]
    if OmegaConf.get_type(node) in options.values():
        return
    name = node.get("name") if isinstance(node.get("name"), str) else None
    option = name if name in options else "OPTION"
    which = "" if name in options else f" (OPTION: the {group} it sets up, one of {', '.join(options)})"
    raise ConfigError(f"{group} is not checked against any {group} schema: start its file's defaults list with "
                      f"`- /{schema_name(group, option)}@_here_`{which}.")


register_configs()

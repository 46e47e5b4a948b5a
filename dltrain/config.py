"""Config schemas: one dataclass per config node, stored in Hydra's ConfigStore.

Hydra enforces the keys and types of these schemas while it composes the config, so a
typo (``optim.lrr=0.1``) or a wrong type (``trainer.max_epochs=abc``) fails before any
code runs. Ranges and choices are declared here too, as field metadata, and checked by
:func:`validate` right after composition. The YAML files under ``conf/`` are presets:
each starts from its schema in its defaults list (``/schema_optim_sgd@_here_``).

This module imports neither torch nor torchvision, so ``dltrain --help`` and config
errors stay fast.
"""

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from dltrain.errors import ConfigError

#: Activation names accepted by the built-in models (see ``dltrain.models.layers``).
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "gelu", "elu", "identity")
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"


def spec(
    default: Any = MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[str, ...] | None = None,
    pattern: str | None = None,
    items: dict[str, float] | None = None,
    length: int | None = None,
    help: str = "",
) -> Any:
    """A dataclass field whose metadata carries the checks :func:`validate` applies.

    Args:
        default: default value; lists are copied per instance.
        ge, gt, le, lt: numeric bounds (``>=``, ``>``, ``<=``, ``<``).
        choices: the allowed strings.
        pattern: a regular expression the whole string must match.
        items: bounds applied to every element of a list (same keys as above).
        length: the exact number of elements a list must have.
        help: one line shown in error messages.
    """
    meta = {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt, choices=choices, pattern=pattern,
                                  items=items, length=length, help=help).items()
            if v is not None and v != ""}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


# --- config groups -----------------------------------------------------------------

@dataclass
class MLPConfig:
    """``model=mlp``: a multilayer perceptron; input and output sizes come from the data."""

    name: str = "mlp"
    hidden: list[int] = spec([128, 64], items={"ge": 1}, help="widths of the hidden layers; [] is a linear model")
    activation: str = spec("relu", choices=ACTIVATIONS)


@dataclass
class DigitsConfig:
    """``data=digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images)."""

    name: str = "digits"
    val_fraction: float = spec(0.1, gt=0, lt=1, help="share of the data held out for validation")
    test_fraction: float = spec(0.2, gt=0, lt=1, help="share of the data held out for the final test")


@dataclass
class SGDConfig:
    """``optim=sgd``: ``torch.optim.SGD``."""

    name: str = "sgd"
    lr: float = spec(0.01, ge=0)
    momentum: float = spec(0.0, ge=0, le=1)
    dampening: float = spec(0.0, ge=0, le=1)
    weight_decay: float = spec(0.0, ge=0)
    nesterov: bool = False
    maximize: bool = False
    foreach: bool | None = None
    fused: bool | None = None


@dataclass
class AdamConfig:
    """``optim=adam``: ``torch.optim.Adam``."""

    name: str = "adam"
    lr: float = spec(1e-3, ge=0)
    betas: list[float] = spec([0.9, 0.999], items={"ge": 0, "lt": 1}, length=2)
    eps: float = spec(1e-8, gt=0)
    weight_decay: float = spec(0.0, ge=0)
    amsgrad: bool = False
    decoupled_weight_decay: bool = False
    maximize: bool = False
    foreach: bool | None = None
    fused: bool | None = None


@dataclass
class LossConfig:
    """``loss=...``: the training objective; ``auto`` picks one from the data's task."""

    name: str = "auto"


@dataclass
class InitConfig:
    """``init=...``: the weight-initialisation scheme."""

    name: str = "default"


# --- plain nodes ---------------------------------------------------------------------

@dataclass
class EarlyStoppingConfig:
    enabled: bool = True
    monitor: str = spec("val_loss", help="a metric logged each epoch, e.g. val_loss or val_accuracy")
    mode: str = spec("auto", choices=("auto", "min", "max"))
    min_delta: float = spec(0.0, ge=0)
    patience: int = spec(5, ge=0)


@dataclass
class CheckpointConfig:
    save_best: bool = True
    save_last: bool = True


@dataclass
class TrainerConfig:
    max_epochs: int = spec(30, ge=1)
    batch_size: int = spec(64, ge=1)
    eval_batch_size: int = spec(512, ge=1)
    fast_dev_run: bool = False
    log_every_n_steps: int = spec(50, ge=1)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


@dataclass
class RegularizationConfig:
    dropout: float = spec(0.0, ge=0, lt=1, help="probability of zeroing a hidden unit")
    batch_norm: bool = False


@dataclass
class TrainConfig:
    """The primary config (``conf/train.yaml``)."""

    model: Any = MISSING
    data: Any = MISSING
    optim: Any = MISSING
    loss: Any = MISSING
    init: Any = MISSING
    seed: int = spec(0, ge=0, le=2**32 - 1)
    device: str = spec("auto", pattern=DEVICE_PATTERN, help="auto, cpu, cuda, cuda:N or mps")
    resume: str | None = None
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


#: Schema of every option of every config group: ``GROUP_SCHEMAS[group][option]``.
GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "model": {"mlp": MLPConfig},
    "data": {"digits": DigitsConfig},
    "optim": {"sgd": SGDConfig, "adam": AdamConfig},
    "loss": {"auto": LossConfig, "cross_entropy": LossConfig, "mse": LossConfig},
    "init": {"default": InitConfig},
}


def schema_name(group: str, option: str) -> str:
    """Name under which the schema of ``group=option`` is stored in the ConfigStore."""
    return f"schema_{group}_{option}"


def register_configs() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for group, options in GROUP_SCHEMAS.items():
        for option, schema in options.items():
            node = schema(name=option) if "name" in {f.name for f in dataclasses.fields(schema)} else schema
            cs.store(name=schema_name(group, option), node=node)


# --- range and choice checks ---------------------------------------------------------

_BOUNDS = {
    "ge": (lambda v, b: v >= b, ">="),
    "gt": (lambda v, b: v > b, ">"),
    "le": (lambda v, b: v <= b, "<="),
    "lt": (lambda v, b: v < b, "<"),
}


def _check_value(key: str, value: Any, meta: dict[str, Any]) -> None:
    hint = f" ({meta['help']})" if meta.get("help") else ""
    if value is None:
        return
    if "items" in meta or "length" in meta:
        if not isinstance(value, list):
            raise ConfigError(f"{key}={value} is not valid: expected a list such as [1, 2].")
        if "length" in meta and len(value) != meta["length"]:
            raise ConfigError(f"{key}={value} is not valid: expected a list of {meta['length']} values.")
        for i, item in enumerate(value):
            _check_value(f"{key}[{i}]", item, meta.get("items", {}))
        return
    if any(name in meta for name in _BOUNDS):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value} is not valid: expected a number.")
        if not math.isfinite(value):
            raise ConfigError(f"{key}={value} is not valid: expected a finite number.")
    for name, (ok, symbol) in _BOUNDS.items():
        if name in meta and not ok(value, meta[name]):
            raise ConfigError(f"{key}={value} is out of range: it must be {symbol} {meta[name]}{hint}.")
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{key}={value} is not a known value: choose one of {', '.join(meta['choices'])}.")
    if "pattern" in meta and not re.fullmatch(meta["pattern"], str(value)):
        raise ConfigError(f"{key}={value} is not valid: expected {meta.get('help') or meta['pattern']}.")


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
        unknown = [key for key in cfg.keys() if key not in meta_by_name and not (key == "hydra" and not prefix)]
        if unknown:  # appended with +key=value: Hydra lets it in, nothing would read it
            raise ConfigError(f"{prefix}{unknown[0]} is not a config key (known keys there: "
                              f"{', '.join(meta_by_name)}): remove +{prefix}{unknown[0]}.")
        removed = [name for name in meta_by_name if name not in cfg]
        if removed:  # deleted with ~key
            raise ConfigError(f"{prefix}{removed[0]} has no value: dltrain needs it, so set it "
                              f"({prefix}{removed[0]}=...) instead of removing it.")
    for key in cfg.keys():
        if not prefix and key == "hydra":  # Hydra's own node, present in callbacks
            continue
        full_key = f"{prefix}{key}"
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{full_key} has no value: set it on the command line ({full_key}=...).")
        value = cfg[key]
        if isinstance(value, DictConfig):
            validate(value, prefix=f"{full_key}.")
            continue
        if isinstance(value, ListConfig):
            value = OmegaConf.to_container(value, resolve=True)
        _check_value(full_key, value, dict(meta_by_name.get(key, {})))


def _check_group_names(cfg: DictConfig) -> None:
    """``optim.name=sgd`` on top of ``optim=adam`` would hand Adam's keys to SGD: options
    are chosen with ``group=option``, and ``name`` must agree with the schema loaded."""
    for group, options in GROUP_SCHEMAS.items():
        node = cfg.get(group) if group in cfg and not OmegaConf.is_missing(cfg, group) else None
        if not isinstance(node, DictConfig) or "name" not in node:
            continue
        if node.name not in options:
            raise ConfigError(f"{group}.name={node.name} is not a known option: choose one of "
                              f"{', '.join(options)} with {group}=OPTION.")
        if OmegaConf.get_type(node) is not options[node.name]:
            raise ConfigError(f"{group}.name={node.name} does not match the {group} config loaded: "
                              f"choose the option with {group}={node.name} instead.")


register_configs()

"""The ``logger`` group's node: several loggers at once, each under its own name
(``{"tensorboard": {"subdir": "tb"}, "mlflow": {...}}``).

Runs written when the group held one logger stored it as ``{"name": "tensorboard", "subdir":
"tb"}``; read here as that one logger, they resume, evaluate and predict as they did. Imports
nothing heavy: config errors are reported before torch is loaded.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dltrain.config.schemas import GROUP_SCHEMAS
from dltrain.errors import ConfigError

GROUP = "logger"


def chosen_loggers(node: Any) -> dict[str, dict[str, Any]]:
    """``{name: options}`` of each logger in a logger node of either shape (a DictConfig or
    plain values); a run stored with one logger (``{"name": "csv"}``) reads as that one."""
    values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    if not isinstance(values, Mapping):
        return {}
    if isinstance(values.get("name"), str):  # the shape of runs written with one logger
        options = {key: value for key, value in values.items() if key != "name"}
        return {values["name"]: options}
    return {str(name): dict(options or {}) for name, options in values.items()}


def upgraded(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored config (a checkpoint's) with its logger node in today's shape."""
    out = copy.deepcopy(dict(config))
    if GROUP in out:
        out[GROUP] = chosen_loggers(out[GROUP])
    return out


def without_network(values: Any) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """A stored logger node (a checkpoint's) with each network destination it names (a
    tracking server, W&B online) replaced by the local one: a resume sends runs over the network
    only where its own command line says so. Returns the loggers and a line per replacement."""
    options = GROUP_SCHEMAS[GROUP]
    loggers, lines = chosen_loggers(values), []
    for name, values_of in loggers.items():
        replaced = getattr(options.get(name), "without_network", lambda _: None)(values_of)
        if replaced is not None:
            lines.append(f"the checkpoint's {replaced[0]} is not used (a resume logs over the network only where "
                         f"its command line names the destination): {replaced[1]} instead")
    return loggers, lines


def logger_node(values: Any) -> DictConfig:
    """A logger node (either shape) typed by each logger's schema.

    Raises:
        ConfigError: a logger this version does not have.
    """
    options = GROUP_SCHEMAS[GROUP]
    node = OmegaConf.create({})
    for name, values_of in chosen_loggers(values).items():
        if name not in options:
            raise ConfigError(f"{GROUP}={name} is not an option of this dltrain version "
                              f"(choose one of {', '.join(sorted(options))})")
        node[name] = OmegaConf.merge(OmegaConf.structured(options[name]), values_of)
    return node

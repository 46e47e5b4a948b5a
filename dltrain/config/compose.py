"""Composing the config as the command line would, for Python callers (``from dltrain
import compose``) and for the parts of dltrain that compare a config with the defaults.
This module imports no torch.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from dltrain.config.describe import describe_config_error, one_line
from dltrain.config.validation import CONFIG_MODULE, CONFIG_NAME, validate
from dltrain.errors import ConfigError, UserError
from dltrain.messages import describe_disk_error


def config_dir() -> str:
    """Where the config tree is: the installed package ``dltrain.conf`` (editable or regular
    install), or ``conf/`` beside the package when dltrain runs from a source checkout that
    shadows the install (``python -m dltrain`` in the repository root)."""
    if importlib.util.find_spec(CONFIG_MODULE) is not None:
        return "pkg://" + CONFIG_MODULE
    return str(Path(__file__).resolve().parents[2] / "conf")


def compose(overrides: Sequence[str] = (), config_name: str = CONFIG_NAME, check: bool = True) -> DictConfig:
    """Compose and validate (unless ``check`` is false) the config as the command line would,
    for notebooks and tests.

    Example:
        >>> from dltrain import compose, train
        >>> summary = train(compose(["trainer.max_epochs=3"]), run_dir="outputs/nb")
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    where = config_dir()
    init = (initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3") if where.startswith("pkg://")
            else initialize_config_dir(config_dir=where, version_base="1.3"))
    with init:
        try:
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
        except Exception as err:  # the command line's one line, for Python callers too
            message = (one_line(str(err)) if isinstance(err, UserError)
                       else describe_disk_error(err) if isinstance(err, OSError) else describe_config_error(err))
            if message is None:
                raise
            raise ConfigError(message) from err
    if check:
        validate(cfg)
    return cfg

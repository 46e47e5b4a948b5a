"""Composing the config as the command line would, for Python callers (``from dltrain
import compose``) and for the parts of dltrain that compare a config with the defaults.
This module imports no torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from omegaconf import DictConfig, ValueNode, open_dict, read_write

from dltrain.config.describe import describe_config_error, name_the_file, one_line
from dltrain.config.search_path import config_dir as packaged_config_dir
from dltrain.config.search_path import config_dir_argument, user_config_dir, user_configs_first
from dltrain.config.validation import CONFIG_MODULE, CONFIG_NAME, validate
from dltrain.errors import ConfigError, UserError
from dltrain.messages import describe_disk_error


def compose(overrides: Sequence[str] = (), config_name: str = CONFIG_NAME, check: bool = True,
            config_dir: str | os.PathLike[str] | None = None) -> DictConfig:
    """Compose and validate (unless ``check`` is false) the config as the command line would,
    for notebooks and tests.

    Args:
        overrides: as on the command line (``["optim=sgd", "optim.lr=0.1"]``).
        config_name: the primary config (``--config-name``).
        check: validate the composed config.
        config_dir: a folder of the user's configs, found before dltrain's own (``--config-dir``).

    Example:
        >>> from dltrain import compose, train
        >>> summary = train(compose(["trainer.max_epochs=3"]), run_dir="outputs/nb")
        >>> cfg = compose(["experiment=mine"], config_dir="conf")
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    user = None if config_dir is None else user_config_dir(config_dir, f"config_dir={config_dir}")
    where = packaged_config_dir()
    with user_configs_first(user):
        init = (initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3")
                if where.startswith("pkg://") else initialize_config_dir(config_dir=where, version_base="1.3"))
    cfg = None
    with init:
        try:
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
            if check:  # with Hydra's node, which says which files the values came from
                validate(cfg)
        except Exception as err:  # the command line's one line, for Python callers too
            message = (name_the_file(err, cfg) if isinstance(err, ConfigError) and cfg is not None
                       else one_line(str(err)) if isinstance(err, UserError)
                       else describe_config_error(err) or (describe_disk_error(err) if isinstance(err, OSError)
                                                           else None))
            if message is None:
                raise
            raise ConfigError(message) from err
    with read_write(cfg), open_dict(cfg):  # as Hydra's compose() returns it
        del cfg["hydra"]
    for key in given_keys_of(overrides):
        node = _leaf(cfg, key)
        # A value equal to the default is given all the same (a resume's trainer.max_time=null).
        if isinstance(node, ValueNode):
            node._set_flag(GIVEN, True)
    return cfg


#: The flag on a config value the overrides set.
GIVEN = "dltrain_given"


def given_keys_of(overrides: Sequence[str]) -> list[str]:
    """The keys ``overrides`` set (``trainer.max_time=null`` -> ``trainer.max_time``)."""
    from dltrain.config.suggest import override_key

    return [override_key(o) for o in overrides]


def _leaf(cfg: DictConfig, key: str) -> Any:
    """The node of ``key`` in ``cfg``; None when there is none."""
    node: Any = cfg
    for part in key.split("."):
        try:
            node = node._get_node(part)  # noqa: SLF001 - OmegaConf's node, which carries the flag
        except Exception:  # noqa: BLE001 - a group's option, or no such key
            return None
        if node is None:
            return None
    return node


def given_keys(cfg: DictConfig, keys: Iterable[str]) -> set[str]:
    """Those of ``keys`` that :func:`compose`'s overrides set, whatever their values."""
    return {key for key in keys if (node := _leaf(cfg, key)) is not None and node._get_flag(GIVEN)}  # noqa: SLF001


def with_user_configs_first(argv: list[str], app: Callable[[], object]) -> None:
    """Run ``app`` (a Hydra entry point) with the ``--config-dir`` of ``argv`` before dltrain's
    own configs (Hydra puts it after them, where a file of the same name is never read).

    Raises:
        ConfigError: a config error, said while the user's folder is known, so the line names their file.
    """
    with user_configs_first(config_dir_argument(argv)):
        try:
            app()
        except Exception as err:
            message = describe_config_error(err, argv) if not isinstance(err, UserError) else None
            if message is None:
                raise
            raise ConfigError(message) from err

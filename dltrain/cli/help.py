"""``dltrain --help``: the usage, each config group with its options, the composed config and
the files a run writes, laid out by the ``hydra.help`` template (``conf/hydra/help/``).

Hydra's own help lists the options of a group by copying its whole config store, once per
group (about three seconds); here they come from dltrain's schemas and the config folders,
and the config is composed once, as a run would compose it. ``--hydra-help`` stays Hydra's.
"""

from __future__ import annotations

import os
import string
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import yaml
from hydra._internal.hydra import Hydra
from hydra._internal.utils import (
    compute_search_path_dir,
    create_config_search_path,
    detect_calling_file_or_module_from_task_function,
    detect_task_name,
    get_args_parser,
    validate_config_path,
)
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from dltrain.config.schemas import MANY_OPTION_GROUPS
from dltrain.config.search_path import config_tree, tree_configs
from dltrain.config.suggest import override_key
from dltrain.config.validation import CONFIG_NAME, GROUP_SCHEMAS
from dltrain.report.run_files import RUN_FILES, SWEEP_FILES, RunFile


def help_requested(argv: Sequence[str]) -> bool:
    """Whether Hydra's command line ``argv`` asks for the application's help (``--help``, ``-h``)."""
    if not any(arg.startswith("-") for arg in argv):  # only overrides: no need to parse
        return False
    return bool(get_args_parser().parse_args(argv).help)  # Hydra's own parser: its flags, its errors


def print_help(argv: Sequence[str], task: Callable[..., Any], config_path: str) -> None:
    """Print the help for the config that ``argv`` composes (its overrides, ``--config-dir``,
    ``--config-name``), as Hydra's ``--help`` would for ``task``, the ``hydra.main`` function
    whose primary config lives at ``config_path``."""
    args = get_args_parser().parse_args(argv)
    try:
        hydra, primary = _create_hydra(args, task, config_path)
        cfg = hydra.compose_config(args.config_name or CONFIG_NAME, args.overrides, run_mode=RunMode.RUN)
        HydraConfig.instance().set_config(cfg)  # ${hydra:...} in the config, under --resolve
        template, choices = str(cfg.hydra.help.template), cfg.hydra.runtime.choices.copy()
        with read_write(choices), open_dict(choices):  # Hydra records no choice for logger=[tensorboard,mlflow]
            choices.update({group: f"[{','.join(cfg[group])}]" for group in MANY_OPTION_GROUPS
                            if choices.get(group) is None and isinstance(cfg.get(group), DictConfig)})
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
        chosen = {override_key(override) for override in args.overrides}
        text = string.Template(template).safe_substitute(
            APP_CONFIG_GROUPS=format_groups(group_options(primary, args.config_dir), choices, chosen),
            HYDRA_CONFIG_GROUPS="(see --hydra-help)\n",
            FLAGS_HELP=hydra.format_args_help(get_args_parser()),
            CONFIG=compact_yaml(OmegaConf.to_container(cfg, resolve=args.resolve, enum_to_str=True)),
            RUN_FILES=format_files(RUN_FILES),
            SWEEP_FILES=format_files(SWEEP_FILES),
        )
    finally:
        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `dltrain --help | head`: the reader has what it wanted
        # Python flushes stdout again at exit: point it where that cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _create_hydra(args: Any, task: Callable[..., Any], config_path: str) -> tuple[Hydra, str | None]:
    """Hydra with the config search path that ``hydra.main`` builds for ``task``, and the
    folder of the primary config in it (``pkg://...`` for a package)."""
    calling_file, calling_module = detect_calling_file_or_module_from_task_function(task)
    config_path = args.config_path if args.config_path is not None else config_path
    validate_config_path(config_path)
    primary = compute_search_path_dir(calling_file, calling_module, config_path)
    # The caller's user_configs_first() puts a --config-dir before dltrain's configs, as a run has it.
    search_path = create_config_search_path(primary)
    hydra = Hydra.create_main_hydra2(task_name=detect_task_name(calling_file, calling_module),
                                     config_search_path=search_path)
    return hydra, primary


def group_options(config_path: str | None, config_dir: str | None = None) -> dict[str, list[str]]:
    """Each config group and its options: those of dltrain's schemas, and the YAML files of each
    group folder in the config tree at ``config_path`` (a folder, or ``pkg://`` and a package)
    and in a ``--config-dir``: a ``--config-path`` tree's own presets compose like any other."""
    options: dict[str, set[str]] = {group: set(names) for group, names in GROUP_SCHEMAS.items()}
    for where in (config_path, config_dir):
        for group, names in tree_configs(config_tree(where)).items():
            if group:  # a primary config is no option of a group
                options.setdefault(group, set()).update(names)
    return {group: sorted(names) for group, names in sorted(options.items())}


def format_groups(options: dict[str, list[str]], choices: DictConfig, chosen: set[str]) -> str:
    """One line a group in Hydra's compact form (``group: a, b, c``), with the option this
    config takes: ``chosen`` on the command line, else its default."""
    lines = []
    for group, names in options.items():
        choice = choices.get(group)
        if group in chosen:
            note = f"chosen: {choice}"
        else:
            note = f"default: {choice}" if choice is not None else "none by default"
        lines.append(f"{group}: {', '.join(names)}  ({note})")
    return "\n".join(lines) + "\n"


class _CompactDumper(yaml.SafeDumper):
    """Block YAML that writes a list of plain values, and a map of at most two, on one line,
    as ``conf/train.yaml`` does."""


def _plain(values: Iterable[Any]) -> bool:
    return all(not isinstance(value, (dict, list)) for value in values)


_CompactDumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=_plain(data)))
_CompactDumper.add_representer(dict, lambda dumper, data: dumper.represent_mapping(
    "tag:yaml.org,2002:map", data, flow_style=len(data) <= 2 and _plain(data.values())))


def compact_yaml(config: Any) -> str:
    """``config`` (plain containers) as compact YAML, keys in their order."""
    return yaml.dump(config, Dumper=_CompactDumper, sort_keys=False, allow_unicode=True, width=120)


def format_files(entries: Sequence[RunFile]) -> str:
    """One line a file: its name, what it holds and, for one not every run writes, when."""
    width = max(len(entry.name) for entry in entries)
    return "\n".join(f"{entry.name:<{width}}  {entry.what}" + (f" ({entry.when})" if entry.when else "")
                     for entry in entries) + "\n"

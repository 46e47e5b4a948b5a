"""Where configs are found: a user's own folder (``--config-dir``, ``compose(config_dir=...)``)
before dltrain's packaged tree, so that the user's ``train.yaml`` or ``model/cnn.yaml`` replaces
dltrain's of the same name, and their other files add options; and the file a config was read
from, for messages that name it.

Hydra itself puts ``--config-dir`` after the application's own configs, where a file of the same
name is never read: a copied and edited preset would be ignored without a word. This module
imports no torch.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import ClassVar

import yaml
from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import DictConfig

from dltrain.config.validation import CONFIG_MODULE
from dltrain.errors import ConfigError

#: Hydra's provider name for ``--config-dir``: the re-run commands of a sweep read it back
#: from each job's ``hydra.yaml`` (``dltrain.report.rerun``).
USER_PROVIDER = "command-line"


def user_config_dir(folder: str | os.PathLike[str], named: str | None = None) -> str:
    """The absolute path of a user's config folder.

    Raises:
        ConfigError: it is not a folder (``named``: how it was given, ``--config-dir DIR`` by default).
    """
    path = os.path.abspath(folder)
    if not os.path.isdir(path):
        raise ConfigError(f"{named or f'--config-dir {folder}'}: no such folder: give the folder that holds "
                          "your config files.")
    return path


def put_first(search_path: ConfigSearchPath, folder: str) -> None:
    """Put ``folder`` (absolute) in ``search_path`` before dltrain's own configs."""
    search_path.prepend(provider=USER_PROVIDER, path=f"file://{folder}", anchor=SearchPathQuery(provider="main"))


class UserConfigDirFirst(SearchPathPlugin):
    """Hydra builds its search path before it reads ``--config-dir``: this plugin, registered by
    :func:`user_configs_first`, puts the user's folder before dltrain's while a command runs."""

    folder: ClassVar[str | None] = None

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if UserConfigDirFirst.folder is not None:
            put_first(search_path, UserConfigDirFirst.folder)
            _skip_hydras_own_entry(search_path, UserConfigDirFirst.folder)


def _skip_hydras_own_entry(search_path: ConfigSearchPath, folder: str) -> None:
    """Hydra adds ``--config-dir`` itself (before its ``schema`` entry) after this plugin has run:
    that second entry of the same folder finds nothing the first did not, and ``--info searchpath``
    would list it twice. The first stays: a job's ``hydra.yaml`` records it for re-run commands."""
    prepend = search_path.prepend

    def prepend_unless_ours(provider: str, path: str, anchor: SearchPathQuery | str | None = None) -> None:
        if (provider, path) != (USER_PROVIDER, f"file://{folder}"):
            prepend(provider, path, anchor)

    search_path.prepend = prepend_unless_ours  # type: ignore[method-assign]


@contextmanager
def user_configs_first(folder: str | None) -> Iterator[None]:
    """While in the block, every config search path Hydra builds has ``folder`` (absolute, or
    None for none) before dltrain's own configs."""
    from hydra.core.plugins import Plugins

    if folder is not None:
        refuse_self_references(folder)
    Plugins.instance().register(UserConfigDirFirst)
    UserConfigDirFirst.folder = folder
    try:
        yield
    finally:
        UserConfigDirFirst.folder = None


def refuse_self_references(folder: str) -> None:
    """Refuse a file of the user's ``folder`` whose defaults list names the file itself
    (``model/mlp.yaml`` starting from ``/model/mlp``, a ``train.yaml`` from ``train``): the user's
    file replaces dltrain's of that name, so Hydra would read it into itself without end.

    Raises:
        ConfigError: naming the file and what to start from instead.
    """
    for file in sorted(Path(folder).rglob("*.yaml")):
        name = file.relative_to(folder).with_suffix("").as_posix()
        group = name.rpartition("/")[0]
        if any(_config_path(entry, group) == name for entry in _raw_defaults(file)):
            packaged = _is_packaged(name)
            raise ConfigError(f"{file}: its defaults list names {name}, which is this file"
                              f"{' (yours replaces dltrain' + chr(39) + 's)' if packaged else ''}: "
                              f"{_start_instead(name, packaged)}.")


def _raw_defaults(file: Path) -> list[object]:
    """The entries of the defaults list of a YAML file (none when it cannot be read)."""
    try:
        values = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    entries = values.get("defaults") if isinstance(values, dict) else None
    return entries if isinstance(entries, list) else []


def _config_path(entry: object, group: str) -> str | None:
    """The config path (``model/mlp``) a defaults-list entry of a file of ``group`` names, when it
    names one config (``/model/mlp@_here_``, ``train``, ``model: mlp``)."""
    if isinstance(entry, dict) and len(entry) == 1:
        [(key, option)] = entry.items()
        key = str(key).removeprefix("override ").strip().partition("@")[0]
        path = f"{key}/{option}" if isinstance(option, str) else None
    else:
        path = entry.partition("@")[0] if isinstance(entry, str) and entry != "_self_" else None
    if path is None:
        return None
    return path.strip("/") if path.startswith("/") or not group else f"{group}/{path}"


def _is_packaged(name: str) -> bool:
    """Whether dltrain has a config ``name`` (``model/mlp``) of its own."""
    group, _, option = name.rpartition("/")
    return option in tree_configs(config_tree(config_dir())).get(group, {})


def _start_instead(name: str, packaged: bool) -> str:
    """What a file ``name`` of the user's that names itself starts from instead."""
    if not packaged:
        return "name the preset or schema it builds on instead"
    if "/" not in name:  # a primary config: under another name, `train` names dltrain's
        return (f"rename it (mine.yaml, run with --config-name mine) or start from a copy of dltrain's "
                f"(dltrain-config copy {name} DIR)")
    return (f"start from `- /schema_{name.replace('/', '_')}@_here_` (as dltrain-config copy writes it) "
            "or rename it")


def config_dir_argument(argv: Sequence[str]) -> str | None:
    """The ``--config-dir`` (``-cd``) of a command line in Hydra's syntax, absolute; None without one.

    Raises:
        ConfigError: it is not a folder.
    """
    if not any(arg.startswith("-") for arg in argv):  # only overrides: no need to parse
        return None
    from hydra._internal.utils import get_args_parser

    folder = get_args_parser().parse_known_args(list(argv))[0].config_dir
    return None if folder is None else user_config_dir(folder)


def config_dir() -> str:
    """Where dltrain's own config tree is: the installed package ``dltrain.conf`` (editable or
    regular install), or ``conf/`` beside the package when dltrain runs from a source checkout
    that shadows the install (``python -m dltrain`` in the repository root)."""
    if importlib.util.find_spec(CONFIG_MODULE) is not None:
        return "pkg://" + CONFIG_MODULE
    return str(Path(__file__).resolve().parents[2] / "conf")


def _sources() -> list[tuple[str, str, str]]:
    """``(scheme, path, provider)`` of each config source, in the order they are searched: those
    of the Hydra now initialised, else (Hydra is cleared when its command ends) the user's folder
    of the command running and dltrain's own tree."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return [(s.scheme(), s.path, s.provider) for s in GlobalHydra.instance().config_loader().get_sources()]
    where = config_dir()
    packaged = ("pkg", where.removeprefix("pkg://"), "main") if where.startswith("pkg://") else ("file", where, "main")
    user = [("file", UserConfigDirFirst.folder, USER_PROVIDER)] if UserConfigDirFirst.folder else []
    return [*user, packaged]


def config_tree(where: str | None) -> Traversable | None:
    """The folder of a config tree given as a search path entry: a path, ``file://`` and a path,
    or ``pkg://`` and a package (its resources); None for none, or no such package."""
    if where is None:
        return None
    if not where.startswith("pkg://"):
        return Path(where.removeprefix("file://"))
    try:
        return files(where.removeprefix("pkg://").strip("/").replace("/", "."))
    except (ImportError, TypeError, ValueError):  # no such package: Hydra's composition says so
        return None


def tree_configs(tree: Traversable | None) -> dict[str, dict[str, Traversable]]:
    """Group -> option -> file of a config tree: the YAML files of its subfolders (Hydra's own
    ``hydra/`` left out), and its primary configs under the group ``""``. A folder that cannot be
    read holds nothing."""
    found: dict[str, dict[str, Traversable]] = {"": {}}
    for entry in _entries(tree):
        if entry.is_file() and entry.name.endswith(".yaml"):
            found[""][entry.name.removesuffix(".yaml")] = entry
        elif entry.is_dir() and entry.name != "hydra":
            options = {e.name.removesuffix(".yaml"): e for e in _entries(entry)
                       if e.is_file() and e.name.endswith(".yaml")}
            if options:
                found[entry.name] = options
    return found


def _entries(folder: Traversable | None) -> list[Traversable]:
    """The entries of ``folder`` by name; none when it is None or cannot be read."""
    try:
        return sorted(folder.iterdir(), key=lambda entry: entry.name) if folder is not None else []
    except OSError:
        return []


def _entry(scheme: str, path: str, name: str) -> Traversable | None:
    """The file or folder ``name`` of a config source, when the source is a folder or a package."""
    tree = config_tree(f"pkg://{path}" if scheme == "pkg" else path if scheme == "file" else None)
    return None if tree is None else tree.joinpath(name)


def config_file(config_path: str) -> str | None:
    """The file that the config ``config_path`` (``model/mine``) is read from: the first config
    source that holds it; None when there is none."""
    for scheme, path, _ in _sources():
        entry = _entry(scheme, path, f"{config_path}.yaml")
        if entry is not None and entry.is_file():
            return str(entry)
    return None


def options_of(group: str) -> list[str]:
    """The options (YAML files) of ``group`` in every config source."""
    names: set[str] = set()
    for scheme, path, _ in _sources():
        folder = _entry(scheme, path, group)
        names.update(e.name.removesuffix(".yaml") for e in _entries(folder) if e.name.endswith(".yaml"))
    return sorted(names)


def file_setting(cfg: DictConfig, key: str) -> str | None:
    """The user's config file that sets ``key`` (``model.activation``) in ``cfg``, a config composed
    with Hydra's node, when no override of the command line sets it; None otherwise. An
    experiment's file is asked first: it is merged after the group options it overrides."""
    hydra = cfg.get("hydra") if isinstance(cfg, DictConfig) else None
    if not isinstance(hydra, DictConfig):
        return None
    key = re.sub(r"\[\d+\]", "", key)
    from dltrain.config.suggest import override_key

    choices = {group: option for group, option in hydra.runtime.choices.items()
               if option is not None and not group.startswith("hydra/")}
    typed = [override_key(o) for o in hydra.overrides.task]
    if any(key == k or key.startswith(f"{k}.") for k in typed if k not in hydra.runtime.choices):
        return None  # the command line sets it (model=cnn chooses an option: it sets no key)
    folders = [Path(s.path) for s in hydra.runtime.config_sources if s.provider == USER_PROVIDER and s.schema == "file"]
    candidates = sorted(((f"{group}/{option}", group) for group, option in choices.items()),
                        key=lambda candidate: candidate[1] != "experiment")
    for config_path, group in [*candidates, (hydra.job.config_name, "")]:
        found = next((folder / f"{config_path}.yaml" for folder in folders
                      if (folder / f"{config_path}.yaml").is_file()), None)
        if found is not None and _sets(found, group, key):
            return str(found)
    return None


def _sets(file: Path, group: str, key: str) -> bool:
    """Whether the YAML ``file``, the config of ``group`` (``""``: the primary config), sets ``key``."""
    try:
        text = file.read_text(encoding="utf-8")
        values = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    package = re.search(r"^#\s*@package\s+(\S+)", text, re.MULTILINE)
    prefix = "" if package and package.group(1) == "_global_" else group.replace("/", ".")
    if package and package.group(1) not in ("_global_", "_group_"):
        prefix = package.group(1)
    node, parts = values, key.split(".")
    if prefix:
        if parts[: len(prefix.split("."))] != prefix.split("."):
            return False
        parts = parts[len(prefix.split(".")):]
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def file_naming(group: str, option: str) -> str | None:
    """The user's config file (of the user's folders among the config sources) whose defaults
    list names ``group``'s ``option`` (``- override /model: mlpp``, ``- /model/mpl@_here_``)."""
    folders = [Path(path) for scheme, path, provider in _sources() if provider == USER_PROVIDER and scheme == "file"]
    for folder in dict.fromkeys(folders):
        for file in sorted(folder.rglob("*.yaml")):
            if (group, option) in _defaults(file):
                return str(file)
    return None


def _defaults(file: Path) -> set[tuple[str, str]]:
    """The ``(group, option)`` entries of the defaults list of a YAML file."""
    try:
        values = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return set()
    entries = values.get("defaults") if isinstance(values, dict) else None
    found = set()
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, str):  # a config by its path: /model/mlp@_here_
            path = entry.partition("@")[0].strip("/")
            found.add(path.rpartition("/")[::2])
        elif isinstance(entry, dict):
            for group, option in entry.items():
                name = str(group).removeprefix("override ").strip().partition("@")[0].strip("/")
                found.add((name, str(option)))
    return found

"""``dltrain-config``: the options of every config group with where each comes from (dltrain's
packaged tree or the user's ``--config-dir``), and a copy of a packaged preset into the user's
folder to edit there.

A file in the user's folder is found before dltrain's (``dltrain.config.search_path``): a copy
kept under the packaged name replaces the packaged option, one under a new name (``--as``) adds
an option. This module imports no torch.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import traceback
from collections.abc import Iterable, Sequence
from importlib.resources.abc import Traversable
from pathlib import Path

from dltrain.config.search_path import config_dir, config_tree, tree_configs, user_config_dir
from dltrain.config.suggest import closest, meant_option
from dltrain.config.validation import CONFIG_NAME
from dltrain.errors import ConfigError, UserError, first_line
from dltrain.files import publish

PROG = "dltrain-config"
#: The group of a name without one (``train``): a primary config (``conf/train.yaml``), as
#: :func:`dltrain.config.search_path.tree_configs` files it.
PRIMARY = ""
#: The primary configs of commands other than ``dltrain``: the command and the name it reads by default.
TOOL_OF = {"lr_find": ("dltrain-lr-find", "lr_find")}  # dltrain.cli.lr_find.CONFIG_NAME (it imports the CLI)


def packaged_tree() -> Traversable | None:
    """dltrain's own config tree (the installed ``dltrain.conf``, or ``conf/`` of a source checkout)."""
    return config_tree(config_dir())


def listing(user_dir: str | None) -> list[str]:
    """The lines of ``dltrain-config list``: each group, then one line an option with its origin."""
    packaged = tree_configs(packaged_tree())
    user = tree_configs(Path(user_dir)) if user_dir else {}
    lines = []
    for group in [PRIMARY, *sorted((set(packaged) | set(user)) - {PRIMARY})]:
        ours, theirs = packaged.get(group, {}), user.get(group, {})
        if not ours and not theirs:
            continue
        lines.append(f"{group}:" if group != PRIMARY else "primary configs (--config-name):")
        width = max(len(name) for name in [*ours, *theirs])
        for name in sorted(set(ours) | set(theirs)):
            if name in theirs:
                origin = f"user: {theirs[name]}" + (" (replaces the packaged one)" if name in ours else "")
            else:
                origin = "packaged"
            if group == PRIMARY and name in TOOL_OF:
                origin += f" ({TOOL_OF[name][0]}'s config)"
            lines.append(f"  {name:<{width}}  {origin}")
    return lines


def packaged_file(name: str) -> tuple[str, str, Traversable]:
    """The group, option and packaged file of ``name`` (``model/cnn``; ``train`` for a primary config).

    Raises:
        ConfigError: no such group or option, with the one meant when one is spelled alike.
    """
    packaged = tree_configs(packaged_tree())
    group, _, option = name.strip("/").rpartition("/")
    group = group or PRIMARY
    if group not in packaged:
        groups = sorted(set(packaged) - {PRIMARY})
        meant = closest(group, groups)
        hint = f"did you mean {meant}/{option}? " if meant else ""
        raise ConfigError(f"{name}: {group} is not a config group: {hint}(groups: {', '.join(groups)}; "
                          f"or a primary config: {', '.join(packaged[PRIMARY])}).")
    if option not in packaged[group]:
        if group == PRIMARY:
            raise ConfigError(f"{name} is not a packaged config: copy GROUP/OPTION (e.g. model/cnn) or a primary "
                              f"config ({', '.join(packaged[PRIMARY])}).")
        meant = meant_option(group, option, sorted(packaged[group]))
        hint = f"did you mean {group}/{meant}? " if meant else ""
        raise ConfigError(f"{name} is not a packaged config: {hint}(options of {group}: "
                          f"{', '.join(sorted(packaged[group]))}).")
    return group, option, packaged[group][option]


def copy(name: str, user_dir: str, as_name: str | None = None) -> Path:
    """Copy the packaged config ``name`` into ``user_dir`` (``DIR/model/cnn.yaml``, or ``as_name``).

    Raises:
        ConfigError: an unknown config, a name that is not a file name, or a file there already.
    """
    group, option, source = packaged_file(name)
    new = as_name.removesuffix(".yaml") if as_name is not None else option
    if not new or new in (".", "..") or "/" in new or os.sep in new:
        raise ConfigError(f"--as {shlex.quote(as_name or '')}: give a file name without a folder "
                          f"(e.g. --as wide_{option}).")
    target = Path(user_dir) / ("" if group == PRIMARY else group) / f"{new}.yaml"
    exists = ConfigError(f"{target} exists already: it is never replaced; edit it, or copy under another name "
                         f"with --as NAME.")
    if target.exists():
        raise exists
    # Whole or not at all, and never over a file made meanwhile.
    if not publish(target, source.read_text(encoding="utf-8").encode("utf-8")):
        raise exists
    return target


def usage_of(target: Path, group: str, user_dir: str, packaged_name: str) -> str:
    """The command that uses a copied config (``packaged_name``: the config it is a copy of)."""
    name = target.stem
    if group == PRIMARY:
        tool, default = TOOL_OF.get(packaged_name, ("dltrain", CONFIG_NAME))
        chosen = [] if name == default else ["--config-name", name]
        return shlex.join([tool, "--config-dir", user_dir, *chosen])
    return shlex.join(["dltrain", "--config-dir", user_dir, f"{group}={name}"])


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog=PROG, description="Every config option and where it comes from, and copies of dltrain's presets "
        "to edit in your own config folder (dltrain --config-dir DIR finds its files before dltrain's).")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    listed = commands.add_parser("list", help="every group and its options: packaged, or user: <file>",
                                 description="Every config group and its options, each marked packaged or "
                                 "user: <file>; a file of yours named like a packaged option replaces it.")
    listed.add_argument("--config-dir", metavar="DIR", help="your config folder (as dltrain --config-dir DIR)")
    copied = commands.add_parser("copy", help="copy a packaged preset into your folder (never replaces a file)",
                                 description="Copy a packaged preset (model/cnn, experiment/mnist_cnn, or the "
                                 "primary config train) into DIR to edit; an existing file is never replaced.",
                                 epilog="e.g.: dltrain-config copy model/cnn conf --as wide_cnn, then "
                                 "dltrain --config-dir conf model=wide_cnn")
    copied.add_argument("config", metavar="GROUP/OPTION", help="e.g. model/cnn, data/csv, experiment/mnist_cnn, train")
    copied.add_argument("config_dir", metavar="DIR", help="your config folder (created if missing)")
    copied.add_argument("--as", dest="as_name", metavar="NAME",
                        help="the copy's option name (default: the packaged name, which the copy then replaces)")
    return parser


class _OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line, like every other error of the tool."""

    def error(self, message: str) -> None:  # type: ignore[override]
        _fail(f"{message} (see {self.prog} --help)")


def _fail(message: str) -> None:
    print(f"{PROG}: error: {message.rstrip('.')}.", file=sys.stderr)
    sys.exit(2)


def _print(lines: Iterable[str]) -> None:
    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:  # `dltrain-config list | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``dltrain-config``: user errors are one line on stderr with exit code 2."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            if args.config_dir:
                user_config_dir(args.config_dir)  # a folder, or one line saying it is not
            _print(listing(args.config_dir))  # its files named as the user names the folder
            return
        target = copy(args.config, args.config_dir, args.as_name)
        group, option, _ = packaged_file(args.config)
        packaged = tree_configs(packaged_tree())[group]
        replaces = " (it replaces the packaged one there)" if target.stem in packaged else ""
        usage = usage_of(target, group, args.config_dir, option)
        _print([f"wrote {target}: edit it, then run {usage}{replaces}"])
    except (UserError, OSError) as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            traceback.print_exception(err)
        _fail(first_line(err) if isinstance(err, UserError) else f"{getattr(err, 'filename', '')}: "
              f"{err.strerror or err}: choose a folder you can write")


if __name__ == "__main__":
    main()

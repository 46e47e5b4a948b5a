"""The ``key=value`` arguments of dltrain's tools (:func:`parse_args`) and the boundary where
a user error becomes one line on stderr (:func:`run_tool`): shared by ``dltrain-eval``,
``dltrain-predict`` and ``dltrain-export``. Imports no torch: ``dltrain-predict`` of an exported
model runs where only onnxruntime is installed.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from dltrain.errors import ConfigError, UserError, first_line
from dltrain.training.signals import Interrupted

T = TypeVar("T")

#: Config keys a tool may override besides ``device``: where the same data lives now, and the
#: batch size. Keys that would change the split (fractions, samples, seed) are refused: the
#: "test" metrics would no longer be those of held-out examples.
DATA_LOCATION = ("data.path", "data.root", "data.download", "data.num_workers", "data.in_memory")
OVERRIDABLE = ("trainer.eval_batch_size",)
REQUIRED = object()  # the default of a key that has none


@dataclass(frozen=True)
class Key:
    """One ``key=value`` argument of a tool.

    Attributes:
        default: its value when not given (:data:`REQUIRED` for none); its type converts the value given.
        meaning: one line for ``--help``.
    """

    default: Any
    meaning: str


#: The keys with which a user allows the code a ``model=custom`` checkpoint names (see ``dltrain.config.trust``).
TRUST_KEYS = {
    "model._target_": Key(None, "model=custom checkpoints: the code to build the model with; must be the "
                                "checkpoint's own"),
    "trust_code": Key(False, "true: import and run whatever model._target_ the checkpoint names"),
}


def parse_args(argv: Sequence[str], tool: str, defaults: dict[str, Key], *, about: str, example: str,
               config_keys: bool = True) -> dict[str, Any]:
    """Read ``key=value`` arguments; ``--help`` (or ``-h``) prints the usage and exits 0.

    Args:
        argv: the arguments (without the program name).
        tool: the command's name, for the usage text.
        defaults: every key the tool takes, with its default and meaning.
        about: what the tool does, for the usage text.
        example: one example command line.
        config_keys: also take ``data.*`` and ``trainer.eval_batch_size``, overrides of the
            checkpoint's config (see :func:`apply_overrides`).

    Returns:
        Every key of ``defaults`` with its value, and ``overrides``: the config keys given, with
        their values read as on ``dltrain``'s command line (numbers, lists, strings).

    Raises:
        UserError: an argument that is not ``key=value``, an unknown key, a value of the wrong
            type, or a required key missing.
    """
    if any(arg in ("-h", "--help") for arg in argv):
        print(usage(tool, defaults, about=about, example=example, config_keys=config_keys))
        sys.exit(0)
    values: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or not key:
            raise UserError(f"argument {arg!r} is not key=value: write each argument as key=value, "
                            f"e.g. {next(iter(defaults))}=...; see {tool} --help")
        if key in defaults:
            values[key] = _convert(key, value, defaults[key].default)
        elif "." in key and config_keys:
            overrides[key] = _config_value(arg, key)
        else:
            known = ", ".join([*defaults, *(("data.path", "data.root", "...") if config_keys else ())])
            meant = _meant(key, value, defaults, (*DATA_LOCATION, *OVERRIDABLE) if config_keys else ())
            raise UserError(f"unknown key {key}: {meant}{tool} takes {known}; see {tool} --help")
    if lacking := [key for key, spec in defaults.items() if spec.default is REQUIRED and key not in values]:
        raise UserError(f"{', '.join(f'{k}=...' for k in lacking)} {'is' if len(lacking) == 1 else 'are'} required: "
                        f"e.g. {example}")
    return {**{k: spec.default for k, spec in defaults.items()}, **values, "overrides": overrides}


def _convert(key: str, value: str, default: Any) -> Any:
    """``value`` as the type of ``default``: true or false for flags, a whole number of at least 1
    for numbers, else the text."""
    if isinstance(default, bool):
        if value.lower() not in ("true", "false"):
            raise UserError(f"{key}={value} is not true or false: e.g. {key}=true")
        return value.lower() == "true"
    if isinstance(default, int):
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number < 1:
            raise UserError(f"{key}={value} is not a whole number of at least 1: e.g. {key}={default}")
        return number
    return value


#: Names users bring for the tools' keys (and the config key meant where the tool takes it).
TOOL_ALIASES = {"checkpoint": "ckpt", "batch_size": "trainer.eval_batch_size"}


def _meant(key: str, value: str, defaults: dict[str, Key], config_keys: Sequence[str]) -> str:
    """``did you mean KEY=VALUE? `` for a ``key`` spelled like one the tool takes (the key
    alone when ``value`` does not fit it); empty when none is."""
    try:
        from dltrain.config.suggest import closest, fits
    except ImportError:  # dltrain-predict of an exported model, installed without its dependencies
        return ""

    known = [*defaults, *config_keys]
    meant = TOOL_ALIASES.get(key.lower()) if TOOL_ALIASES.get(key.lower()) in known else closest(key, known)
    if meant is None:
        return ""
    try:
        if meant in defaults:
            _convert(meant, value, defaults[meant].default)
        elif not fits(meant, value, sweep=False):
            return f"did you mean {meant}? "
    except UserError:
        return f"did you mean {meant}? "
    return f"did you mean {meant}={value}? "


def _config_value(arg: str, key: str) -> Any:
    """The value of a config override, read with Hydra's grammar as ``dltrain`` reads it."""
    if key not in DATA_LOCATION and key not in OVERRIDABLE:
        meant = _meant(key, arg.partition("=")[2], {}, (*DATA_LOCATION, *OVERRIDABLE))
        raise UserError(f"{key} cannot be changed here: {meant}only where the data lives ({', '.join(DATA_LOCATION)}), "
                        f"device and {', '.join(OVERRIDABLE)} override the checkpoint's config, whose other keys "
                        "made the model and its test split")
    from hydra.core.override_parser.overrides_parser import OverridesParser

    override = OverridesParser.create().parse_override(arg)
    if override.is_sweep_override():
        raise UserError(f"{arg} is a sweep: give one value")
    return override.value()


def usage(tool: str, defaults: dict[str, Key], *, about: str, example: str, config_keys: bool = True) -> str:
    """The ``--help`` text: what the tool does, every key with its default and meaning, one example."""
    width = max(len(key) for key in [*defaults, *(OVERRIDABLE if config_keys else ())]) + 2
    lines = [f"usage: {tool} " + " ".join(f"{k}=..." if s.default is REQUIRED else f"[{k}={s.default}]"
                                          for k, s in defaults.items()), "", about, "", "keys:"]
    for key, spec in defaults.items():
        default = "required" if spec.default is REQUIRED else f"default {spec.default}"
        lines.append(f"  {key.ljust(width)}{spec.meaning} ({default})")
    if config_keys:
        lines.append(f"  {'data.path'.ljust(width)}where the training data lives now, if it moved: data.path, "
                     "data.root (also data.download, data.num_workers, data.in_memory; default: as trained)")
        lines.append(f"  {OVERRIDABLE[0].ljust(width)}examples per batch (default: as trained)")
    lines += ["", "example:", f"  {example}"]
    return "\n".join(lines)


def run_tool(tool: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` as the console script ``tool``: a user error (or config error) is printed
    as ``{tool}: error: ...`` on one line and exits with code 2, Ctrl-C exits with 130 (a
    stop signal dltrain handles, :class:`Interrupted`, with 128 + its number); anything else
    is a bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` prints the traceback of user
    errors too."""
    try:
        return fn()
    except KeyboardInterrupt:
        print(f"{tool}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Interrupted as err:  # dltrain's own stop signal: no error, and its signal's exit code
        print(f"{tool}: {first_line(err).rstrip('.')}.", file=sys.stderr)
        sys.exit(err.exit_code)
    except Exception as err:
        message = _describe(err)
        if message is None:
            raise
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            traceback.print_exception(err)
        print(f"{tool}: error: {message.rstrip('.')}.", file=sys.stderr)
        sys.exit(2)


def _describe(err: BaseException) -> str | None:
    """One line for ``err`` (see :func:`run_tool`), None for a bug. A plain user error is put
    in one line here: the command line's description of the others imports Hydra and torch,
    which ``dltrain-predict`` of an exported model runs without."""
    if type(err) in (UserError, ConfigError):
        return first_line(err)
    try:
        from dltrain.cli.app import describe_error
    except ImportError:  # installed without its dependencies: anything else is a bug, with its traceback
        return None
    return describe_error(err)

"""One line for errors raised outside dltrain's own code: the filesystem (a full disk, a
read-only one, a file where a directory should be), a YAML file the user gave
(``--config-dir``), and Hydra's parser of command-line overrides; and the words of a
diverged run, whose error carries only facts (epoch, step, value).

Imports nothing heavy: the command line uses it before torch is loaded.
"""

from __future__ import annotations

import errno
import logging
import re
import shlex
import sys
from pathlib import Path

import yaml

from dltrain.errors import ConfigError, TrainingDiverged, UserError

#: Errors of the disk or of its permissions, never of dltrain: what the user can do about each.
DISK_ERRORS = {
    errno.ENOSPC: "free some space there, or write elsewhere",
    errno.EDQUOT: "free some space there (the disk quota is full), or write elsewhere",
    errno.EFBIG: "write to another filesystem",
    errno.EROFS: "write to a writable directory instead",
    errno.EACCES: "check its permissions, or write elsewhere",
    errno.EPERM: "check its permissions, or write elsewhere",
}

#: Characters Hydra's override grammar reads as syntax in a value that is not quoted.
OVERRIDE_SPECIAL = frozenset(";,[]{}=()'\"<>#!&`^~ ")


def describe_disk_error(err: OSError, run_dir: str | None = None) -> str | None:
    """One line for a disk that cannot take a write (full, read-only, not permitted),
    naming the file (or, when the error does not say which, the run directory ``run_dir``);
    None for any other ``OSError``."""
    todo = DISK_ERRORS.get(err.errno)
    if todo is None:
        return None
    where = err.filename if err.filename is not None else (f"into the run directory {run_dir}" if run_dir else None)
    reason = err.strerror or errno.errorcode.get(err.errno, "unknown error")
    if where is None:
        return f"{reason}: {todo}."
    if run_dir is not None:
        todo += " with hydra.run.dir=PATH"
    return f"cannot write {where}: {reason}: {todo}."


def run_dir_error(key: str, path: str | Path, err: OSError) -> ConfigError:
    """The error for a run directory that cannot be created (``key`` is the setting that
    names it, e.g. ``hydra.run.dir``): a file is there or above it, the filesystem is
    read-only or full, or the user may not write there."""
    reason = err.strerror or type(err).__name__
    if err.errno == errno.EEXIST or (err.errno == errno.ENOTDIR and Path(path).is_file()):
        reason += " (it is a file, not a directory)"
    elif err.errno == errno.ENOTDIR:
        reason += " (a folder above it is a file)"
    return ConfigError(f"{key}={path} cannot be created: {reason}: choose another directory with {key}=PATH")


def find_yaml_error(err: BaseException) -> yaml.YAMLError | None:
    """The YAML error behind ``err`` (itself, or a cause of it), if any."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, yaml.YAMLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe_yaml_error(err: yaml.YAMLError) -> str:
    """One line naming the file and line of a YAML error and what is wrong there. A
    Python tag (``!!python/object/apply:...``) is named as refused: config files are plain
    YAML, and no tag in them is ever run."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"{mark.name}, line {mark.line + 1}" if mark is not None else "a YAML config file"
    problem = " ".join(str(getattr(err, "problem", None) or err).split())
    tag = re.search(r"tag '(?:tag:yaml\.org,2002:)?([^']+)'", problem)
    if isinstance(err, yaml.constructor.ConstructorError) and tag:
        return (f"{where}: the tag !!{tag.group(1)} is not allowed: config files are plain YAML and dltrain "
                "never runs code named in one; remove the tag.")
    context = getattr(err, "context", None)
    if context:
        problem = f"{' '.join(str(context).split())}: {problem}"
    return f"{where}: not valid YAML ({problem}): fix the file."


def quoting_hint(override: str) -> str | None:
    """``key=value`` with its value quoted, as typed in a shell (``'data.delimiter=";"'``),
    when the value holds a character Hydra's override grammar reads as syntax (``data.delimiter=;``).
    None when the value needs no quotes, is quoted already, or is a list or dict (whose
    brackets are the syntax)."""
    key, eq, value = override.partition("=")
    quoted_already = len(value) > 1 and value[0] == value[-1] and value[0] in "'\""
    if not eq or quoted_already or value.startswith(("[", "{")) or not OVERRIDE_SPECIAL & set(value):
        return None
    quoted = '"' + value.replace('"', '\\"') + '"'
    return shlex.quote(f"{key}={quoted}")  # as typed in a shell, which removes one layer of quotes


def describe_divergence(err: TrainingDiverged) -> str:
    """The one line of a diverged run (the command's error and ``summary.json``'s
    ``stop_reason``): what became NaN or infinite and where, then the settings that steady
    training, with the learning rate it had where the step it happened at is known."""
    lower = f"lower optim.lr (it is {err.lr:g})" if err.exact else "lower optim.lr"
    clip = "clip the gradients (regularization.grad_clip=1.0)"
    if err.what == err.LOSS:
        return f"{err}: {lower}, {clip}, or pick a more stable optimizer (optim=adam)"
    if err.what == err.METRIC:
        return f"{err} (trainer.early_stopping.check_finite): {lower} or {clip}"
    return f"{err}: {lower} or {clip}"


def results_not_saved(path: Path, err: OSError) -> UserError:
    """The error that ends a finished run whose ``path`` (its ``summary.json``) could not be
    written: the results were printed, and the run's checkpoints are kept."""
    reason = err.strerror or str(err) or type(err).__name__
    todo = "free some space there" if err.errno in (errno.ENOSPC, errno.EDQUOT) else "check that disk"
    return UserError(f"the run finished but {path} could not be written ({reason}): its results are printed above "
                     f"and its checkpoints are in {path.parent / 'checkpoints'}; {todo} before the next run")


def say_once_when_unwritable(handler: logging.Handler) -> None:
    """Make a log ``handler`` that cannot write (its file on a full disk) say so once, in one
    line, instead of printing a traceback for every record; the run goes on. Any other
    logging error keeps logging's own report."""
    report = handler.handleError

    def handle_error(record: logging.LogRecord) -> None:
        err = sys.exc_info()[1]
        if not isinstance(err, OSError):
            report(record)
        elif not getattr(handler, "said_unwritable", False):
            handler.said_unwritable = True  # type: ignore[attr-defined]
            where = getattr(handler, "baseFilename", None) or type(handler).__name__
            print(f"dltrain: warning: cannot write the log {where}: {err.strerror or err}; the run goes on "
                  "without it.", file=sys.stderr)

    handler.handleError = handle_error  # type: ignore[method-assign]

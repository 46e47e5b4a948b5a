"""Paths as the user can type them where the command started: a job that runs in its own
folder (``hydra.job.chdir=true``) has another working directory than its command.

Imports nothing heavy: the sweep's callbacks use it in the command's process.
"""

from __future__ import annotations

import os
from pathlib import Path


def start_dir() -> Path:
    """The folder the command started in: Hydra's ``hydra.runtime.cwd`` under Hydra, else the
    working directory (``train()`` from Python)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        cwd = HydraConfig.get().runtime.cwd
    except (ImportError, ValueError, AttributeError):  # not under Hydra, or no runtime recorded
        cwd = None
    return Path(cwd or os.getcwd())


def from_start(path: str | Path, start: str | Path | None = None) -> Path:
    """``path`` made absolute as the command meant it: relative to ``start``, by default the
    folder the command started in."""
    return Path(os.path.abspath(os.path.join(start if start is not None else start_dir(), path)))


def shown_dir(path: str | Path) -> str:
    """``path``, a folder (a relative one is the working directory's), as it can be typed where
    the command started: relative to that folder when inside it, else absolute; with a trailing slash."""
    start, absolute = start_dir(), os.path.abspath(path)
    try:
        shown = os.path.relpath(absolute, start)
    except ValueError:  # another drive
        shown = absolute
    if shown.startswith(".."):
        shown = absolute
    return shown.rstrip("/\\") + "/"

"""Writing into a run directory without ever leaving half a file or overwriting a run.

Imports nothing heavy: the command line uses it before torch is loaded.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from dltrain.errors import ConfigError

TMP_PREFIX = ".tmp-"


def atomic_tmpfile(path: Path) -> tuple[int, str]:
    """A temporary file beside ``path`` with the permissions a plain ``open`` would give."""
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600
    return fd, tmp


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically (temp file + rename)."""
    path = Path(path)
    fd, tmp = atomic_tmpfile(path)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def ensure_new_run_dir(run_dir: str | Path, how_to_change: str) -> None:
    """Refuse a directory that already holds a run: dltrain never overwrites one.

    Raises:
        ConfigError: ``run_dir`` has a ``metrics.csv``; the message ends with ``how_to_change``.
    """
    if (Path(run_dir) / "metrics.csv").exists():
        raise ConfigError(f"{run_dir} already holds a run (metrics.csv): dltrain never overwrites one; "
                          f"{how_to_change}.")

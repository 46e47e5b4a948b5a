"""What Hydra says about the job this process runs: whether it is a job of a sweep, and
where its command started (paths as the user can type them there: a job that runs in its own
folder, ``hydra.job.chdir=true``, has another working directory than its command). Outside
Hydra (the Python API) there is no such job.

Imports nothing heavy: the sweep's callbacks use it in the command's process.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from dltrain.files import hydra_file_names


def in_sweep() -> bool:
    """Whether this process runs a job of a sweep (``dltrain -m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # not under Hydra
        return False


def sweep_dir() -> Path | None:
    """The directory of the sweep (``dltrain -m``) this process runs a job of; None outside one."""
    if not in_sweep():
        return None
    from hydra.core.hydra_config import HydraConfig

    return Path(str(HydraConfig.get().sweep.dir))


def default_run_dir() -> Path:
    """Hydra's run directory when called under Hydra, else ``outputs/<date>/<time>``."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not running under Hydra: the Python API
        return Path("outputs") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S.%f")


def hydra_files_in(run_dir: Path) -> tuple[str, ...]:
    """What Hydra wrote into ``run_dir`` for this run (``.hydra``, the job's log) when it is
    Hydra's run directory; nothing from the Python API."""
    from hydra.core.hydra_config import HydraConfig

    try:
        hydra = HydraConfig.get()
    except ValueError:  # not running under Hydra
        return ()
    return hydra_file_names(hydra) if Path(hydra.runtime.output_dir).resolve() == run_dir.resolve() else ()


def command_line_keys() -> set[str] | None:
    """The keys the command line sets, a group's option (``data=csv``) counted as its
    ``name`` key (``data.name``); None outside Hydra (the Python API)."""
    from hydra.core.hydra_config import HydraConfig

    from dltrain.config.schemas import ONE_OPTION_GROUPS
    from dltrain.config.suggest import override_key

    try:
        overrides = HydraConfig.get().overrides.task
    except ValueError:  # not under Hydra
        return None
    # logger=[tensorboard,mlflow] names the whole logger node: it has no name key
    return {f"{key}.name" if key in ONE_OPTION_GROUPS else key for key in map(override_key, overrides)}


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

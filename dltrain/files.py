"""Writing into a run directory without ever leaving half a file or overwriting a run.

Imports nothing heavy: the command line uses it before torch is loaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from dltrain.errors import ConfigError

TMP_PREFIX = ".tmp-"


def atomic_tmpfile(path: Path) -> tuple[int, str]:
    """A temporary file beside ``path`` with the permissions a plain ``open`` would give.
    Its name holds the writer's process id, so a later run can tell a leftover of a killed
    writer (:func:`remove_stale_tmpfiles`) from a file another process is writing now."""
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.{os.getpid()}.", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600
    return fd, tmp


#: A temporary file of :func:`atomic_tmpfile` for a checkpoint: ``.tmp-<name>.pt.<pid>.<8 random>``.
_CHECKPOINT_TMP = re.compile(rf"^{re.escape(TMP_PREFIX)}(last|best|epoch-\d+)\.pt\.(\d+)\.\w{{8}}$")


def remove_stale_tmpfiles(folder: str | Path) -> list[Path]:
    """Delete the checkpoint temp files that writers killed mid-write left in ``folder``;
    returns them. Only files named as dltrain names them are touched, and one whose writer
    (the process id in its name) still runs on this machine is left alone."""
    removed = []
    for tmp in Path(folder).glob(TMP_PREFIX + "*"):
        match = _CHECKPOINT_TMP.match(tmp.name)
        if match is None or (int(match.group(2)) != os.getpid() and _alive(int(match.group(2)))):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable (survive a power cut, not only a kill)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot sync a directory
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Write ``path`` all at once: the ``with`` block writes a temp file beside it, which
    replaces ``path`` when the block ends and is removed if it fails. Readers see the old
    file or the new one, never half of one. ``kwargs`` go to ``open`` (e.g. ``newline=""``)."""
    path = Path(path)
    fd, tmp = atomic_tmpfile(path)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def copy_atomically(source: str | Path, target: str | Path) -> Path:
    """Copy ``source`` to ``target`` through a temp file and a rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target, "wb") as f, Path(source).open("rb") as src:
        shutil.copyfileobj(src, f)
        f.flush()
        os.fsync(f.fileno())
    return target


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a number read from a file name or a mark: any size)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # too large for a pid: no process has it
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically (temp file + rename)."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")
    return Path(path)


def claim_new_dir(path: str) -> str:
    """Create the directory ``path`` and return it, or, when it exists already (a run that
    started in the same second), the first free ``path_2``, ``path_3``, ...

    Creating is what claims it: two processes never get the same directory, however close
    together they start.
    """
    base = Path(path)
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir(parents=True)
            return str(candidate)
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}_{n}")


def own_checkpoint(resume: str | None, run_dir: str | Path) -> Path | None:
    """``run_dir``'s own ``checkpoints/last.pt`` when ``resume=auto`` is to continue it in
    place (a job requeued after pre-emption runs again in the directory it started in)."""
    last = Path(run_dir) / "checkpoints" / "last.pt"
    return last if resume == "auto" and last.is_file() else None


#: What a run writes into its directory before its first epoch ends (and its first checkpoint).
FIRST_FILES = frozenset({"data.json", "model_summary.txt", "summary.json", "checkpoints", "tensorboard"})
_RANK_LOG = re.compile(r"^rank\d+\.log$")


def ensure_new_run_dir(run_dir: str | Path, how_to_change: str, *, resume: str | None = None,
                       hydra_files: Collection[str] = (), hydra_started: bool = False) -> None:
    """Refuse a directory that holds anything: a run claims only an empty or new directory,
    so dltrain never overwrites a file it did not write (nor a run).

    Args:
        run_dir: the run's directory.
        how_to_change: what the user does instead; ends the message.
        resume: under ``auto``, a Hydra run directory that holds only what a run writes
            before its first epoch ends (one killed then, e.g. on a node that failed, and
            requeued) is that same run's, started again in place.
        hydra_files: the names of what Hydra writes into a run directory (the ``.hydra``
            folder, the job's log file).
        hydra_started: Hydra wrote ``hydra_files`` for this run already (dltrain runs as
            Hydra's task), so they are this run's own.

    Raises:
        ConfigError: naming ``run_dir`` and a few of its entries; it ends with ``how_to_change``.
    """
    folder = Path(run_dir)
    if (folder / "metrics.csv").exists():
        raise ConfigError(f"{run_dir} already holds a run (metrics.csv): dltrain never overwrites one; "
                          f"{how_to_change}.")
    try:
        entries = sorted(p.name for p in folder.iterdir())
    except OSError:  # absent (a new directory), or no directory: whoever creates it says why it cannot
        return
    others = [name for name in entries if not (hydra_started and name in hydra_files)]
    if not others or (resume == "auto" and _killed_before_first_epoch(folder, entries, hydra_files)):
        return
    others.sort(key=lambda name: _run_file(name, hydra_files))  # what no run writes first: the user's
    shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    raise ConfigError(f"{run_dir} is not empty (it holds {shown}): a run claims only an empty or new directory, "
                      f"so dltrain never overwrites what is there; {how_to_change}.")


def hydra_file_names(hydra: Any) -> tuple[str, ...]:
    """What Hydra writes into a run directory, from its ``hydra`` config node: the output
    subdirectory (``.hydra``) and the job's log file (``<job name>.log``)."""
    subdir, job = hydra.get("output_subdir"), hydra.get("job") or {}
    names = (Path(str(subdir)).parts[0] if subdir else None, f"{job['name']}.log" if job.get("name") else None)
    return tuple(name for name in names if name)


#: The files Hydra writes into a run's output subdirectory (``.hydra``).
HYDRA_RECORDS = ("config.yaml", "hydra.yaml", "overrides.yaml")
#: A key each JSON file a run writes at its start holds: a file of that name without it is the user's.
_JSON_MARKS = {"data.json": "dataset", "summary.json": "status"}


def _killed_before_first_epoch(folder: Path, entries: list[str], hydra_files: Collection[str]) -> bool:
    """Whether ``entries`` are those of a Hydra run that was killed before its first epoch
    ended: Hydra's files (its three records in the output subdirectory), and only what a run
    writes at its start, as dltrain writes it."""
    subdirs = [name for name in entries if name in hydra_files and (folder / name).is_dir()]
    if not subdirs or not all((folder / subdirs[0] / record).is_file() for record in HYDRA_RECORDS):
        return False
    if not all(_run_file(name, hydra_files) for name in entries):
        return False
    for name, key in _JSON_MARKS.items():
        if name in entries:
            try:
                if key not in json.loads((folder / name).read_text()):
                    return False
            except (OSError, ValueError, TypeError):
                return False
    return True


def _run_file(name: str, hydra_files: Collection[str]) -> bool:
    """Whether a run writes ``name`` into its directory before its first epoch ends."""
    return name in hydra_files or name in FIRST_FILES or bool(_RANK_LOG.match(name)) or name.startswith(TMP_PREFIX)


def ensure_new_sweep_dir(folder: str | Path) -> None:
    """Refuse a sweep directory (given on the command line) that is not empty: a sweep never
    mixes its jobs with earlier runs, nor writes its jobs' folders and its summary
    (``sweep_summary.*``, ``best_overrides.yaml``, ``sweep.png``) over the user's files.

    Raises:
        ConfigError: naming the directory, what is there, and what to do.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return  # absent (created with the sweep), or in the way: the caller's mkdir says so
    entries = sorted(p.name for p in folder.iterdir())
    if any((folder / name / ".hydra").is_dir() or (folder / name / "metrics.csv").exists() for name in entries):
        raise ConfigError(f"hydra.sweep.dir={folder} already holds runs: dltrain never mixes a sweep with them; "
                          "choose another directory.")
    if entries:
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
        raise ConfigError(f"hydra.sweep.dir={folder} is not empty (it holds {shown}): a sweep claims only an empty "
                          "or new directory, so dltrain never overwrites what is there; choose another directory "
                          "with hydra.sweep.dir=PATH")


def publish(target: Path, content: bytes | dict[str, bytes]) -> bool:
    """Write ``content`` at ``target`` unless something is there: to a temporary name beside it, then
    moved into place without replacing anything.

    Args:
        target: the file or folder to create.
        content: a file's bytes, or a folder's files (relative path -> bytes).

    Returns:
        True when this call wrote it, False when ``target`` existed or appeared meanwhile (another
        process writing the same content), which is then left as it is.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        fd, tmp = atomic_tmpfile(target)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            return _move_new_file(Path(tmp), target)
        finally:
            Path(tmp).unlink(missing_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{target.name}.{os.getpid()}.", dir=target.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp creates 0700
        for name, data in content.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        return _move_new_folder(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone when it was moved into place


def _move_new_file(tmp: Path, target: Path) -> bool:
    """Link ``tmp`` at ``target``, which fails rather than replace a file that appeared meanwhile."""
    try:
        os.link(tmp, target)
        return True
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: check, then rename (the gap is a few microseconds)
        if os.path.lexists(target):
            return False
        os.rename(tmp, target)
        return True


def _move_new_folder(tmp: Path, target: Path) -> bool:
    """Rename the folder ``tmp`` to ``target``; the rename fails if ``target`` appeared and holds files."""
    if os.path.lexists(target):
        return False
    try:
        os.rename(tmp, target)
        return True
    except OSError:
        if os.path.lexists(target):
            return False
        raise

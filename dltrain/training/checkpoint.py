"""Checkpoints: atomic writes, and loads that never unpickle code.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(path, weights_only=True)``. It is written to a temporary file in the same
directory, flushed and fsynced, then renamed over the target: a kill at any moment leaves
either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dltrain.errors import UserError, first_line
from dltrain.files import atomic_tmpfile, fsync_dir

if TYPE_CHECKING:
    from dltrain.training.distributed import Ranks

#: ``state["format"]`` of every dltrain checkpoint, and the version of its layout.
CHECKPOINT_FORMAT = "dltrain-checkpoint"
CHECKPOINT_VERSION = 1


def plain(obj: Any) -> Any:
    """``obj`` as JSON-like plain data (dicts, lists, strings, numbers, None), so that it
    loads with ``weights_only=True``; anything else (NumPy scalars, paths) becomes a number
    or a string."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor on the CPU: a checkpoint saved on a GPU then loads with a
    plain ``torch.load(path, weights_only=True)`` on a machine without one (serialising
    copies the tensors to the host anyway)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def seconds_so_far(state: dict[str, Any]) -> float:
    """The training seconds a checkpoint's run spent; for one written before checkpoints
    kept them, what its history says: its epochs' times, and the steps of an epoch under way."""
    if state.get("train_seconds") is not None:
        return float(state["train_seconds"])
    unfinished = state.get("partial_epoch") or {}
    epochs = sum(float(row.get("epoch_seconds") or 0.0) for row in state["history"])
    return epochs + float(unfinished.get("seconds", 0.0))


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically.

    Raises:
        UserError: the write failed (disk full, permissions, an error while serialising);
            ``path`` is left as it was and no temporary file remains.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = atomic_tmpfile(path)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if not isinstance(err, Exception):
            raise  # a signal (Interrupted, KeyboardInterrupt): not a failed write
        raise UserError(f"could not write checkpoint {path}: {_write_failure(err, path)}; "
                        "the previous checkpoint is unchanged.") from err
    fsync_dir(path.parent)
    return path


def save_last(trainer: Any, folder: Path, ranks: Ranks) -> Path:
    """``last.pt`` of a stopped run into ``folder``: every rank gathers the state of ``trainer``
    (the Trainer, which imports this module), rank 0 saves it, and no rank leaves before it
    exists (a launcher may end the job when the first does)."""
    path = folder / "last.pt"
    save_agreed(trainer, path, ranks)
    return path


def save_agreed(trainer: Any, path: Path, ranks: Ranks) -> None:
    """Every rank gathers ``trainer``'s state, and rank 0 saves it at ``path`` unless its
    weights are no longer finite (a diverged state is no place to resume from: the last good
    file stays); the ranks then agree that it worked, so a failed write raises on all of them
    instead of leaving the others waiting in their next collective."""
    from dltrain.training.guard import weights_finite  # the guard's module imports more of training

    state = trainer.checkpoint()

    def save() -> None:
        if ranks.is_main and weights_finite(trainer.model):
            save_checkpoint(state, path)

    ranks.agreed(f"saving {path.name}", save)


def _write_failure(err: Exception, path: Path) -> str:
    """What went wrong, in words: torch's writer reports a full disk as an ``unexpected pos``."""
    if isinstance(err, OSError):
        return err.strerror or str(err)
    try:
        full = shutil.disk_usage(path.parent).free < 1 << 20
    except OSError:
        full = False
    if full or "unexpected pos" in str(err):  # the file stopped growing mid-write
        return "the file could not be written to its end (no space left on the device, or a file-size limit)"
    return first_line(err)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (never falling back to full unpickling).

    Raises:
        UserError: the file is missing, empty, truncated, damaged (a member fails its checksum),
            not a checkpoint, or holds objects other than tensors and plain data.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a directory: pass the file, e.g. {path / 'checkpoints' / 'last.pt'}.")
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: check the path.")
    if not zipfile.is_zipfile(path):
        what = "it is empty" if path.stat().st_size == 0 else \
            "it is truncated or not a checkpoint (torch.save writes a zip archive, and this is none)"
        raise UserError(f"checkpoint {path} cannot be loaded: {what}; point at a last.pt or best.pt dltrain wrote.")
    verify_checksums(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure here is the file's fault (a signal is none)
        reason = first_line(err)
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            reason = "it holds Python objects other than tensors and plain data, so it is refused"
        raise UserError(f"checkpoint {path} cannot be loaded: {reason.rstrip('.')}.") from err
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"checkpoint {path} is not a dltrain checkpoint (no model state inside).")
    return state


def verify_checksums(path: Path) -> None:
    """Check the CRC-32 of every member of the checkpoint's zip archive.

    ``torch.load`` does not: a flipped bit in a tensor's bytes (a failing disk, a bad copy)
    loads as a silently different weight. Reading the archive once costs about as much as
    loading it (0.4 to 0.7 ms per MB from the page cache: ``benchmarks/checkpoint_load.py``).

    Raises:
        UserError: naming the checkpoint and the first member whose bytes do not match.
    """
    name = None
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                with archive.open(name) as member:
                    while member.read(1 << 20):  # zipfile checks the CRC when a member is read to its end
                        pass
        return
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as err:
        if name is not None and "CRC" in str(err):
            problem = f"member {name} fails its checksum"
        else:
            problem = f"{'its archive' if name is None else f'member {name}'} cannot be read: {first_line(err)}"
    raise UserError(f"checkpoint {path} is damaged ({problem.rstrip('.')}): its bytes changed after it was written "
                    "(a failing disk or an incomplete copy); use another copy (last.pt or best.pt) or retrain.")


def prune_periodic(folder: str | Path, keep_last: int | None) -> None:
    """Delete all but the newest ``keep_last`` periodic checkpoints (``epoch-NNNN.pt``)."""
    if keep_last is None:
        return
    for old in sorted(Path(folder).glob("epoch-*.pt"))[:-keep_last]:
        old.unlink(missing_ok=True)

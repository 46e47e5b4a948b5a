"""``trainer.checkpoint.save_top_k``: the k best epochs by the monitored metric, each a full
checkpoint named with its epoch and value (``top-epoch0007-val_loss0.1234.pt``).

The names hold no ``=``, so ``resume=checkpoints/top-epoch0007-val_loss0.1234.pt`` reads on
Hydra's command line as written. Which files are kept, with their values, is part of the
training state, so a resumed run goes on managing the same set: only files named there are
ever deleted, never another file in ``checkpoints/``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def top_k_name(epoch: int, monitor: str, value: float) -> str:
    """``top-epoch0007-val_loss0.1234.pt``: four decimals, or three significant digits for
    values under 0.001 (``val_loss1.234e-05``; a small value is no ``0.0000``)."""
    shown = f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.3e}"
    return f"top-epoch{epoch:04d}-{monitor}{shown}.pt"


class TopKCheckpoints:
    """Keeps the ``k`` best epochs by ``monitor``; ties keep the earlier epoch.

    Args:
        folder: the run's ``checkpoints`` directory.
        k: how many to keep (>= 1).
        monitor: the metric ranked (a key of the epoch's metrics row).
        mode: ``min`` or ``max``: which way is better.
        start_from_epoch: epochs ``1..start_from_epoch`` are not ranked (the early-stopping warm-up).
    """

    def __init__(self, folder: str | Path, k: int, monitor: str, mode: str, start_from_epoch: int = 0) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.folder, self.k, self.monitor, self.mode = Path(folder), k, monitor, mode
        self.start_from_epoch = start_from_epoch
        #: The kept files, best first: ``{"epoch", "value", "file"}`` (a name in ``folder``).
        self.kept: list[dict[str, Any]] = []
        #: Files dropped from :attr:`kept` whose deletion waits for the new file (:meth:`delete_dropped`).
        self.dropped: list[str] = []

    def _rank(self, entry: dict[str, Any]) -> tuple[float, int]:
        value = float(entry["value"])
        return (value if self.mode == "min" else -value, int(entry["epoch"]))  # the earlier epoch wins a tie

    def admit(self, epoch: int, row: dict[str, Any]) -> Path | None:
        """Rank ``epoch`` by its metrics ``row``: the file to write when it is among the k best
        (the ones it pushes out wait in :attr:`dropped`), else None."""
        value = row.get(self.monitor)
        if epoch <= self.start_from_epoch or value is None or not math.isfinite(float(value)):
            return None
        entry = {"epoch": epoch, "value": float(value), "file": top_k_name(epoch, self.monitor, float(value))}
        ranked = sorted([*self.kept, entry], key=self._rank)
        self.kept = ranked[:self.k]
        self.dropped += [e["file"] for e in ranked[self.k:] if e is not entry]
        return self.folder / entry["file"] if any(e is entry for e in self.kept) else None

    def delete_dropped(self) -> None:
        """Delete the files pushed out of the k best, once the new one is written."""
        for name in self.dropped:
            (self.folder / name).unlink(missing_ok=True)
        self.dropped = []

    def carry_from(self, folder: Path) -> None:
        """A run resumed into another directory: copy the kept files of the run it continues
        (in ``folder``) into this run's, which manages its copies from now on."""
        from dltrain.files import copy_atomically

        if folder.resolve() == self.folder.resolve():
            return
        for entry in self.kept:
            source = folder / entry["file"]
            # One gone (the run went on from an earlier top-k file and pushed it out later) still
            # counts among the best: every rank keeps the same list.
            if source.is_file():
                copy_atomically(source, self.folder / entry["file"])

    def state_dict(self) -> dict[str, Any]:
        """The kept files and their values, as plain data."""
        return {"monitor": self.monitor, "kept": [dict(e) for e in self.kept]}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue with a checkpoint's kept files (None: one written without top-k: none kept).

        Raises:
            UserError: an entry names a file this class would not have written (the files it
                names are copied and deleted later: a damaged or crafted checkpoint must not
                reach a file outside ``checkpoints/``, or one dltrain did not write).
        """
        state = {} if state is None else state
        kept = state.get("kept", []) if isinstance(state, dict) else None
        if not (isinstance(kept, list) and all(isinstance(e, dict) for e in kept)):
            from dltrain.errors import UserError

            raise UserError("the checkpoint's list of top-k files is not the list dltrain saves: resume a checkpoint "
                            "dltrain wrote, or start a new run.")
        entries = [dict(e) for e in kept]
        for entry in entries:
            _check_entry(entry, str(state.get("monitor", self.monitor)))
        self.kept = sorted(entries, key=self._rank)
        self.dropped = []


def _check_entry(entry: dict[str, Any], monitor: str) -> None:
    """Refuse a kept-file entry whose name is not the one its epoch and value give."""
    from dltrain.errors import UserError

    epoch, value, name = entry.get("epoch"), entry.get("value"), entry.get("file")
    valid = (isinstance(epoch, int) and epoch >= 1 and isinstance(value, float) and math.isfinite(value)
             and name == top_k_name(epoch, monitor, value))
    if not valid:
        raise UserError(f"the checkpoint's list of top-k files names {name!r} (epoch {epoch!r}, value {value!r}), "
                        "not a file dltrain writes there: resume a checkpoint dltrain wrote, or start a new run.")


def make_top_k(folder: Path, k: int, monitor: str | None, mode: str,
               start_from_epoch: int = 0) -> TopKCheckpoints | None:
    """``trainer.checkpoint.save_top_k=k`` ranking by ``monitor`` (the early stopping's); None
    when k is 0, or nothing is monitored (the build refuses top-k then)."""
    return TopKCheckpoints(folder, k, monitor, mode, start_from_epoch) if k and monitor is not None else None

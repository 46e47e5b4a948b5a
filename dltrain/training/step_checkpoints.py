"""``trainer.checkpoint.every_n_steps`` / ``every_n_minutes``: ``last.pt`` inside an epoch.

For long epochs: a kill loses at most that many steps or minutes. The file holds the epoch
under way exactly as an interrupt's ``last.pt`` does (the steps done, the metric sums, the
data order and every RNG), so resuming it equals the uninterrupted run.

Deciding costs a counter and, for minutes, ``time.perf_counter()`` after each optimizer step:
nothing is read from the device. With several ranks, rank 0's clock decides, and the ranks
agree in the vote they already take after every step (:class:`~dltrain.training.guard.StepGuard`),
so all of them gather the checkpoint's state after the same step.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

from dltrain.training.checkpoint import save_agreed


class StepCheckpoints:
    """Writes ``last.pt`` every ``every_n_steps`` optimizer steps and once ``every_n_minutes``
    have passed since the last one (0: never, for either).

    Args:
        folder: the run's ``checkpoints`` directory.
        every_n_steps: a checkpoint after each optimizer step whose global number is a multiple of it.
        every_n_minutes: a checkpoint after the first step once this long has passed since the
            last checkpoint (or since training began).
        main: whether this is rank 0: its clock decides, and it alone writes.
        clock: seconds, for the minutes (``time.perf_counter`` by default).
    """

    def __init__(self, folder: str | Path, every_n_steps: int = 0, every_n_minutes: float = 0.0, *,
                 main: bool = True, clock: Callable[[], float] | None = None) -> None:
        self.path = Path(folder) / "last.pt"
        self.every_n_steps, self.seconds = every_n_steps, 60.0 * every_n_minutes
        self.main, self.clock = main, clock or perf_counter
        self._previous: int | None = None  # the global step at the last call
        self._since: float | None = None  # the clock at the last checkpoint, or at the first step

    def due(self, global_step: int) -> bool:
        """Whether a checkpoint is due after the step that left ``global_step`` optimizer steps
        done; called after every training batch. A batch that took no optimizer step (inside a
        group of accumulated batches) leaves ``global_step`` as it was: never due then."""
        if global_step == self._previous:
            return False
        self._previous = global_step
        if self.every_n_steps and global_step % self.every_n_steps == 0:
            return True
        if not self.seconds or not self.main:  # another rank learns rank 0's decision in the vote
            return False
        now = self.clock()
        if self._since is None:
            self._since = now
        return now - self._since >= self.seconds

    def write(self, trainer: Any) -> None:
        """Gather ``trainer``'s state (on every rank: the random states of all are collected)
        and, on rank 0, save it as ``last.pt`` (see :func:`~dltrain.training.checkpoint.save_agreed`):
        a failed write stops every rank, not rank 0 alone."""
        with trainer.profiler.phase("checkpointing"):
            save_agreed(trainer, self.path, trainer.ranks)
        self._since = self.clock()


def make_step_checkpoints(folder: Path, every_n_steps: int, every_n_minutes: float,
                          main: bool) -> StepCheckpoints | None:
    """The mid-epoch checkpoints ``trainer.checkpoint.every_n_steps`` / ``every_n_minutes``
    ask for; None when neither does (then nothing is decided per step)."""
    if not every_n_steps and not every_n_minutes:
        return None
    return StepCheckpoints(folder, every_n_steps, every_n_minutes, main=main)

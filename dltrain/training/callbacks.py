"""Policies applied at every epoch's end: early stopping, which checkpoints it writes, and
the writer of an epoch's metrics and checkpoints."""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dltrain.loggers import RunLogger
    from dltrain.report.tables import MetricsCSV
    from dltrain.training.diagnostics import Diagnostics
    from dltrain.training.profiler import Profiler
    from dltrain.training.top_k import TopKCheckpoints

#: Substrings of metric names for which larger is better (``mode=auto``).
_MAX_METRICS = ("accuracy", "acc", "r2", "f1", "precision", "recall", "auc")


def infer_mode(monitor: str) -> str:
    """``max`` for accuracy-like metrics, ``min`` for losses and errors."""
    return "max" if any(m in monitor.lower() for m in _MAX_METRICS) else "min"


class EarlyStopping:
    """Tracks the best value of a monitored metric and decides when to stop.

    An epoch improves when its value is finite, beats the best so far by more than
    ``min_delta`` and, with a ``baseline``, also strictly beats the baseline. After
    ``patience`` epochs in a row without improvement, :attr:`should_stop` is true (with
    ``patience=0``, at the first epoch that does not improve). With ``check_finite``, a
    NaN or infinite value stops at once. The best value and epoch are tracked even when
    ``enabled`` is false, for ``best.pt`` and the summary; then nothing ever stops.

    Args:
        monitor: metric name, e.g. ``val_loss``; None watches nothing (a run without a
            validation split whose monitor is a validation metric): no epoch improves,
            nothing stops.
        mode: ``min``, ``max`` or ``auto`` (from the name).
        min_delta: minimum change that counts as an improvement (its absolute value is used).
        patience: epochs without improvement tolerated before stopping (>= 0).
        enabled: whether to stop at all.
        baseline: a value an epoch must strictly beat to count as an improvement;
            ``None`` for no baseline.
        start_from_epoch: epochs ``1..start_from_epoch`` are not monitored at all (warm-up).
        check_finite: stop at once when the monitored value is NaN or infinite.

    Raises:
        ValueError: ``patience`` or ``start_from_epoch`` is negative, or ``mode`` is unknown.
    """

    def __init__(self, monitor: str | None = "val_loss", mode: str = "auto", min_delta: float = 0.0,
                 patience: int = 5, *, enabled: bool = True, baseline: float | None = None,
                 start_from_epoch: int = 0, check_finite: bool = True) -> None:
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        if start_from_epoch < 0:
            raise ValueError(f"start_from_epoch must be >= 0, got {start_from_epoch}")
        self.monitor = monitor
        self.mode = infer_mode(monitor or "") if mode == "auto" else mode
        self.enabled = enabled and monitor is not None
        self.min_delta = abs(float(min_delta))
        self.patience = patience
        self.baseline = None if baseline is None else float(baseline)
        self.start_from_epoch = start_from_epoch
        self.check_finite = check_finite
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.should_stop = False
        self.stopped_epoch: int | None = None
        self.non_finite = False
        #: The NaN/inf value behind a ``check_finite`` stop, for :attr:`stop_reason`.
        self.non_finite_value: float | None = None

    def _beats(self, value: float, reference: float, margin: float) -> bool:
        if self.mode == "min":
            return value < reference - margin
        return value > reference + margin

    def is_improvement(self, value: float) -> bool:
        """Whether ``value`` would be a new best (does not record it)."""
        if not math.isfinite(value):
            return False
        if self.best is not None and not self._beats(value, self.best, self.min_delta):
            return False
        # The baseline is strict but takes no min_delta: it is a bar to clear, not a step.
        return self.baseline is None or self._beats(value, self.baseline, 0.0)

    def update(self, epoch: int, value: float) -> bool:
        """Record ``value`` for ``epoch``; returns whether it is a new best.

        Args:
            epoch: the 1-based epoch that produced ``value``.
            value: the monitored metric's value for that epoch.

        Returns:
            True if the epoch improved (it is the new :attr:`best`).
        """
        if epoch <= self.start_from_epoch or self.monitor is None:
            return False  # warm-up (the metric is not meaningful yet, so it must not become best), or no metric
        value = float(value)  # plain float even from numpy or 0-d tensors: state_dict stays plain data
        if self.enabled and self.check_finite and not math.isfinite(value):
            # Training is broken, not plateaued: waiting out the patience would only waste epochs.
            self.non_finite, self.non_finite_value = True, value
            self._stop(epoch)
            return False
        improved = self.is_improvement(value)
        if improved:
            self.best, self.best_epoch, self.wait = value, epoch, 0
        else:
            self.wait += 1
            if self.enabled and self.wait >= self.patience:
                self._stop(epoch)
        return improved

    def _stop(self, epoch: int) -> None:
        if not self.should_stop:  # keep the first stop: later updates must not move it
            self.should_stop, self.stopped_epoch = True, epoch

    @property
    def stop_reason(self) -> str | None:
        """Why :attr:`should_stop` is true, for the summary and logs; None while running."""
        if not self.should_stop:
            return None
        if self.non_finite:
            return (f"{self.monitor} became {self.non_finite_value} at epoch {self.stopped_epoch} "
                    "(trainer.early_stopping.check_finite)")
        if self.baseline is not None and self.best is None:
            return (f"{self.monitor} did not beat the baseline {self.baseline:g} in {self.wait} epochs "
                    f"(patience {self.patience})")
        return f"no improvement in {self.monitor} for {self.wait} epochs (patience {self.patience})"

    def state_dict(self) -> dict[str, Any]:
        """The mutable state plus the settings (for reference), as plain data only."""
        return {
            "best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
            "should_stop": self.should_stop, "stopped_epoch": self.stopped_epoch,
            "non_finite": self.non_finite,
            # A string: NaN and inf are not valid JSON, and the state may be written as JSON.
            "non_finite_value": None if self.non_finite_value is None else str(self.non_finite_value),
            "monitor": self.monitor, "mode": self.mode, "min_delta": self.min_delta,
            "patience": self.patience, "baseline": self.baseline, "start_from_epoch": self.start_from_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the mutable state from :meth:`state_dict` (also the older 4-key format).

        The settings of this object win over those stored in ``state``, so a resumed run
        may change ``patience``: a patience stop is recomputed with the current settings,
        and an early-stopped run loaded with a larger patience continues. A non-finite
        stop stays stopped.
        """
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.wait = state["wait"]
        self.non_finite = bool(state.get("non_finite", False))
        raw = state.get("non_finite_value")
        self.non_finite_value = None if raw is None else float(raw)
        self.stopped_epoch = state.get("stopped_epoch")
        if self.non_finite:
            self.should_stop = True
            return
        self.should_stop = self.enabled and self.wait >= self.patience
        if not self.should_stop:
            self.stopped_epoch = None
        elif self.stopped_epoch is None:
            # Old format, or a smaller patience stops it now: it stops after the last recorded
            # epoch. Monitored epochs are consecutive and ``wait`` counts those after the best
            # (or after the warm-up when nothing improved), so that epoch is known.
            start = self.best_epoch if self.best_epoch is not None else state.get("start_from_epoch", 0)
            self.stopped_epoch = start + self.wait


class CheckpointPolicy:
    """Which checkpoints an epoch's end writes into ``folder``, and writing them.

    ``last.pt`` after every epoch (``save_last``), ``best.pt`` after an epoch that improved
    the monitored value (``save_best``), and ``epoch-NNNN.pt`` every ``every_n_epochs`` epochs,
    of which the newest ``keep_last`` are kept (None: all), and with ``top_k`` the epoch's
    ``top-epochNNNN-<monitor><value>.pt`` when it is among the k best (those it pushes out
    are deleted once it is written). An epoch whose monitored value is not finite writes
    nothing: such weights are no state to go back to.

    Args:
        folder: the run's ``checkpoints`` directory.
        save_last: write ``last.pt`` (what a resume continues from).
        save_best: write ``best.pt`` (the weights of the best epoch).
        every_n_epochs: also write a periodic checkpoint every so many epochs; 0 for never.
        keep_last: how many periodic checkpoints to keep; None keeps all.
        top_k: the k best epochs' checkpoints (``save_top_k``); None: none.
    """

    def __init__(self, folder: str | Path, *, save_last: bool = True, save_best: bool = True,
                 every_n_epochs: int = 0, keep_last: int | None = None, top_k: TopKCheckpoints | None = None) -> None:
        self.folder = Path(folder)
        self.save_last, self.save_best = save_last, save_best
        self.every_n_epochs, self.keep_last = every_n_epochs, keep_last
        self.top_k = top_k

    def files(self, epoch: int, improved: bool, healthy: bool = True, row: dict[str, Any] | None = None) -> list[Path]:
        """The checkpoints the end of ``epoch`` (1-based) writes, in the order they are written
        (ranking the epoch among the top k, when they are kept).

        Args:
            epoch: the epoch that just ended.
            improved: whether it improved the monitored value (it is the new best).
            healthy: whether its monitored value is finite.
            row: its metrics, which rank it among the top k.
        """
        if not healthy:
            return []
        names = ["last.pt"] if self.save_last else []
        if improved and self.save_best:
            names.append("best.pt")
        if self.every_n_epochs and epoch % self.every_n_epochs == 0:
            names.append(f"epoch-{epoch:04d}.pt")
        top = self.top_k.admit(epoch, row) if self.top_k is not None and row is not None else None
        return [self.folder / name for name in names] + ([top] if top is not None else [])

    def write(self, state: dict[str, Any], files: list[Path]) -> None:
        """Save ``state`` to each of ``files`` (from :meth:`files`), atomically; a periodic
        checkpoint among them prunes the older ones beyond ``keep_last``.

        Raises:
            UserError: a write failed; the file it was to replace is unchanged.
        """
        from dltrain.training.checkpoint import prune_periodic, save_checkpoint  # torch: not for --help

        for path in files:
            save_checkpoint(state, path)
        if any(path.name.startswith("epoch-") for path in files):
            prune_periodic(self.folder, self.keep_last)
        if self.top_k is not None:
            self.top_k.delete_dropped()


class EpochEndWriter:
    """The trainer's ``on_epoch_end``: the epoch's metrics.csv row, its diagnostics.csv rows
    and the logger's record (by rank 0), and the checkpoints ``policy`` asks for (by rank 0;
    every rank gathers the checkpoint's state, which is collective).

    Args:
        metrics_csv: the run's metrics.csv.
        logger: the run's logger.
        policy: which checkpoints each epoch writes.
        main: whether this is rank 0, which alone writes files.
        diagnostics: the layers' measurements (``trainer.diagnostics``), written as the epoch ends.
        profiler: times the checkpoints' writing (``trainer.profiler``); None times nothing.
    """

    def __init__(self, metrics_csv: MetricsCSV, logger: RunLogger, policy: CheckpointPolicy, main: bool,
                 diagnostics: Diagnostics | None = None, profiler: Profiler | None = None) -> None:
        self.metrics_csv, self.logger, self.policy, self.main = metrics_csv, logger, policy, main
        self.diagnostics, self.profiler = diagnostics, profiler

    def __call__(self, trainer: Any, row: dict[str, Any], improved: bool) -> None:
        """Write the end of the epoch ``trainer`` (the Trainer, which imports this module) just ran."""
        if self.main:
            self.metrics_csv.write(row)
            if self.diagnostics is not None:
                self.diagnostics.write_epoch(row["epoch"])
            self.logger.log_epoch(row)
        files = self.policy.files(trainer.epoch, improved, trainer.healthy, row)
        if files:
            with self.profiler.phase("checkpointing") if self.profiler is not None else nullcontext():
                state = trainer.checkpoint()  # on every rank, once for all the files of this epoch
                if self.main:
                    self.policy.write(state, files)
                elif self.policy.top_k is not None:  # rank 0 deletes the files; the others forget them
                    self.policy.top_k.dropped.clear()

"""``summary.json``: how a run ended, as one typed object written in one place.

Every outcome writes one: a run that trained (completed, early_stopped, time_limit,
diverged, interrupted, or failed while training or testing), a run that failed or was stopped before
its first epoch, a resume with nothing left to train, and a job of a sweep that failed
before its run began. Each outcome has its own set of keys, listed in a fixed order.

Imports nothing heavy: the command line writes a failed job's summary before torch is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dltrain.files import write_json

#: A run that trained: how training and the test ended, and what was trained on what.
TRAINED = ("status", "stop_reason", "epochs_run", "stopped_epoch", "best_epoch", "monitor", "mode", "best_value",
           "test", "test_weights", "num_params", "train_seconds", "task", "objective", "loss", "data", "device",
           "world_size", "resumed_from", "validation", "warnings", "run_dir", "started_at", "versions")
#: Keys a trained run's summary gains, after the others, once they apply: the ``last.pt`` an
#: interrupted run saved, this segment's time, a signal after the last step, the end time, the
#: weight averaging and its test beside the raw weights' (EMA, SWA), the time per phase
#: (``trainer.profiler``), and the report of the test split (:mod:`dltrain.report.run_report`),
#: last for it is the longest.
LATER = ("checkpoint", "segment_seconds", "signal", "finished_at", "averaging", "test_averaged", "profile",
         "report")
#: A run that failed (or was stopped) before its first epoch.
NOT_STARTED = ("status", "stop_reason", "epochs_run", "stopped_epoch", "best_epoch", "resumed_from", "world_size",
               "started_at")
#: A resumed run with nothing left to train.
ALREADY_FINISHED = ("status", "stop_reason", "resumed_from", "epochs_run", "stopped_epoch", "best_epoch", "monitor",
                    "mode", "best_value", "world_size", "run_dir")
#: A job of a sweep that failed before its run began (a value out of range, say).
JOB_FAILED = ("status", "stop_reason", "epochs_run", "stopped_epoch", "best_epoch", "best_value")

#: The statuses of a run that trained to its end and wrote its results.
FINISHED = ("completed", "early_stopped")
#: The statuses of a job that succeeded: a sweep ranks these and plots them as good. A run
#: ``trainer.max_time`` ended tested and wrote its results, but is not finished: a resume
#: trains on.
SUCCESS = ("completed", "early_stopped", "time_limit", "already_finished")


@dataclass
class RunSummary:
    """What ``summary.json`` says about a run; :attr:`layout` says which keys it writes.

    The fields are those of a run that trained; the other outcomes write a subset (see the
    constructors). Mutable: the run fills it in as it goes, and every outcome writes it.
    """

    status: str
    stop_reason: str | None = None
    epochs_run: int = 0
    stopped_epoch: int | None = None  # the epoch training stopped in (inside it, when interrupted mid-epoch)
    best_epoch: int | None = None
    monitor: str | None = None
    mode: str | None = None  # None when nothing is monitored (no validation split for a val_* monitor)
    best_value: float | None = None
    test: dict[str, float] = field(default_factory=dict)
    test_weights: str | None = None
    num_params: int = 0
    train_seconds: float = 0.0  # the whole run's, over every resumed segment
    task: str | None = None  # the data's task (multiclass, regression, ...): what its labels are
    #: ``task=``: what training computed (supervised, autoencoder, gan); None in a summary written before it.
    objective: str | None = None
    loss: str | None = None
    data: dict[str, int] = field(default_factory=dict)
    device: str | None = None
    world_size: int = 1
    resumed_from: str | None = None
    validation: str | None = None
    warnings: list[str] = field(default_factory=list)
    run_dir: str | None = None
    started_at: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    checkpoint: str | None = None
    segment_seconds: float | None = None
    signal: str | None = None
    finished_at: str | None = None
    report: dict[str, Any] | None = None
    #: EMA/SWA (``regularization.ema_decay``, ``swa_start``): what was averaged, which weights were evaluated.
    averaging: dict[str, Any] | None = None
    #: With ``regularization.evaluate_averaged=false``: the test metrics of the averaged weights.
    test_averaged: dict[str, float] | None = None
    #: ``trainer.profiler``: seconds, calls and share per phase (simple), or the trace written (pytorch).
    profile: dict[str, Any] | None = None
    layout: tuple[str, ...] = field(default=TRAINED, repr=False)
    #: Keys of a summary read from a file that this version does not know, kept as they were.
    other: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def not_started(cls, status: str, reason: str, *, resumed_from: str | None, world_size: int,
                    started_at: str) -> RunSummary:
        """A run that ended before its first epoch (``failed``, or ``interrupted`` by a signal)."""
        return cls(status, reason, resumed_from=resumed_from, world_size=world_size, started_at=started_at,
                   layout=NOT_STARTED)

    @classmethod
    def already_finished(cls, reason: str, *, resumed_from: str, epochs: int, best_epoch: int | None,
                         monitor: str | None, mode: str | None, best_value: float | None, world_size: int,
                         run_dir: str) -> RunSummary:
        """A resume of a run that has nothing left to train: ``reason`` says why."""
        return cls("already_finished", f"nothing to train: {reason}", epochs, epochs, best_epoch, monitor, mode,
                   best_value, resumed_from=resumed_from, world_size=world_size, run_dir=run_dir,
                   layout=ALREADY_FINISHED)

    @classmethod
    def job_failed(cls, reason: str) -> RunSummary:
        """A job of a sweep that failed before its run began."""
        return cls("failed", reason, layout=JOB_FAILED)

    @classmethod
    def from_dict(cls, written: dict[str, Any]) -> RunSummary:
        """A summary as a file holds it, keys in the file's order (see :func:`read_summary`)."""
        known = {f.name for f in fields(cls)} - {"layout", "other"}
        summary = cls(**{k: v for k, v in written.items() if k in known})
        summary.layout = tuple(written)
        summary.other = {k: v for k, v in written.items() if k not in known}
        return summary

    @property
    def finished(self) -> bool:
        """Whether the run trained to its end (completed, or stopped early)."""
        return self.status in FINISHED

    def to_dict(self) -> dict[str, Any]:
        """The summary as ``summary.json`` holds it (and ``train()`` returns it)."""
        later = [k for k in LATER if getattr(self, k) is not None] if self.layout == TRAINED else []
        return {k: self.other[k] if k in self.other else getattr(self, k) for k in (*self.layout, *later)}


def write_summary(run_dir: Path, summary: RunSummary, *, main: bool = True) -> None:
    """Write ``run_dir/summary.json`` atomically; only rank 0 (``main``) writes a run's files.

    Raises:
        OSError: the disk cannot take it (full, read-only).
    """
    if main:
        write_json(run_dir / "summary.json", summary.to_dict())


def read_summary(run_dir: Path) -> RunSummary | None:
    """The ``summary.json`` in ``run_dir``; None when there is none, or none that reads."""
    try:
        written = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(written, dict) or not isinstance(written.get("status"), str):
        return None
    return RunSummary.from_dict(written)

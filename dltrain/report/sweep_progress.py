"""A sweep's progress: as each job starts, which job of how many it is and about how long
the rest will take, on the console, in the job's log and in the sweep's ``sweep.log``.

The number of jobs comes from the sweep's own definition before the first job starts: the
product of the swept values for Hydra's basic sweeper, ``n_trials`` for Optuna, unknown for
other sweepers. The time left is the mean duration of the jobs finished so far times the
jobs left; it is known only where the jobs run one after another in the sweep's own process
(the basic launcher): jobs in worker processes or on a cluster say only their number.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dltrain.config.hydra_job import from_start
from dltrain.config.suggest import override_key

log = logging.getLogger("dltrain")

SWEEP_LOG = "sweep.log"
_BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


@dataclass
class SweepProgress:
    """What a sweep knows of its jobs: how many there are, which keys vary, and (in the
    sweep's own process) how long the finished ones took. Pickled with Hydra's callbacks
    into the processes of a launcher that runs jobs elsewhere."""

    total: int | None
    swept: list[str]
    sweep_dir: Path
    pid: int = field(default_factory=os.getpid)
    durations: list[float] = field(default_factory=list)
    _started: float | None = None

    @classmethod
    def of(cls, config: DictConfig) -> SweepProgress:
        """The progress of the sweep ``config`` describes (its overrides and sweeper)."""
        overrides = _parse([*_sweeper_params(config), *config.hydra.overrides.task])
        swept = [o.key_or_group for o in overrides or [] if o.is_sweep_override()]
        # Absolute: a job may run elsewhere, or in its own directory (hydra.job.chdir=true).
        return cls(total=_count_jobs(config, overrides), swept=swept,
                   sweep_dir=from_start(str(config.hydra.sweep.dir), OmegaConf.select(config, "hydra.runtime.cwd")))

    def job_started(self, config: DictConfig) -> str:
        """Say which job starts (``config`` is the job's) and about how long the rest will take."""
        hydra = config.hydra
        number = int(hydra.job.num) + 1
        shown = [o for o in hydra.overrides.task if override_key(o) in self.swept] or list(hydra.overrides.task)
        line = f"sweep: job {number}"
        if self.total is not None and number <= self.total:
            line += f" of {self.total}"
        if shown:
            line += f" ({' '.join(shown)})"
        # Hydra numbers the jobs' directories from 0: name this one's, as the sweep's table does.
        line += f" in {self._job_dir(config)}/"
        left = self._seconds_left(number)
        if left is not None:
            line += f": about {describe_seconds(left)} left"
        self._started = time.monotonic()
        log.info("%s", line)
        append_line(self.sweep_dir / SWEEP_LOG, line)
        return line

    def job_ended(self) -> None:
        """Count the job that just ended into the mean duration."""
        if self._started is not None and os.getpid() == self.pid:
            self.durations.append(time.monotonic() - self._started)
        self._started = None

    def _job_dir(self, config: DictConfig) -> str:
        """The job's directory relative to the sweep's."""
        job_dir = str(config.hydra.runtime.output_dir)
        try:
            return Path(os.path.relpath(job_dir, self.sweep_dir)).as_posix()
        except ValueError:  # on another drive
            return job_dir

    def _seconds_left(self, number: int) -> float | None:
        """The mean duration so far times the jobs left, this one included; None when
        nothing has finished here yet or the number of jobs is unknown."""
        if not self.durations or self.total is None or number > self.total or os.getpid() != self.pid:
            return None
        return sum(self.durations) / len(self.durations) * (self.total - number + 1)


def describe_seconds(seconds: float) -> str:
    """``40 s``, ``12 min``, ``2 h 5 min``: rounded, as an estimate should be."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def append_line(path: Path, line: str) -> None:
    """Append one timestamped line to the sweep's log; a disk that refuses it costs a
    warning, never the job."""
    stamp = datetime.now().isoformat(sep=" ", timespec="seconds")
    try:
        with path.open("a", encoding="utf-8") as f:
            f.write(f"[{stamp}] {line}\n")
    except OSError as err:
        log.warning("warning: could not write %s: %s", path, err.strerror or err)


def _sweeper_params(config: DictConfig) -> list[str]:
    params = config.hydra.sweeper.get("params") or {}
    return [f"{key}={value}" for key, value in params.items()]


def _parse(overrides: list[str]) -> list | None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - e.g. a glob() over a group: the count is only unknown
        return None


def _count_jobs(config: DictConfig, overrides: list | None) -> int | None:
    sweeper = config.hydra.sweeper
    if sweeper.get("_target_") == _BASIC_SWEEPER and overrides is not None:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        try:  # the sweeper's own expansion of the overrides into jobs
            return len(BasicSweeper.split_arguments(overrides, None)[0])
        except Exception:  # noqa: BLE001 - a sweep it cannot run fails in the sweeper, with its message
            return None
    trials = sweeper.get("n_trials")
    return trials if isinstance(trials, int) and trials > 0 else None

"""Signals to a sweep whose jobs run in worker processes (``hydra/launcher=joblib``).

Under the basic launcher a job runs in the sweep's own process, and a signal stops it after
its current step (:mod:`dltrain.training.signals`). Under joblib the jobs run in worker processes, and
a signal reaches the sweep's main process alone (``kill PID``) or every process of the group
(Ctrl-C). Either way the sweep stops as under the basic launcher:

- the main process passes the signal on to the workers, starts no further job, waits until
  each running job has stopped after its current step (``last.pt`` and ``summary.json``
  written), and ends with ``128 + signal number`` once the summary of the jobs so far is
  written; the workers are stopped with it;
- a worker keeps a signal that arrives between jobs instead of dying of it (the pool would
  then kill the other workers, mid-save), starts no job after it, and counts a signal that
  reaches it twice at once (directly, and passed on) as one.

A second signal to the main process aborts the sweep at once.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from dltrain.training.signals import SIGNALS, Interrupted, StopRequest, note, received, signal_name

log = logging.getLogger("dltrain")

#: A repeat of a signal within this many seconds counts once in a worker (see StopRequest).
REPEAT_WINDOW = 1.0
#: How often the main process looks at its workers while they stop.
POLL_SECONDS = 0.05


class SweepSignals:
    """The stop signals in a sweep's main process, from :meth:`install` to :meth:`uninstall`
    (Hydra's callbacks start and end a sweep, so this is no context manager).

    While no job runs in a worker process (the basic launcher, or before the first job)
    a signal is handled as it was before :meth:`install`.

    Args:
        stopped: the exception that stops the sweep, built from the :class:`Interrupted`.
    """

    def __init__(self, stopped: Callable[[Interrupted], BaseException]) -> None:
        self.signum: int | None = None
        self._stopped = stopped
        self._previous: dict[int, Any] = {}

    def install(self) -> SweepSignals:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        pool = _worker_pool()
        if pool is None:
            return self._as_before(signum, frame)
        name = signal_name(signum)
        if self.signum is not None:  # a second signal: the workers abort at once, and so does the sweep
            _pass_on(signum, set())
            raise self._stopped(Interrupted(signum, f"aborted by {name}: the running jobs were stopped at once",
                                            aborted=True))
        if _dispatching(frame):
            # The pool's locks may be held here, and the jobs' results need them: handle it again
            # in a moment, once the jobs are handed out.
            again = threading.Timer(POLL_SECONDS, os.kill, (os.getpid(), signum))
            again.daemon = True
            again.start()
            return None
        self.signum = signum
        log.warning("%s received: each running job of the sweep stops after its current step and saves last.pt, "
                    "and no further job starts (send it again to abort at once)", name)
        _hold_back(pool)
        signalled: set[int] = set()
        while _busy(pool):
            signalled |= _pass_on(signum, signalled)
            time.sleep(POLL_SECONDS)
        message = (f"interrupted by {name}: the jobs that were training saved last.pt after their current step; "
                   "continue one with resume=<its run directory>")
        raise self._stopped(Interrupted(signum, message))

    def _as_before(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:  # the default action (end the process), as without this handler
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


def _worker_pool() -> Any | None:
    """joblib's process pool (loky's reusable executor) when it has worker processes."""
    loky = sys.modules.get("joblib.externals.loky.reusable_executor")
    pool = getattr(loky, "_executor", None)
    return pool if getattr(pool, "_processes", None) else None


def _dispatching(frame: FrameType | None) -> bool:
    """Whether the main thread is handing jobs to the pool (holding its locks)."""
    while frame is not None:
        if frame.f_code.co_name == "dispatch_one_batch" and "joblib" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def _work_items(pool: Any) -> list[Any]:
    return list(getattr(pool, "_pending_work_items", {}).values())


def _hold_back(pool: Any) -> None:
    """Start no further job: the jobs not yet handed to a worker are cancelled, and joblib
    hears of no result any more (it would hand out the next job, or kill the workers at the
    first stopped job while the others still save). A job already queued for a worker
    starts there, finds the stop and removes its directory (:func:`worker_job`)."""
    for item in _work_items(pool):
        item.future._done_callbacks.clear()
        item.future.cancel()


def _busy(pool: Any) -> bool:
    return any(not item.future.done() for item in _work_items(pool))


def _pass_on(signum: int, signalled: set[int]) -> set[int]:
    """Send ``signum`` to the worker processes not in ``signalled`` that handle it now; the
    workers it was sent to."""
    sent = set()
    for child in multiprocessing.active_children():
        pid = child.pid
        if pid is not None and pid not in signalled and _handles(pid, signum):
            os.kill(pid, signum)
            sent.add(pid)
    return sent


def _handles(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum``: a worker that has not begun a job
    yet would die of the signal (and the pool then kills the others). Linux's /proc tells;
    elsewhere every worker is taken to have one."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return not Path("/proc/self/status").exists()
    caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), None)
    return caught is None or bool(int(caught, 16) >> (signum - 1) & 1)


#: Whether this worker process is running a job now.
_in_job = False


@contextmanager
def worker_job(job_dir: Path) -> Iterator[None]:
    """A job of a sweep. In a worker process (joblib) it keeps the stop signals for the
    worker's life (:func:`_keep_signals`), and a job that begins after a stop does not start:
    its directory, which holds only what Hydra wrote into it, is removed again.

    Raises:
        Interrupted: a stop signal came before the job began, or (at once) during it outside
            training.
    """
    global _in_job
    if multiprocessing.parent_process() is None or threading.current_thread() is not threading.main_thread():
        yield  # the sweep's own process (basic launcher), or a process of its own (submitit)
        return
    _keep_signals()
    signum = received()
    if signum is not None:
        _remove_unstarted(job_dir)
        raise Interrupted(signum, f"{signal_name(signum)} stopped the sweep before this job started")
    _in_job = True
    try:
        yield
    finally:
        _in_job = False


def _keep_signals() -> None:
    """In this worker process, a stop signal outside training is recorded rather than fatal."""
    if signal.getsignal(signal.SIGTERM) is not _between_jobs:
        for sig in SIGNALS:
            signal.signal(sig, _between_jobs)
        StopRequest.repeat_window = REPEAT_WINDOW


def _between_jobs(signum: int, _frame: FrameType | None) -> None:
    first = received() is None
    note(signum)
    if first and _in_job:  # setting up or finishing a job: nothing to save, it ends now
        raise Interrupted(signum, f"aborted by {signal_name(signum)}", aborted=True)


def _remove_unstarted(job_dir: Path) -> None:
    """Remove the directory of a job that did not start, if it holds only Hydra's files."""
    hydra_files = {".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml"}
    try:
        files = {p.relative_to(job_dir).as_posix() for p in job_dir.rglob("*") if not p.is_dir()}
        if files - hydra_files - {p.name for p in job_dir.glob("*.log")}:
            return
        for name in files:
            (job_dir / name).unlink()
        for folder in (job_dir / ".hydra", job_dir):
            if folder.is_dir():
                folder.rmdir()
    except OSError as err:  # left as it is: the summary lists it as a job without summary.json
        log.warning("could not remove %s, where a job of the stopped sweep did not start: %s", job_dir, err)

"""Stopping a run on a signal without losing work.

The first SIGINT (Ctrl-C), SIGTERM, SIGUSR1 or SIGUSR2 (what Slurm sends ahead of a
job's time limit or pre-emption, as ``--signal`` asks: submitit's launcher asks for
SIGUSR2 by default) asks the training loop to stop after the current step: it writes
``last.pt`` and ``summary.json`` and exits with ``128 + signal number`` (130, 143, 138,
140). A second signal aborts at once. Outside the training loop (loading data, building
the model) the first signal aborts at once too: there is nothing to save yet.

A handler for SIGUSR1 or SIGUSR2 that was installed before dltrain's (submitit's, in a
job of a Slurm sweep) runs once the checkpoint is saved: that is how the job is requeued,
and ``resume=auto`` then continues it from ``last.pt``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger("dltrain")

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")
                if hasattr(signal, name))
#: The signals whose earlier handler (a cluster launcher's) still runs after the checkpoint.
CHAINED = tuple(getattr(signal, name) for name in ("SIGUSR1", "SIGUSR2") if hasattr(signal, name))

#: The first stop signal this process received, whoever handled it: a worker process of a
#: sweep starts no job after it (``dltrain.cli.sweep_signals``).
_received: int | None = None


def received() -> int | None:
    """The first stop signal this process received, or None."""
    return _received


def note(signum: int) -> None:
    """Record a stop signal this process received (only the first is kept)."""
    global _received
    _received = _received or signum


class Interrupted(BaseException):
    """The run was stopped by a signal; its exit code is ``128 + signum``.

    A ``BaseException``, as ``KeyboardInterrupt`` is: a stop asked for is no error, so no
    ``except Exception`` that keeps a run going (a logger that failed, a plot, a custom
    model's check) swallows it. Where a run records how it ended, it catches this explicitly.
    """

    def __init__(self, signum: int, message: str | None = None, aborted: bool = False) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        self.aborted = aborted  # raised wherever the program was, not at a step boundary
        super().__init__(message or f"interrupted by {signal_name(signum)}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable, so a signal in a job that runs in a worker process (joblib, submitit)
        # reaches the sweep as itself.
        return type(self), (self.signum, str(self), self.aborted)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@contextmanager
def held() -> Iterator[None]:
    """Hold the stop signals back while the block runs (a write that must be whole, as the files of
    a finished prediction): the first one sent meanwhile ends the run as the block ends, with
    :class:`Interrupted` saying the block's work was done; a second aborts at once, as in
    training. An error of the block's own is raised rather than the signal. It holds what a
    :class:`StopRequest` handles: the handler puts a signal aside while a block is held rather
    than blocking it, since a process-wide signal reaches any thread that does not block it
    (torch's own, here) and a mask set in this thread alone would not hold it back."""
    signum = None
    try:
        _hold.depth += 1
        yield
    finally:
        if _hold.depth == 1:  # the outermost block: what was put aside is taken before a repeat can abort
            signum, _hold.pending = _hold.pending, None
        _hold.depth -= 1
    if signum is not None:
        raise Interrupted(signum, f"{signal_name(signum)} arrived while the results were written: they were "
                                  "written whole")


class _Hold:
    """What :func:`held` holds: how many held blocks run, and the first signal put aside."""

    depth = 0
    pending: int | None = None


_hold = _Hold()


class StopRequest:
    """Handles SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 while active (a context manager).

    Attributes:
        signum: the first signal received, or None; the training loop reads it after
            every step while :attr:`graceful` is true.
        graceful: whether the loop can stop cleanly now (set around training); when false,
            a signal raises :class:`Interrupted` at once.
        repeat_window: a repeat of the first signal within this many seconds counts as the
            same request (a worker process of a sweep gets a signal sent to the whole process
            group twice: directly, and passed on by the sweep).
    """

    repeat_window = 0.0

    def __init__(self) -> None:
        self.signum: int | None = None
        self.graceful = False
        self._previous: dict[int, Any] = {}
        self._first_at = 0.0

    def __enter__(self) -> StopRequest:
        if not _hold.depth:  # nothing put aside by an earlier run of this process carries over
            _hold.pending = None
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        previous = dict(self._previous)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        handler = previous.get(self.signum)
        stopped = exc_type is not None and issubclass(exc_type, Interrupted)  # not diverged, not failed
        if stopped and self.signum in CHAINED and callable(handler):
            # The launcher's own response (submitit: requeue the job), after dltrain's (last.pt);
            # a repeat of the signal meanwhile waits rather than re-enter it.
            log.info("%s: passing it on to the handler that was there before dltrain's", signal_name(self.signum))
            signal.pthread_sigmask(signal.SIG_BLOCK, {self.signum})
            try:
                handler(self.signum, None)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {self.signum})

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if _hold.depth and _hold.pending is None:  # inside held(): handled as the block ends
            note(signum)
            _hold.pending, self.signum = signum, self.signum or signum  # a second one aborts
            self._first_at = time.monotonic()
            return
        if signum == self.signum and time.monotonic() - self._first_at < self.repeat_window:
            return
        note(signum)
        if self.signum is None:
            self._first_at = time.monotonic()
        if self.signum is not None or not self.graceful:
            self.signum = self.signum or signum
            raise Interrupted(signum, f"aborted by {signal_name(signum)}", aborted=True)
        self.signum = signum
        log.warning("%s received: stopping after the current step and saving last.pt "
                    "(send it again to abort at once)", signal_name(signum))

"""``trainer.profiler``: where a run's time goes.

The loop asks its profiler for four things: ``batches(batches)`` (the training batches it
iterates, the wait for each timed as ``data``), ``phase(name)`` (a context around the batch
augmentation, forward, backward, optimizer, weight averaging, evaluation and checkpointing),
``step()`` after each optimizer step and ``start()``/``stop()`` around ``fit``. With
``trainer.accumulate_grad_batches=k`` the phases of a batch (data, augment, forward, backward)
are called once per batch, ``optimizer`` and the EMA's ``averaging`` once per optimizer step.

``none`` answers with the batches themselves and one shared ``nullcontext()``: nothing is
timed, nothing synchronised, and no object is made per step (about a microsecond a step for
its four phases, against 600 for the digits MLP's step on one CPU thread). ``simple`` times each phase
with ``time.perf_counter()``; on CUDA it calls ``torch.cuda.synchronize()`` at every phase
boundary, or the time of queued kernels would land in whichever phase waits for them
first, so it slows a GPU run a little. ``pytorch`` records ``torch.profiler`` traces of a
few steps after one skipped and one of warm-up, the phases marked as ranges.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch

from dltrain.files import atomic_tmpfile, atomic_write

log = logging.getLogger("dltrain")

#: The phases, in the order they are reported.
PHASES = ("data", "augment", "forward", "backward", "optimizer", "averaging", "evaluation", "checkpointing")
#: ``profiler=pytorch``: steps skipped, then recorded but thrown away (warm-up), before the trace.
TRACE_WAIT, TRACE_WARMUP = 1, 1
TRACE_FILE = "profiler/trace.json"
#: ``profile.txt``'s last line: what a call is (with accumulation a batch is not an optimizer step).
CALLS_NOTE = "calls: per batch for data, augment, forward, backward; per optimizer step for optimizer"

_NOTHING = nullcontext()  # reusable: it keeps no state


class Profiler:
    """``trainer.profiler=none``: times nothing, at no cost per step."""

    def batches(self, batches: Iterable[Any]) -> Iterable[Any]:
        """The training batches, as the loop iterates them."""
        return batches

    def phase(self, name: str) -> AbstractContextManager[Any]:
        """A context around one phase (see :data:`PHASES`)."""
        return _NOTHING

    def step(self) -> None:
        """Called after each optimizer step (with accumulation, once per group of batches)."""

    def start(self) -> None:
        """Called as ``fit`` starts."""

    def stop(self) -> None:
        """Called as ``fit`` ends, however it ends."""

    def finish(self, run_dir: Path) -> dict[str, Any] | None:
        """Write what was measured into ``run_dir`` and say it in the log; returns the
        summary's ``profile`` entry (None: nothing profiled)."""
        return None


class _Phase:
    """One phase of :class:`SimpleProfiler`: its time excludes the phases nested in it
    (an LBFGS step's closure runs forward and backward inside ``optimizer``)."""

    __slots__ = ("calls", "name", "owner", "seconds", "started")

    def __init__(self, owner: SimpleProfiler, name: str) -> None:
        self.owner, self.name = owner, name
        self.seconds, self.calls, self.started = 0.0, 0, 0.0

    def __enter__(self) -> None:
        self.owner.sync()
        self.owner.stack.append(0.0)  # the time of phases nested in this one
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.owner.sync()
        elapsed = time.perf_counter() - self.started
        nested = self.owner.stack.pop()
        self.seconds += elapsed - nested
        self.calls += 1
        if self.owner.stack:
            self.owner.stack[-1] += elapsed


class SimpleProfiler(Profiler):
    """``trainer.profiler=simple``: seconds and calls per phase over the run's ``fit``.

    Args:
        device: where the model runs; on CUDA every phase boundary synchronises.
    """

    def __init__(self, device: torch.device) -> None:
        self.sync = torch.cuda.synchronize if device.type == "cuda" else _no_sync
        self.stack: list[float] = []
        self.phases = {name: _Phase(self, name) for name in PHASES}
        self.total, self._started = 0.0, None

    def batches(self, batches: Iterable[Any]) -> Iterator[Any]:
        """The batches, each one's wait timed as ``data``."""
        data, batch_iter = self.phases["data"], iter(batches)
        while True:
            data.__enter__()
            try:
                batch = next(batch_iter)
            except StopIteration:
                self.stack.pop()  # the end of the epoch: no wait for a batch
                return
            data.__exit__()
            yield batch

    def phase(self, name: str) -> _Phase:
        return self.phases[name]

    def start(self) -> None:
        self._started = time.perf_counter()

    def stop(self) -> None:
        if self._started is not None:
            self.sync()
            self.total += time.perf_counter() - self._started
            self._started = None

    def report(self) -> dict[str, dict[str, float]]:
        """Per phase that ran: seconds, calls, mean milliseconds and share of the total; then
        ``other`` (logging, metrics, the progress bar: the rest of ``fit``) and ``total``."""
        out: dict[str, dict[str, float]] = {}
        for p in self.phases.values():
            if p.calls:
                out[p.name] = {"seconds": round(p.seconds, 6), "calls": p.calls,
                               "mean_ms": round(1000 * p.seconds / p.calls, 4), "share": _share(p.seconds, self.total)}
        other = max(self.total - sum(p.seconds for p in self.phases.values()), 0.0)
        out["other"] = {"seconds": round(other, 6), "share": _share(other, self.total)}
        out["total"] = {"seconds": round(self.total, 6)}
        return out

    def finish(self, run_dir: Path) -> dict[str, Any]:
        report = self.report()
        with atomic_write(run_dir / "profile.txt") as f:
            f.write(format_profile(report))
        shares = ", ".join(f"{name} {row['share']:.0%}" for name, row in report.items() if "share" in row)
        log.info("profile: %s of %.2f s in training (profile.txt)", shares, self.total)
        return report


def format_profile(report: dict[str, dict[str, float]]) -> str:
    """``profile.txt``: one line per phase."""
    lines = [f"{'phase':<14}{'seconds':>10}{'calls':>8}{'mean ms':>10}{'share':>8}"]
    for name, row in report.items():
        calls = f"{row['calls']:>8d}" if "calls" in row else " " * 8
        mean = f"{row['mean_ms']:>10.3f}" if "mean_ms" in row else " " * 10
        share = f"{row['share']:>8.1%}" if "share" in row else " " * 8
        lines.append(f"{name:<14}{row['seconds']:>10.3f}{calls}{mean}{share}")
    lines.append(CALLS_NOTE)
    return "\n".join(lines) + "\n"


class TorchProfiler(Profiler):
    """``trainer.profiler=pytorch``: a ``torch.profiler`` trace of ``steps`` training steps
    (after :data:`TRACE_WAIT` skipped and :data:`TRACE_WARMUP` of warm-up), written as a
    Chrome trace (``profiler/trace.json``, for https://ui.perfetto.dev or chrome://tracing);
    the phases are its named ranges. CPU activity always, CUDA's on CUDA.

    Args:
        device: where the model runs.
        steps: training steps recorded.
        run_dir: the run's directory (the trace goes in ``profiler/``).
    """

    def __init__(self, device: torch.device, steps: int, run_dir: Path) -> None:
        from torch.profiler import ProfilerActivity, profile, schedule

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        self.steps, self.path = steps, run_dir / TRACE_FILE
        self.traced: int | None = None  # training steps in the trace, once written
        self.prof = profile(activities=activities, on_trace_ready=self._write,
                            schedule=schedule(wait=TRACE_WAIT, warmup=TRACE_WARMUP, active=steps, repeat=1))
        self._running = False

    def batches(self, batches: Iterable[Any]) -> Iterator[Any]:
        """The batches, each one's wait a ``data`` range."""
        batch_iter = iter(batches)
        while True:
            with torch.profiler.record_function("data"):
                batch = next(batch_iter, None)
            if batch is None:
                return
            yield batch

    def step(self) -> None:
        """The profiler's step ends with each optimizer step: with accumulation a step holds
        its group's batches (and the wait for the next group's first, read ahead)."""
        self.prof.step()

    def phase(self, name: str) -> AbstractContextManager[Any]:
        return torch.profiler.record_function(name)

    def start(self) -> None:
        if not self._running:
            self.prof.start()
            self._running = True

    def stop(self) -> None:
        if self._running:
            self._running = False
            self.prof.stop()  # a run shorter than the schedule writes what it recorded

    def _write(self, prof: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = atomic_tmpfile(self.path)  # a reader never sees half a trace
        os.close(fd)
        try:
            prof.export_chrome_trace(tmp)
            os.replace(tmp, self.path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        self.traced = max(0, min(prof.step_num - TRACE_WAIT - TRACE_WARMUP, self.steps))

    def finish(self, run_dir: Path) -> dict[str, Any]:
        if self.traced is None:
            log.info("profiler=pytorch: no trace written (the run ended before the profiler started)")
        elif self.traced < self.steps:
            log.info("profiler=pytorch: %s holds %d training steps, not trainer.profiler_steps=%d: the run "
                     "ended after %d steps (%d skipped, %d of warm-up); open it in https://ui.perfetto.dev",
                     TRACE_FILE, self.traced, self.steps, self.prof.step_num, TRACE_WAIT, TRACE_WARMUP)
        else:
            log.info("profiler=pytorch: %s holds %d training steps; open it in https://ui.perfetto.dev",
                     TRACE_FILE, self.traced)
        return {"trace": TRACE_FILE if self.traced is not None else None, "steps": self.traced or 0}


def make_profiler(kind: str, device: torch.device, run_dir: Path, steps: int = 3) -> Profiler:
    """The profiler ``trainer.profiler=kind`` asks for (``none``, ``simple``, ``pytorch``)."""
    if kind == "simple":
        return SimpleProfiler(device)
    if kind == "pytorch":
        return TorchProfiler(device, steps, run_dir)
    return Profiler()


def _no_sync() -> None:
    """The CPU has no queue of kernels to wait for."""


def _share(seconds: float, total: float) -> float:
    return round(seconds / total, 4) if total > 0 else 0.0

"""A signal to a sweep whose jobs run in worker processes (``hydra/launcher=joblib``) stops
it as under the basic launcher: each running job stops after its step with ``last.pt``, no
further job starts, the summary of the jobs so far is written, the exit code is 128 + the
signal, and no worker is left running."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import pytest

from dltrain.cli import sweep_signals
from dltrain.cli.sweep_signals import SweepSignals, worker_job
from dltrain.training import signals
from dltrain.training.signals import Interrupted, StopRequest

from .test_signals import ENDLESS, _env

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")

QUICK = ["data=xor", "model.hidden=[8]", "trainer.batch_size=32"]


@pytest.fixture
def fresh_signals(monkeypatch: pytest.MonkeyPatch):
    """This process's signal state as a new process has it, and put back afterwards."""
    monkeypatch.setattr(signals, "_received", None)
    monkeypatch.setattr(StopRequest, "repeat_window", 0.0)
    monkeypatch.setattr(sweep_signals, "_in_job", False)
    before = {sig: signal.getsignal(sig) for sig in signals.SIGNALS}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_sigterm_to_a_joblib_sweep_stops_each_job_after_its_step(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    # Three jobs on two workers: the third must never start.
    proc = subprocess.Popen([sys.executable, "-m", "dltrain", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                             "optim=sgd,adam,rmsprop", *ENDLESS, *QUICK, "hydra.sweep.dir=S"],
                            cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    sweep = tmp_path / "S"
    try:
        deadline = time.monotonic() + 120
        while not all((sweep / job / "metrics.csv").is_file() for job in ("0", "1")):  # both jobs are training
            assert proc.poll() is None and time.monotonic() < deadline, "the jobs did not start training"
            time.sleep(0.1)
        children = _children(proc.pid)
        assert len(children) >= 2  # the two workers (and the pool's resource trackers)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        deadline = time.monotonic() + 10  # the resource trackers exit once the workers have
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in children if _alive(pid)], "a worker was left running"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines() == ["dltrain: interrupted by SIGTERM: the jobs that were training saved last.pt after "
                                   "their current step; continue one with resume=<its run directory>."]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]  # the third never started
    with (sweep / "sweep_summary.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((row["job"], row["status"]) for row in rows) == [("0", "interrupted"), ("1", "interrupted")]
    assert (sweep / "sweep_summary.json").is_file()
    for job in ("0", "1"):
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert summary["status"] == "interrupted" and summary["stop_reason"].startswith("interrupted by SIGTERM")
        assert summary["checkpoint"] == str(sweep / job / "checkpoints" / "last.pt")
        assert (sweep / job / "checkpoints" / "last.pt").is_file()


def test_a_repeat_within_the_window_is_the_same_request(fresh_signals):
    """A worker of a sweep gets a signal to the process group twice (directly, and passed on
    by the sweep): within the window the second copy does not abort the save."""
    StopRequest.repeat_window = 60.0
    with StopRequest() as stop:
        stop.graceful = True
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM  # asked to stop, not aborted
    assert signals.received() == signal.SIGTERM
    StopRequest.repeat_window = 0.0  # outside a sweep's worker: a second signal aborts at once
    with pytest.raises(Interrupted) as info, StopRequest() as stop:
        stop.graceful = True
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
    assert info.value.aborted


def _hydra_job_dir(root: Path, extra: str | None = None) -> Path:
    job_dir = root / "2"
    (job_dir / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (job_dir / ".hydra" / name).write_text("{}\n")
    (job_dir / "dltrain.log").write_text("")
    if extra:
        (job_dir / extra).write_text("mine")
    return job_dir


def test_a_worker_keeps_a_signal_between_jobs_and_starts_no_job_after_it(tmp_path, fresh_signals, monkeypatch):
    monkeypatch.setattr(sweep_signals.multiprocessing, "parent_process", lambda: object())  # as in a worker
    with worker_job(tmp_path / "first"):  # a first job arms the worker
        assert signal.getsignal(signal.SIGTERM) is sweep_signals._between_jobs
    os.kill(os.getpid(), signal.SIGTERM)  # between jobs: kept, not fatal
    assert signals.received() == signal.SIGTERM

    job_dir = _hydra_job_dir(tmp_path)
    ran = []
    with pytest.raises(Interrupted, match="SIGTERM stopped the sweep before this job started"), worker_job(job_dir):
        ran.append(True)
    assert ran == [] and not job_dir.exists()  # only Hydra's files were there: gone again

    kept = _hydra_job_dir(tmp_path / "other", extra="notes.txt")
    with pytest.raises(Interrupted), worker_job(kept):
        pass
    assert (kept / "notes.txt").read_text() == "mine" and (kept / ".hydra" / "hydra.yaml").is_file()


def test_a_signal_during_a_job_outside_training_ends_it_at_once(tmp_path, fresh_signals, monkeypatch):
    monkeypatch.setattr(sweep_signals.multiprocessing, "parent_process", lambda: object())
    with pytest.raises(Interrupted) as info, worker_job(tmp_path):
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(1)  # not reached: the handler raises first
    assert info.value.aborted and info.value.exit_code == 128 + signal.SIGUSR1


def test_the_sweeps_own_process_is_no_worker(tmp_path, fresh_signals):
    before = signal.getsignal(signal.SIGTERM)
    with worker_job(tmp_path):  # the basic launcher: the job's run handles its signals itself
        assert signal.getsignal(signal.SIGTERM) is before


class Stopped(BaseException):
    def __init__(self, interrupted: Interrupted) -> None:
        super().__init__(str(interrupted))
        self.interrupted = interrupted


def test_without_workers_a_signal_acts_as_before(fresh_signals, monkeypatch):
    seen = []
    signal.signal(signal.SIGUSR2, lambda signum, _frame: seen.append(signum))
    monkeypatch.setattr(sweep_signals, "_worker_pool", lambda: None)
    handler = SweepSignals(Stopped).install()
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
    finally:
        handler.uninstall()
    assert seen == [signal.SIGUSR2]


def test_the_sweep_waits_for_the_running_jobs_and_starts_no_other(fresh_signals, monkeypatch):
    running, queued, calls = Future(), Future(), []
    running.set_running_or_notify_cancel()  # a worker has it
    for future in (running, queued):
        future.add_done_callback(calls.append)  # joblib's: it would hand out the next job
    pool = SimpleNamespace(_processes={1: None},
                           _pending_work_items={0: SimpleNamespace(future=running), 1: SimpleNamespace(future=queued)})
    monkeypatch.setattr(sweep_signals, "_worker_pool", lambda: pool)
    passed_on = []
    monkeypatch.setattr(sweep_signals, "_pass_on", lambda signum, done: passed_on.append(signum) or {1})
    threading.Timer(0.5, running.set_result, ("stopped after its step",)).start()
    handler = SweepSignals(Stopped).install()
    started = time.monotonic()
    try:
        with pytest.raises(Stopped) as info:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # not reached: the handler raises once the running job is done
    finally:
        handler.uninstall()
    assert time.monotonic() - started >= 0.4  # it waited for the running job
    assert running.done() and queued.cancelled() and calls == []  # joblib heard of neither
    assert passed_on and set(passed_on) == {signal.SIGTERM}
    assert info.value.interrupted.exit_code == 143 and not info.value.interrupted.aborted


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_only_a_process_that_handles_the_signal_is_sent_it(fresh_signals):
    signal.signal(signal.SIGUSR2, signal.SIG_DFL)
    assert not sweep_signals._handles(os.getpid(), signal.SIGUSR2)  # it would die of it
    signal.signal(signal.SIGUSR2, lambda *_: None)
    assert sweep_signals._handles(os.getpid(), signal.SIGUSR2)


def test_a_signal_while_jobs_are_handed_out_is_handled_a_moment_later(fresh_signals, monkeypatch):
    """joblib holds the pool's locks while it hands out jobs, and the jobs' results need them:
    the sweep does not wait there, it takes the signal again once the jobs are handed out."""
    scope: dict = {"sys": sys}
    exec(compile("def dispatch_one_batch():\n    return sys._getframe()\n", "joblib/parallel.py", "exec"), scope)
    frame = scope["dispatch_one_batch"]()
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(sweep_signals, "_worker_pool", lambda: SimpleNamespace(_processes={1: None}))
    monkeypatch.setattr(os, "kill", lambda pid, signum: sent.append((pid, signum)))
    handler = SweepSignals(Stopped)
    assert handler._handle(signal.SIGTERM, frame) is None and handler.signum is None
    deadline = time.monotonic() + 5
    while not sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sent == [(os.getpid(), signal.SIGTERM)]

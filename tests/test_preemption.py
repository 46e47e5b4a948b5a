"""Pre-emption on a cluster: the scheduler's signal stops the run with a checkpoint, the
launcher's own handler (submitit's requeue) runs after it, and ``resume=auto`` continues
the requeued job in its own run directory.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dltrain.training.signals import Interrupted, StopRequest

from .conftest import ROOT

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="POSIX signals")

SMALL = ["device=cpu", "model.hidden=[16]", "trainer.early_stopping.enabled=false"]


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def _own_processes(group: int, pattern: str) -> list[int]:
    """The processes of process group ``group`` (a command the test started in a session of
    its own, and what that command started) whose command line matches ``pattern``: never
    another process on the machine, such as another test's job."""
    found = subprocess.run(["pgrep", "-g", str(group), "-f", pattern], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


@pytest.mark.parametrize("name", ["SIGUSR1", "SIGUSR2"])
def test_a_launchers_handler_runs_after_the_stop_for_the_preemption_signals(name):
    """submitit requeues a job from its SIGUSR1/SIGUSR2 handler: dltrain's handler replaces
    it while training, and hands the signal back to it once the checkpoint is saved."""
    sig = getattr(signal, name)
    seen: list[int] = []
    before = signal.signal(sig, lambda signum, _frame: seen.append(signum))
    try:
        with pytest.raises(Interrupted), StopRequest() as stop:
            stop.graceful = True
            os.kill(os.getpid(), sig)
            assert stop.signum == sig and seen == []  # dltrain's handler ran, not the launcher's yet
            raise Interrupted(sig, "stopped after the step")  # what the training loop raises, last.pt saved
        assert seen == [sig]  # once the run is over
    finally:
        signal.signal(sig, before)


def test_a_run_that_diverged_after_the_signal_is_not_handed_on():
    """A run that ended some other way than stopping for the signal (diverged, failed) is not
    requeued: the launcher's handler does not run."""
    from dltrain.training.trainer import TrainingDiverged

    seen: list[int] = []
    before = signal.signal(signal.SIGUSR1, lambda signum, _frame: seen.append(signum))
    try:
        with pytest.raises(TrainingDiverged), StopRequest() as stop:
            stop.graceful = True
            os.kill(os.getpid(), signal.SIGUSR1)
            raise TrainingDiverged(TrainingDiverged.LOSS, 1, step=3, steps=10, global_step=3, lr=0.1)
        assert seen == []
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_sigterm_is_not_handed_on_and_a_run_without_a_signal_hands_nothing():
    """Only the pre-emption signals are chained (a SIGTERM handler of a process pool, say, is
    not dltrain's to call), and a run that ended normally calls no handler."""
    seen: list[int] = []
    before = {s: signal.signal(s, lambda signum, _frame: seen.append(signum)) for s in (signal.SIGTERM,
                                                                                         signal.SIGUSR1)}
    try:
        with StopRequest() as stop:
            stop.graceful = True
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.signum == signal.SIGTERM
        with StopRequest():
            pass
        assert seen == []
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_sigusr2_aborts_outside_the_training_loop():
    """SIGUSR2 is one of dltrain's stop signals now: before training it aborts at once."""
    before = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        with pytest.raises(Interrupted) as info, StopRequest():
            os.kill(os.getpid(), signal.SIGUSR2)
        assert info.value.exit_code == 128 + signal.SIGUSR2 and info.value.aborted
    finally:
        signal.signal(signal.SIGUSR2, before)


def test_resume_auto_continues_a_run_in_its_own_directory(tmp_path, compose):
    """A requeued job runs again in its own directory: with resume=auto and a last.pt there,
    it continues that run in place (the whole history in its metrics.csv) instead of
    refusing a directory that holds a run; without resume=auto it still refuses."""
    from dltrain.errors import ConfigError
    from dltrain.training.run import train

    run_dir = tmp_path / "job"
    first = train(compose([*SMALL, "trainer.max_epochs=2"]), run_dir=run_dir)
    assert first["status"] == "completed" and len(_rows(run_dir)) == 2
    with pytest.raises(ConfigError, match="already holds a run"):
        train(compose([*SMALL, "trainer.max_epochs=3"]), run_dir=run_dir)

    summary = train(compose([*SMALL, "trainer.max_epochs=3", "resume=auto"]), run_dir=run_dir)
    assert summary["status"] == "completed" and summary["epochs_run"] == 3
    assert summary["resumed_from"] == str(run_dir / "checkpoints" / "last.pt")
    rows = _rows(run_dir)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert json.loads((run_dir / "summary.json").read_text())["epochs_run"] == 3
    assert not list(tmp_path.glob("job_*"))  # no second directory

    # Requeued once more after it finished (a signal after its last step): nothing to train,
    # and the summary of the finished run stays as it was.
    again = train(compose([*SMALL, "trainer.max_epochs=3", "resume=auto"]), run_dir=run_dir)
    assert again["status"] == "completed" and again["epochs_run"] == 3
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert len(_rows(run_dir)) == 3


@pytest.mark.slow
def test_a_preempted_two_rank_job_is_requeued_and_continues(tmp_path):
    """The whole path on one machine: a sweep job of two ranks (submitit's local executor,
    two tasks), SIGUSR1 to both, both stop after the same step, rank 0 writes last.pt,
    submitit requeues the job, and resume=auto finishes it in the same directory."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(PYTHONUNBUFFERED="1", SUBMITIT_PREEMPT_SIGNAL="USR1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])]))
    epochs = 400
    proc = subprocess.Popen([sys.executable, "-m", "dltrain", "-m", "cluster=local", "hydra.launcher.tasks_per_node=2",
                             *SMALL, f"trainer.max_epochs={epochs}", "resume=auto"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: the tasks are found in it alone
    try:
        deadline = time.monotonic() + 120
        metrics: list[Path] = []
        while time.monotonic() < deadline and not metrics:  # training has started
            metrics = list(tmp_path.glob("outputs/multirun/*/*/0/metrics.csv"))
            time.sleep(0.2)
        assert metrics, "the job did not start training"
        job_dir = metrics[0].parent
        while time.monotonic() < deadline and len(_rows(job_dir)) < 5:
            time.sleep(0.2)
        pids = _own_processes(proc.pid, "submitit.core._submit")
        assert len(pids) == 2
        for pid in pids:
            os.kill(pid, signal.SIGUSR1)
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:  # still running (a failed assertion): it and what it started, nothing else
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    logs = (job_dir / "dltrain.log").read_text()
    assert "SIGUSR1 received" in logs
    resumed = re.search(r"resumed from .*: \d+ epochs done, epoch (\d+) continues after batch (\d+)", logs)
    assert resumed, logs[-2000:]
    # Rank 1 stopped after the very step rank 0 saved (its own log of the first attempt says where).
    rank1 = "".join(p.read_text() for p in job_dir.parent.glob(".submitit/*/*_1_log.*"))
    assert f"interrupted by SIGUSR1 in epoch {resumed[1]} after batch {resumed[2]} " in rank1
    rank0 = "".join(p.read_text() for p in job_dir.parent.glob(".submitit/*/*_0_log.*"))
    assert "Requeued job" in rank0
    summary = json.loads((job_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_run"] == epochs and summary["world_size"] == 2
    assert summary["resumed_from"] == str(job_dir / "checkpoints" / "last.pt")
    assert [int(r["epoch"]) for r in _rows(job_dir)] == list(range(1, epochs + 1))


def test_resume_auto_in_a_sweep_takes_only_a_run_of_exactly_its_config(tmp_path, monkeypatch):
    """Jobs of a sweep that differ only in a run-control key (trainer.max_epochs=10,20) must
    not continue each other's checkpoint: in a sweep, resume=auto wants the exact config."""
    import torch

    from dltrain.training.resume import find_checkpoint

    monkeypatch.chdir(tmp_path)
    config = {"seed": 0, "resume": None, "trainer": {"max_epochs": 10}}
    sibling = tmp_path / "outputs" / "multirun" / "0" / "checkpoints" / "last.pt"
    sibling.parent.mkdir(parents=True)
    torch.save({"model": {}, "config": config}, sibling)
    other = {**config, "resume": "auto", "trainer": {"max_epochs": 20}}
    assert find_checkpoint("auto", other) == Path("outputs/multirun/0/checkpoints/last.pt")  # one run: continue
    assert find_checkpoint("auto", other, exact=True) is None  # a sweep's sibling: no
    same = {**config, "resume": "auto"}
    assert find_checkpoint("auto", same, exact=True) == Path("outputs/multirun/0/checkpoints/last.pt")

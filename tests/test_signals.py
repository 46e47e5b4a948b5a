"""Signals during training, through the ``dltrain`` command: SIGTERM and SIGUSR1 stop a run
cleanly with a checkpoint to resume from, a second signal aborts the save at once without
leaving half a file, and a run stopped mid-epoch then resumed equals one never stopped.

(Plain Ctrl-C -> exit 130 and status ``interrupted`` is in ``test_cli.py``.)
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from dltrain.files import TMP_PREFIX
from dltrain.training.checkpoint import load_checkpoint

from .conftest import ROOT, run_cli

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")

#: Runs that would train for ever unless a signal stops them.
ENDLESS = ["trainer.max_epochs=100000", "trainer.early_stopping.enabled=false"]

#: Lines the test hooks add to stderr (tests/slow_writes.py, PAUSE_CODE below).
MARKERS = ("SLOW-WRITE-START", "SLOW-WRITE-END", "PAUSED")


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update({"PYTHONUNBUFFERED": "1", **(extra or {})})
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_DFL)


def start(args: list[str], cwd: Path, code: str | None = None,
          env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``dltrain ARGS`` as a child process (``python -c CODE`` with ``sys.argv`` set, when
    ``code`` is given: CODE must end by calling ``dltrain.cli.app.main()``)."""
    cmd = [sys.executable, "-m", "dltrain", *args] if code is None else \
        [sys.executable, "-c", f"import sys; sys.argv = ['dltrain', *{args!r}]\n{code}"]
    return subprocess.Popen(cmd, cwd=cwd, env=_env(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_signals)


def wait_for_file(path: Path, proc: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"dltrain exited ({proc.returncode}) before writing {path}"
        assert time.monotonic() < deadline, f"no {path} after {timeout}s"
        time.sleep(0.01)


def finish(proc: subprocess.Popen[str], timeout: float) -> str:
    """Wait at most ``timeout`` seconds for ``proc`` to exit; returns its stderr."""
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"dltrain still running after {timeout}s")
    return stderr


#: ``dltrain`` that sends itself a signal (``{signum}``) as soon as it has written its first
#: metrics row: a stop at a moment the test knows, where a signal sent from outside would
#: land wherever the process happened to be.
SIGNAL_AFTER_FIRST_ROW = """
import os
import dltrain.report.tables
_write = dltrain.report.tables.MetricsCSV.write
def write(self, row):
    _write(self, row)
    if len(self.rows) == 1:
        os.kill(os.getpid(), {signum})
dltrain.report.tables.MetricsCSV.write = write
from dltrain.cli.app import main
main()
"""


def signal_once_training(args: list[str], run: Path, signum: int) -> tuple[int, str]:
    """Run ``dltrain ARGS`` with ``run`` as its run directory; it receives ``signum`` right
    after writing its first metrics row (the end of epoch 1). Its exit code and stderr."""
    proc = start([*args, f"hydra.run.dir={run}"], run.parent, code=SIGNAL_AFTER_FIRST_ROW.format(signum=int(signum)))
    try:
        stderr = finish(proc, timeout=300)  # a bound on a hang, not a moment the test waits for
    finally:
        proc.kill()
    return proc.returncode, stderr


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def assert_one_line(stderr: str, start: str) -> str:
    """The one line dltrain printed to stderr (ignoring the test hooks' markers)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(MARKERS)]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(start), stderr
    return lines[0]


@pytest.mark.slow  # two processes; the same stop and resume runs in-process in test_resume.py
def test_sigterm_saves_a_checkpoint_mid_epoch_that_resumes(tmp_path):
    run, resumed = tmp_path / "run", tmp_path / "resumed"
    config = ["trainer.early_stopping.enabled=false", "trainer.batch_size=8"]  # 158 steps per epoch
    returncode, stderr = signal_once_training([*config, "trainer.max_epochs=100000"], run, signal.SIGTERM)
    assert returncode == 143, stderr
    last = run / "checkpoints" / "last.pt"
    line = assert_one_line(stderr, "dltrain: interrupted by SIGTERM")
    assert f"saved {last};" in line and line.endswith(f"continue with resume={last}."), line
    done = summary(run)
    assert done["status"] == "interrupted" and done["stop_reason"].startswith("interrupted by SIGTERM")
    assert done["checkpoint"] == str(last)

    raw = torch.load(last, weights_only=True)
    state = load_checkpoint(last)
    assert raw["partial_epoch"]["step"] > 0  # saved inside the epoch the signal stopped
    assert state["epoch"] == done["epochs_run"] >= 1
    assert raw.keys() == state.keys() and all(torch.equal(raw["model"][k], v) for k, v in state["model"].items())
    interrupted_lines = (run / "metrics.csv").read_text().splitlines()
    assert len(interrupted_lines) == 1 + state["epoch"]

    target = state["epoch"] + 1  # the rest of the interrupted epoch
    # Only what changes is given: the rest of the config comes from the checkpoint.
    proc2 = run_cli([f"trainer.max_epochs={target}", f"resume={last}", f"hydra.run.dir={resumed}"], cwd=tmp_path)
    assert proc2.returncode == 0, proc2.stderr
    lines = (resumed / "metrics.csv").read_text().splitlines()
    assert lines[:len(interrupted_lines)] == interrupted_lines
    assert [int(row["epoch"]) for row in metrics_rows(resumed)] == list(range(1, target + 1))
    after = summary(resumed)
    assert after["resumed_from"] == str(last)
    assert after["status"] == "completed" and after["epochs_run"] == target
    assert "resume: override trainer.max_epochs: 100000 -> " in (resumed / "dltrain.log").read_text()
    assert torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)["config"]["trainer"]["batch_size"] == 8


def test_sigusr1_stops_like_a_preemption_warning(tmp_path):
    run = tmp_path / "run"
    returncode, stderr = signal_once_training(ENDLESS, run, signal.SIGUSR1)
    assert returncode == 138, stderr
    assert_one_line(stderr, "dltrain: interrupted by SIGUSR1")
    done = summary(run)
    # Received at the end of epoch 1: the run stops after the next step, the first of epoch 2.
    assert done["status"] == "interrupted" and done["stop_reason"].startswith("interrupted by SIGUSR1 in epoch 2 "
                                                                              "after batch 1 of ")
    state = load_checkpoint(done["checkpoint"])
    assert state["epoch"] == done["epochs_run"] == 1 and state["partial_epoch"]["step"] == 1
    assert len(metrics_rows(run)) == 1


class StderrLines:
    """Collects a child's stderr lines as they come, in a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, predicate, timeout: float) -> str:
        """The first line matching ``predicate`` (waiting for it)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((line for line in self.lines if predicate(line)), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                assert left > 0 and self._thread.is_alive(), f"no such line in {self.lines}"
                self._changed.wait(min(left, 0.1))

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "\n".join(self.lines)


def _is_interrupt_save(line: str) -> bool:
    """A slow_writes start marker of the save an interrupt makes (inside an epoch: partial > 0)."""
    return line.startswith("SLOW-WRITE-START") and not line.endswith(" partial=0")


@pytest.mark.slow  # a process with slowed writes: kept out of the default suite
def test_a_second_sigint_aborts_the_save_and_leaves_no_half_file(tmp_path):
    run = tmp_path / "run"
    checkpoints = run / "checkpoints"
    code = "import tests.slow_writes\nfrom dltrain.cli.app import main\nmain()"  # ~0.3 s per checkpoint write
    proc = start([*ENDLESS, f"hydra.run.dir={run}"], tmp_path, code=code)
    err = StderrLines(proc)
    try:
        wait_for_file(checkpoints / "last.pt", proc)
        proc.send_signal(signal.SIGINT)  # during training: stop after this step, then save
        started = err.wait_for(_is_interrupt_save, timeout=30)
        proc.send_signal(signal.SIGINT)  # during that save: abort at once
        proc.wait(timeout=15)
    finally:
        proc.kill()
    stderr = err.text()
    assert proc.returncode == 130, stderr
    assert_one_line(stderr, "dltrain: aborted by SIGINT")
    tmp = started.split()[1]
    assert Path(tmp).name.startswith(f"{TMP_PREFIX}last.pt.")
    assert f"SLOW-WRITE-END {tmp}" not in stderr  # the second signal did cut that write short

    assert not [p.name for p in checkpoints.iterdir() if p.name.startswith(TMP_PREFIX)]
    state = load_checkpoint(checkpoints / "last.pt")  # the epoch-end checkpoint, whole and untouched
    assert state["partial_epoch"] is None
    assert state["epoch"] == len(metrics_rows(run))
    load_checkpoint(checkpoints / "best.pt")
    assert summary(run)["status"] == "interrupted"


#: The three runs of the exactness test, two of them side by side: one thread each, or their
#: thread pools spin against each other on a small machine.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: A run short enough to run whole; dropout and a cosine schedule make every RNG draw and
#: the schedule's position count.
EXACT = ["regularization.dropout=0.3", "scheduler=cosine", "scheduler.T_max=6", "trainer.max_epochs=6",
         "trainer.batch_size=16", "model.hidden=[32]"]
#: The interrupted run stops after this training step: inside epoch 2 (79 steps per epoch).
PAUSE_STEP = 110
#: Holds training still after step PAUSE_STEP (until a signal comes) and says so on stderr,
#: so that the signal is sent from outside yet lands at a known step.
PAUSE_CODE = f"""
import time
import dltrain.training.trainer
_step = dltrain.training.trainer.Trainer.train_step
def train_step(self, x, y):
    out = _step(self, x, y)
    if self.global_step + 1 == {PAUSE_STEP}:  # the trainer counts the step once it returns
        print("PAUSED", file=sys.stderr, flush=True)
        for _ in range(3000):
            if self.stop.signum is not None:
                break
            time.sleep(0.01)
    return out
dltrain.training.trainer.Trainer.train_step = train_step
from dltrain.cli.app import main
main()
"""


def _without_seconds(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in rows]


@pytest.mark.slow  # three processes; test_resume.py checks the same in-process in the default suite
def test_stopped_mid_epoch_and_resumed_equals_never_stopped(tmp_path):
    whole, stopped, resumed = tmp_path / "whole", tmp_path / "stopped", tmp_path / "resumed"
    reference = start([*EXACT, f"hydra.run.dir={whole}"], tmp_path, env=ONE_THREAD)  # runs alongside
    try:
        proc = start([*EXACT, f"hydra.run.dir={stopped}"], tmp_path, code=PAUSE_CODE, env=ONE_THREAD)
        err = StderrLines(proc)
        try:
            err.wait_for(lambda line: line == "PAUSED", timeout=90)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        finally:
            proc.kill()
        assert proc.returncode == 143, err.text()
        assert_one_line(err.text(), "dltrain: interrupted by SIGTERM")
        last = stopped / "checkpoints" / "last.pt"
        state = torch.load(last, weights_only=True)
        assert state["global_step"] == PAUSE_STEP  # it stopped after the step under way
        assert state["epoch"] == 1 and state["partial_epoch"]["step"] == PAUSE_STEP - 79

        proc2 = run_cli([*EXACT, f"resume={last}", f"hydra.run.dir={resumed}"], cwd=tmp_path, env=ONE_THREAD)
        assert proc2.returncode == 0, proc2.stderr
        assert f"epoch 2 continues after batch {PAUSE_STEP - 79}" in proc2.stdout
        ref_stderr = finish(reference, timeout=120)
    finally:
        reference.kill()
    assert reference.returncode == 0, ref_stderr

    expected = _without_seconds(metrics_rows(whole))
    assert [row["epoch"] for row in expected] == [str(i) for i in range(1, 7)]
    assert _without_seconds(metrics_rows(resumed)) == expected
    a = load_checkpoint(whole / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert summary(resumed)["test"] == summary(whole)["test"]

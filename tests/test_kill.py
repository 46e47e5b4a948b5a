"""SIGKILL at random moments, checkpoint writes included, then resume: a chain of killed and
resumed runs ends exactly where one uninterrupted run ends.

A kill gives dltrain no chance to react, so this checks the promises that hold without one:
a checkpoint on disk is always whole (atomic writes), a resume continues from the newest one
exactly, and the temporary files of killed writes are cleaned up by the next resume.

Checkpoint writes are slowed down (tests/slow_writes.py, ~0.3 s each) so that kills can land
inside them.
"""

from __future__ import annotations

import csv
import json
import os
import random
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

pytestmark = pytest.mark.slow

MAX_EPOCHS = 12
CONFIG = [f"trainer.max_epochs={MAX_EPOCHS}", "trainer.early_stopping.enabled=false", "model.hidden=[32]",
          "regularization.dropout=0.2"]
MIN_KILLS = 10
#: Every run of the chain and the reference run on one thread: the reference runs beside the
#: chain's first runs, and the numbers must not depend on how many threads a run had.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: ``python -c HOOK ARGS``: ``dltrain ARGS`` with slow, announced checkpoint writes.
HOOK = "import sys, tests.slow_writes; sys.argv = ['dltrain', *sys.argv[1:]]; from dltrain.cli.app import main; main()"
START, END = "SLOW-WRITE-START", "SLOW-WRITE-END"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update({"PYTHONUNBUFFERED": "1", **ONE_THREAD})
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


class Child:
    """A dltrain process whose stderr lines are collected as they come."""

    def __init__(self, cmd: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def count(self, prefix: str) -> int:
        return sum(line.startswith(prefix) for line in self.lines)

    def wait_for(self, prefix: str, n: int, timeout: float) -> bool:
        """Wait until ``n`` stderr lines start with ``prefix``; False if the process ended or
        ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.count(prefix) < n:
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    return False
                self._changed.wait(min(left, 0.05))
        return True

    def kill(self) -> int:
        self.proc.send_signal(signal.SIGKILL)
        code = self.proc.wait(timeout=30)
        self._reader.join(timeout=10)
        return code

    def stderr(self) -> str:
        self._reader.join(timeout=10)
        return "\n".join(self.lines)


def last_checkpoints(root: Path) -> list[Path]:
    """Every ``last.pt`` under ``root``, newest first."""
    return sorted(root.rglob("last.pt"), key=lambda p: p.stat().st_mtime_ns, reverse=True)


def tmp_files(folder: Path) -> set[Path]:
    return set(folder.glob(TMP_PREFIX + "*")) if folder.is_dir() else set()


def plan_kill(rng: random.Random, remaining: int) -> tuple[str, int, float]:
    """When to kill the next run: ``(kind, n, delay)``:

    * ``startup``: ``delay`` seconds after it starts (loading, building, resuming), or in its first
      checkpoint write if it gets that far first;
    * ``write``: ``delay`` seconds into its ``n``-th checkpoint write (a write lasts ~0.3 s);
    * ``after``: ``delay`` seconds after its ``n``-th write ended (training, or the next write).

    ``n`` stays small enough that no run finishes the ``remaining`` epochs, even with a kill
    that comes late (each epoch writes last.pt, then best.pt when it improved).
    """
    top = min(3, remaining - 1)
    kind = rng.choice(["startup", "write", "write", "after"] if top >= 1 else ["startup"])
    if kind == "startup":
        return kind, 1, rng.uniform(0.1, 2.5)
    if kind == "write":
        return kind, rng.randint(min(2, top), top), rng.uniform(0.0, 0.2)
    return kind, rng.randint(1, top), rng.uniform(0.0, 0.1)


def kill_at(child: Child, kind: str, n: int, delay: float) -> int:
    """Kill ``child`` at the planned moment; returns its exit code (-9 when the kill hit it)."""
    if kind == "startup":
        if child.wait_for(START, 1, timeout=delay):  # already training: kill inside that first write
            time.sleep(0.05)
        return child.kill()
    reached = child.wait_for(START if kind == "write" else END, n, timeout=120)
    assert reached, f"the run ended ({child.proc.poll()}) before its write {n}:\n{child.stderr()}"
    time.sleep(delay)
    return child.kill()


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(f)]


def test_a_chain_of_killed_runs_resumes_to_the_uninterrupted_result(tmp_path):
    rng = random.Random(0)
    runs = tmp_path / "runs"
    whole = tmp_path / "whole"
    reference = Child([sys.executable, "-m", "dltrain", *CONFIG, f"hydra.run.dir={whole}"], tmp_path)
    kills: list[tuple[str, int, float]] = []
    mid_write = 0  # kills that left a temporary file behind
    stale_cleaned = 0  # resumes that found temporary files of killed writes and removed them
    try:
        for i in range(1, MIN_KILLS + 1):
            run_dir = runs / f"{i:02d}"
            existing = last_checkpoints(runs) if runs.exists() else []
            newest = existing[0] if existing else None
            remaining = MAX_EPOCHS - (load_checkpoint(newest)["epoch"] if newest else 0)
            stale = tmp_files(newest.parent) if newest else set()
            args = [*CONFIG, f"hydra.run.dir={run_dir}", *([f"resume={newest}"] if newest else [])]
            moment = plan_kill(rng, remaining)
            child = Child([sys.executable, "-c", HOOK, *args], tmp_path)
            code = kill_at(child, *moment)
            assert code == -signal.SIGKILL, f"run {i} was not killed ({code}) at {moment}:\n{child.stderr()}"
            kills.append(moment)

            for path in [*runs.rglob("last.pt"), *runs.rglob("best.pt")]:
                load_checkpoint(path)  # every checkpoint on disk is whole
            if tmp_files(run_dir / "checkpoints"):
                mid_write += 1
            if child.count(START):  # it got past the resume and into training
                if newest is not None:
                    assert f"resumed from {newest}" in (run_dir / "dltrain.log").read_text()
                    assert not stale & tmp_files(newest.parent), stale  # removed by the resume
                    stale_cleaned += bool(stale)

        print("kills (kind, n, delay):", kills, "- left a temporary file:", mid_write,
              "- resumes that removed one:", stale_cleaned)
        assert mid_write >= 3, (mid_write, kills)

        newest = last_checkpoints(runs)[0]
        stale = tmp_files(newest.parent)
        final = tmp_path / "final"
        done = run_cli([*CONFIG, f"resume={newest}", f"hydra.run.dir={final}"], cwd=tmp_path, env=ONE_THREAD,
                       timeout=180)
        assert done.returncode == 0, done.stderr
        assert not stale & tmp_files(newest.parent), stale
        stale_cleaned += bool(stale)
        assert stale_cleaned >= 1, "no resume met the temporary file of a killed write"

        ref_code = reference.proc.wait(timeout=180)
    finally:
        reference.proc.kill()
    assert ref_code == 0, reference.stderr()

    summary = json.loads((final / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_run"] == MAX_EPOCHS
    assert summary["resumed_from"] == str(newest)
    expected = metrics(whole)
    assert [row["epoch"] for row in expected] == [str(e) for e in range(1, MAX_EPOCHS + 1)]
    assert metrics(final) == expected
    a = load_checkpoint(whole / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(final / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name

"""The ``dltrain`` command, through a subprocess as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dltrain.models.registry import MODELS
from dltrain.optim import OPTIMIZERS

from .conftest import ROOT, run_cli


def test_fast_dev_run_smoke(tmp_path):
    proc = run_cli(["trainer.fast_dev_run=true"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy:" in proc.stdout
    run_dirs = list((tmp_path / "outputs").glob("*/*"))
    assert len(run_dirs) == 1, run_dirs  # outputs/<date>/<time>/ under the working directory
    run_dir = run_dirs[0]
    for name in ("metrics.csv", "summary.json", "model_summary.txt", "checkpoints/best.pt",
                 "checkpoints/last.pt", ".hydra/config.yaml", "dltrain.log"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


@pytest.mark.slow  # a process start; compose() and train() carry the same overrides in-process (test_train.py)
def test_overrides_reach_the_run(tmp_path):
    proc = run_cli(["trainer.fast_dev_run=true", "optim=sgd", "optim.lr=0.1", "model.hidden=[256]",
                    "loss=auto", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["loss"] == "cross_entropy" and summary["device"] == "cpu"
    assert summary["num_params"] == 64 * 256 + 256 + 256 * 10 + 10


def test_help_lists_groups_without_importing_torch(tmp_path):
    code = ("import sys; sys.argv = ['dltrain', '--help']\n"
            "from dltrain.cli.app import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('TORCH_IMPORTED' if {'torch', 'torchvision'} & set(sys.modules) else 'NO_TORCH')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for group in (f"model: {', '.join(MODELS.names())}",
                  "loss: auto, bce, cross_entropy, huber, mae, mse, nll, rmse",
                  f"optim: {', '.join(OPTIMIZERS.names())}",
                  "scheduler: cosine, exponential, multistep, none, onecycle, plateau, step",
                  "data: chirp, cifar10, csv",
                  "experiment: chirp_rnn, cifar10_cnn, cifar10_fast, fraud"):
        assert group in proc.stdout
    assert proc.stdout.strip().endswith("NO_TORCH")


@pytest.mark.slow  # a pip install and a process start: kept out of the default suite
def test_configs_ship_inside_a_regular_install(tmp_path):
    """A non-editable install, run from an unrelated directory, finds its configs."""
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
                            "--target", str(target), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    assert (target / "dltrain" / "conf" / "train.yaml").is_file()
    assert (target / "dltrain" / "conf" / "model" / "mlp.yaml").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-m", "dltrain", "trainer.fast_dev_run=true", "hydra.run.dir=run"],
                          cwd=elsewhere, env={"PYTHONPATH": str(target), "PATH": ""}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (elsewhere / "run" / "summary.json").is_file()


@pytest.mark.slow  # a process start; the divergence itself is tested in-process (test_train.py, test_resume.py, test_run_end.py)
def test_diverged_run_exits_3_with_one_line(tmp_path):
    proc = run_cli(["optim=sgd", "optim.lr=1e12", "trainer.max_epochs=3", "hydra.run.dir=run"], cwd=tmp_path)
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip()
    assert message.startswith("dltrain: error: the training loss became") and "\n" not in message
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("1,nan,")  # the diverged epoch is recorded
    assert not (tmp_path / "run" / "checkpoints").exists()  # no checkpoint of non-finite weights


@pytest.mark.slow  # two processes; SIGUSR1 through the command line stays in the default suite (test_signals.py)
def test_ctrl_c_marks_the_run_interrupted(tmp_path):
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dltrain", "trainer.max_epochs=100000", "trainer.early_stopping.enabled=false",
         f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / "metrics.csv").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_run"] >= 1


@pytest.mark.slow  # two process starts; a run directory that holds a run is refused in-process in test_corpus.py
def test_a_finished_run_directory_is_left_untouched(tmp_path):
    first = run_cli(["trainer.fast_dev_run=true", "hydra.run.dir=run"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    again = run_cli(["trainer.fast_dev_run=true", "optim=sgd", "hydra.run.dir=run"], cwd=tmp_path)
    assert again.returncode == 2
    assert "already holds a run" in again.stderr and "Traceback" not in again.stderr
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before

"""benchmarks/commands.py: the command a measurement names is the one that produced it, and a failed dltrain
command is one ReadmeError quoting it; benchmarks/transformer_vs_lstm.py's table reads the runs' files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks.commands import invocation, run
from benchmarks.readme_results import ReadmeError
from benchmarks.transformer_vs_lstm import best_validation, row


def test_the_measured_by_command_is_the_script_with_its_arguments() -> None:
    argv = ["--mnist-root", "samples/mnist-8k", "--dir", "out dir", "--write"]
    assert invocation("benchmarks.x", argv) == "python -m benchmarks.x --mnist-root samples/mnist-8k --dir 'out dir'"
    assert invocation("benchmarks.x", []) == "python -m benchmarks.x"


def test_a_failed_command_is_a_readme_error_naming_it_and_quoting_its_output(monkeypatch, tmp_path) -> None:
    # a stand-in for the dltrain entry point: prints what it was given and whether HYDRA_FULL_ERROR reached it
    script = ("import os, sys; print(sys.argv[1:], os.environ.get('HYDRA_FULL_ERROR'), os.environ['OMP_NUM_THREADS']); "
              "sys.exit(3)")
    monkeypatch.setattr("benchmarks.commands.dltrain_command", lambda: [sys.executable, "-c", script])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ReadmeError) as err:
        run(["dltrain", "seed=1"], {"OMP_NUM_THREADS": "1"})
    assert str(err.value) == "`dltrain seed=1` exited with 3:\n['seed=1'] None 1\n"
    script = f"import pathlib; pathlib.Path({str(tmp_path)!r}, 'summary.json').write_text('{{\"epochs_run\": 2}}')"
    assert run(["dltrain", f"hydra.run.dir={tmp_path}"]) == {"epochs_run": 2}
    assert run(["dltrain", "-m", "seed=1,2"]) == {}  # a sweep: no run directory of its own


def test_a_row_shows_epochs_seconds_per_epoch_and_the_best_validation_accuracy(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text("epoch,val_accuracy,val_loss\n1,0.5,1\n2,0.75,1\n3,0.75,1\n4,0.625,1\n")
    summary = {"run_dir": str(tmp_path), "epochs_run": 4, "train_seconds": 10.0, "num_params": 12345,
               "test": {"accuracy": 0.7}}
    assert best_validation(tmp_path) == (0.75, 2)
    assert row("text", ["data=x", "model=lstm"], json.loads(json.dumps(summary))) == (
        "| text | `model=lstm` | 0.700 | 0.750 (2) | 4 | 10.0 | 2.50 | 12,345 |")

"""``dltrain-lr-find`` on the command line: what it prints, the folder it writes, and its
one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dltrain.cli.lr_find import main
from dltrain.report.run_files import LR_FIND_FILES
from tests.conftest import tool_error


def _lr_find(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, "-c", "from dltrain.cli.lr_find import main; main()", *args], cwd=cwd,
                          env={**env, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True, timeout=120)


def test_prints_the_suggestion_and_the_next_command_and_writes_its_own_folder(tmp_path: Path) -> None:
    result = _lr_find(["optim=sgd", "lr_find.num_steps=40", "lr_find.start_lr=1e-4", "trainer.batch_size=32"],
                      tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    suggested = next(line for line in lines if line.startswith("suggested optim.lr="))
    value = suggested.split("=")[1].split()[0]
    assert any(rule in suggested for rule in ("(steepest descent of the smoothed loss", "(the smoothed loss does not"))
    assert "the minimum was at" in suggested and "/10 = " in suggested
    assert f"next: dltrain optim=sgd trainer.batch_size=32 optim.lr={value}" in lines
    (folder,) = (tmp_path / "lr_find").glob("*/*")  # lr_find/<date>/<time>/: never a run's outputs/
    assert sorted(p.name for p in folder.iterdir()) == sorted(entry.name.rstrip("/") for entry in LR_FIND_FILES)
    saved = json.loads((folder / "lr_find.json").read_text())
    assert saved["command"] == f"dltrain optim=sgd trainer.batch_size=32 optim.lr={value}"
    assert saved["overrides"] == ["optim=sgd", "trainer.batch_size=32"]
    assert saved["settings"]["num_steps"] == 40 and saved["settings"]["start_lr"] == 1e-4


def test_lbfgs_is_one_line_and_leaves_no_folder(tmp_path: Path) -> None:
    result = _lr_find(["optim=lbfgs"], tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("dltrain: error: optim=lbfgs searches its own step sizes with a line search")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "lr_find").exists()


def test_a_run_directory_is_never_written_into(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch\n1\n")
    result = _lr_find(["optim=sgd", "lr_find.num_steps=20", f"hydra.run.dir={run}"], tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "hydra.run.dir" in result.stderr
    assert sorted(p.name for p in run.iterdir()) == ["metrics.csv"]


@pytest.mark.parametrize(("argv", "expected"), [
    (["lr_find.num_step=30"], "lr_find.num_step is not a key of dltrain-lr-find (its keys: lr_find.start_lr,"),
    (["lr_find.num_steps=abc"], "lr_find.num_steps=abc is not valid: expected an integer"),
    (["lr_find.num_steps=5"], "lr_find.num_steps=5 is out of range: it must be >= 10"),
    (["lr_find.beta=1"], "lr_find.beta=1.0 is out of range: it must be < 1"),
    (["lr_find.end_lr"], "lr_find.end_lr has no value"),
    (["-m", "optim=sgd,adam"], "dltrain-lr-find runs one range test: drop -m"),
])
def test_its_own_keys_are_checked_in_one_line(capsys: pytest.CaptureFixture[str], argv: list[str],
                                              expected: str) -> None:
    assert expected in tool_error(capsys, main, "dltrain", argv)


def test_help_names_its_keys_and_files(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--help"])
    out = capsys.readouterr().out
    assert "lr_find.num_steps=200" in out and "lr_find.start_lr=1e-07" in out
    assert all(entry.name in out for entry in LR_FIND_FILES)


def test_dltrain_help_names_the_command(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_help import help_text

    examples = help_text(monkeypatch, capsys, "--help").split("Examples:")[1].split("==")[0]
    assert "dltrain-lr-find optim=sgd" in examples

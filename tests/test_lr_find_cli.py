"""``dltrain-lr-find`` on the command line: what it prints, the folder it writes, and its
one-line errors."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dltrain.cli.lr_find import main
from dltrain.report.run_files import LR_FIND_FILES
from tests.conftest import logging_restored, tool_error


def _lr_find(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, "-c", "from dltrain.cli.lr_find import main; main()", *args], cwd=cwd,
                          env={**env, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True, timeout=120)


def test_prints_the_suggestion_and_the_next_command_and_writes_its_own_folder(tmp_path: Path) -> None:
    # 20 steps on the XOR data barely move the loss: the fallback and its warning are printed too.
    result = _lr_find(["optim=sgd", "data=xor", "lr_find.num_steps=20", "lr_find.start_lr=1e-4",
                       "trainer.batch_size=32"], tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    suggested = next(line for line in lines if line.startswith("suggested optim.lr="))
    value = suggested.split("=")[1].split()[0]
    assert "(the smoothed loss does not descend by 5% of its start value" in suggested
    assert "the minimum was at" in suggested and "/10 = " in suggested
    (warning,) = [line for line in lines if line.startswith("warning: the smoothed loss never fell by 5%")]
    assert warning.endswith("(lr_find.num_steps) or a wider range (lr_find.start_lr, lr_find.end_lr).")
    assert lines[-1] == f"next: dltrain optim=sgd data=xor trainer.batch_size=32 optim.lr={value}"
    (folder,) = (tmp_path / "lr_find").glob("*/*")  # lr_find/<date>/<time>/: never a run's outputs/
    assert sorted(p.name for p in folder.iterdir()) == sorted(entry.name.rstrip("/") for entry in LR_FIND_FILES)
    saved = json.loads((folder / "lr_find.json").read_text())
    assert saved["command"] == f"dltrain optim=sgd data=xor trainer.batch_size=32 optim.lr={value}"
    assert saved["overrides"] == ["optim=sgd", "data=xor", "trainer.batch_size=32"]
    assert saved["settings"]["num_steps"] == 20 and saved["settings"]["start_lr"] == 1e-4
    assert saved["warnings"] == [warning.removeprefix("warning: ").removesuffix(".")]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the working directory of an in-process ``main(argv)`` (which hands Hydra
    its arguments in ``sys.argv``)."""
    from dltrain.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["dltrain-lr-find"])
    monkeypatch.setattr(app, "_run_dir", None)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    return tmp_path


def test_lbfgs_is_one_line_and_leaves_no_folder(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with logging_restored():
        err = tool_error(capsys, main, "dltrain-lr-find", ["optim=lbfgs"])
    assert err.startswith("dltrain-lr-find: error: optim=lbfgs searches its own step sizes with a line search")
    assert not (in_tmp / "lr_find").exists()


def test_a_run_directory_is_never_written_into(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = in_tmp / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch\n1\n")
    with logging_restored():
        err = tool_error(capsys, main, "dltrain-lr-find", ["optim=sgd", "lr_find.num_steps=20", f"hydra.run.dir={run}"])
    assert "hydra.run.dir" in err
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
    assert expected in tool_error(capsys, main, "dltrain-lr-find", argv)


def test_its_keys_default_to_lr_find_s_defaults() -> None:
    from dltrain.cli.lr_find import LRFindOptions
    from dltrain.training.lr_find import lr_find

    defaults = {name: p.default for name, p in inspect.signature(lr_find).parameters.items() if name != "cfg"}
    assert dataclasses.asdict(LRFindOptions()) == defaults


def test_help_names_its_keys_and_files(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--help"])
    out = capsys.readouterr().out
    assert "lr_find.num_steps=200" in out and "lr_find.start_lr=1e-07" in out
    assert all(entry.name in out for entry in LR_FIND_FILES)


def test_dltrain_help_names_the_command(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_help import help_text

    examples = help_text(monkeypatch, capsys, "--help").split("Examples:")[1].split("==")[0]
    assert "dltrain-lr-find optim=sgd" in examples


def test_the_next_command_keeps_the_config_dir_and_config_name(in_tmp: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    conf = in_tmp / "my conf"  # a space: the command quotes it
    (conf / "model").mkdir(parents=True)
    (conf / "model" / "wide.yaml").write_text("defaults:\n  - /schema_model_mlp@_here_\n  - _self_\nhidden: [9]\n")
    (conf / "mine.yaml").write_text("defaults:\n  - lr_find\n  - _self_\nseed: 5\n")
    with logging_restored():
        main(["--config-dir", str(conf), "--config-name", "mine", "model=wide", "data=xor", "lr_find.num_steps=10"])
    (folder,) = (in_tmp / "lr_find").glob("*/*")
    command = json.loads((folder / "lr_find.json").read_text())["command"]
    assert shlex.split(command)[:7] == ["dltrain", "--config-dir", str(conf), "--config-name", "mine", "model=wide",
                                        "data=xor"], command
    assert f"next: {command}" in capsys.readouterr().out.splitlines()

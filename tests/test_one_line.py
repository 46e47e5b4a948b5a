"""Errors raised outside dltrain's own code become one line: a run directory that cannot be
created, a full disk (at start-up, and for ``summary.json``, whose results still reach the
console), a broken or code-naming YAML file in ``--config-dir``, an override value Hydra reads
as syntax; a resume refused for another option names the option; and a class name that a
spreadsheet would run as a formula is written as text.

Most go through ``dltrain.cli.app.main`` in this process (they stop before Hydra starts a job);
the two that need a real job run the command line.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import logging
import os
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dltrain import compose, train
from dltrain.cli.app import describe_error, main
from dltrain.errors import ConfigError, UserError
from dltrain.report.tables import prediction_rows, write_predictions
from dltrain.training.resume import check_config
from tests.files import write_csv

from .conftest import run_cli
from .test_bad_input import error_line


def cli_error(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str]) -> str:
    """``dltrain ARGS`` run in this process, expected to stop at a user error: its one line
    (exit code 2, no traceback)."""
    monkeypatch.setattr(sys, "argv", ["dltrain", *args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    root = logging.getLogger()  # Hydra sets up its own logging, here onto pytest's captured streams
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    assert exit_info.value.code == 2, captured.err
    assert "Traceback" not in captured.err + captured.out, captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dltrain: error: "), captured.err
    return lines[0]


# --- the run directory --------------------------------------------------------------------------------------------


def test_run_dir_that_is_a_file(tmp_path):
    """Through the real command line: Hydra would create the directory itself."""
    (tmp_path / "notes.txt").write_text("mine\n")
    line = error_line(run_cli(["hydra.run.dir=notes.txt", "trainer.fast_dev_run=true"], cwd=tmp_path))
    assert "hydra.run.dir=notes.txt" in line and "File exists" in line and "it is a file" in line
    assert "choose another directory" in line
    assert (tmp_path / "notes.txt").read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_run_dir_below_a_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine\n")
    line = cli_error(capsys, monkeypatch, ["hydra.run.dir=notes.txt/run", "trainer.fast_dev_run=true"])
    assert "hydra.run.dir=notes.txt/run" in line and "Not a directory" in line
    assert "a folder above it is a file" in line
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


@pytest.mark.parametrize(("setup", "sweep_dir", "says"), [
    ("file", "notes.txt", "hydra.sweep.dir=notes.txt cannot be created: File exists (it is a file, not a directory)"),
    ("file", "notes.txt/sweep", "cannot be created: Not a directory (a folder above it is a file)"),
    ("job folder", "S", "hydra.sweep.dir=S is not empty (it holds 0): a sweep claims only an empty or new directory"),
    ("user files", "S", "hydra.sweep.dir=S is not empty (it holds a.txt, b.txt, c.txt and 1 more)"),
])
def test_a_sweep_dir_that_is_a_file_or_holds_the_users_files(tmp_path, capsys, monkeypatch, setup, sweep_dir, says):
    """The sweep's own directory is checked before Hydra writes anything: neither a job's
    folder nor the sweep's summary may land on the user's files."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine\n")
    if setup == "job folder":  # a folder named like a sweep's first job, not a run
        (tmp_path / "S" / "0").mkdir(parents=True)
        (tmp_path / "S" / "0" / "notes.txt").write_text("mine\n")
    elif setup == "user files":
        (tmp_path / "S").mkdir()
        for name in ("a.txt", "b.txt", "c.txt", "sweep_summary.csv"):
            (tmp_path / "S" / name).write_text("mine\n")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    line = cli_error(capsys, monkeypatch, ["-m", f"hydra.sweep.dir={sweep_dir}", "optim=sgd,adam",
                                           "trainer.fast_dev_run=true"])
    assert says in line and line.endswith("with hydra.sweep.dir=PATH.")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(("code", "reason"), [(errno.EROFS, "Read-only file system"),
                                              (errno.EACCES, "Permission denied")])
def test_run_dir_on_a_disk_that_refuses_it(tmp_path, capsys, monkeypatch, code, reason):
    """A read-only filesystem (root ignores permissions, so the refusal is simulated)."""
    monkeypatch.chdir(tmp_path)
    real_mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):
        if "locked" in self.parts:
            raise OSError(code, os.strerror(code), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    line = cli_error(capsys, monkeypatch, ["hydra.run.dir=locked/run", "trainer.fast_dev_run=true"])
    assert "hydra.run.dir=locked/run cannot be created" in line and reason in line
    assert not (tmp_path / "locked").exists()


# --- a full disk -------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_full_disk_at_start_up(tmp_path):
    """Hydra's own first writes (``.hydra/config.yaml``) meet a full disk: /dev/full, which
    answers every write with ENOSPC."""
    full = tmp_path / "full"
    full.mkdir()
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (full / name).symlink_to("/dev/full")
    proc = run_cli(["hydra.run.dir=run", f"hydra.output_subdir={full}", "trainer.fast_dev_run=true"], cwd=tmp_path)
    line = error_line(proc)
    assert "No space left on device" in line and "run" in line and "free some space" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_full_disk_at_summary_json_still_prints_the_results(tmp_path, capsys, monkeypatch):
    import dltrain.report.summary

    real_write_json = dltrain.report.summary.write_json

    def full_for_summary(path, obj):
        if Path(path).name == "summary.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_json(path, obj)

    monkeypatch.setattr(dltrain.report.summary, "write_json", full_for_summary)
    run_dir = tmp_path / "run"
    with pytest.raises(UserError) as raised:
        train(compose(["trainer.fast_dev_run=true"]), run_dir=run_dir)
    line = describe_error(raised.value)
    assert line is not None and "\n" not in line
    assert f"{run_dir / 'summary.json'} could not be written (No space left on device)" in line
    assert "results are printed above" in line and "free some space" in line
    out = capsys.readouterr().out
    assert "dltrain results" in out and "test accuracy" in out  # the results reached the console
    assert (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / "predictions.csv").is_file()
    assert not list(run_dir.glob(".tmp-*"))


def test_full_disk_while_dltrain_starts_the_run(tmp_path, monkeypatch):
    """dltrain's own first files (data.json) meet a full disk: one line, no half-written file."""
    import dltrain.files

    real_replace = dltrain.files.os.replace

    def full(source, target):
        if Path(target).name == "data.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(source, target)

    monkeypatch.setattr(dltrain.files.os, "replace", full)
    run_dir = tmp_path / "run"
    with pytest.raises(OSError) as raised:
        train(compose(["trainer.fast_dev_run=true"]), run_dir=run_dir)
    line = describe_error(raised.value)
    assert line is not None and "\n" not in line and "No space left on device" in line
    assert not (run_dir / "data.json").exists() and not list(run_dir.glob(".tmp-*"))


def test_disk_errors_name_the_file():
    err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/run/metrics.csv")
    assert describe_error(err) == ("cannot write /data/run/metrics.csv: No space left on device: "
                                   "free some space there, or write elsewhere.")
    assert describe_error(OSError(errno.EIO, "I/O error", "x")) is None  # not the user's to fix: a traceback


# --- YAML files in --config-dir ----------------------------------------------------------------------------------


def test_yaml_syntax_error_in_config_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "conf" / "model" / "mine.yaml"
    bad.parent.mkdir(parents=True)
    bad.write_text("name: mlp\nhidden: [64, 32\n")
    line = cli_error(capsys, monkeypatch, ["--config-dir", str(tmp_path / "conf"), "model=mine"])
    assert f"{bad}, line 3: not valid YAML" in line and "expected ',' or ']'" in line and "fix the file" in line
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!!python/name:os.system",
                                 "!!python/object/new:subprocess.getoutput"])
def test_python_tag_in_config_dir_is_refused_and_never_runs(tmp_path, capsys, monkeypatch, tag):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "conf" / "model" / "evil.yaml"
    evil.parent.mkdir(parents=True)
    evil.write_text(f"name: mlp\nhidden: {tag} ['touch {marker}']\n")
    line = cli_error(capsys, monkeypatch, ["--config-dir", str(tmp_path / "conf"), "model=evil"])
    assert f"{evil}, line 2: the tag {tag.split(' ')[0]} is not allowed" in line and "remove the tag" in line
    assert not marker.exists()


# --- override values Hydra reads as syntax ----------------------------------------------------------------------


@pytest.mark.parametrize(("override", "quoted"), [("data.delimiter=;", "'data.delimiter=\";\"'"),
                                                  ("data.delimiter=,", "'data.delimiter=\",\"'"),
                                                  ("data.delimiter=#", "'data.delimiter=\"#\"'")])
def test_unquoted_delimiter_is_told_to_quote_it(tmp_path, capsys, monkeypatch, override, quoted):
    monkeypatch.chdir(tmp_path)
    line = cli_error(capsys, monkeypatch, ["data=csv", "data.path=t.csv", override])
    assert line.startswith(f"dltrain: error: {override} cannot be read as written")
    assert line.endswith(f"quote the value, e.g. {quoted}.")
    assert "key=value" not in line


def test_the_quoted_form_is_read_as_the_character(tmp_path):
    """What the message tells the user to type gives the value meant."""
    table = write_csv(tmp_path / "t.csv", {"x": [1.0, 2.0], "label": ["a", "b"]})
    cfg = compose(["data=csv", f"data.path={table}", 'data.delimiter=";"'], check=False)
    assert cfg.data.delimiter == ";"


# --- resume refusals ----------------------------------------------------------------------------------------------


def test_resume_refusal_names_the_option_that_changed():
    saved = OmegaConf.to_container(compose(["model=mlp"]), resolve=True)
    current = OmegaConf.to_container(compose(["model=cnn"]), resolve=True)
    with pytest.raises(ConfigError) as raised:
        check_config(Path("last.pt"), saved, current)
    message = str(raised.value)
    assert "model=mlp (checkpoint) vs model=cnn (now)" in message
    assert "(absent)" not in message and "model.channels" not in message and "model.hidden" not in message


def test_resume_refusal_still_names_a_changed_key():
    saved = OmegaConf.to_container(compose(["model=mlp", "model.hidden=[32]"]), resolve=True)
    current = OmegaConf.to_container(compose(["model=mlp", "model.hidden=[64]"]), resolve=True)
    with pytest.raises(ConfigError, match=r"model.hidden=\[64\] \(checkpoint: \[32\]\)"):
        check_config(Path("last.pt"), saved, current)


# --- formulas in predictions.csv ---------------------------------------------------------------------------------

FORMULA = '=HYPERLINK("http://example.com","x")'


def _cells(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_formula_class_names_are_written_as_text(tmp_path):
    names = [FORMULA, "@SUM(A1)", "-1", "cat"]
    rows = prediction_rows(torch.eye(4) * 5, torch.arange(4), "multiclass", names, None)
    write_predictions(tmp_path / "p.csv", rows)
    cells = _cells(tmp_path / "p.csv")
    assert cells[0] == ["row", "target", "prediction", "confidence"]
    assert [row[1] for row in cells[1:]] == ["'" + FORMULA, "'@SUM(A1)", "-1", "cat"]  # "-1" is a number
    assert [row[2] for row in cells[1:]] == [row[1] for row in cells[1:]]


def test_negative_numbers_stay_numbers(tmp_path):
    rows = prediction_rows(torch.tensor([[-2.5], [1.0]]), torch.tensor([[-3.0], [1.0]]), "regression", None, None,
                           row_ids=["-7", "=1+1"])
    write_predictions(tmp_path / "p.csv", rows)
    assert _cells(tmp_path / "p.csv")[1:] == [["-7", "-3.0", "-2.5"], ["'=1+1", "1.0", "1.0"]]


def test_formula_labels_through_training_and_dltrain_predict(tmp_path):
    """A CSV whose labels are formulas: the run's predictions.csv and dltrain-predict's output
    (its prediction cells and ``p_<class>`` columns) hold them as text."""
    from dltrain.inference.predict import predict_file

    labels = [FORMULA, "+cmd|' /C calc'!A0"] * 20
    table = write_csv(tmp_path / "t.csv", {"x": [float(i % 2) for i in range(40)],
                                           "z": [float(i % 5) for i in range(40)], "label": labels})
    run = tmp_path / "run"
    train(compose(["data=csv", f"data.path={table}", "data.target=label", "trainer.fast_dev_run=true"]), run_dir=run)
    predicted = {cell for row in _cells(run / "predictions.csv")[1:] for cell in row[1:3]}
    assert predicted and predicted <= {"'" + label for label in set(labels)}
    out = tmp_path / "out.csv"
    predict_file(run / "checkpoints" / "best.pt", table, out, device="cpu")
    cells = _cells(out)
    assert cells[0][:3] == ["input", "prediction", "confidence"]
    assert cells[0][-1] == "input_warnings"
    assert sorted(cells[0][3:-1]) == sorted(f"p_{label}" for label in set(labels))  # start with p_: text already
    assert {row[1] for row in cells[1:]} <= {"'" + label for label in set(labels)}
    assert not any(cell.startswith(("=", "+", "@")) for row in cells for cell in row)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_log_file_on_a_full_disk_is_said_once(capsys):
    from dltrain.messages import say_once_when_unwritable

    full = open("/dev/full", "w")  # noqa: SIM115 - its close fails too (ENOSPC), so no with
    handler = logging.StreamHandler(full)
    say_once_when_unwritable(handler)
    logger = logging.getLogger("dltrain.test_full_log")
    logger.addHandler(handler)
    try:
        for epoch in range(3):
            logger.warning("epoch %d", epoch)
    finally:
        logger.removeHandler(handler)
        with contextlib.suppress(OSError):
            full.close()
    err = capsys.readouterr().err
    assert err.splitlines() == [f"dltrain: warning: cannot write the log {type(handler).__name__}: "
                                "No space left on device; the run goes on without it."]

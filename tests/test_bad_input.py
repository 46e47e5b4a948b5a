"""Bad input through the ``dltrain`` command: one ``dltrain: error:`` line naming the key or
file at fault, exit code 2, no traceback, nothing trained, and nothing already on disk lost.

(Unknown keys and most out-of-range values are in test_config.py; an existing run directory
refused for a good config is in test_cli.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.files import write_csv, write_table_csv

from .conftest import run_cli

# Each runs the real console script (3-5 s): the same bad inputs run in-process in the default
# suite (tests/test_corpus.py), these with the slow tests (CI's second step).
pytestmark = pytest.mark.slow


def error_line(proc) -> str:
    """The one line of a failed run's stderr, checked: exit code 2, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("dltrain: error: "), proc.stderr
    return lines[0]


def assert_nothing_trained(run_dir: Path, message: str) -> None:
    """The run directory (if Hydra made it) says why the run failed, and holds no results."""
    assert not (run_dir / "metrics.csv").exists()
    assert not (run_dir / "checkpoints").exists()
    if run_dir.exists():
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "failed" and summary["epochs_run"] == 0
        assert message.removeprefix("dltrain: error: ").rstrip(".") == summary["stop_reason"].rstrip(".")


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """The run directory of a finished fast_dev_run (trained in this process)."""
    from dltrain import compose, train

    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train(compose(["trainer.fast_dev_run=true"]), run_dir=run_dir)
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    return run_dir


def test_missing_csv_file(tmp_path):
    proc = run_cli(["data=csv", "data.path=nope.csv", "hydra.run.dir=run"], cwd=tmp_path)
    line = error_line(proc)
    assert "data.path=nope.csv" in line and str(tmp_path / "nope.csv") in line and "does not exist" in line
    assert_nothing_trained(tmp_path / "run", line)


def test_unknown_target_column(tmp_path):
    table = write_table_csv(tmp_path / "table.csv", rows=40, target="Class")
    proc = run_cli(["data=csv", f"data.path={table}", "data.target=nope", "hydra.run.dir=run"], cwd=tmp_path)
    line = error_line(proc)
    assert "data.target=nope is not a column" in line
    assert "Class" in line and "age" in line  # the columns there are
    assert_nothing_trained(tmp_path / "run", line)


def test_missing_values_are_refused_naming_the_column(tmp_path):
    table = write_csv(tmp_path / "gaps.csv", {"x": [1.0, 2.0, None, 4.0, 5.0, 6.0] * 5,
                                              "z": [0.5, 1.5, 2.5, 3.5, 4.5, 5.5] * 5,
                                              "label": ["a", "b"] * 15})
    proc = run_cli(["data=csv", f"data.path={table}", "data.target=label", "hydra.run.dir=run"], cwd=tmp_path)
    line = error_line(proc)
    assert "gaps.csv" in line and "missing values" in line
    assert "x (5)" in line and "z" not in line.split("missing values")[1].split("set")[0]
    assert "data.missing=" in line
    assert_nothing_trained(tmp_path / "run", line)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(tmp_path):
    proc = run_cli(["device=cuda", "hydra.run.dir=run"], cwd=tmp_path)
    line = error_line(proc)
    assert "device=cuda" in line and "device=cpu" in line
    assert_nothing_trained(tmp_path / "run", line)


def test_resume_from_a_missing_checkpoint(tmp_path):
    proc = run_cli(["resume=gone/last.pt", "hydra.run.dir=run"], cwd=tmp_path)
    line = error_line(proc)
    assert "resume=gone/last.pt" in line and "no such file" in line
    assert_nothing_trained(tmp_path / "run", line)


def test_resume_from_a_truncated_checkpoint(tmp_path, finished_run):
    broken = tmp_path / "old" / "checkpoints" / "last.pt"
    broken.parent.mkdir(parents=True)
    whole = (finished_run / "checkpoints" / "last.pt").read_bytes()
    broken.write_bytes(whole[: len(whole) // 2])
    proc = run_cli([f"resume={broken}", "trainer.max_epochs=3", "hydra.run.dir=run"], cwd=tmp_path)
    line = error_line(proc)
    assert f"checkpoint {broken} cannot be loaded" in line
    assert_nothing_trained(tmp_path / "run", line)
    assert broken.read_bytes() == whole[: len(whole) // 2]  # left as it was


@pytest.mark.parametrize("override,expected", [
    ("trainer.batch_size=0", "trainer.batch_size=0 is out of range"),
    ("regularization.dropout=1.5", "regularization.dropout=1.5 is out of range"),
])
def test_bad_values_aimed_at_a_finished_run_leave_it_as_it_was(tmp_path, finished_run, override, expected):
    before = snapshot(finished_run)
    proc = run_cli([override, f"hydra.run.dir={finished_run}"], cwd=tmp_path)
    assert expected in error_line(proc)
    assert snapshot(finished_run) == before


def test_bad_data_aimed_at_a_finished_run_leaves_it_as_it_was(tmp_path, finished_run):
    before = snapshot(finished_run)
    proc = run_cli(["data=csv", "data.path=nope.csv", f"hydra.run.dir={finished_run}"], cwd=tmp_path)
    line = error_line(proc)
    assert str(finished_run) in line and "already holds a run" in line
    assert snapshot(finished_run) == before


def test_resuming_into_the_checkpoints_own_run_directory_is_refused(tmp_path, finished_run):
    """Continuing "in place" would overwrite the run it continues: refused, nothing touched."""
    before = snapshot(finished_run)
    proc = run_cli([f"resume={finished_run / 'checkpoints' / 'last.pt'}", "trainer.max_epochs=3",
                    f"hydra.run.dir={finished_run}"], cwd=tmp_path)
    line = error_line(proc)
    assert str(finished_run) in line and "already holds a run" in line and "hydra.run.dir" in line
    assert snapshot(finished_run) == before


def test_a_run_directory_holding_the_users_files_is_refused_and_kept(tmp_path):
    """A run claims only an empty or new directory: one that holds the user's notes is
    refused before anything is written there, whatever else is wrong with the run."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("why this run\n")
    proc = run_cli(["data=csv", "data.path=nope.csv", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    line = error_line(proc)
    assert f"{run_dir} is not empty (it holds notes.txt)" in line and "hydra.run.dir" in line
    assert snapshot(run_dir) == {Path("notes.txt"): b"why this run\n"}

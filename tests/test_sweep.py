"""The sweep summary, on sweep directories laid out as Hydra's multirun leaves them."""

from __future__ import annotations

import csv
import io
import json
import logging
import shlex
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf
from rich.console import Console

from dltrain.report import sweep
from dltrain.report.rerun import rerun_command
from dltrain.report.run_files import SWEEP_FILES
from dltrain.report.sweep import (
    BEST_OVERRIDES,
    SUMMARY_CSV,
    SUMMARY_JSON,
    SWEEP_PLOT,
    SweepSummary,
    collect_jobs,
    rank,
    summarize_sweep,
    swept_params,
)
from dltrain.report.sweep_progress import SWEEP_LOG


def ok(best: float, monitor: str = "val_loss", mode: str = "min", status: str = "completed",
       **test: float) -> dict[str, Any]:
    """A successful job's summary.json."""
    return {"status": status, "stop_reason": "reached trainer.max_epochs=2", "epochs_run": 2, "best_epoch": 2,
            "monitor": monitor, "mode": mode, "best_value": best, "test": test or {"loss": best, "accuracy": 0.9},
            "train_seconds": 0.127, "run_dir": "somewhere"}


FAILED = {"status": "failed", "stop_reason": "optim.lr=-1.0 is out of range: it must be >= 0.", "epochs_run": 0,
          "best_epoch": None}
DIVERGED = {"status": "diverged", "stop_reason": "val_loss is nan at epoch 2", "epochs_run": 2, "best_epoch": 1,
            "monitor": "val_loss", "mode": "min", "best_value": 0.1, "test": {}, "train_seconds": 0.2}


def job(sweep_dir: Path, name: str, num: int | None, overrides: list[str],
        summary: dict[str, Any] | None = None) -> Path:
    """Write one job directory of a sweep: ``.hydra/{hydra,overrides}.yaml`` and maybe ``summary.json``."""
    job_dir = sweep_dir / name
    (job_dir / ".hydra").mkdir(parents=True)
    hydra = {"hydra": {"job": {"num": num}, "run": {"dir": "${oops.not_there}"}}} if num is not None else {}
    (job_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if summary is not None:
        (job_dir / "summary.json").write_text(json.dumps(summary))
    return job_dir


REAL_PLOT = sweep._plot


@pytest.fixture(autouse=True)
def no_plot(monkeypatch: pytest.MonkeyPatch) -> list[SweepSummary]:
    """Plotting is another module's job: record the calls instead."""
    calls: list[SweepSummary] = []
    monkeypatch.setattr(sweep, "_plot", calls.append)
    return calls


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    """optim x lr: 2 successes, 1 failure (bad lr), 1 diverged; written out of order on disk."""
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    job(tmp_path, "3", 3, ["optim=adam", "optim.lr=-1.0", "trainer.max_epochs=2"], FAILED)
    job(tmp_path, "0", 0, ["optim=sgd", "optim.lr=0.05", "trainer.max_epochs=2"], ok(0.55, loss=0.56, accuracy=0.8))
    job(tmp_path, "1", 1, ["optim=sgd", "optim.lr=0.1", "trainer.max_epochs=2"], ok(0.40, loss=0.41, accuracy=0.9))
    job(tmp_path, "2", 2, ["optim=adam", "optim.lr=0.05", "trainer.max_epochs=2"], DIVERGED)
    return tmp_path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def quiet() -> Console:
    """A console that prints nowhere: for the tests about the files."""
    return Console(file=io.StringIO(), width=200)


def test_grid_csv_has_ranked_rows_statuses_params_and_the_failure_message(grid: Path) -> None:
    summary = summarize_sweep(grid, quiet())
    with (grid / SUMMARY_CSV).open(newline="") as f:
        header = next(csv.reader(f))
    assert header == ["rank", "job", "optim", "optim.lr", "status", "monitor", "best_value", "best_epoch",
                      "test_accuracy", "test_loss", "epochs_run", "seconds", "overrides", "message", "run_dir"]
    rows = read_csv(grid / SUMMARY_CSV)
    assert [(r["rank"], r["job"], r["status"]) for r in rows] == [
        ("1", "1", "completed"), ("2", "0", "completed"), ("3", "2", "diverged"), ("4", "3", "failed")]
    assert [(r["optim"], r["optim.lr"]) for r in rows] == [("sgd", "0.1"), ("sgd", "0.05"), ("adam", "0.05"),
                                                           ("adam", "-1.0")]
    assert rows[0]["best_value"] == "0.4" and rows[0]["test_accuracy"] == "0.9" and rows[0]["seconds"] == "0.127"
    assert rows[0]["message"] == "" and rows[0]["run_dir"] == "1"
    assert rows[0]["overrides"] == "optim=sgd optim.lr=0.1 trainer.max_epochs=2"
    assert rows[3]["message"] == FAILED["stop_reason"]
    assert rows[3]["best_value"] == "" and rows[3]["test_loss"] == "" and rows[3]["monitor"] == ""
    assert rows[2]["message"] == "val_loss is nan at epoch 2"
    assert summary.params == ["optim", "optim.lr"]
    assert (summary.monitor, summary.mode) == ("val_loss", "min")
    assert summary.best is not None and summary.best["job"] == 1
    assert [r["job"] for r in summary.failed] == [2, 3]


def test_grid_json(grid: Path) -> None:
    summarize_sweep(grid, quiet())
    data = json.loads((grid / SUMMARY_JSON).read_text())
    assert data["sweep_dir"] == str(grid)
    assert (data["monitor"], data["mode"], data["params"]) == ("val_loss", "min", ["optim", "optim.lr"])
    assert (data["num_jobs"], data["num_failed"], data["best_job"]) == (4, 2, 1)
    assert [j["job"] for j in data["jobs"]] == [1, 0, 2, 3]
    first = data["jobs"][0]
    assert first["rank"] == 1 and first["optim.lr"] == "0.1" and first["best_value"] == 0.4
    assert first["test_loss"] == 0.41 and first["best_epoch"] == 2 and first["epochs_run"] == 2
    assert not any(key.startswith("_") for j in data["jobs"] for key in j)
    assert data["jobs"][3]["message"].startswith("optim.lr=-1.0 is out of range")


def test_exit_codes(tmp_path: Path) -> None:
    def code(name: str, *summaries: dict[str, Any]) -> int:
        for i, s in enumerate(summaries):
            job(tmp_path / name, str(i), i, [f"seed={i}"], s)
        return summarize_sweep(tmp_path / name, quiet()).exit_code

    assert code("all_ok", ok(0.5), ok(0.4, status="early_stopped")) == 0
    assert code("diverged", ok(0.5), DIVERGED, DIVERGED) == 3
    assert code("mixed", ok(0.5), DIVERGED, FAILED) == 2
    assert code("interrupted", ok(0.5), {"status": "interrupted", "stop_reason": "SIGTERM"}) == 2


def test_max_mode_ranks_the_highest_first_and_ties_by_job(tmp_path: Path) -> None:
    for i, acc in enumerate([0.7, 0.9, 0.7, 0.8]):
        job(tmp_path, str(i), i, [f"optim.lr={i}"], ok(acc, monitor="val_accuracy", mode="max"))
    summary = summarize_sweep(tmp_path, quiet())
    assert (summary.monitor, summary.mode) == ("val_accuracy", "max")
    assert [(r["rank"], r["job"]) for r in summary.rows] == [(1, 1), (2, 3), (3, 0), (4, 2)]


def test_rank_min_and_max_and_puts_unrankable_rows_last_by_job() -> None:
    def row(num: int, value: float | None, status: str = "completed", monitor: str = "m") -> dict[str, Any]:
        return {"job": num, "status": status, "monitor": monitor, "best_value": value}

    rows = [row(0, 2.0), row(1, None), row(2, 1.0), row(3, 3.0, monitor="other"), row(4, float("nan")),
            row(5, 0.5, status="diverged"), row(6, 3.0)]
    assert [r["job"] for r in rank(rows, "m", "min")] == [2, 0, 6, 1, 3, 4, 5]
    ranked = rank(rows, "m", "max")
    assert [r["job"] for r in ranked] == [6, 0, 2, 1, 3, 4, 5]
    assert [r["rank"] for r in ranked] == list(range(1, 8))
    assert [r["job"] for r in rank(rows, None, None)] == list(range(7))


def test_fixed_overrides_are_not_params_and_plus_keys_are(tmp_path: Path) -> None:
    job(tmp_path, "0", 0, ["trainer.max_epochs=2", "+extra.tag=a", "seed=1"], ok(0.5))
    job(tmp_path, "1", 1, ["trainer.max_epochs=2", "++extra.tag=b", "seed=1", "~trainer.checkpoint"], ok(0.6))
    job(tmp_path, "2", 2, ["trainer.max_epochs=2", "seed=1"], ok(0.7))
    rows = collect_jobs(tmp_path)
    assert swept_params(rows) == ["extra.tag", "trainer.checkpoint"]
    assert [r["extra.tag"] for r in rows] == ["a", "b", None]
    assert [r["trainer.checkpoint"] for r in rows] == [None, "~trainer.checkpoint", None]
    assert "seed" not in rows[0] and "trainer.max_epochs" not in rows[0]


def test_one_job_has_no_params(tmp_path: Path) -> None:
    job(tmp_path, "0", 0, ["optim.lr=0.1"], ok(0.5))
    summary = summarize_sweep(tmp_path, quiet())
    assert summary.params == [] and summary.best is not None and summary.best["job"] == 0
    assert read_csv(tmp_path / SUMMARY_CSV)[0]["overrides"] == "optim.lr=0.1"


def test_a_job_without_summary_json_is_missing(tmp_path: Path) -> None:
    job(tmp_path, "0", 0, ["optim.lr=0.1"], ok(0.5))
    job(tmp_path, "1", 1, ["optim.lr=0.2"])
    summary = summarize_sweep(tmp_path, quiet())
    missing = summary.rows[1]
    assert (missing["job"], missing["status"], missing["rank"]) == (1, "missing", 2)
    assert missing["message"] == "no summary.json: the job was killed or has not finished"
    assert missing["best_value"] is None and missing["test_loss"] is None
    assert summary.exit_code == 2


def test_best_overrides_yaml_reruns_the_best_job(tmp_path: Path) -> None:
    tricky = ["optim=sgd", "model.hidden=[64,32]", "data.path='my data/x.csv'", "+tag=a b"]
    job(tmp_path, "0", 0, ["optim=adam", "model.hidden=[8]", "data.path=x.csv", "+tag=c"], ok(0.9))
    job(tmp_path, "1", 1, tricky, ok(0.3))
    summarize_sweep(tmp_path, quiet())
    text = (tmp_path / BEST_OVERRIDES).read_text()
    command = rerun_command(tricky)
    assert text.splitlines()[0] == f"# The best job of this sweep; re-run it with: {command}"
    best = yaml.safe_load(text)
    assert best == {"job": 1, "monitor": "val_loss", "best_value": 0.3, "run_dir": "1", "overrides": tricky,
                    "command": command}
    assert OmegaConf.to_container(OmegaConf.load(tmp_path / BEST_OVERRIDES)) == best
    assert shlex.split(best["command"]) == ["dltrain", *tricky]
    assert rerun_command([]) == "dltrain"


def test_no_best_overrides_when_every_job_failed_and_a_stale_one_goes(tmp_path: Path) -> None:
    job(tmp_path, "0", 0, ["optim.lr=-1"], FAILED)
    job(tmp_path, "1", 1, ["optim.lr=1e9"], DIVERGED)
    (tmp_path / BEST_OVERRIDES).write_text("job: 7\n")
    summary = summarize_sweep(tmp_path, quiet())
    assert summary.best is None
    assert not (tmp_path / BEST_OVERRIDES).exists()
    assert json.loads((tmp_path / SUMMARY_JSON).read_text())["best_job"] is None
    # The diverged job's value does not make it a best; it still comes first of the failures by job number.
    assert [r["job"] for r in summary.rows] == [0, 1]


def test_named_job_dirs_at_depth_two(tmp_path: Path) -> None:
    job(tmp_path, "optim=sgd/lr=0.1", 1, ["optim=sgd", "optim.lr=0.1"], ok(0.4))
    job(tmp_path, "optim=sgd/lr=0.05", 0, ["optim=sgd", "optim.lr=0.05"], ok(0.5))
    job(tmp_path, "adam-run", None, ["optim=adam", "optim.lr=0.1"], ok(0.6))  # no hydra.job.num: order found
    (tmp_path / "not-a-job" / "deeper").mkdir(parents=True)
    rows = collect_jobs(tmp_path)
    assert [(r["job"], r["run_dir"]) for r in rows] == [(0, "adam-run"), (0, "optim=sgd/lr=0.05"),
                                                        (1, "optim=sgd/lr=0.1")]
    assert [r["optim"] for r in rows] == ["adam", "sgd", "sgd"]


def test_job_number_falls_back_on_a_numeric_dir_name(tmp_path: Path) -> None:
    job(tmp_path, "5", None, ["seed=5"], ok(0.5))
    job(tmp_path, "2", None, ["seed=2"], ok(0.5))
    assert [r["job"] for r in collect_jobs(tmp_path)] == [2, 5]


def test_printed_table(grid: Path) -> None:
    console = Console(record=True, width=200)
    summarize_sweep(grid, console)
    out = console.export_text()
    assert "sweep: 4 jobs, ranked by best val_loss (min)" in out
    assert "best val_loss" in out and "test accuracy" in out and "note" in out
    table_rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines()
                  if line.startswith("│")]
    assert [row[:5] for row in table_rows] == [
        ["1", "1", "sgd", "0.1", "completed"], ["2", "0", "sgd", "0.05", "completed"],
        ["3", "2", "adam", "0.05", "diverged"], ["4", "3", "adam", "-1.0", "failed"]]
    assert table_rows[0][-1] == "" and table_rows[3][-1] == FAILED["stop_reason"]
    assert f"sweep summary in {grid}: {SUMMARY_CSV}, {SUMMARY_JSON}, {BEST_OVERRIDES}" in out
    assert "best: job 1 (val_loss=0.4): dltrain optim=sgd optim.lr=0.1 trainer.max_epochs=2" in out
    assert "2 of 4 jobs failed: jobs 2, 3" in out


def test_the_best_row_is_highlighted_and_failures_are_red(grid: Path) -> None:
    console = Console(record=True, width=200, force_terminal=True, color_system="standard")
    summarize_sweep(grid, console)
    lines = [line for line in console.export_text(styles=True).splitlines() if line.startswith("│")]
    assert "\x1b[1;32m" in lines[0] and "\x1b[1;32m" not in "".join(lines[1:])
    assert "\x1b[31mfailed" in lines[3] and "\x1b[31mdiverged" in lines[2] and "\x1b[31m" not in lines[0]


def test_note_is_folded_whole_and_brackets_are_not_markup(tmp_path: Path) -> None:
    job(tmp_path, "0", 0, ["model.hidden=[64]"], {"status": "failed", "stop_reason": "[bold]x" + "y" * 100})
    job(tmp_path, "1", 1, ["model.hidden=[8]"], ok(0.5))
    console = Console(record=True, width=200)
    summarize_sweep(tmp_path, console)
    out = console.export_text()
    assert "[64]" in out and "[bold]x" in out and "…" not in out
    table = [line for line in out.splitlines() if line.startswith("│")]
    note = "".join(line.split("│")[-2].strip() for line in table[1:])  # the failed row, folded over its lines
    assert note == "[bold]x" + "y" * 100
    assert max(len(line) for line in out.splitlines()) <= 200  # folded, not widened


def test_write_summary_draws_the_plot_once(grid: Path, no_plot: list[SweepSummary]) -> None:
    summary = summarize_sweep(grid, quiet())
    assert no_plot == [summary]


def test_plot_sweep_is_called_with_public_rows(grid: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    fake = types.ModuleType("dltrain.report.plots")
    fake.plot_sweep = lambda rows, path, **kw: calls.append((rows, path, kw))  # type: ignore[attr-defined]
    monkeypatch.setattr(sweep, "_plot", REAL_PLOT)
    monkeypatch.setitem(sys.modules, "dltrain.report.plots", fake)
    summarize_sweep(grid, quiet())
    ((rows, path, kw),) = calls
    assert path == grid / SWEEP_PLOT
    assert kw == {"monitor": "val_loss", "mode": "min", "params": ["optim", "optim.lr"]}
    assert [r["job"] for r in rows] == [1, 0, 2, 3] and not any(k.startswith("_") for r in rows for k in r)


@pytest.mark.parametrize("plots", [None, "raises"])
def test_a_plotting_failure_only_warns(grid: Path, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture, plots: str | None) -> None:
    monkeypatch.setattr(sweep, "_plot", REAL_PLOT)
    fake = None  # None in sys.modules: the import fails, as when dltrain.report.plots does not exist
    if plots == "raises":
        fake = types.ModuleType("dltrain.report.plots")

        def plot_sweep(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("no display")

        fake.plot_sweep = plot_sweep  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dltrain.report.plots", fake)
    with caplog.at_level(logging.WARNING, logger="dltrain"):
        summary = summarize_sweep(grid, quiet())
    (warning,) = [r for r in caplog.records if r.name == "dltrain"]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().startswith(f"could not draw {SWEEP_PLOT}: ")
    assert ("no display" if plots else "dltrain.report.plots") in warning.getMessage()
    assert (grid / SUMMARY_CSV).is_file() and (grid / SUMMARY_JSON).is_file() and (grid / BEST_OVERRIDES).is_file()
    assert summary.best is not None


def test_an_empty_sweep(tmp_path: Path) -> None:
    assert collect_jobs(tmp_path) == []
    console = Console(record=True, width=200)
    summary = summarize_sweep(tmp_path, console)
    assert (summary.rows, summary.params, summary.best, summary.monitor, summary.exit_code) == ([], [], None, None, 0)
    data = json.loads((tmp_path / SUMMARY_JSON).read_text())
    assert (data["num_jobs"], data["jobs"], data["best_job"]) == (0, [], None)
    assert read_csv(tmp_path / SUMMARY_CSV) == []
    assert (tmp_path / SUMMARY_CSV).read_text().startswith("rank,job,status,")
    assert "sweep: 0 jobs" in console.export_text()


def test_a_second_summary_replaces_the_first_and_leaves_no_temp_files(grid: Path) -> None:
    summarize_sweep(grid, quiet())
    summarize_sweep(grid, quiet())  # a second summary replaces the first
    assert sorted(p.name for p in grid.iterdir() if p.is_file()) == sorted(
        ["multirun.yaml", SUMMARY_CSV, SUMMARY_JSON, BEST_OVERRIDES])


def test_the_rerun_command_leaves_out_what_only_shapes_a_sweep():
    assert rerun_command(["hparams_search=optuna", "optim.lr=0.01", "cluster=slurm", "model.hidden=[8]"]) == \
        "dltrain optim.lr=0.01 'model.hidden=[8]'"


def test_the_files_line_names_what_the_sweep_dir_holds_in_the_listed_order(grid: Path) -> None:
    (grid / SWEEP_LOG).write_text("[2026-01-01 00:00:00] sweep: job 1 of 4 in 0/\n")
    (grid / "notes.txt").write_text("not the sweep's\n")
    console = Console(record=True, width=400)
    summarize_sweep(grid, console)
    [line] = [line for line in console.export_text().splitlines() if line.startswith("sweep summary in")]
    names = line.split(": ", 1)[1].split(", ")
    assert SWEEP_LOG in names and "multirun.yaml" in names and "notes.txt" not in names
    assert names == [entry.name for entry in SWEEP_FILES if entry.name in names]
    assert all((grid / name).exists() for name in names)

"""What the end of a run and a sweep tell the user: the files a run wrote (those on disk,
however it ended) and its test result once; sweep tables whose paths and values are never
cut; and, as each job of a sweep starts, which of how many it is and about how long the
rest will take."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from rich.console import Console

from dltrain import compose, train
from dltrain.cli import app as cli
from dltrain.errors import UserError
from dltrain.report.sweep import summarize_sweep
from dltrain.report.sweep_progress import SWEEP_LOG, describe_seconds

from .conftest import logging_restored
from .test_sweep import FAILED, job, ok

QUICK = ["data=xor", "model.hidden=[8]", "trainer.batch_size=32"]



def run_dltrain(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int | str | None:
    """``dltrain ARGV`` in this process; its exit code (0 when it returned)."""
    monkeypatch.setattr(sys, "argv", ["dltrain", *argv])
    monkeypatch.setattr(cli, "_sweep", {**cli._sweep, "dir": None, "summarized": False, "exit_code": 0})
    monkeypatch.setattr(cli, "_run_dir", None, raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with logging_restored():
        try:
            cli.main()
        except SystemExit as done:
            return done.code
    return 0


def named_files(out: str, run_dir: Path) -> set[str]:
    """The paths the ``wrote DIR/: ...`` line of ``out`` names, relative to ``run_dir``
    (``checkpoints/{a,b}`` expanded); asserts there is exactly one such line, for ``run_dir``."""
    lines = [line for line in out.splitlines() if line.startswith("wrote ")]
    assert len(lines) == 1, out
    shown, _, names = lines[0].removeprefix("wrote ").partition(": ")
    assert Path(shown).resolve() == run_dir.resolve() and shown.endswith("/")
    files = set()
    for name in names.split(", "):
        group = re.fullmatch(r"checkpoints/\{(.+)\}", name)
        files |= {f"checkpoints/{n}" for n in group.group(1).split(",")} if group else {name}
    return files


def on_disk(run_dir: Path) -> set[str]:
    """What the run directory holds: its files, its folders (with a slash), each checkpoint."""
    found = {p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir() if p.name != "checkpoints"}
    return found | {f"checkpoints/{p.name}" for p in (run_dir / "checkpoints").glob("*")}


@pytest.mark.pictures
def test_a_run_names_every_file_it_wrote_and_prints_its_test_result_once(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = run_dltrain(["trainer.fast_dev_run=true", "hydra.run.dir=outputs/run"], monkeypatch)
    out = capsys.readouterr().out
    assert code == 0
    run_dir = tmp_path / "outputs" / "run"
    assert named_files(out, run_dir) == on_disk(run_dir)
    for name in ("metrics.csv", "summary.json", "predictions.csv", "curves.png", "checkpoints/best.pt",
                 "checkpoints/last.pt", "dltrain.log", "model_summary.txt", "data.json"):
        assert name in on_disk(run_dir), name
    assert "wrote outputs/run/: " in out  # the directory once, as it can be typed here

    summary = (run_dir / "summary.json").read_text()
    accuracy = re.search(r'"accuracy": ([0-9.e-]+)', summary).group(1)
    shown = f"{float(accuracy):.4f}"
    # the per-class table's weighted average recall is the accuracy by definition: not a second result line
    elsewhere = "\n".join(line for line in out.splitlines() if "weighted avg" not in line)
    assert out.count("test accuracy") == 1 and elsewhere.count(shown) == 1, out
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"test accuracy: {shown}  loss: ")  # the run's last line, for scripts
    log = (run_dir / "dltrain.log").read_text()
    assert "wrote outputs/run/: " in log and f"test accuracy: {shown}" in log  # the run's log keeps both


def test_only_files_that_exist_are_named(tmp_path, capsys, monkeypatch):
    """No checkpoints asked for and a plot that fails: neither is claimed."""
    import dltrain.report.plots

    def broken(*args, **kwargs):
        raise RuntimeError("no backend")

    monkeypatch.setattr(dltrain.report.plots, "plot_curves", broken)
    run_dir = tmp_path / "run"
    train(compose(["trainer.fast_dev_run=true", "trainer.checkpoint.save_best=false",
                   "trainer.checkpoint.save_last=false"]), run_dir=run_dir)
    out = capsys.readouterr().out
    files = named_files(out, run_dir)
    assert files == on_disk(run_dir)
    assert "curves.png" not in files and not any(name.startswith("checkpoints") for name in files)
    assert "metrics.csv" in files and "predictions.csv" in files


def test_a_diverged_run_names_what_it_left(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(UserError):
        train(compose(["optim=sgd", "optim.lr=1e12", "trainer.max_epochs=2", *QUICK]), run_dir=run_dir)
    out = capsys.readouterr().out
    files = named_files(out, run_dir)
    assert files == on_disk(run_dir) and "summary.json" in files and "metrics.csv" in files



def test_a_diverged_run_through_the_command_exits_3_with_one_line(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    code = run_dltrain(["optim=sgd", "optim.lr=1e12", "trainer.max_epochs=2", *QUICK, f"hydra.run.dir={run_dir}"],
                       monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert err[-1].startswith("dltrain: error: the training loss became") and "Traceback" not in "\n".join(err)
    assert not (run_dir / "checkpoints").exists()  # no checkpoint of non-finite weights

# --- the sweep's table --------------------------------------------------------------------------------------------


def test_a_narrow_sweep_table_shows_every_run_dir_whole(tmp_path):
    long_dirs = ["optim=sgd,optim.lr=0.1,regularization.dropout=0.25",
                 "optim=adam,optim.lr=0.05,regularization.dropout=0"]
    job(tmp_path, long_dirs[0], 0, ["optim=sgd", "optim.lr=0.1", "regularization.dropout=0.25"], ok(0.4))
    job(tmp_path, long_dirs[1], 1, ["optim=adam", "optim.lr=0.05", "regularization.dropout=0"],
        {**FAILED, "stop_reason": "data.path=/a/very/long/folder/name/that/goes/on/and/on/data.csv does not exist"})
    console = Console(record=True, width=80)
    summarize_sweep(tmp_path, console)
    out = console.export_text()
    assert "…" not in out
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]
    assert {row[2] for row in rows if row[2]} == {f"{name}/" for name in long_dirs}  # the run dir column, whole
    assert any("regularization.dropout" in line for line in out.splitlines())  # the header, whole


def test_numbered_job_dirs_need_no_column_of_their_own(tmp_path):
    for num in range(2):
        job(tmp_path, str(num), num, [f"optim.lr=0.{num + 1}"], ok(0.5 - num / 10))
    console = Console(record=True, width=80)
    summarize_sweep(tmp_path, console)
    out = console.export_text()
    assert "run dir" not in out and "…" not in out


# --- a sweep's progress -------------------------------------------------------------------------------------------


def test_a_sweep_says_which_job_of_how_many_and_the_time_left(tmp_path, capsys, monkeypatch):
    import dltrain.report.plots
    from dltrain.report import sweep

    monkeypatch.chdir(tmp_path)
    # The plots are beside the point here, and the slowest part of a tiny job.
    monkeypatch.setattr(dltrain.report.plots, "plot_curves", lambda *args, **kwargs: None)
    monkeypatch.setattr(sweep, "_plot", lambda summary: None)
    code = run_dltrain(["-m", "optim.lr=0.1,0.05,0.01", "trainer.fast_dev_run=true", "hydra.sweep.dir=sweep",
                        *QUICK], monkeypatch)
    out = capsys.readouterr().out
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("sweep: job ")]
    assert lines[0] == "sweep: job 1 of 3 (optim.lr=0.1) in 0/"  # nothing finished yet: no estimate
    for n, (line, lr) in enumerate(zip(lines[1:], ("0.05", "0.01"), strict=True), start=2):
        assert re.fullmatch(rf"sweep: job {n} of 3 \(optim\.lr={lr}\) in {n - 1}/: about \d+ (s|min) left", line)
    logged = (tmp_path / "sweep" / SWEEP_LOG).read_text().splitlines()
    assert [line.split("] ", 1)[1] for line in logged] == lines
    for n in range(3):
        assert lines[n] in (tmp_path / "sweep" / str(n) / "dltrain.log").read_text()


@pytest.mark.parametrize(("seconds", "said"), [(0.2, "1 s"), (40.4, "40 s"), (200, "3 min"), (7500, "2 h 5 min")])
def test_the_time_left_is_rounded_as_an_estimate(seconds, said):
    assert describe_seconds(seconds) == said


def sweep_config(task: list[str], sweeper: dict, tmp_path: Path) -> object:
    """The parts of a sweep's config that its progress reads."""
    from omegaconf import OmegaConf

    return OmegaConf.create({"hydra": {"sweeper": sweeper, "overrides": {"task": task},
                                       "sweep": {"dir": str(tmp_path)}}})


def job_config(sweep: object, num: int, task: list[str], tmp_path: Path) -> object:
    from omegaconf import OmegaConf

    return OmegaConf.merge(sweep, {"hydra": {"job": {"num": num}, "overrides": {"task": task},
                                             "runtime": {"output_dir": str(tmp_path / str(num))}}})


def test_the_count_of_a_grid_and_of_an_optuna_search(tmp_path):
    from dltrain.report.sweep_progress import SweepProgress

    basic = {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "max_batch_size": 2,
             "params": {"regularization.dropout": "0,0.25"}}
    grid = SweepProgress.of(sweep_config(["optim=sgd,adam,nesterov", "optim.lr=0.1,0.01", "seed=1"], basic, tmp_path))
    assert grid.total == 12 and grid.swept == ["regularization.dropout", "optim", "optim.lr"]
    optuna = {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper", "n_trials": 7,
              "params": {"optim.lr": "tag(log, interval(0.0001, 0.1))"}}
    search = SweepProgress.of(sweep_config(["trainer.max_epochs=2"], optuna, tmp_path))
    assert search.total == 7 and search.swept == ["optim.lr"]
    unknown = SweepProgress.of(sweep_config(["optim=sgd,adam"], {"_target_": "elsewhere.Sweeper"}, tmp_path))
    assert unknown.total is None
    line = unknown.job_started(job_config(sweep_config([], {}, tmp_path), 4, ["optim=adam"], tmp_path))
    assert line == "sweep: job 5 (optim=adam) in 4/"


def test_jobs_in_other_processes_give_no_estimate(tmp_path):
    """A launcher's worker process has its own copy of the progress: the sweep's durations are not its."""
    from dltrain.report.sweep_progress import SweepProgress

    sweep = sweep_config(["optim.lr=0.1,0.01,0.001"], {}, tmp_path)
    progress = SweepProgress(total=3, swept=["optim.lr"], sweep_dir=tmp_path, durations=[10.0])
    assert progress.job_started(job_config(sweep, 1, ["optim.lr=0.01"], tmp_path)).endswith(": about 20 s left")
    progress.pid = -1  # as in a worker process
    assert progress.job_started(job_config(sweep, 2, ["optim.lr=0.001"], tmp_path)) == \
        "sweep: job 3 of 3 (optim.lr=0.001) in 2/"


# --- the end of a run: where it is named from, in which order, however it ended ---------------------------------------


def test_a_job_run_in_its_own_folder_is_named_from_where_the_command_started(tmp_path, capsys, monkeypatch):
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    code = run_dltrain(["trainer.fast_dev_run=true", "hydra.job.chdir=true", "hydra.run.dir=runs/a"], monkeypatch)
    out = capsys.readouterr().out
    assert code == 0
    assert "wrote runs/a/: " in out  # typed where the command started, not the job's own folder (./)
    assert named_files(out, tmp_path / "here" / "runs" / "a")


def test_the_files_are_named_in_the_order_the_help_lists_them(tmp_path):
    from dltrain.report.run_end import written_files
    from dltrain.report.run_files import RUN_FILES

    for name in ("zz_extra.txt", "dltrain.log", "rank1.log", "summary.json", "metrics.csv", "data.json",
                 "model_summary.txt", "curves.png", "predictions.csv", "checkpoints/last.pt", "tensorboard/x",
                 ".hydra/config.yaml", "a_extra.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    listed = [entry.name.split("/")[0] for entry in RUN_FILES]
    names = written_files(tmp_path)
    known = [name for name in names if name.split("/")[0] in listed]
    assert [listed.index(name.split("/")[0]) for name in known] == sorted(listed.index(n.split("/")[0]) for n in known)
    assert names[len(known):] == ["a_extra.txt", "rank1.log", "zz_extra.txt"]  # the rest, alphabetically
    assert ".hydra/" in known and "dltrain.log" in known


def test_a_run_that_fails_once_its_folder_exists_names_what_it_left(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = run_dltrain(["data=digits", "model=cnn", "model.channels=[8,8,8,8]", "hydra.run.dir=outputs/run"],
                       monkeypatch)
    captured = capsys.readouterr()
    assert code not in (0, None)
    run_dir = tmp_path / "outputs" / "run"
    files = named_files(captured.out, run_dir)
    assert files == on_disk(run_dir) and "summary.json" in files
    assert captured.err.count("\n") == 1 and "cannot fit 4 conv blocks" in captured.err


def test_nothing_monitored_has_no_direction(tmp_path):
    import json

    summary = train(compose(["data.val_fraction=0", "trainer.fast_dev_run=true", *QUICK]), run_dir=tmp_path / "run")
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["monitor"] is None and summary["mode"] is None
    assert written["monitor"] is None and written["mode"] is None

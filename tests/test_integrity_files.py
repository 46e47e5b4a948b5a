"""Nothing the user wrote is overwritten, and nothing a finished run did is lost.

``dltrain-predict output=`` replaces only its own earlier output (or any file with
``overwrite=true``, but never the checkpoint or the input); a run claims only an empty or
new directory; a run stopped between its last checkpoint and its results writes them when
it is resumed; ``train_seconds`` counts every segment of a resumed run.
"""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import pytest

from dltrain import compose, train
from dltrain.errors import ConfigError, UserError
from dltrain.files import ensure_new_run_dir
from dltrain.inference.predict import main, predict_file
from dltrain.training.checkpoint import load_checkpoint, save_checkpoint
from dltrain.training.signals import Interrupted
from dltrain.training.trainer import Trainer
from tests.conftest import run_cli, tool_error

SMALL = ["device=cpu", "data=moons", "model.hidden=[16]", "trainer.early_stopping.enabled=false"]
#: What a user may keep in a folder: files named as a run's are theirs all the same.
USER_FILES = {"predictions.csv": b"id,label\n1,cat\n", "data.json": b'{"mine": true}\n',
              "summary.json": b'{"notes": "keep"}\n'}


# --- dltrain-predict output= ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moons(tmp_path_factory) -> tuple[Path, Path]:
    """A moons checkpoint and a CSV of points to predict."""
    root = tmp_path_factory.mktemp("moons")
    train(compose([*SMALL, "trainer.fast_dev_run=true"]), run_dir=root / "run")
    points = root / "points.csv"
    points.write_text("x1,x2\n0.1,0.2\n-1.0,0.5\n1.5,-0.3\n")
    return root / "run" / "checkpoints" / "best.pt", points


def test_predict_never_writes_over_its_checkpoint(moons, capsys):
    ckpt, points = moons
    before = ckpt.read_bytes()
    for extra in ([], ["overwrite=true"]):  # not even when told to overwrite
        line = tool_error(capsys, main, "dltrain-predict", [f"ckpt={ckpt}", f"input={points}", f"output={ckpt}",
                                                             "device=cpu", *extra])
        assert f"output={ckpt} is the checkpoint" in line and "another file" in line
    assert ckpt.read_bytes() == before
    assert load_checkpoint(ckpt)["epoch"] == 1


def test_predict_never_writes_over_its_input(moons, tmp_path):
    ckpt, points = moons
    copy = tmp_path / "points.csv"
    copy.write_bytes(points.read_bytes())
    with pytest.raises(UserError, match="is the input file"):
        predict_file(ckpt, copy, copy, device="cpu", overwrite=True)
    assert copy.read_bytes() == points.read_bytes()


def test_predict_refuses_a_file_it_did_not_write_unless_told(moons, tmp_path, capsys):
    ckpt, points = moons
    mine = tmp_path / "train.csv"
    mine.write_text("x1,x2,label\n1,2,a\n")
    before = mine.read_bytes()
    line = tool_error(capsys, main, "dltrain-predict", [f"ckpt={ckpt}", f"input={points}", f"output={mine}",
                                                         "device=cpu"])
    assert f"output={mine} exists and is not a predictions file of dltrain-predict" in line
    assert "choose another output=... or pass overwrite=true" in line
    assert mine.read_bytes() == before

    main([f"ckpt={ckpt}", f"input={points}", f"output={mine}", "device=cpu", "overwrite=true"])
    assert next(csv.reader(mine.open()))[:2] == ["input", "prediction"]


def test_predict_replaces_its_own_earlier_output(moons, tmp_path):
    ckpt, points = moons
    out = tmp_path / "out.csv"
    assert predict_file(ckpt, points, out, device="cpu") == 3
    first = out.read_bytes()
    out.write_bytes(first + b"9,extra,0.5,0.5,0.5,\n")  # edited since, and still its header
    assert predict_file(ckpt, points, out, device="cpu") == 3
    assert out.read_bytes() == first


@pytest.mark.parametrize("content", [
    "input,prediction,notes\nmy,own,important data\n",  # starts like the tool's header, but is not its shape
    "input,prediction_0\na,b,c\n",  # a row wider than the header
    "input,prediction,confidence,p_a,p_b\n0,a,0.9,0.9,7\n",  # a probability that is none
])
def test_predict_recognises_its_output_by_its_whole_shape(moons, tmp_path, capsys, content):
    ckpt, points = moons
    mine = tmp_path / "mine.csv"
    mine.write_text(content)
    line = tool_error(capsys, main, "dltrain-predict", [f"ckpt={ckpt}", f"input={points}", f"output={mine}",
                                                         "device=cpu"])
    assert "is not a predictions file of dltrain-predict" in line
    assert mine.read_text() == content


def test_predict_never_replaces_what_is_not_a_regular_file(moons, tmp_path, capsys):
    import os
    import stat

    ckpt, points = moons
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for extra in ([], ["overwrite=true"]):
        line = tool_error(capsys, main, "dltrain-predict", [f"ckpt={ckpt}", f"input={points}", f"output={fifo}",
                                                             "device=cpu", *extra])
        assert f"output={fifo} is not a regular file" in line
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    line = tool_error(capsys, main, "dltrain-predict", [f"ckpt={ckpt}", f"input={points}", f"output={tmp_path}",
                                                         "device=cpu"])
    assert f"output={tmp_path} is a folder" in line


def test_predict_takes_an_empty_file_and_shows_overwrite_in_help(moons, tmp_path, capsys):
    ckpt, points = moons
    out = tmp_path / "made-by-mktemp.csv"
    out.touch()  # nothing in it to lose
    assert predict_file(ckpt, points, out, device="cpu") == 3
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "overwrite" in capsys.readouterr().out


# --- a run claims only an empty or new directory ----------------------------------------------------------------


def _user_folder(folder: Path) -> Path:
    folder.mkdir()
    for name, content in USER_FILES.items():
        (folder / name).write_bytes(content)
    return folder


def _untouched(folder: Path) -> bool:
    return {p.name: p.read_bytes() for p in folder.iterdir()} == USER_FILES


def test_a_run_never_writes_into_a_folder_of_user_files(tmp_path):
    folder = _user_folder(tmp_path / "mine")
    with pytest.raises(ConfigError, match=r"mine is not empty \(it holds predictions.csv, data.json, "
                                          r"summary.json\): a run claims only an empty or new directory"):
        train(compose([*SMALL, "trainer.fast_dev_run=true"]), run_dir=folder)
    assert _untouched(folder)


def test_the_command_line_refuses_a_run_dir_of_user_files_before_hydra_writes(tmp_path):
    folder = _user_folder(tmp_path / "mine")
    proc = run_cli([*SMALL, "trainer.fast_dev_run=true", f"hydra.run.dir={folder}"], cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"dltrain: error: {folder} is not empty")
    assert "choose another directory with hydra.run.dir=" in proc.stderr
    assert _untouched(folder)  # no .hydra folder, no log either


def test_only_hydras_own_files_of_this_run_are_allowed(tmp_path):
    hydra = (".hydra", "dltrain.log")
    (tmp_path / ".hydra").mkdir()
    (tmp_path / "dltrain.log").touch()
    ensure_new_run_dir(tmp_path, "x", hydra_files=hydra, hydra_started=True)  # this run's: fine
    with pytest.raises(ConfigError, match=r"it holds \.hydra, dltrain\.log\)"):  # an earlier run's
        ensure_new_run_dir(tmp_path, "x", hydra_files=hydra)
    (tmp_path / "notes.txt").touch()
    with pytest.raises(ConfigError, match=r"it holds notes\.txt\)"):
        ensure_new_run_dir(tmp_path, "x", hydra_files=hydra, hydra_started=True)


def test_resume_auto_starts_again_a_run_killed_before_its_first_epoch_ended(tmp_path):
    """A requeued job whose first attempt died in epoch 1 finds only what a run writes at its
    start: resume=auto starts it again in place; a user's file there still stops it."""
    hydra = (".hydra", "dltrain.log")
    (tmp_path / ".hydra").mkdir()
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (tmp_path / ".hydra" / name).write_text("{}\n")
    for name in ("dltrain.log", "model_summary.txt", "rank1.log"):
        (tmp_path / name).touch()
    (tmp_path / "data.json").write_text('{"dataset": "digits", "task": "multiclass"}')
    (tmp_path / "checkpoints").mkdir()
    ensure_new_run_dir(tmp_path, "x", resume="auto", hydra_files=hydra)
    with pytest.raises(ConfigError, match="is not empty"):
        ensure_new_run_dir(tmp_path, "x", hydra_files=hydra)  # without resume=auto
    with pytest.raises(ConfigError, match="is not empty"):
        ensure_new_run_dir(tmp_path, "x", resume="auto")  # no Hydra run: no such folder is a run's for sure
    (tmp_path / "notes.txt").touch()
    with pytest.raises(ConfigError, match="notes.txt"):
        ensure_new_run_dir(tmp_path, "x", resume="auto", hydra_files=hydra)


def test_resume_auto_never_takes_user_files_named_as_a_runs_for_a_killed_run(tmp_path):
    """Files named as a run's first files, but not as dltrain writes them (a user's data.json, a
    .hydra folder without Hydra's records), are the user's: resume=auto refuses the folder too."""
    hydra = (".hydra", "dltrain.log")
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("user: cfg\n")
    (tmp_path / "data.json").write_text('{"mine": 1}')
    (tmp_path / "summary.json").write_text('{"mine": 2}')
    with pytest.raises(ConfigError, match="is not empty"):
        ensure_new_run_dir(tmp_path, "x", resume="auto", hydra_files=hydra)
    for name in ("hydra.yaml", "overrides.yaml"):  # Hydra's records complete: the JSON files still tell
        (tmp_path / ".hydra" / name).write_text("{}\n")
    with pytest.raises(ConfigError, match="is not empty"):
        ensure_new_run_dir(tmp_path, "x", resume="auto", hydra_files=hydra)
    (tmp_path / "data.json").write_text('{"dataset": "digits"}')
    with pytest.raises(ConfigError, match="is not empty"):
        ensure_new_run_dir(tmp_path, "x", resume="auto", hydra_files=hydra)  # summary.json is still the user's
    (tmp_path / "summary.json").write_text('{"status": "failed"}')
    ensure_new_run_dir(tmp_path, "x", resume="auto", hydra_files=hydra)


# --- a run stopped after its last checkpoint ---------------------------------------------------------------------


class Killed(BaseException):
    """Stands for SIGKILL: nothing in dltrain handles it."""


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Path, dict]:
    """The run as it ends when nothing stops it."""
    run = tmp_path_factory.mktemp("straight") / "run"
    return run, train(compose([*SMALL, "trainer.max_epochs=3"]), run_dir=run)


def _stop_after_last_checkpoint(run: Path, how: str, monkeypatch) -> None:
    """Train ``run`` to its end and stop it after its last checkpoint, before its results:
    ``kill`` leaves the files a SIGKILL would (no summary.json, no curves.png), ``test`` is a
    SIGTERM during the test evaluation (summary.json says interrupted), ``curves`` a SIGKILL
    after the final summary.json (no curves.png)."""
    with monkeypatch.context() as patch:
        if how == "kill":
            fit = Trainer.fit

            def fit_then_die(self, *args):
                fit(self, *args)
                raise Killed

            patch.setattr(Trainer, "fit", fit_then_die)
            with pytest.raises(Killed):
                train(compose([*SMALL, "trainer.max_epochs=3"]), run_dir=run)
            for name in ("summary.json", "curves.png"):  # written by the finally blocks a SIGKILL skips
                (run / name).unlink(missing_ok=True)
        elif how == "curves":  # killed after the final summary.json, before curves.png is drawn
            train(compose([*SMALL, "trainer.max_epochs=3"]), run_dir=run)
            (run / "curves.png").unlink()
        else:
            def stopped(*args):
                raise Interrupted(signal.SIGTERM, "interrupted by SIGTERM while testing")

            patch.setattr("dltrain.training.run._test", stopped)
            with pytest.raises(Interrupted):
                train(compose([*SMALL, "trainer.max_epochs=3"]), run_dir=run)
            assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 3
    assert not (run / ("curves.png" if how == "curves" else "predictions.csv")).exists()


@pytest.mark.pictures
@pytest.mark.parametrize("how", ["kill", "test", "curves"])
def test_resume_auto_in_place_writes_the_results_a_stop_after_the_last_checkpoint_lost(
        tmp_path, straight, how, monkeypatch):
    run = tmp_path / "job"
    _stop_after_last_checkpoint(run, how, monkeypatch)
    last = (run / "checkpoints" / "last.pt").read_bytes()
    summary = train(compose([*SMALL, "trainer.max_epochs=3", "resume=auto"]), run_dir=run)
    written = json.loads((run / "summary.json").read_text())
    assert written["status"] == summary["status"] == "completed" and written["epochs_run"] == 3
    assert written["test"] == straight[1]["test"] and written["test_weights"] == straight[1]["test_weights"]
    assert (run / "predictions.csv").read_bytes() == (straight[0] / "predictions.csv").read_bytes()
    assert (run / "curves.png").is_file()
    assert (run / "checkpoints" / "last.pt").read_bytes() == last  # nothing trained, nothing saved
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 3


def test_resume_auto_into_a_new_directory_writes_the_lost_results_there(tmp_path, straight, monkeypatch):
    monkeypatch.chdir(tmp_path)  # resume=auto looks under ./outputs
    _stop_after_last_checkpoint(tmp_path / "outputs" / "killed", "kill", monkeypatch)
    again = tmp_path / "outputs" / "again"
    summary = train(compose([*SMALL, "trainer.max_epochs=3", "resume=auto"]), run_dir=again)
    assert summary["status"] == "completed" and summary["resumed_from"].endswith("killed/checkpoints/last.pt")
    assert json.loads((again / "summary.json").read_text())["test"] == straight[1]["test"]
    assert (again / "predictions.csv").read_bytes() == (straight[0] / "predictions.csv").read_bytes()


# --- train_seconds ----------------------------------------------------------------------------------------------


def test_train_seconds_counts_every_segment_of_a_resumed_run(tmp_path):
    train(compose([*SMALL, "trainer.max_epochs=1"]), run_dir=tmp_path / "first")
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    assert state["train_seconds"] > 0
    state["train_seconds"] = 1000.0  # a long first segment
    save_checkpoint(state, last)
    summary = train(compose([*SMALL, "trainer.max_epochs=2", f"resume={last}"]), run_dir=tmp_path / "second")
    assert 1000.0 < summary["train_seconds"] <= 1000.0 + summary["segment_seconds"] + 0.01
    assert json.loads((tmp_path / "second" / "summary.json").read_text())["train_seconds"] == summary["train_seconds"]
    assert load_checkpoint(tmp_path / "second" / "checkpoints" / "last.pt")["train_seconds"] > 1000.0


def test_a_checkpoint_without_train_seconds_counts_its_epochs(tmp_path):
    train(compose([*SMALL, "trainer.max_epochs=1"]), run_dir=tmp_path / "first")
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    del state["train_seconds"]  # written before checkpoints kept it
    state["history"][0]["epoch_seconds"] = 500.0
    save_checkpoint(state, last)
    summary = train(compose([*SMALL, "trainer.max_epochs=2", f"resume={last}"]), run_dir=tmp_path / "second")
    assert 500.0 < summary["train_seconds"] <= 500.0 + summary["segment_seconds"] + 0.01

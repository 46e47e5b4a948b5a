"""logger=wandb: an offline W&B run in the run directory, read back with wandb's own reader.

Nothing here reaches the network: the logger's default mode is offline, and every test runs
with name lookups refused (W&B's own telemetry would look up its server first).
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dltrain.errors import ConfigError
from dltrain.loggers import build_logger
from tests.network import lookups

wandb = pytest.importorskip("wandb")

FAST = ["data=xor", "data.copies=20", "device=cpu", "trainer.diagnostics=false", "logger=wandb"]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """W&B's output silent (its folders are in a temporary one: conftest's
    ``tracking_tools_kept_in``), and any name lookup refused and recorded (the list this yields)."""
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the logger itself must keep W&B offline
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    looked_up: list[Any] = []

    def refuse(host: Any, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(host)
        raise socket.gaierror(f"no network in the tests: {host}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield looked_up
    assert not looked_up, f"W&B looked up {looked_up}"


def records(run_dir: Path) -> list[list[dict[str, Any]]]:
    """The records of each W&B run file under ``run_dir/wandb/``, oldest first, as W&B's own
    reader prints them (``wandb leet inspect --json``: the program it runs, called directly,
    saves the second the CLI takes to import)."""
    from wandb.util import get_core_path

    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(run_dir), "WANDB_MODE": "offline", "WANDB_ERROR_REPORTING": "false"}
    runs = []
    for file in files:
        out = subprocess.run([get_core_path(), "leet", "inspect", "--json", "--no-observability", "--run-file",
                              str(file), str(file.parent.parent)],
                             capture_output=True, text=True, check=True, env=env, timeout=120).stdout
        runs.append([json.loads(line) for line in out.splitlines() if line.strip()])
    return runs


def of_type(run: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [record[kind] for record in run if record["type"] == kind]


def history(run: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each logged step's metrics, W&B's own keys (``_runtime``, ...) left out."""
    return {int(h["step"]["num"]): {k: v for k, v in h["item"].items() if not k.startswith("_")}
            for h in of_type(run, "history")}


def summary(run: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for update in of_type(run, "summary"):
        merged.update(update["update"])
    return merged


def metrics_csv(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_an_offline_run_holds_the_file_wandb_sync_uploads_with_every_epoch(tmp_path):
    """A whole run: the run directory's wandb/ holds one offline run whose file has the resolved
    config, every epoch's metrics at step = epoch (the values of metrics.csv), the summary and
    the report files; wandb.json names the W&B run a resume continues."""
    from dltrain import compose, train

    result = train(compose([*FAST, "trainer.max_epochs=3", "logger=[csv,wandb]"]), run_dir=tmp_path / "run")
    run_dir = tmp_path / "run"
    (run,) = records(run_dir)
    (start,) = of_type(run, "run")
    config = {k: v for k, v in start["config"]["update"].items() if k != "_wandb"}
    assert config["data"]["name"] == "xor" and config["trainer"]["max_epochs"] == 3  # nested, resolved
    assert start["project"] == "dltrain" and start["display_name"] == "run" and "run_group" not in start
    assert json.loads((run_dir / "wandb.json").read_text()) == {"id": start["run_id"], "step": 3}

    rows = metrics_csv(run_dir)
    logged = history(run)
    assert sorted(logged) == [1, 2, 3] == [int(row["epoch"]) for row in rows]
    for row in rows:
        assert logged[int(row["epoch"])]["train_loss"] == pytest.approx(float(row["train_loss"]))
        assert logged[int(row["epoch"])]["val_loss"] == pytest.approx(float(row["val_loss"]))

    end = summary(run)
    assert end["status"] == result["status"] == "completed" and end["best_value"] == pytest.approx(result["best_value"])
    assert end["test"] == pytest.approx(result["test"])
    saved = {f["path"] for files in of_type(run, "files") for f in files["files"]}
    assert {"summary.json", "model_summary.txt", "data.json"} <= saved and "wandb.json" not in saved
    (folder,) = (run_dir / "wandb").glob("offline-run-*")
    assert json.loads((folder / "files" / "summary.json").read_text())["status"] == "completed"
    assert [end.get("exit_code", 0) for end in of_type(run, "exit")] == [0]  # W&B shows it finished
    assert "WANDB_SERVICE" not in os.environ  # W&B's service process was stopped with the run


def test_a_resumed_run_continues_its_wandb_run_without_logging_its_history_twice(tmp_path):
    """Resumed into a new run directory, the run logs to the W&B run of the checkpoint's
    (same id, resume allowed) from the first epoch it trains: the replayed ones are there."""
    from dltrain import compose, train

    train(compose([*FAST, "trainer.max_epochs=2"]), run_dir=tmp_path / "a")
    train(compose([*FAST, "trainer.max_epochs=4", f"resume={tmp_path / 'a' / 'checkpoints' / 'last.pt'}"]),
          run_dir=tmp_path / "b")
    (first,), (second,) = records(tmp_path / "a"), records(tmp_path / "b")
    (started,), (continued,) = of_type(first, "run"), of_type(second, "run")
    assert continued["run_id"] == started["run_id"] and continued["resume"]
    assert sorted(history(first)) == [1, 2] and sorted(history(second)) == [3, 4]
    assert json.loads((tmp_path / "b" / "wandb.json").read_text()) == {"id": started["run_id"], "step": 4}
    # the checkpoint's run is left as it was
    assert json.loads((tmp_path / "a" / "wandb.json").read_text())["step"] == 2


def test_a_resume_of_an_earlier_epoch_forks_a_new_wandb_run(tmp_path, caplog):
    """The W&B run has epochs past the resumed checkpoint's (epoch-0002.pt of a 4-epoch run):
    a new W&B run, whose notes name the one it forks from, with the whole history in it."""
    import logging

    from dltrain import compose, train

    train(compose([*FAST, "trainer.max_epochs=4", "trainer.checkpoint.every_n_epochs=2"]), run_dir=tmp_path / "a")
    with caplog.at_level(logging.INFO, logger="dltrain"):
        train(compose([*FAST, "trainer.max_epochs=3", f"resume={tmp_path / 'a' / 'checkpoints' / 'epoch-0002.pt'}"]),
              run_dir=tmp_path / "b")
    (first,), (second,) = records(tmp_path / "a"), records(tmp_path / "b")
    (started,), (forked,) = of_type(first, "run"), of_type(second, "run")
    assert forked["run_id"] != started["run_id"]
    assert forked["notes"] == f"forked from W&B run {started['run_id']} at epoch 2"
    assert sorted(history(second)) == [1, 2, 3]
    assert json.loads((tmp_path / "b" / "wandb.json").read_text()) == {"id": forked["run_id"], "step": 3}
    assert [m for m in caplog.messages if "past the checkpoint's" in m] == [
        f"logger=wandb: W&B run {started['run_id']} has epochs up to 4, past the checkpoint's 2: a new W&B run, "
        "noted as forked from it"]

def test_a_sweeps_jobs_share_a_group_and_a_single_run_has_none(tmp_path, monkeypatch):
    """The group is the sweep's folder however deep its jobs sit (``hydra.sweep.subdir=lr/${hydra.job.num}``)."""
    import dltrain.config.hydra_job

    sweep = tmp_path / "multirun" / "2026-01-02" / "10-11-12"
    jobs = (sweep / "lr" / "0", sweep / "lr" / "1")
    monkeypatch.setattr(dltrain.config.hydra_job, "sweep_dir", lambda: sweep)  # as in a job of this sweep
    for run_dir in jobs:
        logger = build_logger("wandb", run_dir)
        logger.start({}, "seed: 0\n")
        logger.finish({"status": "completed"})
    monkeypatch.setattr(dltrain.config.hydra_job, "sweep_dir", lambda: None)
    single = build_logger("wandb", tmp_path / "single")
    single.start({}, "seed: 0\n")
    single.finish({"status": "completed"})
    groups = [of_type(records(run_dir)[0], "run")[0].get("run_group") for run_dir in jobs]
    assert groups == ["2026-01-02/10-11-12"] * 2
    assert "run_group" not in of_type(records(tmp_path / "single")[0], "run")[0]


def test_wandbs_own_files_go_in_the_tests_temporary_folder_not_the_home(tmp_path, tracking_tools_kept_in):
    """W&B's debug log of a run lands in its cache folder (wandb/logs/): the tests' (conftest), never ~/.cache/wandb."""
    logger = build_logger("wandb", tmp_path)
    logger.start({}, "seed: 0\n")
    logger.finish({"status": "completed"})
    cache = Path(os.environ["WANDB_CACHE_DIR"])
    assert cache.is_relative_to(tracking_tools_kept_in) and list(cache.glob("wandb/logs/core-debug-*.log"))

def test_mode_disabled_writes_nothing(tmp_path):
    logger = build_logger("wandb", tmp_path, mode="disabled")
    logger.start({}, "seed: 0\n")
    logger.log_epoch({"epoch": 1, "train_loss": 1.0})
    logger.finish({"status": "completed"})
    assert not list(tmp_path.iterdir())


def test_without_the_wandb_package_logger_wandb_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # the import fails as an uninstalled package's does
    with pytest.raises(ConfigError) as err:
        build_logger("wandb", tmp_path)
    message = str(err.value)
    assert "logger=wandb" in message and "pip install 'dltrain[wandb]'" in message and "\n" not in message
    assert not list(tmp_path.iterdir())


def test_a_wandb_that_cannot_start_is_a_warning_and_the_logger_is_off(tmp_path, monkeypatch, caplog):
    """Online without an account (and a server that is not there): one warning, nothing logged,
    no service process left, and the run's other loggers go on."""
    import logging

    from dltrain.loggers import RunLogger

    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # never the real server, had a key been found
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key
    logger = build_logger("wandb", tmp_path / "run", mode="online")
    others = build_logger("csv", tmp_path / "run")
    run_logger = RunLogger(logger, others)
    with caplog.at_level(logging.WARNING, logger="dltrain"):
        run_logger.start({}, "seed: 0\n")
        run_logger.log_epoch({"epoch": 1, "train_loss": 1.0})
        run_logger.finish({"status": "completed"})
    (line,) = caplog.messages
    assert line.startswith("warning: the wandb logger is off for this run: W&B could not start its run (mode=online)")
    assert "logger.wandb.mode=offline" in line and "\n" not in line
    assert not (tmp_path / "run" / "wandb.json").exists() and run_logger.on
    assert "WANDB_SERVICE" not in os.environ  # set while W&B's service process runs


@pytest.mark.parametrize(("options", "env", "why"), [
    ({"dir": "/proc/nope"}, {}, "[Errno 2] No such file or directory: '/proc/nope'"),
    ({}, {"WANDB_MODE": "bogus"}, "setting mode='bogus' (or WANDB_MODE): Input should be 'online', 'offline',"),
])
def test_a_wandb_folder_or_setting_it_cannot_use_is_a_warning_and_the_run_goes_on(tmp_path, monkeypatch, caplog,
                                                                                  options, env, why):
    import logging

    from dltrain.loggers import RunLogger

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    run_logger = RunLogger(build_logger("wandb", tmp_path / "run", **options), build_logger("csv", tmp_path / "run"))
    with caplog.at_level(logging.WARNING, logger="dltrain"):
        run_logger.start({}, "seed: 0\n")
        run_logger.log_epoch({"epoch": 1, "train_loss": 1.0})
        run_logger.finish({"status": "completed"})
    (line,) = caplog.messages
    assert line.startswith("warning: the wandb logger is off for this run: W&B could not start its run "
                           f"(mode=offline): {why}")
    assert "\n" not in line and "needs no account" not in line
    assert run_logger.on and "WANDB_SERVICE" not in os.environ

def test_an_offline_run_reaches_for_no_network_even_as_the_process_exits(tmp_path):
    """W&B's own telemetry would look up its server (at the latest when the interpreter exits)
    unless the process's W&B settings are offline too: a child process watches every lookup."""
    script = """
from dltrain.loggers import build_logger
logger = build_logger("wandb", sys.argv[1])
logger.start({}, "seed: 0\\n")
logger.log_epoch({"epoch": 1, "train_loss": 0.5})
logger.finish({"status": "completed"})
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_SILENT="true", WANDB_CACHE_DIR=str(tmp_path / "cache"), WANDB_CONFIG_DIR=str(tmp_path / "config"),
               WANDB_DATA_DIR=str(tmp_path / "data"))
    done, looked_up = lookups(script, [str(tmp_path / "run")], env)
    assert done.returncode == 0, done.stderr
    assert looked_up == []
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))


def test_the_files_a_tracking_logger_saves_leave_the_folders_records_and_large_files(tmp_path, monkeypatch, caplog):
    import logging

    from dltrain.loggers import artifacts

    for name in ("summary.json", "curves.png", "mlflow.json", "wandb.json", ".hidden", "checkpoints/last.pt",
                 "wandb/offline-run-x/run-x.wandb", "predictions.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x" * (100 if name == "predictions.csv" else 10))
    monkeypatch.setattr(artifacts, "MAX_ARTIFACT_BYTES", 50)
    with caplog.at_level(logging.INFO, logger="dltrain"):
        saved = artifacts.artifact_files(tmp_path, "wandb")
    assert [path.name for path in saved] == ["curves.png", "summary.json"]
    assert caplog.messages == ["logger=wandb: predictions.csv is over 0 MB: left out (the run directory has it)"]


@pytest.mark.slow
def test_the_jobs_of_a_dltrain_sweep_share_a_group_named_after_its_folder(tmp_path):
    """The real command line: `dltrain -m ... logger=wandb`, offline, one W&B run per job."""
    from tests.conftest import run_cli

    # The environment the autouse fixture set: W&B's folders in a temporary one, no WANDB_MODE.
    proc = run_cli(["-m", *FAST, "trainer.max_epochs=2", "optim.lr=0.01,0.1", "hydra.sweep.dir=sweeps/lr"], tmp_path,
                   timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = [tmp_path / "sweeps" / "lr" / str(job) for job in (0, 1)]
    starts = [of_type(records(job)[0], "run")[0] for job in jobs]
    assert [start["run_group"] for start in starts] == ["sweeps/lr"] * 2
    assert [start["display_name"] for start in starts] == ["0", "1"] and starts[0]["run_id"] != starts[1]["run_id"]
    assert [start["config"]["update"]["optim"]["lr"] for start in starts] == [0.01, 0.1]
    for job in jobs:
        assert sorted(history(records(job)[0])) == [1, 2]


def test_a_wandb_run_leaves_the_random_states_as_they_were(tmp_path):
    """What a run computes does not depend on its logger: W&B draws its run ids elsewhere."""
    import random

    import numpy as np
    import torch

    def states() -> tuple[Any, ...]:
        return random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state().tolist()

    before = states()
    logger = build_logger("wandb", tmp_path)
    logger.start({}, "seed: 0\n")
    logger.log_epoch({"epoch": 1, "train_loss": 1.0})
    logger.finish({"status": "completed"})
    assert states() == before and list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))

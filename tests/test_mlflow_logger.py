"""logger=mlflow against a real local MLflow store (a folder under the test's tmp_path), read
back with MLflow's own client; several loggers at once; runs stored with one logger."""

from __future__ import annotations

import csv
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from dltrain import train
from dltrain.errors import ConfigError
from dltrain.inference.restore import load_model
from dltrain.loggers import Logger, LoggerUnavailable, RunLogger
from dltrain.loggers.mlflow import TRUNCATED, _key, _param_text
from tests.conftest import run_cli

mlflow = pytest.importorskip("mlflow")  # an optional extra: pip install 'dltrain[mlflow]'

QUICK = ["data=xor", "device=cpu"]


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    """A local MLflow store's URI, and MLflow's client of it."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the test's own client reads the file store too
    uri = (tmp_path / "mlruns").as_uri()
    return uri, MlflowClient(tracking_uri=uri)


def runs(client: Any) -> list[Any]:
    experiment = client.get_experiment_by_name("dltrain")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def history(client: Any, run_id: str, key: str) -> dict[int, float]:
    """``{step: value}`` of a metric of an MLflow run, each step once."""
    found = [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
    assert len({step for step, _ in found}) == len(found)  # no epoch logged twice
    return dict(sorted(found))


def metrics_csv(run_dir: Path, key: str) -> dict[int, float]:
    with (run_dir / "metrics.csv").open() as f:
        return {int(row["epoch"]): float(row[key]) for row in csv.DictReader(f)}


@pytest.mark.pictures  # curves.png is one of the artifacts
def test_a_run_and_tensorboard_beside_it(compose, store, tmp_path):
    uri, client = store
    cfg = compose([*QUICK, "trainer.max_epochs=3", "optim.lr=0.02", "logger=[tensorboard,mlflow]",
                   f"logger.mlflow.tracking_uri={uri}", "+logger.mlflow.tags.team=vision"])
    run_dir = tmp_path / "run"
    assert train(cfg, run_dir=run_dir)["status"] == "completed"
    [run] = runs(client)
    record = json.loads((run_dir / "mlflow.json").read_text())
    assert record["run_id"] == run.info.run_id and record["tracking_uri"] == uri
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    params = run.data.params
    assert params["optim.lr"] == "0.02" and params["optim.name"] == "adam" and params["trainer.max_epochs"] == "3"
    assert params["logger.mlflow.experiment_name"] == "dltrain" and params["model.hidden"] == json.dumps(
        list(cfg.model.hidden))
    assert history(client, run.info.run_id, "train_loss") == pytest.approx(metrics_csv(run_dir, "train_loss"), rel=1e-5)
    assert list(history(client, run.info.run_id, "val_accuracy")) == [1, 2, 3]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert run.data.metrics["test_accuracy"] == pytest.approx(summary["test"]["accuracy"])
    tags = run.data.tags
    assert tags["dltrain.status"] == "completed" and tags["dltrain.data"] == "xor" and tags["dltrain.model"] == "mlp"
    assert tags["team"] == "vision" and tags["dltrain.run_dir"] == str(run_dir.resolve())
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "summary.json", "curves.png", "model_summary.txt", "metrics.csv", "predictions.csv",
            "confusion_matrix.png", "worst_predictions.csv"} <= artifacts
    assert "mlflow.json" not in artifacts and "checkpoints" not in artifacts
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))  # the other logger wrote too


def test_a_resumed_run_continues_its_mlflow_run(compose, store, tmp_path):
    uri, client = store
    first, second = tmp_path / "first", tmp_path / "second"
    overrides = [*QUICK, "logger=mlflow", f"logger.mlflow.tracking_uri={uri}", "trainer.early_stopping.enabled=false"]
    train(compose([*overrides, "trainer.max_epochs=2"]), run_dir=first)
    [run] = runs(client)
    assert run.info.status == "FINISHED"
    summary = train(compose([*overrides, "trainer.max_epochs=4", f"resume={first}/checkpoints/last.pt"]),
                    run_dir=second)
    assert summary["status"] == "completed"
    [run] = runs(client)  # still one MLflow run
    assert json.loads((second / "mlflow.json").read_text())["run_id"] == run.info.run_id
    # epochs 1-2 are replayed into the new metrics.csv, and sent to MLflow once
    logged = history(client, run.info.run_id, "train_loss")
    assert list(logged) == [1, 2, 3, 4] and logged == pytest.approx(metrics_csv(second, "train_loss"), rel=1e-5)
    assert run.info.status == "FINISHED" and run.data.params["trainer.max_epochs"] == "2"  # params never change


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_server_is_one_warning_and_the_run_goes_on(compose, tmp_path, caplog):
    port = _closed_port()
    cfg = compose([*QUICK, "trainer.fast_dev_run=true", "logger=[csv,mlflow]",
                   f"logger.mlflow.tracking_uri=http://127.0.0.1:{port}"])
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="dltrain"):
        summary = train(cfg, run_dir=tmp_path / "run")
    assert summary["status"] == "completed" and time.perf_counter() - start < 60
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0] == (f"warning: the mlflow logger is off for this run: http://127.0.0.1:{port}: cannot reach it "
                           "(Connection refused)")
    assert not (tmp_path / "run" / "mlflow.json").exists()


def test_a_server_that_never_answers_is_one_short_line_for_a_run_and_a_sweep(compose, tmp_path, monkeypatch, caplog,
                                                                             capsys):
    """A socket that accepts but never answers (the user's MLflow settings win over dltrain's:
    1 s, no retry): the run's warning and the sweep's say so in dltrain's words, not urllib3's."""
    from dltrain.loggers import sweep_started

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        cfg = compose([*QUICK, "trainer.fast_dev_run=true", "logger=[csv,mlflow]", f"logger.mlflow.tracking_uri={uri}"])
        with caplog.at_level(logging.WARNING, logger="dltrain"):
            assert train(cfg, run_dir=tmp_path / "run")["status"] == "completed"
        sweep_started(cfg.logger, tmp_path)
    assert caplog.messages == [f"warning: the mlflow logger is off for this run: {uri}: no answer in 1 s (1 try)"]
    assert capsys.readouterr().err.splitlines() == [
        f"warning: the mlflow logger could not start the sweep: {uri}: no answer in 1 s (1 try)"]
    assert not (tmp_path / "mlflow.json").exists()

def test_a_sweeps_jobs_are_children_of_its_parent_run(compose, store, tmp_path, monkeypatch):
    """In-process: the sweep's start (which creates the parent run), four jobs, its end."""
    import dltrain.config.hydra_job
    from dltrain.loggers import sweep_ended, sweep_started

    uri, client = store
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    monkeypatch.setattr(dltrain.config.hydra_job, "sweep_dir", lambda: sweep)  # as in a job of this sweep
    configs = [compose([*QUICK, "trainer.fast_dev_run=true", "logger=mlflow", f"logger.mlflow.tracking_uri={uri}",
                        f"optim.lr={lr}"]) for lr in (0.1, 0.01, 0.001, 0.0001)]
    sweep_started(configs[0].logger, sweep)
    for job, cfg in enumerate(configs):
        train(cfg, run_dir=sweep / str(job))
    sweep_ended(configs[0].logger, sweep, failed=False)
    parent_id = json.loads((sweep / "mlflow.json").read_text())["parent_run_id"]
    children = [r for r in runs(client) if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert sorted(r.info.run_name for r in children) == ["0", "1", "2", "3"]
    assert sorted(r.data.params["optim.lr"] for r in children) == ["0.0001", "0.001", "0.01", "0.1"]
    assert client.get_run(parent_id).info.status == "FINISHED" and len(runs(client)) == 5


@pytest.mark.slow  # the real command line: a subprocess, four jobs and the sweep's summary
def test_a_sweep_is_one_parent_run_with_a_child_per_job(store, tmp_path):
    uri, client = store
    proc = run_cli(["-m", *QUICK, "trainer.fast_dev_run=true", "logger=mlflow", f"logger.mlflow.tracking_uri={uri}",
                    "optim.lr=0.1,0.01", "seed=0,1", "hydra.sweep.dir=sweep"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    parent_id = json.loads((tmp_path / "sweep" / "mlflow.json").read_text())["parent_run_id"]
    found = runs(client)
    [parent] = [r for r in found if r.info.run_id == parent_id]
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert len(found) == 5 and len(children) == 4 and parent.info.status == "FINISHED"
    assert sorted(r.info.run_name for r in children) == ["0", "1", "2", "3"]
    assert sorted(r.data.params["optim.lr"] for r in children) == ["0.01", "0.01", "0.1", "0.1"]
    assert parent.data.tags["dltrain.sweep_dir"] == str((tmp_path / "sweep").resolve())


# --- several loggers, old runs, config errors ---------------------------------------------------------------------

def _old_shape(path: Path, logger: dict[str, Any]) -> None:
    """Rewrite a checkpoint's stored config as runs written when the group held one logger did."""
    state = torch.load(path, weights_only=True)
    state["config"]["logger"] = logger
    torch.save(state, path)


def test_a_run_stored_with_one_logger_resumes_and_restores(compose, tmp_path):
    first = tmp_path / "first"
    train(compose([*QUICK, "trainer.max_epochs=1", "trainer.early_stopping.enabled=false"]), run_dir=first)
    for name in ("last.pt", "best.pt"):
        _old_shape(first / "checkpoints" / name, {"name": "tensorboard", "subdir": "tb", "flush_secs": 30})
    assert load_model(first / "checkpoints" / "best.pt").cfg.logger.tensorboard.subdir == "tb"  # eval and predict
    summary = train(compose([*QUICK, "trainer.max_epochs=2", f"resume={first}/checkpoints/last.pt"]),
                    run_dir=tmp_path / "second")
    assert summary["status"] == "completed" and summary["epochs_run"] == 2
    assert list((tmp_path / "second" / "tb").glob("events.out.tfevents.*"))  # the checkpoint's logger, carried on


class Recording(Logger):
    def __init__(self, fail: str = "") -> None:
        self.fail, self.rows, self.finished = fail, [], 0

    def start(self, hparams, config_yaml):
        if self.fail == "start":
            raise LoggerUnavailable("http://127.0.0.1:1: connection refused")

    def log_epoch(self, row):
        if self.fail == "log_epoch":
            raise OSError("disk gone")
        self.rows.append(row["epoch"])

    def finish(self, summary):
        self.finished += 1


def test_each_logger_fails_alone(caplog):
    ok, unreachable, broken = Recording(), Recording("start"), Recording("log_epoch")
    run_logger = RunLogger(ok, unreachable, broken)
    with caplog.at_level(logging.WARNING, logger="dltrain"):
        run_logger.start({}, "")
        for epoch in (1, 2):
            run_logger.log_epoch({"epoch": epoch})
        run_logger.finish({"status": "completed"})
    assert ok.rows == [1, 2] and unreachable.rows == [] and broken.rows == [] and run_logger.on
    assert caplog.messages == [
        "warning: the Recording logger is off for this run: http://127.0.0.1:1: connection refused",
        "warning: the Recording logger failed and is off for the rest of the run: disk gone"]
    assert (ok.finished, unreachable.finished, broken.finished) == (1, 1, 1)


@pytest.mark.parametrize(("overrides", "message"), [
    (["logger=mlflow", "logger.tracking_uri=http://127.0.0.1:5000"],
     "logger.tracking_uri is not a config key: did you mean logger.mlflow.tracking_uri=http://127.0.0.1:5000?"),
    (["logger=[tensorboard,mlflow]", "logger.subdir=tb"],
     "logger.subdir is not a config key: did you mean logger.tensorboard.subdir=tb?"),
    (["logger.tracking_uri=http://127.0.0.1:5000"],
     "logger.tracking_uri is not a config key: choose logger=mlflow (or logger=[csv,mlflow] for both) and set "
     "logger.mlflow.tracking_uri."),
    (["logger=[tensorboard,mlfow]"], "logger=mlfow is not a known option: did you mean logger=mlflow?"),
    (["logger.mlflow.tracking_uri=x"],
     "logger.mlflow is not a config key: choose logger=mlflow (or logger=[csv,mlflow] "
     "for both) and set logger.mlflow.tracking_uri."),
    (["logger=mlflow", "logger.mlflow.tags.team=vision"], "logger.mlflow.tags.team is not a config key yet: "
     "logger.mlflow.tags takes keys of your own with a plus, +logger.mlflow.tags.team=vision."),
])
def test_a_wrong_logger_key_or_name_is_one_line(compose, overrides, message):
    with pytest.raises(ConfigError) as err:
        compose(overrides)
    assert str(err.value).startswith(message) and "\n" not in str(err.value) and not str(err.value).endswith("?.")


def test_a_param_longer_than_mlflow_takes_is_cut_saying_so_and_a_key_it_refuses_is_renamed():
    text = _param_text(["x" * 50] * 200, 6000)
    assert len(text) == 6000 and text.endswith(TRUNCATED)
    assert _param_text(None, 6000) == "null" and _param_text("adam", 6000) == "adam"
    assert _key("logger.mlflow.tags.a:b+c") == "logger.mlflow.tags.a_b_c" and _key("model.hidden") == "model.hidden"


@pytest.mark.slow  # the real command line in a child process: ~9 s
def test_a_run_with_the_local_store_reaches_for_no_network(tmp_path):
    """MLflow's usage telemetry (off by itself only where it sees a CI or a test) would look up
    its server and write under ~/.config: the real command line, every lookup watched."""
    import os

    from tests.network import DLTRAIN, lookups

    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_CURRENT_TEST", "CI", "HYDRA_FULL_ERROR") and not k.startswith("MLFLOW_")}
    env["HOME"] = str(tmp_path / "home")
    done, looked_up = lookups(DLTRAIN, [*QUICK, "data.copies=20", "trainer.max_epochs=1", "trainer.diagnostics=false",
                                        "logger=mlflow", "hydra.run.dir=run"], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert looked_up == []
    assert (tmp_path / "mlruns").is_dir() and not (tmp_path / "home" / ".config" / "mlflow").exists()


def test_a_second_resume_of_one_checkpoint_forks_a_new_mlflow_run(compose, store, tmp_path, caplog):
    """The first resume continued the checkpoint's MLflow run past the checkpoint's epoch: the
    second one starts a new run tagged with the run it forks from, its whole history in it."""
    uri, client = store
    first = tmp_path / "first"
    overrides = [*QUICK, "logger=mlflow", f"logger.mlflow.tracking_uri={uri}", "trainer.early_stopping.enabled=false"]
    train(compose([*overrides, "trainer.max_epochs=2"]), run_dir=first)
    resume = f"resume={first}/checkpoints/last.pt"
    train(compose([*overrides, "trainer.max_epochs=4", resume]), run_dir=tmp_path / "second")
    with caplog.at_level(logging.INFO, logger="dltrain"):
        train(compose([*overrides, "trainer.max_epochs=3", resume]), run_dir=tmp_path / "third")
    [original] = [run for run in runs(client) if "dltrain.forked_from" not in run.data.tags]
    [fork] = [run for run in runs(client) if "dltrain.forked_from" in run.data.tags]
    assert fork.data.tags["dltrain.forked_from"] == original.info.run_id
    assert list(history(client, original.info.run_id, "train_loss")) == [1, 2, 3, 4]  # the first resume's, kept
    logged = history(client, fork.info.run_id, "train_loss")
    assert list(logged) == [1, 2, 3]
    assert logged == pytest.approx(metrics_csv(tmp_path / "third", "train_loss"), rel=1e-5)
    record = json.loads((tmp_path / "third" / "mlflow.json").read_text())
    assert record["run_id"] == fork.info.run_id and record["step"] == 3
    [line] = [m for m in caplog.messages if "past the checkpoint's" in m]
    assert line == (f"logger=mlflow: MLflow run {original.info.run_id} has epochs up to 4, past the checkpoint's 2: "
                    f"a new MLflow run, tagged dltrain.forked_from={original.info.run_id}")


def test_a_resume_takes_a_network_destination_only_from_its_own_command_line(compose, caplog):
    """A checkpoint's tracking server or W&B online mode is not where a resume logs unless its
    command line names it: the local store / offline instead, a line each."""
    from omegaconf import OmegaConf

    from dltrain.training.resume import resumed_config

    stored = ["logger=[mlflow,wandb]", "logger.mlflow.tracking_uri=http://tracking.example:5000",
              "logger.wandb.mode=online"]
    saved = OmegaConf.to_container(compose([*QUICK, *stored]), resolve=True)
    with caplog.at_level(logging.WARNING, logger="dltrain"):
        merged = resumed_config(compose(QUICK), saved, set())
    assert merged.logger.mlflow.tracking_uri is None and merged.logger.wandb.mode == "offline"
    assert caplog.messages == [
        "warning: the checkpoint's logger.mlflow.tracking_uri=http://tracking.example:5000 is not used (a resume logs "
        "over the network only where its command line names the destination): the local store ./mlruns instead.",
        "warning: the checkpoint's logger.wandb.mode=online is not used (a resume logs over the network only where "
        "its command line names the destination): logger.wandb.mode=offline instead."]
    named = resumed_config(compose([*QUICK, *stored]), saved, {"logger", "logger.mlflow.tracking_uri"})
    assert named.logger.mlflow.tracking_uri == "http://tracking.example:5000" and named.logger.wandb.mode == "online"
    for local in ("sqlite:///mlflow.db", "file:///tmp/mlruns", "mlruns", "C:\\runs\\mlruns"):
        saved["logger"]["mlflow"]["tracking_uri"] = local
        assert resumed_config(compose(QUICK), saved, set()).logger.mlflow.tracking_uri == local


def test_the_near_miss_of_a_logger_key_prints_as_the_readme_quotes_it(tmp_path):
    """The real command line's line ends with the question (no "?."), as README's Loggers quotes it."""
    import re

    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"`(dltrain logger=mlflow logger\.tracking_uri=\S+)` stops with\n`([^`]+)`", readme)
    command, quoted = found.groups()
    proc = run_cli(command.split()[1:], tmp_path)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [quoted]
    assert quoted.endswith("did you mean logger.mlflow.tracking_uri=http://127.0.0.1:5000?")

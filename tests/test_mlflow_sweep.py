"""A sweep's MLflow parent run through dltrain's Hydra callback (``SweepReport``), in-process:
its start creates the parent, its end summarises the sweep and gives the parent the summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dltrain import compose, train
from tests.test_multirun import _hydra_config

mlflow = pytest.importorskip("mlflow")

QUICK = ["data=xor", "device=cpu", "trainer.fast_dev_run=true"]


def _job(sweep: Path, num: int, overrides: list[str], common: list[str]) -> None:
    """A job of the sweep run in-process, with the .hydra files Hydra writes for it."""
    job_dir = sweep / str(num)
    train(compose([*common, *overrides]), run_dir=job_dir)
    (job_dir / ".hydra").mkdir()
    (job_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": num}}}))
    (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))


def test_the_sweep_callback_opens_and_closes_the_parent_run_with_the_sweeps_summary(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    import dltrain.config.hydra_job
    from dltrain.cli.app import SweepReport

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the test's own client reads the file store too
    uri = (tmp_path / "mlruns").as_uri()
    common = [*QUICK, "logger=mlflow", f"logger.mlflow.tracking_uri={uri}"]
    sweep = tmp_path / "sweep"
    cfg = _hydra_config([*common, f"hydra.sweep.dir={sweep}"])
    callback = SweepReport()
    callback.on_multirun_start(cfg)
    monkeypatch.setattr(dltrain.config.hydra_job, "sweep_dir", lambda: sweep)  # as in a job of this sweep
    for num, lr in enumerate((0.1, 0.01)):
        _job(sweep, num, [f"optim.lr={lr}"], common)
    callback.on_multirun_end(cfg)

    client = MlflowClient(tracking_uri=uri)
    parent_id = json.loads((sweep / "mlflow.json").read_text())["parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["dltrain.status"] == "completed"
    saved = {f.path for f in client.list_artifacts(parent_id)}
    assert {"sweep_summary.csv", "best_overrides.yaml"} <= saved
    files = ("sweep_summary.csv", "sweep.png", "best_overrides.yaml")
    assert saved == {name for name in files if (sweep / name).is_file()}
    experiment = client.get_experiment_by_name("dltrain")
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(r.data.params["optim.lr"] for r in children) == ["0.01", "0.1"]

"""logger=mlflow against a real ``mlflow server`` process on 127.0.0.1 (a SQLite store and an
artifact folder under tmp_path), read back through MLflow's client over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dltrain import train

pytestmark = pytest.mark.slow  # a server's start takes seconds
pytest.importorskip("mlflow")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of an ``mlflow server`` started for the test, stopped after it."""
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination",
         str(tmp_path / "artifacts")], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its worker
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_a_run_logged_to_a_tracking_server(compose, server, tmp_path):
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    cfg = compose(["data=xor", "device=cpu", "trainer.max_epochs=3", "optim.lr=0.02", "logger=mlflow",
                   f"logger.mlflow.tracking_uri={server}", "logger.mlflow.experiment_name=served"])
    assert train(cfg, run_dir=run_dir)["status"] == "completed"
    client = MlflowClient(tracking_uri=server)
    [run] = client.search_runs([client.get_experiment_by_name("served").experiment_id])
    assert json.loads((run_dir / "mlflow.json").read_text())["run_id"] == run.info.run_id
    assert run.info.status == "FINISHED" and run.data.params["optim.lr"] == "0.02"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2, 3]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "summary.json", "model_summary.txt", "metrics.csv"} <= artifacts
    local = client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path))
    assert json.loads(Path(local).read_text())["status"] == "completed"

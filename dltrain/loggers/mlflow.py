"""logger=mlflow: the run in an MLflow tracking store (a local folder, a database or a server).

One MLflow run per dltrain run: the resolved config as params (dotted keys), every epoch's
metrics at ``step=epoch``, tags, and at the end the run directory's report files as
artifacts. A sweep's jobs are child runs of one parent run, which the sweep's start creates
(``<sweep dir>/mlflow.json``); a resumed run carries on with its MLflow run
(``<run dir>/mlflow.json``). Only MLflow's client is used, never its global active run, so
jobs run in one process do not share state.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from dltrain.errors import ConfigError, first_line
from dltrain.files import write_json
from dltrain.loggers.artifacts import artifact_files
from dltrain.loggers.registry import LOGGERS, HParams, Logger, is_finite_number, read_record
from dltrain.loggers.run_logger import LoggerUnavailable

log = logging.getLogger("dltrain")

#: In a run directory, the MLflow run it logs to; in a sweep directory, the parent run of its jobs.
RECORD = "mlflow.json"

#: MLflow's settings for dltrain's own calls (a user's environment wins): a server that is down
#: costs seconds, not the minutes of MLflow's default retries; the local file store, which
#: MLflow 3 keeps in maintenance mode and refuses unless allowed, is allowed; MLflow's usage
#: telemetry (read when mlflow is first imported: only ever inside :func:`mlflow_env`) stays off,
#: so a run with a local store reaches for no network.
ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
       "MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_ALLOW_FILE_STORE": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}

#: MLflow's batch limits: params and metrics per log_batch call.
PARAMS_PER_BATCH, METRICS_PER_BATCH = 100, 1000

#: summary.json statuses and the MLflow run status each ends with (any other: FAILED).
END_STATUS = {"completed": "FINISHED", "early_stopped": "FINISHED", "already_finished": "FINISHED",
              "time_limit": "FINISHED", "interrupted": "KILLED"}

#: The files of a sweep's summary its parent run gets at the end (those the sweep wrote).
SWEEP_ARTIFACTS = ("sweep_summary.csv", "sweep.png", "best_overrides.yaml")

#: The MLflow run's tag holding the last epoch it has (a second resume of one checkpoint sees the first's).
EPOCH_TAG = "dltrain.epoch"

TRUNCATED = "... (truncated: the whole value is in the config.yaml artifact)"


@contextmanager
def mlflow_env() -> Iterator[None]:
    """:data:`ENV` set while dltrain calls MLflow, the environment as it was afterwards; the
    HTTP client's line per retry kept quiet (a server that is down is one warning of dltrain's)."""
    added = {key: value for key, value in ENV.items() if key not in os.environ}
    os.environ.update(added)
    pool = logging.getLogger("urllib3.connectionpool")
    level = pool.level
    pool.setLevel(logging.ERROR)
    try:
        yield
    finally:
        pool.setLevel(level)
        for key in added:
            os.environ.pop(key, None)


def default_tracking_uri() -> str:
    """``file:`` URI of ``./mlruns`` in the folder dltrain started in (not the run directory)."""
    from dltrain.config.hydra_job import from_start

    return from_start("mlruns").as_uri()


@LOGGERS.register("mlflow", record=RECORD)
class MLflowLogger(Logger):
    """An MLflow run per dltrain run.

    Args:
        run_dir: the run's output directory.
        tracking_uri: the tracking store: None for ``./mlruns`` where dltrain started,
            ``sqlite:///mlflow.db``, or a server's ``http://HOST:PORT``.
        experiment_name: the MLflow experiment (created when new).
        run_name: the MLflow run's name; None: the run directory's name.
        tags: the user's own tags.
        log_artifacts: upload the run directory's files at the end.

    Raises:
        ConfigError: the mlflow package is not installed.
    """

    def __init__(self, run_dir: str | Path, tracking_uri: str | None = None, experiment_name: str = "dltrain",
                 run_name: str | None = None, tags: dict[str, str] | None = None, log_artifacts: bool = True) -> None:
        from importlib.util import find_spec

        if find_spec("mlflow") is None:  # imported when the run starts: it takes a second
            raise ConfigError("logger=mlflow needs the mlflow package: pip install 'dltrain[mlflow]' "
                              "(or pip install mlflow), or use another logger.")
        self.run_dir = Path(run_dir)
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.experiment_name = experiment_name
        self.run_name = run_name or self.run_dir.resolve().name
        self.tags = dict(tags or {})
        self.log_artifacts = log_artifacts
        self._client: Any = None
        self._run_id: str | None = None
        self._logged_to = 0  # the last epoch the MLflow run has (a continued run's replayed epochs are not sent again)
        self._forked_from: str | None = None  # the MLflow run a resume of an earlier epoch does not continue
        self._closed = False

    # --- start ---------------------------------------------------------------------

    def start(self, hparams: HParams, config_yaml: str) -> None:
        try:
            with mlflow_env():
                from mlflow.tracking import MlflowClient

                self._client = MlflowClient(tracking_uri=self.tracking_uri)
                self._run_id = self._continued() or self._new_run(hparams)
                self._log_params(config_yaml)
                self._client.log_text(self._run_id, config_yaml, "config.yaml")
        except Exception as err:  # noqa: BLE001 - a store or server that fails: the run goes on without it
            self._run_id = None
            raise LoggerUnavailable(f"{self.tracking_uri}: {_reason(err)}") from err
        self._save_record()

    def _save_record(self) -> None:
        write_json(self.run_dir / RECORD, {"tracking_uri": self.tracking_uri, "run_id": self._run_id,
                                           "experiment_name": self.experiment_name, "step": self._logged_to})

    def _continued(self) -> str | None:
        """The MLflow run of this run directory's record (a resumed run), set running again;
        None when there is none in this store, or when it has epochs past the resumed
        checkpoint's (another resume continued it, or an earlier epoch's checkpoint is resumed):
        then a new run, tagged with the one it forks from."""
        record = read_record(self.run_dir / RECORD)
        if record.get("tracking_uri") != self.tracking_uri or not record.get("run_id"):
            return None
        run_id = str(record["run_id"])
        try:
            run = self._client.get_run(run_id)
        except Exception:  # noqa: BLE001 - deleted from the store: a new run
            return None
        logged = max(_whole(record.get("step")), _whole(run.data.tags.get(EPOCH_TAG)))
        resumed_at = record.get("resumed_at")
        if resumed_at is not None and logged > _whole(resumed_at):
            self._forked_from = run_id
            log.info("logger=mlflow: MLflow run %s has epochs up to %d, past the checkpoint's %d: a new MLflow run, "
                     "tagged dltrain.forked_from=%s", run_id, logged, _whole(resumed_at), run_id)
            return None
        self._client.update_run(run_id, status="RUNNING")
        self._logged_to = logged
        log.info("logger=mlflow: continuing MLflow run %s (epochs up to %d logged)", run_id, self._logged_to)
        return run_id

    def _new_run(self, hparams: HParams) -> str:
        import dltrain

        tags = {"dltrain.version": dltrain.__version__, "dltrain.run_dir": str(self.run_dir.resolve()),
                "dltrain.status": "running",
                **{f"dltrain.{group}": str(hparams[group]) for group in ("data", "model") if group in hparams},
                **{str(k): str(v) for k, v in self.tags.items()}}
        if self._forked_from is not None:
            tags["dltrain.forked_from"] = self._forked_from
        parent = sweep_parent(self.tracking_uri)
        if parent is not None:
            tags["mlflow.parentRunId"] = parent
        run = self._client.create_run(experiment_id(self._client, self.experiment_name), run_name=self.run_name,
                                      tags=tags)
        return run.info.run_id

    def _log_params(self, config_yaml: str) -> None:
        """The resolved config as params, one per dotted key; a continued run adds only keys it
        lacks (MLflow's params never change: a resume's new values are in config.yaml)."""
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        have = self._client.get_run(self._run_id).data.params
        flat = {_key(key): value for key, value in flat_config(yaml.safe_load(config_yaml) or {}).items()}
        params = [Param(key, _param_text(value, MAX_PARAM_VAL_LENGTH)) for key, value in flat.items()
                  if key not in have]
        for i in range(0, len(params), PARAMS_PER_BATCH):
            self._client.log_batch(self._run_id, params=params[i:i + PARAMS_PER_BATCH])

    # --- epochs and end ------------------------------------------------------------

    def log_epoch(self, row: dict[str, Any]) -> None:
        if self._run_id is None:
            return
        epoch = int(row["epoch"])
        if epoch <= self._logged_to:
            return  # a resumed run's replayed history: the MLflow run has it
        self._log_metrics({k: v for k, v in row.items() if k != "epoch"}, epoch, epoch_tag=True)
        self._logged_to = epoch
        self._save_record()

    def _log_metrics(self, values: dict[str, Any], step: int, epoch_tag: bool = False) -> None:
        """Metrics at ``step``; with ``epoch_tag``, the run's :data:`EPOCH_TAG` set to it in the same call."""
        with mlflow_env():
            from mlflow.entities import Metric, RunTag

            now = int(time.time() * 1000)
            metrics = [Metric(key, float(value), now, step) for key, value in values.items()
                       if is_finite_number(value)]
            tags = [RunTag(EPOCH_TAG, str(step))] if epoch_tag else []
            for i in range(0, len(metrics) or len(tags), METRICS_PER_BATCH):  # the tag alone when no metric is finite
                self._client.log_batch(self._run_id, metrics=metrics[i:i + METRICS_PER_BATCH],
                                       tags=tags if i == 0 else [])

    def finish(self, summary: dict[str, Any]) -> None:
        if self._closed or self._run_id is None:
            return
        self._closed = True
        status = str(summary.get("status"))
        with mlflow_env():
            try:
                test = {f"test_{k}": v for k, v in (summary.get("test") or {}).items()}
                self._log_metrics({**test, "best_value": summary.get("best_value")},
                                  int(summary.get("epochs_run") or self._logged_to))
                self._client.set_tag(self._run_id, "dltrain.status", status)
                if self.log_artifacts:
                    self._upload_run_files()
            finally:
                self._client.set_terminated(self._run_id, END_STATUS.get(status, "FAILED"))

    def _upload_run_files(self) -> None:
        """The run directory's files the tracking loggers save (:func:`artifact_files`)."""
        for path in artifact_files(self.run_dir, "mlflow"):
            self._client.log_artifact(self._run_id, str(path))

    # --- sweeps --------------------------------------------------------------------

    @classmethod
    def sweep_started(cls, sweep_dir: Path, tracking_uri: str | None = None, experiment_name: str = "dltrain",
                      **_: Any) -> None:
        """Create the sweep's parent run, named after the sweep directory, and record it there for the jobs."""
        uri = tracking_uri or default_tracking_uri()
        try:
            with mlflow_env():
                from mlflow.tracking import MlflowClient

                client = MlflowClient(tracking_uri=uri)
                run = client.create_run(experiment_id(client, experiment_name),
                                        run_name=f"sweep {sweep_dir.parent.name}/{sweep_dir.name}",
                                        tags={"dltrain.sweep_dir": str(sweep_dir.resolve()),
                                              "dltrain.status": "running"})
        except Exception as err:  # noqa: BLE001 - the jobs then log as single runs
            raise LoggerUnavailable(f"{uri}: {_reason(err)}") from err
        write_json(sweep_dir / RECORD, {"tracking_uri": uri, "parent_run_id": run.info.run_id,
                                        "experiment_name": experiment_name})

    @classmethod
    def sweep_ended(cls, sweep_dir: Path, failed: bool) -> None:
        """End the sweep's parent run, with the sweep's summary files that exist as artifacts:
        FINISHED, or FAILED when a job failed."""
        record = read_record(sweep_dir / RECORD)
        if not record.get("parent_run_id"):
            return
        run_id = record["parent_run_id"]
        try:
            with mlflow_env():
                from mlflow.tracking import MlflowClient

                client = MlflowClient(tracking_uri=record["tracking_uri"])
                for name in SWEEP_ARTIFACTS:
                    if (sweep_dir / name).is_file():
                        client.log_artifact(run_id, str(sweep_dir / name))
                client.set_tag(run_id, "dltrain.status", "failed" if failed else "completed")
                client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
        except Exception as err:  # noqa: BLE001 - the sweep's own files have it all
            raise LoggerUnavailable(f"{record['tracking_uri']}: {_reason(err)}") from err


def experiment_id(client: Any, name: str) -> str:
    """The id of the experiment ``name``, created when new (by whichever job of a sweep is first)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another process created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def sweep_parent(tracking_uri: str) -> str | None:
    """The parent run of the sweep this process runs a job of, in this store; None outside a sweep."""
    from dltrain.config.hydra_job import sweep_dir

    folder = sweep_dir()
    record = read_record(folder / RECORD) if folder is not None else {}
    return record.get("parent_run_id") if record.get("tracking_uri") == tracking_uri else None


def flat_config(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``; lists and empty nodes stay values."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _key(key: str) -> str:
    """A config key as an MLflow param name: characters MLflow refuses (``:``, ``+``) become ``_``."""
    return re.sub(r"[^\w\-. /]", "_", key)


def _param_text(value: Any, limit: int) -> str:
    """A param's value as text (YAML's null, true, [1, 2]); one longer than MLflow takes is cut, saying so."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[:limit - len(TRUNCATED)] + TRUNCATED


def _whole(value: Any) -> int:
    """A record's or tag's epoch as a number; 0 when it has none."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _reason(err: BaseException) -> str:
    """Why a call to the store failed, short: ``no answer in 10 s (3 tries)`` from a server
    that accepts but never answers, the socket's reason (``Connection refused``) when it could
    not be reached, else the error's first line."""
    text = first_line(err)
    if "Max retries exceeded" not in text:
        return text
    if (timeout := re.search(r"timeout=(\d+(?:\.\d+)?)\)", text)) is not None:
        retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", ENV["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
        tries = _whole(retries) + 1
        return f"no answer in {float(timeout.group(1)):g} s ({tries} {'try' if tries == 1 else 'tries'})"
    found = re.search(r"\[Errno -?\d+\] ([^\"'()]+)", text)
    return f"cannot reach it ({found.group(1).strip()})" if found else text

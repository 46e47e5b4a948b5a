"""``logger=``: the loggers' keys. Several loggers run at once (``logger=[tensorboard,mlflow]``):
each option's keys sit under its own name (``logger.mlflow.tracking_uri``), so these schemas
have no ``name`` key."""

from dataclasses import dataclass
from typing import Any

from dltrain.config.schemas.spec import spec


@dataclass
class CSVLoggerConfig:
    """logger=csv: metrics.csv, which every run writes; nothing to set."""


@dataclass
class TensorBoardLoggerConfig:
    subdir: str = spec("tensorboard", help="folder of the event files, inside the run directory")
    flush_secs: int = spec(30, ge=1, help="how often the event files are flushed to disk")


@dataclass
class MLflowLoggerConfig:
    tracking_uri: str | None = spec(None, help="where the runs go: null = the local store ./mlruns where dltrain "
                                               "started; http://HOST:PORT for a server; sqlite:///mlflow.db")
    experiment_name: str = spec("dltrain", help="the MLflow experiment the runs go into (created if new)")
    run_name: str | None = spec(None, help="the MLflow run's name; null = the run directory's name")
    tags: dict[str, str] = spec({}, help="your own tags of the MLflow run, each added with a plus: "
                                         "+logger.mlflow.tags.team=vision")
    log_artifacts: bool = spec(True, help="also upload summary.json, curves.png, the model summary and report files")

    @staticmethod
    def without_network(options: dict[str, Any]) -> tuple[str, str] | None:
        """A stored config's (a checkpoint's) server made the local store, in place: the
        ``key=value`` replaced and what replaces it; None when it names no server."""
        uri = options.get("tracking_uri")
        scheme = str(uri).partition(":")[0].lower() if uri is not None and ":" in str(uri) else ""
        if uri is None or scheme in ("file", "sqlite") or len(scheme) <= 1:  # a path (C:\... too)
            return None
        options["tracking_uri"] = None
        return f"logger.mlflow.tracking_uri={uri}", "the local store ./mlruns"


@dataclass
class WandbLoggerConfig:
    mode: str = spec("offline", choices=("offline", "online", "disabled"),
                     help="offline: files in the run directory that `wandb sync` uploads later; online: to W&B now")
    project: str = spec("dltrain", help="the W&B project the runs go into")
    entity: str | None = spec(None, help="the W&B user or team; null = the account's default")
    run_name: str | None = spec(None, help="the W&B run's name; null = the run directory's name")
    group: str | None = spec(None, help="the W&B group; null = a sweep's folder for its jobs, none for a single run")
    tags: list[str] = spec([], help="the W&B run's tags")
    dir: str | None = spec(None, help="the folder W&B writes its wandb/ folder into; null = the run directory")
    log_artifacts: bool = spec(True, help="also save summary.json, curves.png, the model summary and report files")

    @staticmethod
    def without_network(options: dict[str, Any]) -> tuple[str, str] | None:
        """A stored config's (a checkpoint's) online mode made offline, in place: the
        ``key=value`` replaced and what replaces it; None when it is not online."""
        if options.get("mode") != "online":
            return None
        options["mode"] = "offline"
        return "logger.wandb.mode=online", "logger.wandb.mode=offline"

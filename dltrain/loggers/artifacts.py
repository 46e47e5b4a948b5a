"""Which files of a run directory a tracking logger (MLflow, W&B) saves with its run at the end."""

from __future__ import annotations

import logging
from pathlib import Path

from dltrain.loggers.registry import LOGGERS

log = logging.getLogger("dltrain")

#: A run-directory file larger than this is not saved (a large predictions.csv): the run directory has it.
MAX_ARTIFACT_BYTES = 20 * 2**20


def artifact_files(run_dir: Path, logger: str) -> list[Path]:
    """The run directory's files as the run ends: summary.json, curves.png, model_summary.txt,
    the report files and the log. Its folders (checkpoints/, tensorboard/, wandb/), hidden
    files, the loggers' records (mlflow.json, wandb.json) and files over
    :data:`MAX_ARTIFACT_BYTES` stay behind; ``logger`` (``wandb``) names the logger in the
    line that says a file was too large."""
    records = {LOGGERS.facts(name).record for name in LOGGERS.names()}
    files = []
    for path in sorted(run_dir.iterdir()):
        if not path.is_file() or path.name in records or path.name.startswith("."):
            continue
        if path.stat().st_size > MAX_ARTIFACT_BYTES:
            log.info("logger=%s: %s is over %d MB: left out (the run directory has it)", logger, path.name,
                     MAX_ARTIFACT_BYTES // 2**20)
            continue
        files.append(path)
    return files

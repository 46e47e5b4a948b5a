"""logger=wandb: Weights & Biases, offline by default (no account, no network).

An offline run writes ``<dir>/wandb/offline-run-<time>-<id>/`` (``run-<id>.wandb`` holds the
config, every epoch's metrics and the summary); ``wandb sync`` uploads it later.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from dltrain.errors import ConfigError, first_line
from dltrain.files import write_json
from dltrain.loggers.artifacts import artifact_files
from dltrain.loggers.registry import LOGGERS, HParams, Logger, is_finite_number, read_record
from dltrain.loggers.run_logger import LoggerUnavailable

log = logging.getLogger("dltrain")

#: The W&B run a run directory logs to, and the last epoch logged there: a resumed run continues it.
RECORD = "wandb.json"

#: The summary.json keys that become the W&B run's summary.
SUMMARY_KEYS = ("status", "stop_reason", "epochs_run", "best_epoch", "monitor", "best_value", "test")

#: summary.json statuses W&B shows as finished; any other ends the W&B run as failed.
SUCCESS = ("completed", "early_stopped", "time_limit", "already_finished")


@LOGGERS.register("wandb", record=RECORD)
class WandbLogger(Logger):
    """A W&B run per dltrain run: the resolved config, every epoch's metrics at ``step=epoch``,
    the summary and the run's report files.

    Args:
        run_dir: the run's output directory.
        mode: ``offline`` (files only, ``wandb sync`` later), ``online`` or ``disabled``.
        project: the W&B project.
        entity: the W&B user or team; None: the account's default.
        run_name: the W&B run's name; None: the run directory's name.
        group: the W&B group; None: a sweep job's sweep directory, no group for a single run.
        tags: the W&B run's tags.
        dir: the folder W&B writes its ``wandb/`` folder into; None: the run directory.
        log_artifacts: copy the run's summary, curves, model summary and report files into the
            W&B run at the end.

    Raises:
        ConfigError: the wandb package is not installed.
    """

    def __init__(self, run_dir: str | Path, mode: str = "offline", project: str = "dltrain",
                 entity: str | None = None, run_name: str | None = None, group: str | None = None,
                 tags: list[str] | tuple[str, ...] = (), dir: str | None = None, log_artifacts: bool = True) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError("logger=wandb needs the wandb package: pip install 'dltrain[wandb]' "
                              "(or pip install wandb), or use another logger.") from None
        self._wandb = wandb
        self.run_dir = Path(run_dir)
        self.mode = mode
        self.init_args = {"project": project, "entity": entity, "name": run_name or self.run_dir.resolve().name,
                          "group": group or sweep_name(), "tags": list(tags),
                          "dir": str(dir if dir is not None else self.run_dir)}
        self.log_artifacts = log_artifacts
        self._run: Any = None
        self._last_step = 0  # epochs up to here are in the W&B run (a resumed run's replayed history)
        self._closed = False

    def start(self, hparams: HParams, config_yaml: str) -> None:
        if self.mode == "disabled":
            return
        import yaml

        run_id = self._continued(read_record(self.run_dir / RECORD))
        wandb = self._wandb
        try:
            Path(self.init_args["dir"]).mkdir(parents=True, exist_ok=True)
            # The process's settings, not the run's, decide whether W&B's own telemetry reaches the network.
            wandb.setup(settings=wandb.Settings(mode=self.mode))
            self._run = wandb.init(
                mode=self.mode, id=run_id, resume="allow", reinit="create_new",
                config=yaml.safe_load(config_yaml), **self.init_args,
                # W&B's console capture would wrap dltrain's output, its system metrics probe the network.
                settings=wandb.Settings(silent=True, console="off", x_disable_stats=True,
                                        x_disable_machine_info=True, x_save_requirements=False))
        except BaseException as err:
            self._stop_service()
            if isinstance(err, Exception):  # no account, no server, no folder: the run goes on without W&B
                hint = "; logger.wandb.mode=offline needs no account" if self.mode == "online" else ""
                raise LoggerUnavailable(f"W&B could not start its run (mode={self.mode}): {_why(err)}{hint}") from err
            raise
        self._save_record()

    def _continued(self, earlier: dict[str, Any]) -> str | None:
        """The W&B run of this run directory's record (a resumed run), its logged epochs noted;
        None when there is none, or when it has epochs past the resumed checkpoint's (an earlier
        epoch's checkpoint is resumed): then a new run, whose notes name the one it forks from."""
        run_id, step, resumed_at = earlier.get("id"), int(earlier.get("step", 0)), earlier.get("resumed_at")
        if not run_id:
            return None
        if resumed_at is not None and step > int(resumed_at):
            log.info("logger=wandb: W&B run %s has epochs up to %d, past the checkpoint's %d: a new W&B run, "
                     "noted as forked from it", run_id, step, int(resumed_at))
            self.init_args["notes"] = f"forked from W&B run {run_id} at epoch {int(resumed_at)}"
            return None
        self._last_step = step
        return str(run_id)

    def log_epoch(self, row: dict[str, Any]) -> None:
        epoch = int(row["epoch"])
        if self._run is None or epoch <= self._last_step:
            return  # a resumed run's replayed history: the W&B run holds it already
        self._run.log({k: float(v) for k, v in row.items() if k != "epoch" and is_finite_number(v)}, step=epoch)
        self._last_step = epoch
        self._save_record()

    def finish(self, summary: dict[str, Any]) -> None:
        if self._closed or self._run is None:
            return
        self._closed = True
        run = self._run
        try:
            run.summary.update({k: summary[k] for k in SUMMARY_KEYS if summary.get(k) is not None})
            if self.log_artifacts:
                self._save_files()
            run.finish(exit_code=0 if summary.get("status") in SUCCESS else 1)
        finally:
            self._stop_service()

    def _stop_service(self) -> None:
        # W&B keeps a service process until the interpreter exits; a run of the caller's own keeps it.
        if self._wandb.run is None:
            self._wandb.teardown()

    def _save_record(self) -> None:
        write_json(self.run_dir / RECORD, {"id": self._run.id, "step": self._last_step})

    def _save_files(self) -> None:
        # Copied into the W&B run's files/ folder (its save() would link them): the files as the run ended.
        files = Path(self._run.dir)
        for path in artifact_files(self.run_dir, "wandb"):
            shutil.copyfile(path, files / path.name)
            self._run.save(str(files / path.name), base_path=str(files), policy="now")


def sweep_name() -> str | None:
    """The sweep this process runs a job of (:func:`dltrain.config.hydra_job.sweep_dir`, however
    deep ``hydra.sweep.subdir`` puts the job), as its folder's last two names; None outside one."""
    from dltrain.config import hydra_job

    sweep = hydra_job.sweep_dir()
    return None if sweep is None else f"{sweep.resolve().parent.name}/{sweep.resolve().name}"


def _why(err: Exception) -> str:
    """Why W&B did not start, in one line: a setting it refuses (its ``WANDB_*`` environment
    variables are settings too) as ``setting mode='bogus': Input should be ...``."""
    errors = getattr(err, "errors", None)
    found = errors() if callable(errors) else None
    if isinstance(found, list) and found and isinstance(found[0], dict):
        first = found[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"setting {where}={first.get('input')!r} (or WANDB_{where.upper()}): {first.get('msg')}"
    return first_line(err)

"""The logger registry and the hooks every logger has."""

from __future__ import annotations

import json
import math
import numbers
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dltrain.registry import Registry


@dataclass(frozen=True)
class LoggerFacts:
    """What a run needs to know about a logger.

    Attributes:
        record: a file the logger keeps in the run directory naming the tracked run it logs to
            (``mlflow.json``); a run resumed into a new directory starts with a copy of its
            checkpoint's, so the logger carries on with the same tracked run.
    """

    record: str | None = None


LOGGERS = Registry("logger", LoggerFacts)

#: Value types the TensorBoard hparams plugin accepts.
HParams = dict[str, bool | int | float | str]


class Logger:
    """Base class: every hook is a no-op, so a logger overrides only what it needs.

    Every logger is built as ``cls(run_dir, **options)``, the options coming from its
    YAML preset.
    """

    def start(self, hparams: HParams, config_yaml: str) -> None:
        """Called once, before the first epoch.

        Args:
            hparams: the run's main hyperparameters, flat, with scalar values.
            config_yaml: the full resolved config as YAML text.
        """

    def log_epoch(self, row: dict[str, Any]) -> None:
        """Called after every epoch (and replayed for the epochs of a resumed run's history).

        Args:
            row: the epoch's row of metrics.csv (``epoch``, ``train_loss``, ``val_loss``, ``lr``, ...).
        """

    def finish(self, summary: dict[str, Any]) -> None:
        """Called once at the end however the run ended; releases files.

        Safe to call twice and without :meth:`start`.

        Args:
            summary: the run's summary (``status``, ``stop_reason``, ``best_value``, ``test``, ...).
        """

    @classmethod
    def sweep_started(cls, sweep_dir: Path, **options: Any) -> None:
        """Called once when a sweep (``dltrain -m``) starts, before its first job, with the
        logger's options (MLflow creates the parent run of the jobs here)."""

    @classmethod
    def sweep_ended(cls, sweep_dir: Path, failed: bool) -> None:
        """Called once when a sweep has run its jobs; ``failed``: some job failed."""


def build_logger(name: str, run_dir: str | Path, **options: Any) -> Logger:
    """The logger registered as ``name``, built for ``run_dir`` with its preset's options.

    Raises:
        ConfigError: ``name`` is not a known logger, or the logger cannot run here.
    """
    return LOGGERS.build(name, run_dir, **options)


def build_loggers(node: Any, run_dir: str | Path) -> list[Logger]:
    """Every logger a ``logger`` node chooses (``logger=[tensorboard,mlflow]``; a run stored
    with one logger, ``{name: csv}``, too), each built for ``run_dir`` with its options.

    Raises:
        ConfigError: a logger is not known, or cannot run here.
    """
    from dltrain.config.loggers import chosen_loggers

    return [build_logger(name, run_dir, **options) for name, options in chosen_loggers(node).items()]


def carry_records(node: Any, from_dir: Path, run_dir: Path, epoch: int) -> list[str]:
    """Copy the records of the loggers ``node`` chooses (:attr:`LoggerFacts.record`) from the
    run directory ``from_dir`` of a resumed checkpoint into the new ``run_dir``, where it lacks
    them, noting the checkpoint's ``epoch`` in each (``resumed_at``: a tracked run that has
    epochs past it is another run's continuation, so the logger starts a new one); returns the
    files written."""
    from dltrain.config.loggers import chosen_loggers
    from dltrain.files import write_json

    written = []
    for name in chosen_loggers(node):
        record = LOGGERS.facts(name).record if name in LOGGERS.names() else None
        if record is None or not (from_dir / record).is_file():
            continue
        in_place = (from_dir / record).resolve() == (run_dir / record).resolve()
        if in_place or not (run_dir / record).exists():
            write_json(run_dir / record, {**read_record(from_dir / record), "resumed_at": epoch})
            written.append(record)
    return written


def read_record(path: Path) -> dict[str, Any]:
    """A logger's record (:attr:`LoggerFacts.record`): the tracked run a run directory logs to;
    empty if there is none or it cannot be read."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def sweep_started(node: Any, sweep_dir: Path) -> None:
    """:meth:`Logger.sweep_started` of each logger ``node`` chooses; one that fails is a warning
    (its jobs then log as single runs)."""
    _each_sweep_hook(node, "sweep_started", lambda hook, options: hook(sweep_dir, **options))


def sweep_ended(node: Any, sweep_dir: Path, failed: bool) -> None:
    """:meth:`Logger.sweep_ended` of each logger ``node`` chooses; one that fails is a warning."""
    _each_sweep_hook(node, "sweep_ended", lambda hook, options: hook(sweep_dir, failed))


def _each_sweep_hook(node: Any, name: str, call: Any) -> None:
    from dltrain.config.loggers import chosen_loggers
    from dltrain.errors import first_line

    for option, options in chosen_loggers(node).items():
        hook = getattr(LOGGERS.get(option), name, None) if option in LOGGERS.names() else None
        try:
            if hook is not None:
                call(hook, options)
        except Exception as err:  # noqa: BLE001 - the sweep's jobs run whatever a logger says
            # Printed, not logged: Hydra's log format ("[HYDRA] ...") holds around a sweep's start and end.
            print(f"warning: the {option} logger could not {'start' if name == 'sweep_started' else 'end'} "
                  f"the sweep: {first_line(err)}", file=sys.stderr)


def logger_name(logger: Logger) -> str:
    """The option a logger was registered as (``tensorboard``), else its class's name."""
    return next((name for name in LOGGERS.names() if LOGGERS.get(name) is type(logger)), type(logger).__name__)


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` is a metric a logger can plot: a finite real number."""
    # numbers.Real also takes numpy scalars; bool is an int but not a metric.
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)

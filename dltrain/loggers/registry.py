"""The logger registry and the hooks every logger has."""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any

from dltrain.registry import Registry

LOGGERS = Registry("logger")

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


def build_logger(name: str, run_dir: str | Path, **options: Any) -> Logger:
    """The logger registered as ``name``, built for ``run_dir`` with its preset's options.

    Raises:
        ConfigError: ``name`` is not a known logger, or the logger cannot run here.
    """
    return LOGGERS.build(name, run_dir, **options)


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` is a metric a logger can plot: a finite real number."""
    # numbers.Real also takes numpy scalars; bool is an int but not a metric.
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)

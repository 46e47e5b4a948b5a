"""Experiment loggers (logger=...): where a run's metrics go besides metrics.csv.

Importing a logger's module registers it, and every module of this package is imported
here: a new logger is its module, its schema and its preset in conf/logger/.
"""

import importlib
import pkgutil

from dltrain.loggers.registry import (
    LOGGERS,
    HParams,
    Logger,
    LoggerFacts,
    build_logger,
    build_loggers,
    carry_records,
    sweep_ended,
    sweep_started,
)
from dltrain.loggers.run_logger import LoggerUnavailable, RunLogger

for _module in pkgutil.iter_modules(__path__):  # registration
    importlib.import_module(f"{__name__}.{_module.name}")

from dltrain.loggers.csv_log import CSVLogger  # noqa: E402 - registered by the loop above
from dltrain.loggers.tensorboard import TensorBoardLogger, scalar_tag  # noqa: E402

__all__ = ["LOGGERS", "CSVLogger", "HParams", "Logger", "LoggerFacts", "LoggerUnavailable", "RunLogger",
           "TensorBoardLogger", "build_logger", "build_loggers", "carry_records", "scalar_tag", "sweep_ended",
           "sweep_started"]

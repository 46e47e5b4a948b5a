"""RunLogger: a run's loggers over its lifetime, kept from costing the run its results."""

from __future__ import annotations

import logging
from typing import Any

from dltrain.errors import first_line
from dltrain.loggers.registry import HParams, Logger, logger_name

log = logging.getLogger("dltrain")


class LoggerUnavailable(Exception):
    """Raised by a logger's :meth:`Logger.start` when the service it logs to cannot be reached
    (a tracking server that is down): the run goes on without that logger, with a warning."""


class RunLogger:
    """A run's loggers over its lifetime (start, every epoch, finish), kept from costing the
    run its results: metrics.csv and summary.json hold what a logger records. Each logger
    fails alone: the others go on.

    A failed :meth:`start` fails the run's start (nothing is trained yet), unless the logger
    says its service is unavailable (:class:`LoggerUnavailable`): then that logger is off, with
    a warning. A failed epoch record switches the logger off for the rest of the run, with a
    warning; a failed :meth:`finish` is a warning. A signal is no failure: it always goes through.
    """

    def __init__(self, *loggers: Logger) -> None:
        self.loggers = list(loggers)
        self._off: set[int] = set()  # indices of the loggers switched off

    @property
    def on(self) -> bool:
        """Whether any logger is still on."""
        return len(self._off) < len(self.loggers)

    def start(self, hparams: HParams, config_yaml: str) -> None:
        """Each logger's :meth:`Logger.start`."""
        for i, logger in enumerate(self.loggers):
            try:
                logger.start(hparams, config_yaml)
            except LoggerUnavailable as err:
                self._off.add(i)
                log.warning("warning: the %s logger is off for this run: %s", logger_name(logger), first_line(err))

    def log_epoch(self, row: dict[str, Any]) -> None:
        """Each logger's record of an epoch, but for those an earlier failure switched off."""
        for i, logger in enumerate(self.loggers):
            if i in self._off:
                continue
            try:
                logger.log_epoch(row)
            except Exception as err:  # noqa: BLE001 - metrics.csv has the row
                self._off.add(i)
                log.warning("warning: the %s logger failed and is off for the rest of the run: %s",
                            logger_name(logger), first_line(err))

    def finish(self, summary: dict[str, Any]) -> None:
        """Each logger's last record, and its files closed."""
        for logger in self.loggers:
            try:
                logger.finish(summary)
            except Exception as err:  # noqa: BLE001 - the run's own files are written already
                log.warning("warning: the %s logger could not finish: %s", logger_name(logger), first_line(err))

"""RunLogger: a run's logger over its lifetime, kept from costing the run its results."""

from __future__ import annotations

import logging
from typing import Any

from dltrain.errors import first_line
from dltrain.loggers.registry import HParams, Logger

log = logging.getLogger("dltrain")


class RunLogger:
    """A run's logger over its lifetime (start, every epoch, finish), kept from costing the
    run its results: metrics.csv and summary.json hold what a logger records.

    A failed :meth:`start` fails the run's start (nothing is trained yet); a failed epoch
    record switches the logger off for the rest of the run, with a warning; a failed
    :meth:`finish` is a warning. A signal is no failure: it always goes through.
    """

    def __init__(self, logger: Logger) -> None:
        self.logger = logger
        self.on = True

    def start(self, hparams: HParams, config_yaml: str) -> None:
        """The logger's :meth:`Logger.start`."""
        self.logger.start(hparams, config_yaml)

    def log_epoch(self, row: dict[str, Any]) -> None:
        """The logger's record of an epoch, unless an earlier one failed."""
        if not self.on:
            return
        try:
            self.logger.log_epoch(row)
        except Exception as err:  # noqa: BLE001 - metrics.csv has the row
            self.on = False
            log.warning("warning: the %s logger failed and is off for the rest of the run: %s", self._name,
                        first_line(err))

    def finish(self, summary: dict[str, Any]) -> None:
        """The logger's last record, and its files closed."""
        try:
            self.logger.finish(summary)
        except Exception as err:  # noqa: BLE001 - the run's own files are written already
            log.warning("warning: the %s logger could not finish: %s", self._name, first_line(err))

    @property
    def _name(self) -> str:
        return type(self.logger).__name__

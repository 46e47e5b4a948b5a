"""logger=csv: metrics.csv, which every run writes anyway."""

from __future__ import annotations

from pathlib import Path

from dltrain.loggers.registry import LOGGERS, Logger


@LOGGERS.register("csv")
class CSVLogger(Logger):
    """metrics.csv, which every run writes, is the CSV log: nothing to add."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

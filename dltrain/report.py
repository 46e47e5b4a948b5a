"""What a run leaves behind: metrics.csv, summary.json, model_summary.txt, versions."""

from __future__ import annotations

import csv
import platform
from importlib import metadata
from pathlib import Path
from typing import Any


class MetricsCSV:
    """``metrics.csv``: one row per epoch, flushed as it is written so a kill loses nothing.

    The columns are fixed by the first row; later rows may not add columns.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.columns: list[str] | None = None

    def write(self, row: dict[str, Any]) -> None:
        new = self.columns is None
        if new:
            self.columns = list(row)
        with self.path.open("w" if new else "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(row.get(k)) for k in self.columns})


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries that decide a run's numbers."""
    out = {"python": platform.python_version()}
    for dist in ("dltrain", "torch", "torchvision", "hydra-core", "omegaconf", "numpy", "scikit-learn"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out

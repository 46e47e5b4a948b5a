"""Points (the generated data): each coordinate standardised with the training split's
statistics. New inputs are the numeric columns of a CSV, in order."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dltrain.data.csv_file import read_table
from dltrain.data.preprocessing import drift
from dltrain.data.preprocessing.base import Batch, Preprocessing, Warn, batched, check_scaled
from dltrain.data.standardizer import Standardizer
from dltrain.errors import UserError

if TYPE_CHECKING:  # torch is imported where tensors are made: an exported model reads its inputs without it
    import torch


@dataclass(frozen=True, eq=False)  # its statistics are arrays: objects compare by identity
class Points(Preprocessing):
    """``(x - mean) / std`` per coordinate.

    Attributes:
        scaler: the training split's statistics (``(1, inputs)``); mean 0 and std 1 for a
            record that holds none (the points are read as they are).
        input_range: each coordinate's training ``{min: [...], max: [...]}``: new points far
            beyond it are flagged; None when not recorded.
        dataset: the ``data=`` option, for messages.
        delimiter: the field separator of the CSV files new points are read from.
    """

    kind = "points"
    marks = ("input_scaling",)
    reads = "a CSV with a header whose numeric columns are the inputs, in order (2 per row; 1 for sine)"

    scaler: Standardizer
    input_range: dict[str, list[float]] | None = None
    dataset: str = ""
    delimiter: str = ","

    @classmethod
    def fit(cls, x: np.ndarray) -> Points:
        """Fit on the training points ``(N, inputs)``."""
        return cls(Standardizer.fit(x), {"min": x.min(axis=0).tolist(), "max": x.max(axis=0).tolist()})

    @classmethod
    def from_record(cls, record: Mapping[str, Any], options: Mapping[str, Any], checkpoint: str | Path) -> Points:
        width = record["input_shape"][0]
        scaling = record.get("input_scaling") or {"mean": [0.0] * width, "std": [1.0] * width}
        if not len(scaling["mean"]) == len(scaling["std"]) == width:
            raise UserError(f"checkpoint {checkpoint}: its input_scaling does not hold {width} means and standard "
                            "deviations, so the inputs cannot be scaled as in training: use the checkpoint as "
                            "dltrain wrote it")
        scaler = Standardizer(np.asarray(scaling["mean"], dtype=np.float64).reshape(1, -1),
                              np.asarray(scaling["std"], dtype=np.float64).reshape(1, -1))
        bounds = record.get("input_range")
        return cls(scaler, bounds if bounds and len(bounds["min"]) == width else None, record["dataset"],
                   options.get("delimiter", ","))

    def to_record(self) -> dict[str, Any]:
        return {"input_scaling": self.scaler.to_info(), "input_range": self.input_range}

    @property
    def width(self) -> int:
        """Inputs per point."""
        return self.scaler.mean.shape[1]

    def apply(self, raw: np.ndarray) -> torch.Tensor:
        """Points ``(N, inputs)`` in their own units -> float32 ``(N, inputs)``."""
        import torch

        with np.errstate(over="ignore"):  # a value too large for float32 is refused by the reader, naming it
            return torch.from_numpy(self.scaler.transform(raw))

    def read(self, path: Path, batch_size: int, warn: Warn) -> Iterator[Batch]:
        """The CSV's numeric columns (a header row; other columns are ignored), which must be
        exactly the inputs, in order, without gaps.

        Raises:
            UserError: another number of numeric columns, empty cells, or cells the model
                cannot read.
        """
        cells, flags = self.cells(path)
        yield from batched(self.apply(cells), flags, batch_size)

    def cells(self, path: Path) -> tuple[np.ndarray, list[str]]:
        """The CSV's numeric columns as :meth:`read` reads them, float64 ``(N, inputs)`` in their
        own units, and each point's flags.

        Raises:
            UserError: see :meth:`read`.
        """
        from pandas.api.types import is_bool_dtype, is_numeric_dtype

        table = read_table(path, self.delimiter, key="input")
        numeric = [c for c in table.columns if is_numeric_dtype(table[c]) and not is_bool_dtype(table[c])]
        width = self.width
        if len(numeric) != width:
            plural = "s" if width > 1 else ""
            raise UserError(f"input={path} has {len(numeric)} numeric columns ({', '.join(map(str, numeric))}), "
                            f"but the data={self.dataset} model reads {width} number{plural} per row: give a CSV "
                            f"whose numeric columns are exactly its {width} input{plural}, in order")
        if gaps := int(table[numeric].isna().any(axis=1).sum()):
            raise UserError(f"input={path} has {gaps} rows with empty cells: fill them in")
        cells = table[numeric].to_numpy(dtype=np.float64)  # (N, inputs)
        with np.errstate(over="ignore"):  # a value too large for float32 is refused here, naming it
            check_scaled(path, numeric, cells, self.scaler.transform(cells))
        bounds = self.input_range
        ranges = None if bounds is None else dict(zip(map(str, numeric), zip(bounds["min"], bounds["max"], strict=True),
                                                      strict=True))
        return cells, drift.range_flags({str(c): cells[:, j] for j, c in enumerate(numeric)}, ranges, len(cells))

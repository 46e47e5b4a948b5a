"""Tables: numeric feature columns standardised, the others one-hot encoded, both with the
training split's statistics (:class:`Table`); gaps filled as ``data.missing`` says. New
inputs are the feature columns of a CSV, in any order."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dltrain.data.cells import read_numbers, rows_text
from dltrain.data.csv_file import read_table
from dltrain.data.preprocessing import drift
from dltrain.data.preprocessing.base import Batch, Preprocessing, Warn, batched, check_scaled
from dltrain.errors import UserError

if TYPE_CHECKING:  # torch is imported where tensors are made: an exported model reads its inputs without it
    import pandas as pd
    import torch

#: The one-hot column scikit-learn's OneHotEncoder gives a column's infrequent categories.
INFREQUENT = "infrequent_sklearn"


@dataclass(frozen=True, eq=False)  # its statistics are arrays: objects compare by identity
class Table(Preprocessing):
    """The encoding of a table's feature columns.

    Attributes:
        features: the feature columns, as the user named them.
        numeric: those read as numbers (true/false as 0/1), first in the encoding.
        mean, std: their training statistics (float64 ``(numeric,)``).
        categorical: each other column's categories seen in training (strings).
        encoded_features: the names of the encoded columns, numbers first, then each
            categorical column's one-hot columns as scikit-learn names them.
        numeric_range: each numeric column's training ``[min, max]`` (new rows far beyond
            are flagged); None when not recorded.
        missing: ``data.missing``; with ``mean`` the gaps of new rows are filled.
        fill_values: the value each column with gaps in training was filled with.
        fill_values_new_rows: the value any feature column's gaps get in new rows.
        delimiter: the field separator of the CSV files new rows are read from.
        checkpoint: where this was read from, for messages (empty when fitted).
    """

    kind = "table"
    marks = ("encoded_features", "numeric_scaling")
    reads = "a CSV with the training feature columns (other columns are ignored)"

    features: list[Any]
    numeric: list[Any]
    mean: np.ndarray
    std: np.ndarray
    categorical: dict[Any, list[str]]
    encoded_features: list[str]
    numeric_range: dict[str, list[float]] | None = None
    missing: str | None = "error"
    fill_values: dict[str, Any] = field(default_factory=dict)
    fill_values_new_rows: dict[str, Any] = field(default_factory=dict)
    delimiter: str = ","
    checkpoint: str = ""

    @classmethod
    def from_record(cls, record: Mapping[str, Any], options: Mapping[str, Any], checkpoint: str | Path) -> Table:
        scaling = record["numeric_scaling"]
        table = cls(list(record["features"]), list(scaling), np.array([s["mean"] for s in scaling.values()]),
                    np.array([s["std"] for s in scaling.values()]), dict(record["categorical"]),
                    list(record["encoded_features"]), record.get("numeric_range"), record.get("missing"),
                    record.get("fill_values", {}), record.get("fill_values_new_rows", {}),
                    options.get("delimiter", ","), str(checkpoint))
        table.one_hot_index()  # refuses encoded_features that do not match the categories
        return table

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "features": [str(c) for c in self.features], "encoded_features": self.encoded_features,
            "numeric_scaling": {str(c): {"mean": m, "std": s} for c, m, s in
                                zip(self.numeric, self.mean.round(6).tolist(), self.std.round(6).tolist(),
                                    strict=True)},
            "categorical": {str(c): list(cats) for c, cats in self.categorical.items()}}
        if self.numeric_range is not None:
            record["numeric_range"] = self.numeric_range
        return record | {"missing": self.missing, "fill_values": self.fill_values,
                         "fill_values_new_rows": self.fill_values_new_rows}

    def one_hot_index(self) -> list[tuple[Any, dict[str, int], int | None]]:
        """For each categorical column: the column, category -> encoded column, and the
        encoded column of categories not in it (the infrequent column, or None: all zeros).

        Raises:
            UserError: the encoded column names do not follow the categories.
        """
        index, position = [], len(self.numeric)
        for column, categories in self.categorical.items():
            columns, position = _one_hot_columns(str(column), categories, self.encoded_features, position)
            other = columns.pop(None, None)  # where categories never seen in training go, if anywhere
            index.append((column, columns, other))
        if position != len(self.encoded_features):
            raise UserError(f"checkpoint {self.checkpoint}: its encoded_features do not match its columns' "
                            "encodings, so the inputs cannot be encoded as in training: use the checkpoint as "
                            "dltrain wrote it")
        return index

    def apply(self, raw: pd.DataFrame) -> torch.Tensor:
        """The feature columns, without gaps -> float32 ``(rows, encoded features)``."""
        import torch

        out = np.zeros((len(raw), len(self.encoded_features)), dtype=np.float32)
        if self.numeric:
            out[:, :len(self.numeric)] = self._scaled(raw[self.numeric].to_numpy(dtype=np.float64))
        rows = np.arange(len(raw))
        for column, columns, other in self.one_hot_index():
            j = np.array(raw[column].astype(str).map(columns), dtype=np.float64)  # NaN: not a known category
            if other is not None:
                j[np.isnan(j)] = other
            seen = ~np.isnan(j)
            out[rows[seen], j[seen].astype(np.int64)] = 1.0
        return torch.from_numpy(out)

    def _scaled(self, values: np.ndarray) -> np.ndarray:
        """Numeric cells float64 ``(rows, numeric)`` standardised, as float32."""
        with np.errstate(over="ignore", invalid="ignore"):  # values too large are refused, naming the column
            return ((values - self.mean) / self.std).astype(np.float32)

    def read(self, path: Path, batch_size: int, warn: Warn) -> Iterator[Batch]:
        """The CSV's feature columns (see :meth:`rows`), encoded, in batches.

        Raises:
            UserError: see :meth:`rows`.
        """
        x, flags = self.rows(path, warn)
        yield from batched(self.apply(x), flags, batch_size)

    def rows(self, path: Path, warn: Warn) -> tuple[pd.DataFrame, list[str]]:
        """The CSV's feature columns (others are ignored), with gaps filled as in training, and
        each row's flags.

        Raises:
            UserError: a feature column is missing, gaps that cannot be filled, or cells the
                model cannot read.
        """
        table = read_table(path, self.delimiter, key="input")
        if lacking := [c for c in self.features if c not in table.columns]:
            raise UserError(f"input={path} has no column {', '.join(lacking)}: the model reads the columns "
                            f"{', '.join(self.features)} (others are ignored); add the missing ones")
        x = table[self.features].copy()
        self._fill(x, path, warn)
        cells = x[self.numeric].to_numpy(dtype=np.float64)
        check_scaled(path, self.numeric, cells, self._scaled(cells))
        return x, drift.range_flags({c: cells[:, j] for j, c in enumerate(self.numeric)}, self.numeric_range, len(x))

    def _fill(self, x: pd.DataFrame, path: Path, warn: Warn) -> None:
        """Read the numeric columns as numbers (a cell that is not one is a missing value, as in
        training) and fill the gaps in place as ``data.missing=mean`` does.

        Raises:
            UserError: gaps under another ``data.missing``, or in a column without a fill value.
        """
        strays = read_numbers(x, self.numeric, share=0.0)
        gaps = x.isna().sum()
        gaps = gaps[gaps > 0]
        if not len(gaps):
            return
        listed = ", ".join(f"{c} ({n} row{'s' if n > 1 else ''}{_stray_note(strays.get(c))})" for c, n in gaps.items())
        if self.missing != "mean":
            raise UserError(f"input={path} has empty cells in {listed}: the model was trained with "
                            f"data.missing={self.missing}, which gives no values to fill them with; fill them in")
        fills = {**{c: m for c, m in zip(self.numeric, self.mean.tolist(), strict=True)},
                 **self.fill_values_new_rows, **self.fill_values}
        if unfilled := [c for c in gaps.index if c not in fills]:
            raise UserError(f"input={path} has empty cells in {', '.join(unfilled)}, which had none in training, "
                            "so this checkpoint records no value to fill them with: fill them in")
        for column in gaps.index:
            x[column] = x[column].fillna(fills[column])
        if strays:
            warn("cells that are not numbers filled as missing values (data.missing=mean): "
                 f"{', '.join(f'{c} ({rows_text(s.rows)}: {s.describe()})' for c, s in strays.items())}")


def _stray_note(stray: Any) -> str:
    """``; row 3 not numbers: '?'`` for the cells of a numeric column that were not numbers
    (a :class:`~dltrain.data.cells.Stray`, or None)."""
    if stray is None:
        return ""
    return f"; {rows_text(stray.rows)} not numbers: {', '.join(repr(v) for v in stray.values[:3])}"


def _one_hot_columns(column: str, categories: Sequence[str], columns: Sequence[str],
                     position: int) -> tuple[dict[str | None, int], int]:
    """Where scikit-learn's OneHotEncoder put each category of ``column``: its output columns
    start at ``position`` in ``columns``, the frequent categories in order, then
    ``<column>_infrequent_sklearn`` for the rest (and unseen ones) when the encoder made one.

    Returns:
        category -> output column (``None`` -> the infrequent column), and the position after them.
    """
    index: dict[str | None, int] = {}
    infrequent = []
    for category in categories:
        if position < len(columns) and columns[position] == f"{column}_{category}":
            index[category] = position
            position += 1
        else:
            infrequent.append(category)
    if position < len(columns) and columns[position] == f"{column}_{INFREQUENT}":
        index.update({category: position for category in infrequent})
        index[None] = position
        position += 1
    return index, position

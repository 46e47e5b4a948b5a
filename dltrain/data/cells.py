"""What a table's cells hold, checked before anything is fitted on them: numbers written
among stray text, infinite numbers, values too large to standardise, and a header that
names a column twice.

The rule for a column of mixed cells: when at least ``MOSTLY_NUMERIC`` of its non-empty
cells are numbers, it is a numeric column and the other cells are treated as missing
(``data.missing`` decides); otherwise it is a text column. A ``true`` among other numbers
is such a cell, not the number 1. Row numbers in messages count the file's data rows from
0, as ``predictions.csv``'s ``row`` does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dltrain.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

MOSTLY_NUMERIC = 0.9
"""Share of a column's non-empty cells that must be numbers for the column to be numeric."""

TRUTH = {"True": 1.0, "TRUE": 1.0, "true": 1.0, "False": 0.0, "FALSE": 0.0, "false": 0.0}
"""The true/false cells pandas reads as booleans, which a boolean column holds as 1 and 0."""

TARGET_LIMIT = 1e30
"""Largest magnitude of a regression target: predictions in its units are float32 (up to 3.4e38)."""


@dataclass
class Stray:
    """The cells of a numeric column that are not numbers.

    Attributes:
        rows: their row numbers (0 = the first data row).
        values: the distinct texts, in order of appearance.
        cells: the column's non-empty cells.
    """

    rows: list[int]
    values: list[str]
    cells: int

    def describe(self, limit: int = 3) -> str:
        """``2 of 300 cells are not numbers ('?', 'n/a')``."""
        shown = ", ".join(repr(v) for v in self.values[:limit])
        more = f" and {len(self.values) - limit} more" if len(self.values) > limit else ""
        what = "is not a number" if len(self.rows) == 1 else "are not numbers"
        return f"{len(self.rows)} of {self.cells} cells {what} ({shown}{more})"


def rows_text(rows: Sequence[int], limit: int = 5) -> str:
    """``row 7`` or ``rows 3, 8, 12 and 4 more``."""
    shown = ", ".join(str(r) for r in rows[:limit])
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def numbers_of(cells: pd.Series) -> pd.Series:
    """Each cell as a float64 number, NaN where it is none. True/false cells count as 1 and 0
    only in a boolean column, whose other cells are no numbers either: among other numbers a
    ``true`` is a stray cell, not the number 1."""
    import pandas as pd

    truth = cells.map(lambda v: isinstance(v, (bool, np.bool_)) or (isinstance(v, str) and v in TRUTH))
    parsed = pd.to_numeric(cells.where(~truth), errors="coerce")
    if parsed.notna().any():
        return parsed.astype(np.float64)
    return pd.to_numeric(cells.map(lambda v: TRUTH.get(v, v) if isinstance(v, str) else v).where(truth),
                         errors="coerce").astype(np.float64)


def read_numbers(table: pd.DataFrame, columns: Sequence[str], share: float = MOSTLY_NUMERIC) -> dict[str, Stray]:
    """Make each mostly numeric text column of ``columns`` a float column, in place: its cells
    that are not numbers (see :func:`numbers_of`) become missing. A column with fewer numbers
    than ``share`` of its non-empty cells stays text (``share=0``: every column of
    ``columns`` becomes numeric).

    Returns:
        column -> the cells that were not numbers, for the columns with such cells.
    """
    from pandas.api.types import is_object_dtype, is_string_dtype

    strays: dict[str, Stray] = {}
    for column in columns:
        cells = table[column]
        if not (is_object_dtype(cells) or is_string_dtype(cells)):
            continue
        present = cells.notna()
        numbers = numbers_of(cells)
        stray = present & numbers.isna()
        count = int(present.sum())
        if count - int(stray.sum()) < share * count:
            continue
        table[column] = numbers  # float even without stray cells: an object column would be one-hot encoded
        if stray.any():
            strays[str(column)] = Stray(table.index[stray.to_numpy()].tolist(),
                                        list(dict.fromkeys(cells[stray].astype(str))), count)
    return strays


def stray_warnings(strays: dict[str, Stray], missing: str) -> list[str]:
    """One line per column of :func:`read_numbers`, for the log and ``summary.json``."""
    return [f"column {column}: {stray.describe()}, read as missing values (data.missing={missing}) since at least "
            f"{MOSTLY_NUMERIC:.0%} of its cells are numbers" for column, stray in strays.items()]


def check_finite(table: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    """Refuse an infinite number in a numeric column of ``columns`` (``inf``, ``-inf``, or a
    number beyond float64's range such as ``1e400``).

    Raises:
        ConfigError: naming the first such column of ``where`` and its rows.
    """
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    for column in columns:
        cells = table[column]
        if not is_numeric_dtype(cells) or is_bool_dtype(cells):
            continue
        infinite = np.isinf(cells.to_numpy(dtype=np.float64))
        if infinite.any():
            raise ConfigError(f"{where}: column {column} holds infinite numbers in {rows_text(table.index[infinite])} "
                              "(0 = the first data row): replace them with finite numbers, or empty those cells to "
                              "treat them as missing (data.missing decides).")


def check_standardised(names: Sequence[str], mean: np.ndarray, std: np.ndarray, values: np.ndarray,
                       where: str) -> None:
    """Refuse numeric columns whose standardisation is not finite in float32: values so
    large that their variance overflows.

    Args:
        names: the columns, in the order of the last axis of the other arrays.
        mean, std: the fitted statistics ``(1, columns)``.
        values: the standardised float32 values ``(rows, columns)``.

    Raises:
        ConfigError: naming the columns of ``where``.
    """
    bad = ~(np.isfinite(mean).ravel() & np.isfinite(std).ravel() & np.isfinite(values).all(axis=0))
    if bad.any():
        listed = ", ".join(str(n) for n, b in zip(names, bad, strict=True) if b)
        raise ConfigError(f"{where}: column{'s' if bad.sum() > 1 else ''} {listed} cannot be standardised: "
                          "the values are too large for their variance to be computed; rescale them (other units, "
                          "or a logarithm) or remove them from data.features.")


def check_target_scale(values: np.ndarray, column: str) -> None:
    """Refuse a regression target too large to standardise and predict in float32.

    Raises:
        ConfigError: naming ``data.target``.
    """
    largest = float(np.max(np.abs(values))) if len(values) else 0.0
    if not largest < TARGET_LIMIT:
        raise ConfigError(f"data.target={column} holds values up to {largest:.3g}, too large to standardise and to "
                          f"predict in float32: rescale it to magnitudes below {TARGET_LIMIT:.0e} (other units, "
                          "or a logarithm).")


_RENAMED = re.compile(r"(.*)\.\d+")


def check_header(file: Path, delimiter: str, columns: Sequence[object], where: str) -> None:
    """Refuse a header that names a column twice (pandas would read the second ``a`` as ``a.1``).

    Raises:
        ConfigError: naming the repeated names.
    """
    import pandas as pd

    names = {str(c) for c in columns}
    if not any((m := _RENAMED.fullmatch(n)) and m.group(1) in names for n in names):
        return  # the common case: no name looks renamed, so the header need not be read again
    header = pd.read_csv(file, sep=delimiter, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0]
    counts = header[header != ""].value_counts()
    repeated = [f"{name} ({count} columns)" for name, count in counts[counts > 1].items()]
    if repeated:
        raise ConfigError(f"{where} names a column more than once in its header: {', '.join(repeated)}: give each "
                          "column its own name.")

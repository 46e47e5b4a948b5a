"""Rows of dicts written as a CSV table a spreadsheet opens safely (``predictions.csv``, the
output of ``dltrain-predict``). Imports no torch: ``dltrain-predict`` writes its output with it
where only onnxruntime is installed."""

from __future__ import annotations

import csv
import re
from typing import IO, Any

#: How a cell that a spreadsheet would run as a formula starts (OWASP's CSV injection guidance).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def spreadsheet_safe(value: Any) -> Any:
    """``value`` as a CSV cell a spreadsheet shows as text: a string that starts like a
    formula (``=HYPERLINK(...)``, ``@SUM(...)``, ...) gets a leading ``'``; numbers, and
    strings that are plain numbers (a class named ``-1``), stay as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def write_table(f: IO[str], rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` (dicts with the same keys) to the open file ``f`` as CSV with a header,
    every text cell and column name made :func:`spreadsheet_safe` (class names come from the
    user's data, and reach the ``p_<class>`` columns too)."""
    columns = list(rows[0])
    writer = csv.writer(f)
    writer.writerow([spreadsheet_safe(c) for c in columns])
    writer.writerows([spreadsheet_safe(row.get(c)) for c in columns] for row in rows)

"""Reading a CSV file with a header row, each failure one line naming the key that named
the file: the training data (``data.path``) and the inputs of ``dltrain-predict`` (``input``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dltrain.data.cells import check_header
from dltrain.errors import ConfigError

if TYPE_CHECKING:  # pandas is imported where used: the other datasets never pay for it
    import pandas as pd


def describe_path(path: str | Path, key: str = "data.path") -> str:
    """``key=path`` for messages, with the absolute path added when ``path`` is relative."""
    absolute = Path(path).expanduser().resolve()
    return f"{key}={path}" if str(absolute) == str(path) else f"{key}={path} ({absolute})"


def read_table(path: str | Path, delimiter: str = ",", key: str = "data.path") -> pd.DataFrame:
    """Read a CSV file with a header row.

    Args:
        path: the file; relative paths are relative to the working directory.
        delimiter: the field separator.
        key: the config key that named the file, for error messages.

    Raises:
        ConfigError: naming ``key`` and the absolute path, for a missing file, a directory,
            an empty file, a file without data rows, one pandas cannot parse, or a header
            that names a column twice.
    """
    import pandas as pd

    file = Path(path).expanduser()
    where = describe_path(path, key)
    if not file.exists():
        raise ConfigError(f"{where} does not exist: give the path of a CSV file.")
    if file.is_dir():
        raise ConfigError(f"{where} is a directory: give the path of a CSV file.")
    try:
        table = pd.read_csv(file, sep=delimiter)
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{where} is empty: give a CSV file with a header row and data rows.") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{where} is not UTF-8 text ({err.reason} at byte {err.start}): save it as UTF-8.") from None
    except ValueError as err:  # parser errors, a bad separator
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"{where} cannot be read as CSV ({first_line}): fix the file, "
                          f"or set data.delimiter (now {delimiter!r}).") from None
    if table.empty:
        raise ConfigError(f"{where} has a header but no data rows: give a CSV file with data rows.")
    check_header(file, delimiter, table.columns, where)
    return table

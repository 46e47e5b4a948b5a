"""What every fitted preprocessing offers, and the checks its readers share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from dltrain.errors import UserError

if TYPE_CHECKING:  # the readers of new inputs import no torch: an exported model runs without it
    import torch

#: One batch of a file's inputs: their ids (row numbers or image paths), the model's inputs
#: and each input's drift flags (see :mod:`dltrain.data.preprocessing.drift`).
Batch = tuple[list[Any], "torch.Tensor", list[str]]
#: Prints a warning about the inputs read (the caller words who warns).
Warn = Callable[[str], None]


class Preprocessing(ABC):
    """A dataset's preprocessing fitted on its training split: applied to the training data
    when it is loaded, saved in the checkpoint's data record, and rebuilt from it to read new
    inputs the same way (``dltrain-eval``, ``dltrain-predict``).

    Attributes:
        kind: the name of this kind of preprocessing (a dataset registers it as its ``inputs``).
        marks: data record keys that only a record of this kind holds, for records written
            before datasets registered their kind.
        reads: what new inputs are, for ``dltrain-predict --help``.
    """

    kind: ClassVar[str]
    marks: ClassVar[tuple[str, ...]]
    reads: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_record(cls, record: Mapping[str, Any], options: Mapping[str, Any],
                    checkpoint: str | Path) -> Preprocessing:
        """Rebuild from a checkpoint's data record (already checked by
        :func:`~dltrain.config.trust.check_data_record`) and its ``data`` config ``options``.

        Raises:
            UserError: one line naming ``checkpoint`` and the entry that cannot be used.
        """

    @abstractmethod
    def to_record(self) -> dict[str, Any]:
        """The fitted statistics as the plain entries of the data record (``data.json``)."""

    @abstractmethod
    def apply(self, raw: Any) -> torch.Tensor:
        """Raw inputs (as the kind's reader gives them) -> the model's inputs."""

    @abstractmethod
    def read(self, path: Path, batch_size: int, warn: Warn) -> Iterator[Batch]:
        """Batches of the inputs in ``path``, preprocessed for the model.

        Raises:
            UserError: inputs that cannot be read, or that do not match the training data.
        """


def batched(x: torch.Tensor, flags: list[str], batch_size: int) -> Iterator[Batch]:
    """Rows of ``x`` (numbered from 0) and their flags in batches of ``batch_size``."""
    for start in range(0, len(x), batch_size):
        stop = min(start + batch_size, len(x))
        yield list(range(start, stop)), x[start:stop], flags[start:stop]


def check_scaled(path: Path, columns: Sequence[Any], cells: np.ndarray, scaled: np.ndarray) -> None:
    """Refuse input cells that the model cannot read once standardised, column by column.

    Args:
        path: the input file, for messages.
        columns: the name of each column.
        cells: the cells as float64 ``(rows, columns)``.
        scaled: their standardised float32 values, same shape.

    Raises:
        UserError: an infinite cell, or one whose value does not fit float32 (``1e39``),
            naming the column and its rows (0 = the first data row).
    """
    from dltrain.data.cells import rows_text

    for j, column in enumerate(columns):
        if (infinite := np.isinf(cells[:, j])).any():
            raise UserError(f"input={path}: column {column} holds infinite numbers in "
                            f"{rows_text(np.flatnonzero(infinite))} (0 = the first data row): the model reads "
                            "finite numbers; fix those cells")
        if not (finite := np.isfinite(scaled[:, j])).all():
            raise UserError(f"input={path}: column {column} holds numbers too large for the model in "
                            f"{rows_text(np.flatnonzero(~finite))} (0 = the first data row): fix those cells")

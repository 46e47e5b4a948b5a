"""One fitted preprocessing object per kind of input, fitted on the training split.

A dataset computes its tensors through its preprocessing's ``apply``, saves it in the data
record (``data.json``, the checkpoint's ``data``) with ``to_record``, and ``dltrain-eval`` and
``dltrain-predict`` rebuild it with :func:`from_record` to read new inputs the same way. A
dataset names its kind where it is registered (``DATASETS.register(NAME, inputs=KIND)``):

* ``images``: uint8 images standardised per channel (:class:`Images`), read from image files;
* ``ink_counts``: ``data=digits``' ink counts standardised per pixel (:class:`InkCounts`), read
  from image files;
* ``table``: feature columns standardised and one-hot encoded (:class:`Table`), read from a CSV;
* ``text``: token ids of a vocabulary (:class:`Text`), read from a CSV's text column;
* ``points``: standardised coordinates (:class:`Points`), read from a CSV's numeric columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dltrain.data.preprocessing.base import Preprocessing
from dltrain.data.preprocessing.images import Images, InkCounts
from dltrain.data.preprocessing.points import Points
from dltrain.data.preprocessing.table import Table
from dltrain.data.preprocessing.text import Text
from dltrain.data.registry import DATASETS

#: Each kind's class, by the name datasets register.
KINDS: dict[str, type[Preprocessing]] = {cls.kind: cls for cls in (Table, Text, Points, InkCounts, Images)}

__all__ = ["KINDS", "Images", "InkCounts", "Points", "Preprocessing", "Table", "Text", "from_record", "inputs_help",
           "kind_of", "readable"]


def kind_of(record: Mapping[str, Any]) -> str | None:
    """The kind of preprocessing a data record holds: the one its dataset registers, or for a
    dataset not registered here, the kind whose entries the record holds; None for data whose
    inputs are not read from files."""
    dataset = record.get("dataset")
    if dataset in DATASETS:
        return DATASETS.facts(dataset).inputs
    return next((kind for kind, cls in KINDS.items() if any(key in record for key in cls.marks)), None)


def from_record(record: Mapping[str, Any], options: Mapping[str, Any], checkpoint: str | Path) -> Preprocessing | None:
    """The preprocessing of a checkpoint's data record (see :meth:`Preprocessing.from_record`),
    or None when its inputs are not read from files.

    Raises:
        UserError: one line naming ``checkpoint`` and the entry that cannot be used.
    """
    kind = kind_of(record)
    return None if kind is None else KINDS[kind].from_record(record, options, checkpoint)


def readable(listed: Sequence[str] = ()) -> list[str]:
    """The registered datasets whose inputs are read from files, by kind, each kind's in the
    order of ``listed`` (the order the options are declared in; others last, sorted)."""
    return [name for kind in KINDS for name in _of_kind(kind, listed)]


def _of_kind(kind: str, listed: Sequence[str]) -> list[str]:
    names = [name for name in DATASETS.names() if DATASETS.facts(name).inputs == kind]
    return sorted(names, key=lambda name: list(listed).index(name) if name in listed else len(listed))


def inputs_help(listed: Sequence[str] = ()) -> str:
    """What ``input=`` is for each dataset whose inputs are read from files, one entry per
    kind of file (``  data=csv          a CSV with ...``), the names in the order of ``listed``."""
    entries: dict[str, list[str]] = {}
    for kind, cls in KINDS.items():
        entries.setdefault(cls.reads, [])
        entries[cls.reads] += _of_kind(kind, listed)
    lines = []
    for reads, names in entries.items():
        if not names:
            continue
        option = f"  data={', '.join(names)}"
        lines.append(f"{option:<20}{reads}" if len(option) < 20 else f"{option}\n{'':<20}{reads}")
    return "\n".join(lines)

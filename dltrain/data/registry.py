"""The dataset registry: ``data=NAME`` calls ``DATASETS.get(NAME)(seed=..., **options)``."""

from __future__ import annotations

from dataclasses import dataclass

from dltrain.registry import Registry


@dataclass(frozen=True)
class DatasetFacts:
    """What the rest of dltrain knows about a dataset besides its builder.

    Attributes:
        inputs: the kind of its fitted preprocessing (``images``, ``ink_counts``, ``table``,
            ``text``, ``points``; see :mod:`dltrain.data.preprocessing`), which also says how
            ``dltrain-predict`` reads its raw inputs from a file; None for data whose inputs
            are not read from files.
    """

    inputs: str | None = None


DATASETS = Registry("data", DatasetFacts)

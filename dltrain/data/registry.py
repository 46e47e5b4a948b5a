"""The dataset registry: ``data=NAME`` calls ``DATASETS.get(NAME)(seed=..., **options)``."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dltrain.registry import Registry

#: The kinds of fitted preprocessing (:data:`dltrain.data.preprocessing.KINDS` has their classes),
#: spelled here so the registry checks a dataset's kind without importing the preprocessing,
#: which imports this registry.
INPUT_KINDS = ("table", "text", "points", "ink_counts", "images")


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

    def __post_init__(self) -> None:
        # At import time: a misspelt kind would otherwise leave the dataset unreadable by dltrain-predict.
        if self.inputs is not None and self.inputs not in INPUT_KINDS:
            raise ValueError(f"inputs={self.inputs!r} is not a kind of input: use one of {', '.join(INPUT_KINDS)} "
                             "or None")


class DatasetRegistry(Registry[DatasetFacts]):
    """The registry of datasets, which imports every module of :mod:`dltrain.data` (their
    imports register the datasets) the first time it is read, not when the package is imported:
    the modules that read an exported model's inputs import no torch, and the datasets do."""

    _loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            package = importlib.import_module("dltrain.data")
            for module in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"dltrain.data.{module.name}")

    def get(self, name: str) -> Callable[..., Any]:
        self._load()
        return super().get(name)

    def names(self) -> list[str]:
        self._load()
        return super().names()

    def __contains__(self, name: object) -> bool:
        self._load()
        return super().__contains__(name)


DATASETS = DatasetRegistry("data", DatasetFacts)

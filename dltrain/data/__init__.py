"""Datasets (``data=NAME``) as train/validation/test splits, and the batches the trainer
reads them by. Every module of this package is imported when the registry is first read
(see :mod:`dltrain.data.registry`), which registers its datasets: a new dataset is its module
(or a builder in one), its schema and its preset. Importing the package itself imports no
torch: ``dltrain-predict`` of an exported model reads its inputs with the modules that need none.
"""

from __future__ import annotations

import importlib
from typing import Any

from dltrain.data.registry import DATASETS

#: The names this package offers, by the module that defines them (imported when first used).
_LAZY = {"Augment": "augment", "build_augment": "augment", "LoaderBatches": "batches", "TensorBatches": "batches",
         "DataSplits": "splits"}

__all__ = ["DATASETS", "Augment", "DataSplits", "LoaderBatches", "TensorBatches", "build_augment"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Datasets (``data=NAME``) as train/validation/test splits, and the batches the trainer
reads them by. Importing a dataset's module registers it, and every module of this package
is imported here: a new dataset is its module (or a builder in one), its schema and its preset."""

import importlib
import pkgutil

from dltrain.data.augment import Augment, build_augment
from dltrain.data.batches import LoaderBatches, TensorBatches
from dltrain.data.registry import DATASETS
from dltrain.data.splits import DataSplits

for _module in pkgutil.iter_modules(__path__):  # registration
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["DATASETS", "Augment", "DataSplits", "LoaderBatches", "TensorBatches", "build_augment"]

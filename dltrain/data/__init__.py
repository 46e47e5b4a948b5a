"""Datasets, as in-memory splits, and the batches the trainer reads them by."""

from dltrain.data import digits  # noqa: F401  (registers the dataset)
from dltrain.data.augment import Augment, build_augment
from dltrain.data.batches import LoaderBatches, TensorBatches
from dltrain.data.registry import DATASETS
from dltrain.data.splits import DataSplits

__all__ = ["DATASETS", "Augment", "DataSplits", "LoaderBatches", "TensorBatches", "build_augment"]

"""Datasets (``data=NAME``) as train/validation/test splits, and the batches the trainer
reads them by. Importing a dataset's module registers it."""

from dltrain.data import digits, image_folder, synthetic, tabular, text, vision  # noqa: F401  (registration)
from dltrain.data.augment import Augment, build_augment
from dltrain.data.batches import LoaderBatches, TensorBatches
from dltrain.data.registry import DATASETS
from dltrain.data.splits import DataSplits

__all__ = ["DATASETS", "Augment", "DataSplits", "LoaderBatches", "TensorBatches", "build_augment"]

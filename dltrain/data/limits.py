"""How much of each split an epoch reads: ``trainer.limit_train_batches``,
``trainer.limit_val_batches`` and ``trainer.overfit_batches``.

A limit is a fraction of the split's batches (a float in (0, 1]; ``1.0`` = all) or a count
(an int >= 1), as in Lightning: Hydra reads ``1`` as the int one batch and ``1.0`` as the
float all of them. Training reads the first batches of each epoch's shuffled order, so a
resume skips and replays them exactly as it does without a limit; the test split is never
limited. ``trainer.fast_dev_run`` wins over all of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def batch_count(limit: Any, available: int) -> int:
    """How many of ``available`` batches ``limit`` keeps: a float is a fraction (at least one
    batch of a split that has any), an int a count (at most ``available``)."""
    if isinstance(limit, str):  # a value the schema's pattern let through as text ("0.5")
        limit = float(limit) if "." in limit else int(limit)
    if isinstance(limit, float):
        return available if limit >= 1.0 else min(available, max(1, math.floor(limit * available)))
    return min(available, int(limit))


@dataclass(frozen=True)
class BatchLimits:
    """The limits of one run (``trainer.limit_*_batches``, ``trainer.overfit_batches``).

    Attributes:
        train, val: the limit of each epoch's training and validation batches.
        overfit: N > 0: train and validate on the first N training batches (in their order,
            never shuffled); the augmentations and dropout stay as configured, as Lightning
            keeps the training transforms.
    """

    train: float | int = 1.0
    val: float | int = 1.0
    overfit: int = 0

    def apply(self, train: Any, val: Any) -> None:
        """Set ``limit_batches`` on the training and validation batches (TensorBatches,
        LoaderBatches) from their full lengths; a limit of all changes nothing."""
        for batches, limit in ((train, self.train), (val, self.val)):
            available = len(batches)
            kept = batch_count(limit, available)
            if kept < available:
                batches.limit_batches = kept


def overfit_examples(overfit: int, batch_size: int, num_train: int, world_size: int) -> int:
    """How many of the first training examples ``overfit`` batches of ``batch_size`` (the
    global batch) hold; a whole number per rank, so every rank takes as many steps."""
    count = min(overfit * batch_size, num_train)
    return count - count % world_size


def overfit_splits(overfit: int, data: Any, batch_size: int,
                   world_size: int) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """The training and validation data ``(x, y)`` to batch: the splits of ``data``, or with
    ``overfit`` N > 0 the same first training examples (N global batches of ``batch_size``)
    for both; data read from disk is then a ``Subset`` whose targets it holds (y None)."""
    if not overfit:
        return (data.x_train, data.y_train), (data.x_val, data.y_val)
    count = overfit_examples(overfit, batch_size, len(data.x_train), world_size)
    if data.in_memory:
        return ((data.x_train[:count], data.y_train[:count]),) * 2
    from torch.utils.data import Subset  # only for data on disk: this module imports no torch

    return ((Subset(data.x_train, range(count)), None),) * 2

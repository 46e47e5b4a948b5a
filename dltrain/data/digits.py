"""``data=digits``: scikit-learn's bundled 8x8 handwritten digits (no network needed)."""

from __future__ import annotations

import gzip
import importlib.util
import math
from pathlib import Path

import numpy as np
import torch

from dltrain.data.preprocessing.images import InkCounts
from dltrain.data.registry import DATASETS
from dltrain.data.splits import DataSplits, stratified_split
from dltrain.errors import ConfigError


@DATASETS.register("digits", inputs="ink_counts")
def build_digits(seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2) -> DataSplits:
    """1,797 real 8x8 images of digits 0-9, split stratified and seeded.

    The test split takes ``test_fraction`` of all images and validation ``val_fraction``
    of all images (none with 0); the rest trains. Each pixel is standardised with statistics fitted on
    the training split only, so nothing about validation or test leaks into training.

    Returns:
        Splits of shape ``(N, 1, 8, 8)`` (float32) with integer labels, task ``multiclass``.
    """
    if val_fraction + test_fraction >= 1:
        raise ConfigError(f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction:g} "
                          "leaves nothing to train on: make their sum less than 1.")
    x, y = _load_digits()  # (1797, 64) float32 ink counts 0..16, (1797,) int64
    try:
        rest, test = stratified_split(y, math.ceil(test_fraction * len(y)), seed)
        if val_fraction == 0:  # no validation split: every image outside the test split trains
            train, val = np.arange(len(rest)), np.arange(0)
        else:
            train, val = stratified_split(y[rest], math.ceil(val_fraction / (1 - test_fraction) * len(rest)), seed)
    except ValueError as err:  # a split too small to hold every class once
        raise ConfigError(f"data.val_fraction={val_fraction:g} and data.test_fraction={test_fraction:g} leave a split "
                          f"with fewer examples than the 10 classes: make both between 0.01 and 0.5 ({err}).") from err
    x_rest, y_rest = x[rest], y[rest]
    x_train, y_train, x_val, y_val = x_rest[train], y_rest[train], x_rest[val], y_rest[val]
    x_test, y_test = x[test], y[test]
    # Pixels are ink counts 0..16 (bright = ink), standardised per pixel, row by row; the
    # record says how dltrain-predict reads new images the same way.
    prep = InkCounts.fit(x_train, pixel_max=16, image_size=(8, 8))
    return DataSplits(
        x_train=prep.apply(x_train), y_train=torch.from_numpy(y_train),
        x_val=prep.apply(x_val), y_val=torch.from_numpy(y_val),
        x_test=prep.apply(x_test), y_test=torch.from_numpy(y_test),
        task="multiclass", num_outputs=10, class_names=[str(d) for d in range(10)], info=prep.to_record(),
        preprocessing=prep,
    )


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as ``(pixels float32 (N, 64), labels int64 (N,))``, read from the
    file scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``: 64 pixel columns and
    the label per row) without importing scikit-learn, which takes over a second; through
    ``sklearn.datasets.load_digits`` should the file ever move."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is not None and path.is_file():
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float64)  # (1797, 65)
        return table[:, :-1].astype(np.float32), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data.astype(np.float32), digits.target.astype(np.int64)

"""``data=digits``: scikit-learn's bundled 8x8 handwritten digits (no network needed)."""

from __future__ import annotations

import gzip
import importlib.util
import math
from pathlib import Path

import numpy as np
import torch

from dltrain.data.registry import DATASETS
from dltrain.data.splits import DataSplits, stratified_split
from dltrain.errors import ConfigError


@DATASETS.register("digits")
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
    mean, scale = _pixel_scaling(x_train)

    def images(a: np.ndarray) -> torch.Tensor:
        # In float32, with the statistics cast to it, as scikit-learn's StandardScaler does
        return torch.from_numpy((a - mean.astype(np.float32)) / scale.astype(np.float32)).reshape(-1, 1, 8, 8)

    return DataSplits(
        x_train=images(x_train), y_train=torch.from_numpy(y_train),
        x_val=images(x_val), y_val=torch.from_numpy(y_val),
        x_test=images(x_test), y_test=torch.from_numpy(y_test),
        task="multiclass", num_outputs=10, class_names=[str(d) for d in range(10)],
        # What dltrain-predict needs to read new images the same way: pixels are ink counts
        # 0..16 (bright = ink), standardised per pixel, row by row.
        info={"image_size": [8, 8], "color": "grayscale", "pixel_max": 16,
              "pixel_scaling": {"mean": mean.round(6).tolist(), "std": scale.round(6).tolist()},
              "native_sizes": {"min": [8, 8], "max": [8, 8]}},  # dltrain-predict flags images of another size
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


def _pixel_scaling(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's mean and standard deviation over ``x`` (float64), computed as
    scikit-learn's ``StandardScaler`` does, so the images come out bit for bit as they did
    through it; a constant pixel gets a scale of 1."""
    n = len(x)
    x64 = x.astype(np.float64)
    mean = x64.sum(axis=0) / n
    centred = x64 - mean
    var = ((centred ** 2).sum(axis=0) - centred.sum(axis=0) ** 2 / n) / n
    eps = np.finfo(np.float64).eps
    constant = var <= n * eps * var + (n * mean * eps) ** 2
    scale = np.sqrt(var)
    scale[constant] = 1.0
    return mean, scale

"""``data=digits``: scikit-learn's bundled 8x8 handwritten digits (no network needed)."""

from __future__ import annotations

import numpy as np
import torch

from dltrain.data.registry import DATASETS
from dltrain.data.splits import DataSplits
from dltrain.errors import ConfigError


@DATASETS.register("digits")
def build_digits(seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2) -> DataSplits:
    """1,797 real 8x8 images of digits 0-9, split stratified and seeded.

    The test split takes ``test_fraction`` of all images and validation ``val_fraction``
    of all images; the rest trains. Each pixel is standardised with statistics fitted on
    the training split only, so nothing about validation or test leaks into training.

    Returns:
        Splits of shape ``(N, 1, 8, 8)`` (float32) with integer labels, task ``multiclass``.
    """
    if val_fraction + test_fraction >= 1:
        raise ConfigError(f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction:g} "
                          "leaves nothing to train on: make their sum less than 1.")
    from sklearn.datasets import load_digits  # here: scikit-learn takes a second to import
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    digits = load_digits()
    x = digits.data.astype(np.float32)  # (1797, 64), values 0..16
    y = digits.target.astype(np.int64)
    try:
        x_rest, x_test, y_rest, y_test = train_test_split(
            x, y, test_size=test_fraction, stratify=y, random_state=seed)
        x_train, x_val, y_train, y_val = train_test_split(
            x_rest, y_rest, test_size=val_fraction / (1 - test_fraction), stratify=y_rest, random_state=seed)
    except ValueError as err:  # a split too small to hold every class once
        raise ConfigError(f"data.val_fraction={val_fraction:g} and data.test_fraction={test_fraction:g} leave a split "
                          f"with fewer examples than the 10 classes: make both between 0.01 and 0.5 ({err}).") from err
    scaler = StandardScaler().fit(x_train)

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(scaler.transform(a).astype(np.float32)).reshape(-1, 1, 8, 8)

    return DataSplits(
        x_train=images(x_train), y_train=torch.from_numpy(y_train),
        x_val=images(x_val), y_val=torch.from_numpy(y_val),
        x_test=images(x_test), y_test=torch.from_numpy(y_test),
        task="multiclass", num_outputs=10, class_names=[str(d) for d in digits.target_names],
        # What dltrain-predict needs to read new images the same way: pixels are ink counts
        # 0..16 (bright = ink), standardised per pixel, row by row.
        info={"image_size": [8, 8], "color": "grayscale", "pixel_max": 16,
              "pixel_scaling": {"mean": scaler.mean_.round(6).tolist(), "std": scaler.scale_.round(6).tolist()}},
    )

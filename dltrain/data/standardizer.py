"""Per-feature standardisation fitted on training data (:class:`Standardizer`). Imports no
torch: ``dltrain-predict`` of an exported model reads points with it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Standardizer:
    """Per-feature (or per-channel) mean and standard deviation, fitted on training data.

    Args:
        mean, std: arrays broadcastable against the data; a constant feature gets std 1,
            so it maps to 0 instead of dividing by zero.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, axis: int | Sequence[int] = 0) -> Standardizer:
        """Fit on ``x``, reducing over ``axis`` (0: per feature; (0, 2, 3): per image channel)."""
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(axis=axis, keepdims=True)
        std = x.std(axis=axis, keepdims=True)
        return cls(mean, np.where(std > 1e-12, std, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` as float32."""
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    def to_info(self) -> dict[str, list[float]]:
        """The statistics as JSON-able lists (for ``data.json``)."""
        return {"mean": self.mean.ravel().round(6).tolist(), "std": self.std.ravel().round(6).tolist()}

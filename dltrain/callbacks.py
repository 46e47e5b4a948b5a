"""Training policies that keep state across epochs: early stopping."""

from __future__ import annotations

import math
from typing import Any

#: Substrings of metric names for which larger is better (``mode=auto``).
_MAX_METRICS = ("accuracy", "acc", "r2", "f1", "precision", "recall", "auc")


def infer_mode(monitor: str) -> str:
    """``max`` for accuracy-like metrics, ``min`` for losses and errors."""
    return "max" if any(m in monitor.lower() for m in _MAX_METRICS) else "min"


class EarlyStopping:
    """Tracks the best value of a monitored metric and decides when to stop.

    An epoch improves when its value beats the best so far by more than ``min_delta``.
    After ``patience`` epochs in a row without improvement, :attr:`should_stop` is true
    (with ``patience=0``, at the first epoch that does not improve). The best value and
    epoch are tracked even when ``enabled`` is false, for ``best.pt`` and the summary.

    Args:
        monitor: metric name, e.g. ``val_loss``.
        mode: ``min``, ``max`` or ``auto`` (from the name).
        min_delta: minimum change that counts as an improvement (>= 0).
        patience: epochs without improvement tolerated before stopping.
        enabled: whether to stop at all.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", min_delta: float = 0.0,
                 patience: int = 5, enabled: bool = True) -> None:
        self.monitor = monitor
        self.mode = infer_mode(monitor) if mode == "auto" else mode
        self.min_delta = abs(min_delta)
        self.patience = patience
        self.enabled = enabled
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.should_stop = False

    def is_improvement(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, epoch: int, value: float) -> bool:
        """Record ``value`` for ``epoch``; returns whether it is a new best."""
        improved = self.is_improvement(value)
        if improved:
            self.best, self.best_epoch, self.wait = value, epoch, 0
        else:
            self.wait += 1
            self.should_stop = self.enabled and self.wait >= self.patience
        return improved

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "should_stop": self.should_stop}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.wait, self.should_stop = state["wait"], state["should_stop"]

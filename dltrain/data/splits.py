"""The in-memory form every dataset is turned into: tensors for train, val and test."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

TASKS = ("regression", "binary", "multiclass", "multilabel")


@dataclass
class DataSplits:
    """Train/validation/test tensors plus what the model and loss need to know.

    Attributes:
        task: ``regression``, ``binary``, ``multiclass`` or ``multilabel``; drives
            ``loss=auto`` and the metrics.
        num_outputs: classes (2 for binary), labels (multi-label) or target columns
            (regression). The loss decides the output layer's width from it.
        input_shape: shape of one example, no batch dimension (``(1, 8, 8)`` for digits).
        class_names: label of each class index (classification only).

    Targets: int64 class indices ``(N,)`` for binary and multi-class data, 0/1 floats
    ``(N, labels)`` for multi-label data, floats ``(N,)`` or ``(N, columns)`` for regression.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: str
    num_outputs: int
    class_names: list[str] | None = None
    input_shape: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        self.input_shape = tuple(self.x_train.shape[1:])

    def class_counts(self) -> torch.Tensor | None:
        """Training examples per class (single-label classification), else None."""
        if self.task not in ("binary", "multiclass"):
            return None
        return torch.bincount(self.y_train.cpu(), minlength=self.num_outputs)

    @property
    def sizes(self) -> dict[str, int]:
        return {"num_train": len(self.x_train), "num_val": len(self.x_val), "num_test": len(self.x_test)}

    def to(self, device: torch.device) -> DataSplits:
        """Move every split to ``device`` (in place) and return self."""
        for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
            setattr(self, name, getattr(self, name).to(device))
        return self

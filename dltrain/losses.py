"""Losses (``loss=``), chosen for the data's task and checked against it before training.

Every loss takes the model's raw outputs (logits for classification) and the targets as
the dataset stores them (class indices for classification, floats for regression).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dltrain.errors import ConfigError
from dltrain.registry import Registry

LOSSES = Registry("loss")

CLASSIFICATION = ("binary", "multiclass")


class CrossEntropy(nn.Module):
    """Softmax cross-entropy on logits and class indices."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target)


class MSE(nn.Module):
    """Mean squared error. On a classification task the softmax probabilities are compared
    with one-hot targets, the way the notes first train a classifier with MSE."""

    def __init__(self, task: str) -> None:
        super().__init__()
        self.task = task

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.task in CLASSIFICATION:
            probs = output.softmax(dim=1)  # (B, C)
            return F.mse_loss(probs, F.one_hot(target, probs.shape[1]).to(probs.dtype))
        return F.mse_loss(output, target.reshape(output.shape))


@LOSSES.register("cross_entropy")
def build_cross_entropy(task: str, num_outputs: int) -> nn.Module:
    if task not in CLASSIFICATION:
        raise ConfigError(
            f"loss=cross_entropy needs class labels, but this data's target is continuous ({task}): "
            "use loss=mse or loss=auto.")
    return CrossEntropy()


@LOSSES.register("mse")
def build_mse(task: str, num_outputs: int) -> nn.Module:
    return MSE(task)


@LOSSES.register("auto")
def build_auto(task: str, num_outputs: int) -> nn.Module:
    """Cross-entropy for classification, MSE for regression."""
    return LOSSES.build(resolve_auto(task), task=task, num_outputs=num_outputs)


def resolve_auto(task: str) -> str:
    """The loss ``loss=auto`` picks for ``task``."""
    return "cross_entropy" if task in CLASSIFICATION else "mse"

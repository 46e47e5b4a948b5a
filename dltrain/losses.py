"""Losses (``loss=``), chosen for the data's task and checked against it before training.

Every loss takes the model's raw outputs and the targets as the dataset stores them:
class indices for ``binary`` and ``multiclass``, 0/1 floats of shape ``(N, labels)`` for
``multilabel``, floats for ``regression``. A loss also says how wide the model's output
layer must be (``output_width``): one logit for BCE on binary data, two for
cross-entropy on the same data, one per class or label otherwise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dltrain.errors import ConfigError
from dltrain.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LossFacts:
    """What dltrain needs to know about a ``loss=`` option, registered with its builder.

    Attributes:
        picks: for an option that stands for another loss chosen by the data's task
            (``auto``), the function naming that loss; the run builds and reports the loss picked.
    """

    picks: Callable[[str], str] | None = None


LOSSES: Registry[LossFacts] = Registry("loss", LossFacts)

CLASSIFICATION = ("binary", "multiclass", "multilabel")
SINGLE_LABEL = ("binary", "multiclass")  # one class index per example


class Loss(nn.Module):
    """A loss with what it needs from the model.

    Attributes:
        output_width: the model's output size this loss expects.
        log_probs: the model must end in log-softmax (``nll``).
        soft_targets: it also takes class probabilities ``(B, classes)`` as targets, which
            MixUp and CutMix (:mod:`dltrain.data.mixing`) train on.
    """

    output_width: int
    log_probs: bool = False
    soft_targets: bool = False


def _one_hot(target: torch.Tensor, task: str, width: int, smoothing: float) -> torch.Tensor:
    """Float targets the shape of a probability output; smoothed toward uniform."""
    if task == "multiclass":
        soft = F.one_hot(target, width).float()  # (B, C)
        return soft * (1 - smoothing) + smoothing / width if smoothing else soft
    soft = target.float().reshape(target.shape[0], -1)  # binary (B, 1) or multilabel (B, L)
    return soft * (1 - smoothing) + smoothing / 2 if smoothing else soft


class CrossEntropy(Loss):
    """Softmax cross-entropy on logits and class indices. Given log-probabilities it is
    the negative log-likelihood, since log-softmax leaves log-probabilities unchanged.

    Targets may also be class probabilities ``(B, classes)`` (MixUp's, CutMix's): the loss is
    then ``-sum(target * log_softmax(output))`` averaged over the batch, and label smoothing
    smooths the probabilities as it smooths a one-hot target (``(1 - eps) * target + eps /
    classes``, linear: a mix of smoothed one-hots).
    """

    soft_targets = True

    def __init__(self, width: int, weight: torch.Tensor | None, label_smoothing: float, log_probs: bool) -> None:
        super().__init__()
        self.output_width = width
        self.log_probs = log_probs
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.log_probs and not self.label_smoothing and not target.is_floating_point():
            return F.nll_loss(output, target, weight=self.weight)
        return F.cross_entropy(output, target, weight=self.weight, label_smoothing=self.label_smoothing)


class BCE(Loss):
    """Binary cross-entropy on logits (sigmoid inside the loss, computed stably)."""

    def __init__(self, task: str, width: int, pos_weight: float | None, label_smoothing: float) -> None:
        super().__init__()
        self.task, self.output_width, self.label_smoothing = task, width, label_smoothing
        self.register_buffer("pos_weight", None if pos_weight is None else torch.tensor(float(pos_weight)))

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        soft = _one_hot(target, self.task, self.output_width, self.label_smoothing)
        return F.binary_cross_entropy_with_logits(output.float(), soft, pos_weight=self.pos_weight)


class Distance(Loss):
    """MSE, RMSE, MAE or Huber. On classification data it compares class probabilities
    (softmax, or sigmoid per label) with one-hot targets, the way the notes first train a
    classifier with MSE."""

    def __init__(self, kind: str, task: str, width: int, label_smoothing: float, delta: float = 1.0) -> None:
        super().__init__()
        self.kind, self.task, self.output_width = kind, task, width
        self.label_smoothing, self.delta = label_smoothing, delta

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.task == "regression":
            pred, goal = output, target.reshape(output.shape).to(output.dtype)
        else:
            pred = output.softmax(dim=1) if self.task == "multiclass" else output.sigmoid()
            goal = _one_hot(target, self.task, self.output_width, self.label_smoothing)
        if self.kind == "mae":
            return F.l1_loss(pred, goal)
        if self.kind == "huber":
            return F.huber_loss(pred, goal, delta=self.delta)
        mse = F.mse_loss(pred, goal)
        # torch has no RMSE; the epsilon keeps the gradient finite at a perfect fit.
        return (mse + 1e-12).sqrt() if self.kind == "rmse" else mse


def _class_weights(name: str, class_weights: Any, num_outputs: int, class_counts: torch.Tensor | None,
                   ) -> torch.Tensor | None:
    """``loss.class_weights``: null, ``balanced`` or one positive weight per class."""
    if class_weights is None:
        return None
    if class_weights == "balanced":
        if class_counts is None:
            raise ConfigError(f"loss.class_weights=balanced needs class labels: use loss={name} without it.")
        counts = class_counts.double().clamp_min(1)  # a class absent from training gets the largest weight
        return (counts.sum() / (len(counts) * counts)).float()
    if not isinstance(class_weights, (list, tuple)) or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w > 0
            for w in class_weights):
        raise ConfigError(f"loss.class_weights={class_weights} is not valid: use null, balanced, "
                          "or a list of positive numbers, one per class.")
    if len(class_weights) != num_outputs:
        raise ConfigError(f"loss.class_weights has {len(class_weights)} values but the data has {num_outputs} "
                          "classes: give one weight per class, or use balanced.")
    return torch.tensor([float(w) for w in class_weights])


def _needs_labels(name: str, task: str, allowed: tuple[str, ...]) -> None:
    if task not in allowed:
        hint = "loss=mse or loss=auto" if task == "regression" else "loss=bce or loss=auto"
        raise ConfigError(f"loss={name} needs {' or '.join(allowed)} targets, but this data's task is "
                          f"{task}: use {hint}.")


def _no_smoothing(name: str, task: str, label_smoothing: float) -> None:
    if label_smoothing and task == "regression":
        raise ConfigError(f"regularization.label_smoothing={label_smoothing:g} smooths class labels, but this data's "
                          f"target is continuous: set regularization.label_smoothing=0 for loss={name}.")


def _likelihood(name: str, log_probs: bool):
    """``cross_entropy`` (on logits) or ``nll`` (on the log-probabilities of a model that
    ends in log-softmax): one output per class, two for binary data."""

    def build(task: str, num_outputs: int, label_smoothing: float = 0.0,
              class_counts: torch.Tensor | None = None, class_weights: Any = None) -> Loss:
        _needs_labels(name, task, SINGLE_LABEL)
        weight = _class_weights(name, class_weights, num_outputs, class_counts)
        return CrossEntropy(num_outputs, weight, label_smoothing, log_probs=log_probs)

    build.__doc__ = _likelihood.__doc__
    return build


build_cross_entropy = LOSSES.register("cross_entropy")(_likelihood("cross_entropy", log_probs=False))
build_nll = LOSSES.register("nll")(_likelihood("nll", log_probs=True))


@LOSSES.register("bce")
def build_bce(task: str, num_outputs: int, label_smoothing: float = 0.0,
              class_counts: torch.Tensor | None = None, pos_weight: float | None = None) -> Loss:
    """Binary cross-entropy on logits: one output for binary data, one per label for multi-label data."""
    _needs_labels("bce", task, CLASSIFICATION)
    if task == "multiclass":  # one sigmoid per class would score classes that exclude each other independently
        raise ConfigError(f"loss=bce scores two classes (or independent labels), but this data's target has "
                          f"{num_outputs} classes that exclude each other: use loss=cross_entropy (or loss=auto).")
    return BCE(task, 1 if task == "binary" else num_outputs, pos_weight, label_smoothing)


def _distance(kind: str):
    def build(task: str, num_outputs: int, label_smoothing: float = 0.0,
              class_counts: torch.Tensor | None = None) -> Loss:
        _no_smoothing(kind, task, label_smoothing)
        return Distance(kind, task, 1 if task == "binary" else num_outputs, label_smoothing)

    build.__doc__ = f"``loss={kind}``; on classification data, between probabilities and one-hot targets."
    return build


for _kind in ("mse", "rmse", "mae"):
    LOSSES.register(_kind)(_distance(_kind))


@LOSSES.register("huber")
def build_huber(task: str, num_outputs: int, label_smoothing: float = 0.0,
                class_counts: torch.Tensor | None = None, delta: float = 1.0) -> Loss:
    """``loss=huber``, quadratic below ``delta`` and linear above; on classification data, between
    probabilities and one-hot targets."""
    _no_smoothing("huber", task, label_smoothing)
    return Distance("huber", task, 1 if task == "binary" else num_outputs, label_smoothing, delta)


def resolve_auto(task: str) -> str:
    """``loss=auto``: regression -> mse, binary and multi-label -> bce, multi-class -> cross_entropy."""
    return {"regression": "mse", "binary": "bce", "multiclass": "cross_entropy", "multilabel": "bce"}[task]


@LOSSES.register("auto", picks=resolve_auto)
def build_auto(task: str, num_outputs: int, label_smoothing: float = 0.0,
               class_counts: torch.Tensor | None = None) -> Loss:
    """The loss :func:`resolve_auto` picks for the task, with its default settings."""
    return LOSSES.build(resolve_auto(task), task=task, num_outputs=num_outputs, label_smoothing=label_smoothing,
                        class_counts=class_counts)


def trap_warnings(loss_name: str, last_layer: str) -> list[str]:
    """Known traps the notes warn about, from the type of the model's own last layer."""
    applies = {"cross_entropy": "softmax", "nll": "log-softmax", "bce": "a sigmoid"}
    if loss_name in applies and last_layer in ("Softmax", "Sigmoid"):
        return [f"the model ends in {last_layer} and loss={loss_name} applies {applies[loss_name]} on top of it: "
                "remove that last layer (the loss takes raw logits), or training will be slow and the loss wrong"]
    if loss_name == "bce" and last_layer == "LogSoftmax":
        return ["the model ends in LogSoftmax and loss=bce applies a sigmoid on top of it: remove that last layer "
                "(the loss takes raw logits)"]
    return []

"""A classifier's test outputs read closely: the confusion matrix, precision, recall and F1 per
class with their averages, the most confused pairs, the examples it got most wrong, and for
binary data the ROC and precision-recall curves with their areas.

Computed here in torch (float64, on the CPU) from the outputs and targets alone, so that the
numbers can be checked against another library's. A quotient with nothing to divide by (the
precision of a class never predicted, the recall of a class absent from the split) is 0, as
scikit-learn's ``zero_division=0`` makes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F  # noqa: N812 - torch's own spelling

#: How many of the most confused pairs and of the worst predictions the report names.
TOP_CONFUSED, TOP_WORST = 5, 20


def predicted_classes(outputs: torch.Tensor) -> torch.Tensor:
    """The class each output row predicts: the argmax, or ``logit > 0`` for one binary logit."""
    return (outputs[:, 0] > 0).long() if outputs.shape[1] == 1 else outputs.argmax(dim=1)


def confusion_matrix(targets: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``(num_classes, num_classes)``: rows the true class, columns the predicted one."""
    flat = targets.long() * num_classes + predictions.long()
    return torch.bincount(flat.cpu(), minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den``, 0 where ``den`` is 0 (scikit-learn's ``zero_division=0``)."""
    return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))


def scores(tp: torch.Tensor, predicted: torch.Tensor, support: torch.Tensor,
           names: Sequence[str]) -> dict[str, Any]:
    """Precision, recall, F1 and support per class (or label), and their macro (plain mean)
    and weighted (by support) averages.

    Args:
        tp: true positives per class; predicted: how often each was predicted; support: how
            often each is true.
        names: each class's name, the keys of ``per_class``.
    """
    tp, predicted, support = (t.double() for t in (tp, predicted, support))
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    f1 = _ratio(2 * tp, predicted + support)  # = 2PR/(P+R), and 0 when tp is
    table = torch.stack([precision, recall, f1])  # (3, classes)
    weights = support / support.sum() if support.sum() > 0 else torch.zeros_like(support)

    def average(values: torch.Tensor) -> dict[str, float]:
        return {**dict(zip(("precision", "recall", "f1"), map(_round, values.tolist()), strict=True)),
                "support": int(support.sum())}

    return {
        "per_class": {name: {"precision": _round(float(p)), "recall": _round(float(r)), "f1": _round(float(f)),
                             "support": int(s)}
                      for name, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)},
        "macro_avg": average(table.mean(dim=1)),
        "weighted_avg": average(table @ weights),
    }


def _round(value: float) -> float:
    return round(value, 6)


def most_confused(matrix: torch.Tensor, names: Sequence[str], top: int = TOP_CONFUSED) -> list[dict[str, Any]]:
    """The ``top`` largest off-diagonal cells of ``matrix``: which true class was taken for
    which, how often, and the share of the true class's examples that is (ties: in class order)."""
    off = matrix.clone()
    off.fill_diagonal_(0)
    counts, flat = torch.sort(off.flatten(), descending=True, stable=True)
    rows = matrix.sum(dim=1)
    k = matrix.shape[0]
    return [{"true": names[int(i) // k], "predicted": names[int(i) % k], "count": int(c),
             "share": _round(int(c) / int(rows[int(i) // k]))}
            for c, i in zip(counts[:top], flat[:top], strict=True) if c > 0]


@dataclass
class ExampleLosses:
    """Each example's loss under the model, and what that loss is.

    Attributes:
        loss: ``(N,)`` float64.
        name: ``cross_entropy`` (of the true class's softmax probability) or
            ``binary_cross_entropy`` (one logit).
        confidence: the probability of the predicted class ``(N,)``.
    """

    loss: torch.Tensor
    name: str
    confidence: torch.Tensor


def example_losses(outputs: torch.Tensor, targets: torch.Tensor) -> ExampleLosses:
    """Per-example loss of single-label outputs ``(N, classes)`` or one binary logit ``(N, 1)``.

    Log-probabilities (``loss=nll``) give the same cross-entropy as logits: softmax is
    shift-invariant, so their log-softmax is themselves.
    """
    out, y = outputs.double().cpu(), targets.long().cpu()
    if out.shape[1] == 1:
        z = out[:, 0]
        loss = F.binary_cross_entropy_with_logits(z, y.double(), reduction="none")
        p1 = torch.sigmoid(z)
        return ExampleLosses(loss, "binary_cross_entropy", torch.where(z > 0, p1, 1 - p1))
    logp = F.log_softmax(out, dim=1)
    return ExampleLosses(-logp.gather(1, y[:, None])[:, 0], "cross_entropy", logp.max(dim=1).values.exp())


def worst(losses: torch.Tensor, top: int = TOP_WORST) -> torch.Tensor:
    """Positions of the ``top`` highest losses, highest first (ties: in the split's order)."""
    return torch.sort(losses, descending=True, stable=True).indices[:top]


def positive_scores(outputs: torch.Tensor) -> torch.Tensor:
    """A score of binary outputs that orders examples as the positive class's probability
    does: the logit (one output), or the difference of the two outputs, which softmax
    turns into that probability without saturating at 1 (float64, CPU)."""
    out = outputs.double().cpu()
    return out[:, 0] if out.shape[1] == 1 else out[:, 1] - out[:, 0]


@dataclass
class BinaryCurves:
    """The ROC and precision-recall curves of one score against 0/1 truth, one point per
    distinct score from the highest down, and their areas."""

    fpr: list[float]
    tpr: list[float]
    roc_auc: float
    recall: list[float]
    precision: list[float]
    average_precision: float


def binary_curves(score: torch.Tensor, truth: torch.Tensor) -> BinaryCurves | None:
    """ROC (trapezoidal area) and precision-recall (average precision: each step of recall
    weighted by the precision reached there, not interpolated) curves; None when the split
    holds only one class, which leaves them undefined."""
    y = truth.double().cpu()
    positives = float(y.sum())
    if positives == 0 or positives == len(y):
        return None
    order = torch.sort(score.double().cpu(), descending=True, stable=True)
    sorted_score, y = order.values, y[order.indices]
    # The last example of each run of equal scores: one threshold each.
    last = torch.cat([torch.nonzero(sorted_score[1:] != sorted_score[:-1]).flatten(), torch.tensor([len(y) - 1])])
    tps = torch.cumsum(y, 0)[last]
    fps = (last + 1).double() - tps
    tpr = torch.cat([torch.zeros(1, dtype=y.dtype), tps / positives])
    fpr = torch.cat([torch.zeros(1, dtype=y.dtype), fps / (len(y) - positives)])
    precision = tps / (tps + fps)
    recall = tps / positives
    steps = torch.diff(torch.cat([torch.zeros(1, dtype=y.dtype), recall]))
    return BinaryCurves(fpr.tolist(), tpr.tolist(), float(torch.trapezoid(tpr, fpr)),
                        [0.0, *recall.tolist()], [1.0, *precision.tolist()], float((steps * precision).sum()))


def classification_report(matrix: torch.Tensor, names: Sequence[str]) -> dict[str, Any]:
    """The numbers of a binary or multi-class report (``summary.json``'s ``report``) from its
    confusion matrix (:func:`confusion_matrix`) and the name of each class."""
    return {"accuracy": _round(float(matrix.trace() / max(int(matrix.sum()), 1))),
            **scores(matrix.diagonal(), matrix.sum(dim=0), matrix.sum(dim=1), names),
            "most_confused": most_confused(matrix, names)}


def multilabel_report(outputs: torch.Tensor, targets: torch.Tensor, names: Sequence[str]) -> dict[str, Any]:
    """Precision, recall and F1 per label (a label is predicted where its logit is above 0)."""
    on, true = outputs.cpu() > 0, targets.cpu() > 0.5
    return scores((on & true).sum(dim=0), on.sum(dim=0), true.sum(dim=0), names)

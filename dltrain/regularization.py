"""Weight penalties: which parameters count as weights, L2 through optimizer parameter
groups, and the L1 term added to the loss. (Dropout and batch norm are layers the model
builders add; augmentation lives on the data path, ``dltrain.data.augment``.)"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def split_weights(model: nn.Module, keep: Callable[[nn.Parameter], bool] | None = None
                  ) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The trainable parameters (of those ``keep`` accepts) as ``(weights, others)``.

    Weights are the matrices and kernels (``ndim >= 2``: Linear, Conv, recurrent and
    embedding weights). Biases and the scale/shift of normalisation layers are vectors:
    penalising them does not regularise the function the model computes, it only pulls
    its outputs and normalised activations towards zero.
    """
    weights, others = [], []
    for p in model.parameters():
        if p.requires_grad and (keep is None or keep(p)):
            (weights if p.ndim >= 2 else others).append(p)
    return weights, others


def param_groups(model: nn.Module, weight_decay: float, split: bool | None = None,
                 keep: Callable[[nn.Parameter], bool] | None = None) -> list[dict]:
    """Optimizer parameter groups: weight decay on the weights, none on the rest.

    Without weight decay the parameters form one group (in the model's order): an
    optimizer's step costs per group, and two groups made a small MLP's Adam step about
    60 us slower per batch on a CPU. ``split`` forces the layout either way (a resumed
    run keeps the one its checkpoint was saved with). ``keep`` picks the parameters to group
    (the head's or the backbone's, :func:`~dltrain.optim.build_optimizer`); None takes all.
    """
    if split is False and weight_decay:
        raise ValueError("one parameter group cannot hold weight decay on the weights only")
    if not (weight_decay if split is None else split):
        return [{"params": [p for p in model.parameters() if p.requires_grad and (keep is None or keep(p))],
                 "weight_decay": 0.0}]
    weights, others = split_weights(model, keep)
    groups = [{"params": weights, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class WeightPenalty:
    """``l1 * sum(|w|) + l2 / 2 * sum(w^2)`` over the weights, added to the training loss.

    L1 always works this way. L2 only does for optimizers without per-group weight decay
    (LBFGS): the gradient of ``l2 / 2 * w^2`` is ``l2 * w``, the same step weight decay takes.

    Args:
        model: the model whose weights (see :func:`split_weights`) are penalised.
        l1, l2: the coefficients; 0 turns a term off.
    """

    def __init__(self, model: nn.Module, l1: float = 0.0, l2: float = 0.0) -> None:
        self.weights, _ = split_weights(model)
        self.l1 = l1
        self.l2 = l2

    def __call__(self) -> torch.Tensor:
        total = torch.zeros((), device=self.weights[0].device) if self.weights else torch.zeros(())
        for w in self.weights:
            if self.l1:
                total = total + self.l1 * w.abs().sum()
            if self.l2:
                total = total + 0.5 * self.l2 * (w * w).sum()
        return total

    def __bool__(self) -> bool:
        return bool(self.weights) and bool(self.l1 or self.l2)

    def __repr__(self) -> str:
        return f"WeightPenalty(l1={self.l1}, l2={self.l2}, weights={len(self.weights)})"

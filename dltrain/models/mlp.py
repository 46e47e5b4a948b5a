"""``model=mlp``: a multilayer perceptron."""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from dltrain.models.layers import activation as make_activation
from dltrain.models.registry import MODELS


@MODELS.register("mlp")
def build_mlp(
    input_shape: tuple[int, ...],
    num_outputs: int,
    hidden: list[int] = (128, 64),
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """A stack of fully connected layers on the flattened input.

    Each hidden block is ``Linear -> [BatchNorm1d] -> activation -> [Dropout]``. With batch
    norm the Linear has no bias: BN subtracts the batch mean, so a bias would be undone,
    and BN's own shift plays its part.

    Args:
        input_shape: shape of one example without the batch dimension, e.g. ``(1, 8, 8)``.
        num_outputs: width of the output layer (classes, or regression targets).
        hidden: widths of the hidden layers; empty for a linear model.
        activation: name of the hidden activation (see ``dltrain.models.layers``).
        dropout: probability of zeroing a hidden unit during training; 0 adds no layer.
        batch_norm: add BatchNorm1d after each hidden Linear.

    Returns:
        An ``nn.Sequential`` mapping ``(B, *input_shape)`` to ``(B, num_outputs)`` logits.
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    width_in = math.prod(input_shape)
    for i, width in enumerate(hidden, start=1):
        layers[f"fc{i}"] = nn.Linear(width_in, width, bias=not batch_norm)
        if batch_norm:
            layers[f"bn{i}"] = nn.BatchNorm1d(width)
        layers[f"act{i}"] = make_activation(activation)
        if dropout > 0:
            layers[f"dropout{i}"] = nn.Dropout(dropout)
        width_in = width
    layers["out"] = nn.Linear(width_in, num_outputs)  # logits: losses apply softmax/sigmoid
    return nn.Sequential(layers)

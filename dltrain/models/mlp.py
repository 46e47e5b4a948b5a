"""``model=mlp``: a multilayer perceptron."""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from dltrain.models.layers import dense_blocks
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

    Each hidden block is ``Linear -> [BatchNorm1d] -> activation -> [Dropout]`` (see
    ``dltrain.models.layers.dense_blocks``).

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
    blocks, width = dense_blocks(math.prod(input_shape), hidden, activation, dropout, batch_norm)
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten(), **blocks)
    layers["out"] = nn.Linear(width, num_outputs)  # logits: losses apply softmax/sigmoid
    return nn.Sequential(layers)

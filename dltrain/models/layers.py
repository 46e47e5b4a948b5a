"""Small building blocks shared by the built-in models."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

#: Activation name -> module class. The names are the ``model.activation`` choices.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "identity": nn.Identity,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module for ``name``, one of :data:`ACTIVATIONS` (the schema's
    ``model.activation`` choices check it on the config path; another name is a KeyError)."""
    return ACTIVATIONS[name]()


_activation = activation  # dense_blocks takes an argument of that name


def dense_blocks(
    width_in: int,
    hidden: list[int],
    activation: str,
    dropout: float,
    batch_norm: bool,
    prefix: str = "",
) -> tuple[OrderedDict[str, nn.Module], int]:
    """Hidden dense blocks ``Linear -> [BatchNorm1d] -> activation -> [Dropout]``.

    With batch norm the Linear has no bias: BN subtracts the batch mean, so a bias would be
    undone, and BN's own shift plays its part.

    Args:
        width_in: features entering the first block.
        hidden: width of each block.
        activation: activation name (see :data:`ACTIVATIONS`).
        dropout: probability of zeroing a unit after each block; 0 adds no layer.
        batch_norm: add BatchNorm1d after each Linear.
        prefix: put before the names of the norm and activation layers (``fc_`` in the CNN,
            whose conv blocks already use ``bn1``, ``act1``).

    Returns:
        The named layers (``fc1``, ``{prefix}bn1``, ``{prefix}act1``, ``dropout1``, ...) and
        the width they end with.
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, width in enumerate(hidden, start=1):
        layers[f"fc{i}"] = nn.Linear(width_in, width, bias=not batch_norm)
        if batch_norm:
            layers[f"{prefix}bn{i}"] = nn.BatchNorm1d(width)
        layers[f"{prefix}act{i}"] = _activation(activation)
        if dropout > 0:
            layers[f"dropout{i}"] = nn.Dropout(dropout)
        width_in = width
    return layers, width_in

"""Small building blocks shared by the built-in models."""

from __future__ import annotations

from torch import nn

from dltrain.errors import ConfigError

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
    """A fresh activation module for ``name``.

    Raises:
        ConfigError: for an unknown name, listing the known ones.
    """
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(
            f"model.activation={name} is not a known activation: choose one of {', '.join(ACTIVATIONS)}."
        ) from None

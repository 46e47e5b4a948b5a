"""Small user-defined modules for the ``model=custom`` tests (imported by dotted path)."""

from __future__ import annotations

import math

import torch
from torch import nn


class TinyNet(nn.Module):
    """A user's network: takes the sizes dltrain passes, plus a key of its own (``width``)."""

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(),
                                  nn.Linear(width, num_outputs))

    def forward(self, x):
        return self.body(x)


def softmax_net(input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """The trap the notes warn about: a softmax layer in front of cross-entropy."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_outputs), nn.Softmax(dim=1))


def fixed_width_net(width: int = 5) -> nn.Module:
    """A factory that ignores the data's number of classes."""
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(width))


def lazy_net(num_outputs: int) -> nn.Module:
    """Lazy layers get their shapes from the first forward pass."""
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(32), nn.ReLU(), nn.LazyLinear(num_outputs))


class TupleNet(TinyNet):
    """Returns (logits, features), as some research code does."""

    def forward(self, x):
        return self.body(x), x


class NoParams(nn.Module):
    """The right output shape and nothing to train."""

    def __init__(self, num_outputs: int) -> None:
        super().__init__()
        self.num_outputs = num_outputs

    def forward(self, x):
        return x.flatten(1)[:, : self.num_outputs]


class NoAutocast(TinyNet):
    """Stands in for a layer that has no kernel for the autocast dtype on this device."""

    def forward(self, x):
        if torch.is_autocast_enabled(x.device.type):
            raise RuntimeError("could not create a primitive descriptor for this dtype")
        return self.body(x)

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


class HeadFirst(nn.Module):
    """Registers its softmax before the layer it follows: the call order is what counts."""

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int) -> None:
        super().__init__()
        self.softmax = nn.Softmax(dim=1)
        self.fc = nn.Linear(math.prod(input_shape), num_outputs)

    def forward(self, x):
        return self.softmax(self.fc(x.flatten(1)))


class LogSoftmaxNet(TinyNet):
    """Already ends in log-softmax, as the notes' NLL examples do."""

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int) -> None:
        super().__init__(input_shape, num_outputs)
        self.log_softmax = nn.LogSoftmax(dim=1)

    def forward(self, x):
        return self.log_softmax(self.body(x))


class NeedsMask(TinyNet):
    def forward(self, x, mask):
        return self.body(x) * mask


def batch_norm_net(input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, num_outputs))

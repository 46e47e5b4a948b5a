"""The residual basic block (He et al. 2016), the ``res:`` layer of ``model.layers``."""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with 3x3 convolutions.

    The shortcut is the input itself, or a 1x1 convolution and batch norm where the block
    changes the number of channels or strides (the projection shortcut). The convolutions have
    no bias: the batch norm after each shifts instead.

    Args:
        in_channels: channels of the input.
        channels: channels of the output.
        stride: stride of the first convolution (and of the projection): 2 halves height and width.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(channels))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))  # (B, C', H', W')
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))

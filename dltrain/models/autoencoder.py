"""``model=autoencoder``: an encoder down to a bottleneck of ``bottleneck`` codes and a decoder
that mirrors it back to the input's exact shape (``task=autoencoder`` trains it to reconstruct).

Two encoders: ``mlp`` (dense layers, any numeric data) and ``conv`` (stride-2 convolutions on
images, then one linear layer to the codes); the conv decoder is a linear layer back to the last
feature map, then transposed convolutions whose ``output_padding`` restores each stage's exact
height and width (odd sizes too). The output is linear: a reconstruction in the standardised
input space the data's preprocessing gives.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from dltrain.errors import ConfigError
from dltrain.models.layers import activation as make_activation
from dltrain.models.registry import MODELS

STRIDE = 2  # each conv stage halves the map (rounding up); its transposed twin doubles it back


class Autoencoder(nn.Module):
    """``encoder`` then ``decoder``; the state dict's tensors sit under ``encoder.`` and ``decoder.``.

    Args:
        encoder: inputs ``(B, *input_shape)`` -> codes ``(B, bottleneck)``.
        decoder: codes -> reconstructions ``(B, *input_shape)``.
    """

    def __init__(self, encoder: nn.Sequential, decoder: nn.Sequential) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent codes ``(B, bottleneck)`` of inputs ``x``."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstructions ``(B, *input_shape)`` of codes ``z``."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))  # (B, *input_shape)


def _block(layers: OrderedDict[str, nn.Module], kind: str, i: int, layer: nn.Module, width: int, activation: str,
           batch_norm: bool, norm: type[nn.Module], dropout: float = 0.0) -> None:
    """``layer -> [norm] -> activation -> [Dropout]`` appended to ``layers`` as ``<kind>i``, ``bn<i>``, ..."""
    layers[f"{kind}{i}"] = layer
    if batch_norm:
        layers[f"bn{i}"] = norm(width)
    layers[f"act{i}"] = make_activation(activation)
    if dropout > 0:
        layers[f"dropout{i}"] = nn.Dropout(dropout)


def mlp_halves(size: int, hidden: list[int], bottleneck: int, activation: str, dropout: float,
               batch_norm: bool, input_shape: tuple[int, ...]) -> tuple[nn.Sequential, nn.Sequential]:
    """Dense encoder ``size -> hidden... -> bottleneck`` and its mirror back to ``input_shape``."""
    enc: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    width = size
    for i, out in enumerate(hidden, start=1):
        _block(enc, "fc", i, nn.Linear(width, out, bias=not batch_norm), out, activation, batch_norm,
               nn.BatchNorm1d, dropout)
        width = out
    enc["codes"] = nn.Linear(width, bottleneck)  # (B, bottleneck): no activation, the codes are free
    dec: OrderedDict[str, nn.Module] = OrderedDict()
    width = bottleneck
    for i, out in enumerate(reversed(hidden), start=1):
        _block(dec, "fc", i, nn.Linear(width, out, bias=not batch_norm), out, activation, batch_norm,
               nn.BatchNorm1d, dropout)
        width = out
    dec["out"] = nn.Linear(width, size)
    dec["unflatten"] = nn.Unflatten(1, tuple(input_shape))
    return nn.Sequential(enc), nn.Sequential(dec)


def conv_sizes(height: int, width: int, stages: int, kernel_size: int) -> list[tuple[int, int]]:
    """The map's ``(height, width)`` before the first stage and after each (stride 2, padding k // 2)."""
    pad = kernel_size // 2
    sizes = [(height, width)]
    for _ in range(stages):
        h, w = sizes[-1]
        sizes.append(((h + 2 * pad - kernel_size) // STRIDE + 1, (w + 2 * pad - kernel_size) // STRIDE + 1))
    return sizes


def output_padding(before: tuple[int, int], after: tuple[int, int], kernel_size: int) -> tuple[int, int]:
    """What a transposed stage from ``after`` adds to land exactly on ``before`` (0 or 1 per side).

    Raises:
        ValueError: no output padding below the stride gets there (cannot happen with padding k // 2).
    """
    pad = kernel_size // 2
    extra = tuple(b - ((a - 1) * STRIDE - 2 * pad + kernel_size) for b, a in zip(before, after, strict=True))
    if not all(0 <= e < STRIDE for e in extra):
        raise ValueError(f"no transposed convolution maps {after} back to {before} with kernel {kernel_size}")
    return extra  # type: ignore[return-value]


def conv_halves(input_shape: tuple[int, ...], channels: list[int], kernel_size: int, bottleneck: int,
                activation: str, batch_norm: bool) -> tuple[nn.Sequential, nn.Sequential]:
    """Stride-2 conv encoder, a linear bottleneck, and the mirrored transposed-conv decoder."""
    c_in, height, width = input_shape
    sizes = conv_sizes(height, width, len(channels), kernel_size)
    pad = kernel_size // 2
    enc: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (c_prev, c_out) in enumerate(zip([c_in, *channels], channels, strict=False), start=1):
        _block(enc, "conv", i, nn.Conv2d(c_prev, c_out, kernel_size, stride=STRIDE, padding=pad,
                                          bias=not batch_norm), c_out, activation, batch_norm, nn.BatchNorm2d)
    last = (channels[-1], *sizes[-1])  # (C, h, w) of the last map
    enc["flatten"] = nn.Flatten()
    enc["codes"] = nn.Linear(math.prod(last), bottleneck)
    dec: OrderedDict[str, nn.Module] = OrderedDict()
    _block(dec, "fc", 1, nn.Linear(bottleneck, math.prod(last)), math.prod(last), activation, False, nn.BatchNorm1d)
    dec["unflatten"] = nn.Unflatten(1, last)
    outs = [*reversed(channels[:-1]), c_in]
    for i, (c_prev, c_out) in enumerate(zip(reversed(channels), outs, strict=True), start=1):
        stage = len(channels) - i  # the encoder stage this one undoes: sizes[stage + 1] -> sizes[stage]
        last_stage = i == len(channels)
        layer = nn.ConvTranspose2d(c_prev, c_out, kernel_size, stride=STRIDE, padding=pad,
                                   output_padding=output_padding(sizes[stage], sizes[stage + 1], kernel_size),
                                   bias=not batch_norm or last_stage)
        if last_stage:
            dec["out"] = layer  # linear output: standardised inputs are unbounded
        else:
            _block(dec, "deconv", i + 1, layer, c_out, activation, batch_norm, nn.BatchNorm2d)
    return nn.Sequential(enc), nn.Sequential(dec)


@MODELS.register("autoencoder", tasks=("autoencoder",))
def build_autoencoder(
    input_shape: tuple[int, ...],
    num_outputs: int,
    encoder: str = "mlp",
    hidden: list[int] = (128,),
    channels: list[int] = (16, 32),
    kernel_size: int = 3,
    bottleneck: int = 16,
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> Autoencoder:
    """An autoencoder for inputs of ``input_shape``.

    Args:
        input_shape: one example's shape; the reconstruction has the same.
        num_outputs: unused: the output is the input's shape (the reconstruction loss sizes it).
        encoder: ``mlp`` (dense layers through ``hidden``) or ``conv`` (stride-2 convolutions
            through ``channels`` on images ``(C, H, W)``).
        hidden, channels, kernel_size: the encoder's layers; the decoder mirrors them.
        bottleneck: the code's size, below the input's number of values.
        activation: after every hidden layer (not the codes, not the output).
        dropout: after each dense hidden layer (mlp); 0 adds none.
        batch_norm: after each hidden layer but the output one.

    Raises:
        ConfigError: a bottleneck not below the input's size, or ``conv`` on inputs that are no images.
    """
    del num_outputs  # the reconstruction's width is the input's
    size = math.prod(input_shape)
    shape = "x".join(map(str, input_shape))
    if bottleneck >= size:
        raise ConfigError(f"model.bottleneck={bottleneck} is not below the input's size ({size} values, shape {shape}):"
                          f" an autoencoder must compress, so use model.bottleneck={max(1, size // 4)} or anything "
                          f"below {size}.")
    if encoder == "mlp":
        return Autoencoder(*mlp_halves(size, list(hidden), bottleneck, activation, dropout, batch_norm, input_shape))
    if len(input_shape) != 3:
        raise ConfigError(f"model.encoder=conv needs images (channels, height, width), and this data's examples have "
                          f"shape {shape}: use model.encoder=mlp.")
    if not channels:
        raise ConfigError("model.encoder=conv needs at least one stage: give model.channels a width, e.g. [16, 32].")
    return Autoencoder(*conv_halves(tuple(input_shape), list(channels), kernel_size, bottleneck, activation,
                                    batch_norm))

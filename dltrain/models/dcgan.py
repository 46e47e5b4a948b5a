"""``model=dcgan``: a generator and a discriminator following DCGAN's guidelines (Radford et al.).

Strided (transposed) convolutions instead of pooling, batch norm in both networks (not on the
generator's output layer nor the discriminator's input layer), no fully connected hidden
layers, ReLU in the generator with a Tanh output, LeakyReLU in the discriminator. Both are
sized from the image shape: the generator projects a latent vector to a small map and doubles
it once per block to exactly the images' height and width; the discriminator halves it back
and ends in one logit. One module holds both, so weights, checkpoints and checks see one model.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from dltrain.errors import ConfigError
from dltrain.models.registry import MODELS

KERNEL, STRIDE, PADDING = 4, 2, 1  # the paper's upsampling/downsampling layer: exactly x2 or /2 on even sides
INIT_STD = 0.02  # the paper's N(0, 0.02) weights (batch norm's scale: N(1, 0.02))


class DCGAN(nn.Module):
    """The two networks of a GAN as one model.

    ``model(x)`` is the discriminator's logit that each image ``x`` ``(B, C, H, W)`` is real,
    ``(B, 1)``: what evaluation computes on real data; ``model.generate(z)`` maps latent
    vectors ``(B, latent_size)`` to images in [-1, 1].
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, latent_size: int) -> None:
        super().__init__()
        self.generator, self.discriminator, self.latent_size = generator, discriminator, latent_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminator(x)  # (B, 1)

    def summary_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Both networks, for the model summary's table: G on as many zero latent vectors, then D on ``x``."""
        self.generator(x.new_zeros(len(x), self.latent_size))
        return self.discriminator(x)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in [-1, 1] from latent vectors ``(B, latent_size)``."""
        return self.generator(z)


def options(node: Mapping[str, Any] | Any) -> dict[str, Any]:
    """A network's keys as a dict, from the config (a mapping) or its schema (a dataclass)."""
    return dataclasses.asdict(node) if dataclasses.is_dataclass(node) else dict(node)


def start_size(height: int, width: int, blocks: int, key: str) -> tuple[int, int]:
    """The map ``blocks`` doublings start from to reach ``height`` x ``width`` exactly.

    Raises:
        ConfigError: a side is not a multiple of ``2 ** blocks``, naming ``key`` and what to do.
    """
    if blocks == 0:  # the generator's start map and the discriminator's first layer are its entries
        raise ConfigError(f"{key} is empty: give it at least one entry (one doubling of the map each).")
    factor = 2 ** blocks
    if height % factor or width % factor:
        fits = [n for n in range(1, blocks) if height % 2 ** n == 0 and width % 2 ** n == 0]
        most = max(fits, default=0)
        fix = f"give {key} {most} {'entry' if most == 1 else 'entries'}" if fits else "use images whose sides are even"
        raise ConfigError(f"model=dcgan cannot reach {height}x{width} images with {blocks} blocks of stride 2 "
                          f"({key} has {blocks} entries; each side must be a multiple of {factor}): {fix}, "
                          "or resize the images (data.image_size).")
    return height // factor, width // factor


def build_generator(image_shape: Sequence[int], latent_size: int, channels: Sequence[int],
                    batch_norm: bool = True) -> nn.Sequential:
    """z ``(B, latent_size)`` -> a ``channels[0]`` map of the start size (one transposed
    convolution from 1x1) -> one stride-2 transposed convolution per further entry -> the
    output layer (stride 2, to the image's channels, no batch norm) -> Tanh."""
    c_out, height, width = image_shape
    h0, w0 = start_size(height, width, len(channels), "model.generator.channels")
    layers: OrderedDict[str, nn.Module] = OrderedDict(unflatten=nn.Unflatten(1, (latent_size, 1, 1)))
    layers["project"] = nn.ConvTranspose2d(latent_size, channels[0], (h0, w0), bias=not batch_norm)
    for i, (c_in, c) in enumerate(zip(channels, [*channels[1:], c_out], strict=True), start=1):
        if batch_norm:
            layers[f"bn{i}"] = nn.BatchNorm2d(c_in)
        layers[f"relu{i}"] = nn.ReLU()
        last = i == len(channels)
        layers["output" if last else f"up{i}"] = nn.ConvTranspose2d(c_in, c, KERNEL, STRIDE, PADDING,
                                                                   bias=last or not batch_norm)
    layers["tanh"] = nn.Tanh()
    return nn.Sequential(layers)


def build_discriminator(image_shape: Sequence[int], channels: Sequence[int], batch_norm: bool = True,
                        negative_slope: float = 0.2) -> nn.Sequential:
    """Images ``(B, C, H, W)`` -> one stride-2 convolution per entry of ``channels`` (batch
    norm after every one but the first) -> a convolution over the whole remaining map to one
    logit ``(B, 1)``."""
    c_in, height, width = image_shape
    h, w = start_size(height, width, len(channels), "model.discriminator.channels")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, c in enumerate(channels, start=1):
        norm = batch_norm and i > 1  # never on the input layer
        layers[f"conv{i}"] = nn.Conv2d(c_in, c, KERNEL, STRIDE, PADDING, bias=not norm)
        if norm:
            layers[f"bn{i}"] = nn.BatchNorm2d(c)
        layers[f"lrelu{i}"] = nn.LeakyReLU(negative_slope)
        c_in = c
    layers["logit"] = nn.Conv2d(c_in, 1, (h, w))  # (B, 1, 1, 1): no fully connected layer
    layers["flatten"] = nn.Flatten()
    return nn.Sequential(layers)


def dcgan_init(model: nn.Module) -> None:
    """The paper's initialisation: (transposed) convolution weights N(0, 0.02), batch norm
    scales N(1, 0.02), every bias 0."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(module.weight, 0.0, INIT_STD)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, INIT_STD)
            else:
                continue
            if module.bias is not None:
                module.bias.zero_()


def _own_init(_options: Mapping[str, Any]) -> str:
    return f"(DCGAN's) conv weights ~ N(0, {INIT_STD}), batch norm weights ~ N(1, {INIT_STD}), biases 0"


@MODELS.register("dcgan", tasks=("gan",), regularization_layers=False, own_init=_own_init, init_activation="leaky_relu",
                 regularization_hint="set model.generator.batch_norm and model.discriminator.batch_norm instead")
def build_dcgan(
    input_shape: tuple[int, ...],
    num_outputs: int,
    latent_size: int = 100,
    generator: Mapping[str, Any] | None = None,
    discriminator: Mapping[str, Any] | None = None,
) -> DCGAN:
    """A DCGAN for images of ``input_shape`` ``(C, H, W)``.

    Args:
        input_shape: the images' shape; the generator makes exactly these.
        num_outputs: not used: the discriminator has one logit whatever the data's labels.
        latent_size: the length of the generator's input vectors.
        generator: ``channels`` (the start map's channels, then one upsampling block per
            further entry; one doubling per entry in all) and ``batch_norm``.
        discriminator: ``channels`` (one stride-2 convolution each), ``batch_norm`` and
            ``negative_slope`` (LeakyReLU's).

    Raises:
        ConfigError: for data that are not images, or sides the blocks cannot reach.
    """
    if len(input_shape) != 3:
        raise ConfigError(f"model=dcgan needs images of shape (channels, height, width), but this data's examples "
                          f"have shape {tuple(input_shape)}: use task=gan with image data (data=digits, mnist, ...).")
    gen = options(generator) if generator is not None else {"channels": [128, 64]}
    disc = options(discriminator) if discriminator is not None else {"channels": [64, 128]}
    model = DCGAN(build_generator(input_shape, latent_size, **gen), build_discriminator(input_shape, **disc),
                  latent_size)
    dcgan_init(model)  # init=default keeps it; another init= scheme redraws the conv weights
    return model

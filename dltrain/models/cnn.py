"""``model=cnn``: a convolutional network for images ``(channels, height, width)``."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from dltrain.errors import ConfigError
from dltrain.models.layers import activation as make_activation
from dltrain.models.layers import dense_blocks
from dltrain.models.registry import MODELS

POOLS: dict[str, type[nn.Module] | None] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d, "none": None}


def _parse_padding(padding: str | int) -> str | int:
    """``"same"``, ``"valid"`` or a number of pixels (OmegaConf hands numbers over as strings).

    Raises:
        ValueError: for anything else (the schema's ``model.padding`` pattern refuses it first
            on the config path).
    """
    if isinstance(padding, int) and not isinstance(padding, bool) and padding >= 0:
        return padding
    if isinstance(padding, str):
        if padding in ("same", "valid"):
            return padding
        if padding.isdigit():
            return int(padding)
    raise ValueError(f"padding must be 'same', 'valid' or a number of pixels, got {padding!r}")


def _conv_size(size: int, kernel_size: int, stride: int, pad: int) -> int:
    """Output side of a convolution; 0 when the kernel no longer fits."""
    return max(0, (size + 2 * pad - kernel_size) // stride + 1)


@MODELS.register("cnn")
def build_cnn(
    input_shape: tuple[int, ...],
    num_outputs: int,
    channels: list[int] = (32, 64),
    kernel_size: int = 3,
    stride: int = 1,
    padding: str | int = "same",
    pool: str = "max",
    pool_size: int = 2,
    hidden: list[int] = (128,),
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """Conv blocks, then dense layers on the flattened feature maps.

    Each conv block is ``Conv2d -> [BatchNorm2d] -> activation -> [pool]``; each dense block
    is ``Linear -> [BatchNorm1d] -> activation -> [Dropout]``, with one more Dropout right
    after the flatten so that dropout comes before every dense layer. Under batch norm the
    conv and Linear layers have no bias (BN's shift replaces it). The flattened width is
    worked out from ``input_shape``.

    Args:
        input_shape: shape of one example without the batch dimension: ``(C, H, W)``.
        num_outputs: width of the output layer (classes, or regression targets).
        channels: output channels of each conv block, one block per entry.
        kernel_size: square kernel side.
        stride: conv stride.
        padding: ``"same"`` (keep height and width; ``kernel_size // 2`` when stride > 1),
            ``"valid"`` (none) or a number of pixels, as an int or a digit string.
        pool: ``"max"``, ``"avg"`` or ``"none"``, after each block.
        pool_size: pooling window and stride.
        hidden: widths of the dense layers after the conv blocks; empty goes straight to the output.
        activation: name of the activation (see ``dltrain.models.layers``).
        dropout: probability of zeroing a unit before each dense layer; 0 adds no layer.
        batch_norm: add BatchNorm2d / BatchNorm1d after each conv / hidden Linear.

    Returns:
        An ``nn.Sequential`` mapping ``(B, C, H, W)`` to ``(B, num_outputs)`` logits.

    Raises:
        ConfigError: for non-image input, or blocks that shrink the image to nothing.
        ValueError: for a padding that is none of the above.
    """
    if len(input_shape) != 3:
        raise ConfigError(
            f"model=cnn needs images of shape (channels, height, width), but this data's examples have shape "
            f"{tuple(input_shape)}: use model=mlp or model=lstm."
        )
    pad = _parse_padding(padding)
    # torch's padding="same" refuses stride > 1; k // 2 keeps ceil(H / stride) for odd kernels.
    if pad == "same" and stride > 1:
        pad = kernel_size // 2
    pad_pixels = 0 if pad == "valid" else pad  # the number the size formula needs

    c_in, height, width = input_shape
    h, w = height, width
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, c_out in enumerate(channels, start=1):
        layers[f"conv{i}"] = nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=pad, bias=not batch_norm)
        if pad != "same":
            h, w = _conv_size(h, kernel_size, stride, pad_pixels), _conv_size(w, kernel_size, stride, pad_pixels)
        if batch_norm:
            layers[f"bn{i}"] = nn.BatchNorm2d(c_out)
        layers[f"act{i}"] = make_activation(activation)
        if POOLS[pool] is not None:
            layers[f"pool{i}"] = POOLS[pool](pool_size)
            h, w = h // pool_size, w // pool_size
        if h < 1 or w < 1:
            fixes = ["fewer model.channels"]
            if POOLS[pool] is not None:
                fixes += ["model.pool=none", "a smaller model.pool_size"]
            if stride > 1:
                fixes.append("model.stride=1")
            if padding != "same":
                fixes += ["a smaller model.kernel_size", "model.padding=same"]
            raise ConfigError(
                f"model=cnn cannot fit {len(channels)} conv blocks on {height}x{width} images (block {i} leaves "
                f"{h}x{w}): use {', '.join(fixes[:-1])} or {fixes[-1]}." if len(fixes) > 1 else
                f"model=cnn cannot fit {len(channels)} conv blocks on {height}x{width} images (block {i} leaves "
                f"{h}x{w}): use {fixes[0]}."
            )
        c_in = c_out

    layers["flatten"] = nn.Flatten()  # (B, C', H', W') -> (B, C' * H' * W')
    width_in = c_in * h * w
    if dropout > 0:
        layers["dropout0"] = nn.Dropout(dropout)
    # Dense names carry an fc_ prefix so they do not clash with the conv blocks' bn1, act1.
    blocks, width_in = dense_blocks(width_in, hidden, activation, dropout, batch_norm, prefix="fc_")
    layers.update(blocks)
    layers["out"] = nn.Linear(width_in, num_outputs)  # logits: losses apply softmax/sigmoid
    return nn.Sequential(layers)

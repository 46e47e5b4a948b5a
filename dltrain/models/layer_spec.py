"""Layers written as text (``conv:32:3``, ``maxpool:2``, ``dense:128``, ``relu``): the syntax of
``model.layers`` (``model=sequential``) and of a recurrent model's ``model.head``.

A spec is a kind followed by its arguments, separated by colons; arguments are positional
(Hydra's override grammar keeps colons inside a list item, but not ``=``):

======================================  =========================================================
``conv:CHANNELS:KERNEL[:STRIDE][:PAD]``  Conv2d; stride 1; padding 0, ``same``, ``valid`` or pixels
                                         (``same``/``valid`` may take the stride's place;
                                         ``same`` gives ceil(size / stride), an even kernel stride 1)
``maxpool:SIZE[:STRIDE]``, ``avgpool``   pooling; the stride defaults to the size
``adaptiveavg:N``, ``adaptivemax:N``     pool to N x N whatever the input size
``globalavg``, ``globalmax``             pool each channel to one number: ``(C, H, W) -> (C,)``
``bn``                                   BatchNorm2d on feature maps, BatchNorm1d on features
``dropout:P``                            zero each unit with probability P (0 <= P < 1)
``flatten``                              ``(C, H, W) -> (C * H * W,)``
``dense:UNITS``                          Linear on flat features (a flatten must come first)
``res:CHANNELS[:STRIDE]``                residual basic block: two 3x3 conv + BN, a skip
                                         (1x1 conv + BN when the shape changes), ReLU after the add
``relu``, ``tanh``, ``gelu``, ...        any activation of :data:`dltrain.models.layers.ACTIVATIONS`
======================================  =========================================================

Shapes are worked out as the layers are added (the width of the first dense layer is counted,
not inferred lazily), so a list that does not fit its input is refused before training, in
one line naming the layer by its position and text.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from functools import partial

from torch import nn
from torch.nn import functional as F

from dltrain.config.suggest import closest
from dltrain.errors import ConfigError
from dltrain.models.layers import ACTIVATIONS
from dltrain.models.residual import ResidualBlock

Shape = tuple[int, ...]


class GlobalPool(nn.Module):
    """Each channel's mean or max over its feature map: ``(B, C, H, W) -> (B, C)``."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x):
        return x.mean(dim=(2, 3)) if self.mode == "avg" else x.amax(dim=(2, 3))

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


class Conv2dSame(nn.Conv2d):
    """A convolution of an even kernel that keeps height and width (``padding="same"``): the
    extra row and column of zeros go at the bottom and right, as torch and Keras pad. Padded
    here, so torch does not warn at every run about the copy it would make."""

    def forward(self, x):
        kh, kw = self.kernel_size
        return super().forward(F.pad(x, ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)))  # (B, C, H + kh-1, ...)


class LayerError(Exception):
    """What is wrong with one layer spec, and what to do (the caller adds which layer)."""


def _ints(args: list[str], names: Sequence[str], low: int = 1) -> list[int]:
    """``args`` as whole numbers >= ``low``, each named in the error by ``names``."""
    values = []
    for name, arg in zip(names, args, strict=False):
        if not arg.isdigit() or int(arg) < low:
            raise LayerError(f"{name} must be a whole number >= {low}, got {arg!r}")
        values.append(int(arg))
    return values


def _arity(args: list[str], low: int, high: int, usage: str) -> None:
    if not low <= len(args) <= high:
        raise LayerError(f"takes {usage}")


def _feature_maps(shape: Shape, what: str) -> tuple[int, int, int]:
    """``shape`` as ``(C, H, W)``, or the error for a layer that needs feature maps."""
    if len(shape) != 3:
        raise LayerError(f"{what} needs feature maps (channels, height, width), but its input has shape "
                         f"{shape}: put it before flatten, dense and global pooling, on image data")
    return shape  # type: ignore[return-value]


def _side(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def _conv(args: list[str], shape: Shape) -> tuple[nn.Module, Shape]:
    usage = "conv:CHANNELS:KERNEL[:STRIDE][:PADDING]"
    _arity(args, 2, 4, usage)
    c_in, h, w = _feature_maps(shape, "conv")
    pad_word = args[2] if len(args) == 3 and args[2] in ("same", "valid") else None
    rest = args[2:3] if pad_word is None else []
    channels, kernel, *stride = _ints(args[:2] + rest, ("channels", "kernel", "stride"))
    stride = stride[0] if stride else 1
    padding: str | int = pad_word or (args[3] if len(args) == 4 else 0)
    if isinstance(padding, str) and padding not in ("same", "valid"):
        [padding] = _ints([padding], ["padding"], low=0)
    # torch refuses padding="same" with a stride; k // 2 keeps ceil(H / stride) for odd kernels.
    if padding == "same" and stride > 1:
        if kernel % 2 == 0:  # k // 2 on each side would give H // stride + 1: one more than ceil(H / stride)
            raise LayerError(f"an even kernel ({kernel}) with stride {stride} cannot pad the same on every side "
                             f"to give ceil(size / {stride}): use an odd kernel (conv:{channels}:{kernel + 1}:"
                             f"{stride}:same), stride 1, or a padding in pixels")
        padding = kernel // 2
    if padding == "same":
        same = Conv2dSame if kernel % 2 == 0 else partial(nn.Conv2d, padding="same")
        conv = same(c_in, channels, kernel)
        return conv, (channels, h, w)
    pad = 0 if padding == "valid" else padding
    if h + 2 * pad < kernel or w + 2 * pad < kernel:
        raise LayerError(f"kernel {kernel} is larger than its {h}x{w} input"
                         + (f" padded by {pad}" if pad else "") + ": use a smaller kernel or padding same "
                         f"(conv:{channels}:{kernel}:same)")
    conv = nn.Conv2d(c_in, channels, kernel, stride=stride, padding=pad)
    return conv, (channels, _side(h, kernel, stride, pad), _side(w, kernel, stride, pad))


def _pool(cls: type[nn.Module]) -> Callable[[list[str], Shape], tuple[nn.Module, Shape]]:
    def build(args: list[str], shape: Shape) -> tuple[nn.Module, Shape]:
        _arity(args, 1, 2, "SIZE[:STRIDE]")
        size, *stride = _ints(args, ("size", "stride"))
        stride = stride[0] if stride else size
        c, h, w = _feature_maps(shape, "pooling")
        if h < size or w < size:
            raise LayerError(f"pool size {size} is larger than its {h}x{w} input: use a smaller size, "
                             "or fewer pooling layers before it")
        return cls(size, stride), (c, _side(h, size, stride, 0), _side(w, size, stride, 0))
    return build


def _adaptive(cls: type[nn.Module]) -> Callable[[list[str], Shape], tuple[nn.Module, Shape]]:
    def build(args: list[str], shape: Shape) -> tuple[nn.Module, Shape]:
        _arity(args, 1, 1, "N (the output's side)")
        [side] = _ints(args, ["output side"])
        c, _, _ = _feature_maps(shape, "pooling")
        return cls(side), (c, side, side)
    return build


def _global(mode: str) -> Callable[[list[str], Shape], tuple[nn.Module, Shape]]:
    def build(args: list[str], shape: Shape) -> tuple[nn.Module, Shape]:
        _arity(args, 0, 0, "no arguments")
        c, _, _ = _feature_maps(shape, "global pooling")
        return GlobalPool(mode), (c,)
    return build


def _batch_norm(args: list[str], shape: Shape) -> tuple[nn.Module, Shape]:
    _arity(args, 0, 0, "no arguments (BatchNorm2d or 1d follows the input)")
    if len(shape) == 3:
        return nn.BatchNorm2d(shape[0]), shape
    if len(shape) == 1:
        return nn.BatchNorm1d(shape[0]), shape
    raise LayerError(f"normalises feature maps (C, H, W) or features (F,), but its input has shape {shape}: "
                     "put flatten before it")


def _dropout(args: list[str], shape: Shape) -> tuple[nn.Module, Shape]:
    _arity(args, 1, 1, "P, the probability of zeroing a unit (dropout:0.25)")
    try:
        p = float(args[0])
    except ValueError:
        p = math.nan
    if not 0 <= p < 1:
        raise LayerError(f"P must be a number from 0 to below 1, got {args[0]!r}")
    return nn.Dropout(p), shape


def _flatten(args: list[str], shape: Shape) -> tuple[nn.Module, Shape]:
    _arity(args, 0, 0, "no arguments")
    return nn.Flatten(), (math.prod(shape),)


def _dense(args: list[str], shape: Shape) -> tuple[nn.Module, Shape]:
    _arity(args, 1, 1, "UNITS (dense:128)")
    [units] = _ints(args, ["units"])
    if len(shape) != 1:
        raise LayerError(f"needs flat features, but its input has shape {shape}: put flatten (or globalavg) "
                         "before it")
    return nn.Linear(shape[0], units), (units,)


def _residual(args: list[str], shape: Shape) -> tuple[nn.Module, Shape]:
    _arity(args, 1, 2, "CHANNELS[:STRIDE] (res:64 or res:128:2)")
    channels, *stride = _ints(args, ("channels", "stride"))
    stride = stride[0] if stride else 1
    c, h, w = _feature_maps(shape, "res")
    return ResidualBlock(c, channels, stride), (channels, _side(h, 3, stride, 1), _side(w, 3, stride, 1))


def _activation(cls: type[nn.Module]) -> Callable[[list[str], Shape], tuple[nn.Module, Shape]]:
    def build(args: list[str], shape: Shape) -> tuple[nn.Module, Shape]:
        _arity(args, 0, 0, "no arguments")
        return cls(), shape
    return build


#: kind -> (the prefix of its layers' names, its builder: (args, input shape) -> (layer, output shape)).
KINDS: dict[str, tuple[str, Callable[[list[str], Shape], tuple[nn.Module, Shape]]]] = {
    "conv": ("conv", _conv),
    "maxpool": ("pool", _pool(nn.MaxPool2d)),
    "avgpool": ("pool", _pool(nn.AvgPool2d)),
    "adaptiveavg": ("pool", _adaptive(nn.AdaptiveAvgPool2d)),
    "adaptivemax": ("pool", _adaptive(nn.AdaptiveMaxPool2d)),
    "globalavg": ("pool", _global("avg")),
    "globalmax": ("pool", _global("max")),
    "bn": ("bn", _batch_norm),
    "dropout": ("dropout", _dropout),
    "flatten": ("flatten", _flatten),
    "dense": ("fc", _dense),
    "res": ("res", _residual),
    **{name: (name, _activation(cls)) for name, cls in ACTIVATIONS.items()},
}
#: The kinds a recurrent model's head takes: it reads the pooled state, a vector.
HEAD_KINDS = ("dense", "dropout", "bn", *ACTIVATIONS)


def build_layers(specs: Sequence[str], input_shape: Iterable[int], key: str = "model.layers",
                 kinds: Iterable[str] = tuple(KINDS)) -> tuple[OrderedDict[str, nn.Module], Shape]:
    """The layers ``specs`` describe, named ``conv1``, ``relu1``, ``pool1``, ``fc1``, ...

    Args:
        specs: one spec per layer, in order (see the module's table).
        input_shape: the shape the first layer reads, without the batch dimension.
        key: the config key of the list, for errors (``model.layers[3]=...``).
        kinds: the kinds allowed here.

    Returns:
        The named layers and the shape the last one outputs.

    Raises:
        ConfigError: naming the first layer that cannot be built, and why.
    """
    kinds = tuple(kinds)
    shape: Shape = tuple(input_shape)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    counts: dict[str, int] = {}
    for i, spec in enumerate(specs):
        kind, *args = str(spec).strip().split(":")
        try:
            if kind not in kinds:
                raise LayerError(_unknown(kind, kinds))
            prefix, build = KINDS[kind]
            layer, shape = build(args, shape)
        except LayerError as err:
            raise ConfigError(f"{key}[{i}]={spec}: {err}.") from None
        counts[prefix] = counts.get(prefix, 0) + 1
        layers[f"{prefix}{counts[prefix]}"] = layer
    return layers, shape


def _unknown(kind: str, kinds: Sequence[str]) -> str:
    near = closest(kind, kinds)
    hint = f"did you mean {near}? " if near else ""
    return f"{kind!r} is not a layer kind here: {hint}the kinds are {', '.join(kinds)}"

"""Transfer learning's view of a model: its body's stages and its head.

A model that can fine-tune says which of its layers are the head (sized from the data, never
frozen) and how its body divides into stages (``model.freeze=N`` freezes the first N), either
with a ``transfer_parts()`` method or, for the plain ``nn.Sequential`` models (``model=cnn``,
``model=sequential``), by the rule of :func:`parts`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from torch import nn

#: Layers a stage ends after: a pooling layer closes a block of convolutions.
POOLING = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
           nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
#: Layers that start a stage of their own when the stage so far already has weights.
DENSE = (nn.Linear,)


class TransferParts(NamedTuple):
    """A model's body and head, as freezing and discriminative learning rates see them.

    Attributes:
        stages: the body's stages in input order; ``model.freeze=N`` freezes the first N,
            ``model.freeze=backbone`` all of them.
        head: the layer(s) sized from the data: never frozen, and the only part ``init=``
            touches when the model starts from trained weights.
    """

    stages: list[nn.Module]
    head: nn.Module


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, under ``torch.compile``'s and DDP's wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def parts(model: nn.Module) -> TransferParts | None:
    """The model's stages and head, or None for a model that has none (mlp, recurrent, custom).

    A model with a ``transfer_parts()`` method answers for itself. An ``nn.Sequential`` whose
    last layer with parameters is named ``out`` has ``out`` as its head (a trailing layer
    without parameters, a LogSoftmax, belongs to no part) and the layers before it grouped into
    stages by :func:`sequential_stages`.
    """
    model = unwrap(model)
    own = getattr(model, "transfer_parts", None)
    if callable(own):
        return own()
    if not isinstance(model, nn.Sequential):
        return None
    named = list(model.named_children())
    weighted = [i for i, (_, layer) in enumerate(named) if _has_parameters(layer)]
    if not weighted or named[weighted[-1]][0] != "out":
        return None
    return TransferParts(stages=sequential_stages(named[:weighted[-1]]), head=named[weighted[-1]][1])


def sequential_stages(named: list[tuple[str, nn.Module]]) -> list[nn.Module]:
    """Group a Sequential's body into stages, in order.

    A stage ends after a pooling layer, after a block with layers of its own (a residual block)
    and at the flatten; a dense layer starts a new stage when the current one already has
    weights (each dense block is a stage). Layers without parameters before the first weights of
    a stage join that stage; those after the last weights join the last stage. So
    ``model=cnn`` with 2 conv blocks and 1 dense layer has 3 stages: ``conv1..pool1``,
    ``conv2..flatten``, ``fc1..``.

    Returns:
        One ``nn.Sequential`` per stage holding the model's own layers (not copies) under their
        names in the model, so ``list(stage._modules)`` names them.
    """
    stages: list[OrderedDict[str, nn.Module]] = []
    current: OrderedDict[str, nn.Module] = OrderedDict()

    def close() -> None:
        nonlocal current
        if any(_has_parameters(layer) for layer in current.values()):
            stages.append(current)
            current = OrderedDict()
        # a stage without weights waits for the next layers: there is nothing in it to freeze

    for name, layer in named:
        if isinstance(layer, DENSE) and any(_has_parameters(m) for m in current.values()):
            close()
        current[name] = layer
        block = _has_parameters(layer) and any(True for _ in layer.children())
        if isinstance(layer, (*POOLING, nn.Flatten)) or block:
            close()
    if current:
        if stages and not any(_has_parameters(layer) for layer in current.values()):
            stages[-1].update(current)
        else:
            stages.append(current)
    return [nn.Sequential(stage) for stage in stages]


def stage_names(stages: list[nn.Module]) -> list[str]:
    """A short name per stage for messages: its first and last layer (``conv1..pool1``)."""
    names = []
    for i, stage in enumerate(stages, start=1):
        layers = list(stage._modules) if isinstance(stage, nn.Sequential) else []
        if not layers:
            names.append(f"stage {i}")
        elif len(layers) == 1:
            names.append(layers[0])
        else:
            names.append(f"{layers[0]}..{layers[-1]}")
    return names


def _has_parameters(layer: nn.Module) -> bool:
    return any(True for _ in layer.parameters())

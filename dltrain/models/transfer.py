"""Transfer learning's view of a model: its body's stages and its head.

A model that can fine-tune says which of its layers are the head (sized from the data, never
frozen) and how its body divides into stages (``model.freeze=N`` freezes the first N), either
with a ``transfer_parts()`` method or, for the plain ``nn.Sequential`` models (``model=cnn``,
``model=sequential``), by the rule of :func:`parts`. Here too: the transfer keys a model's
options carry, and freezing. Loading the weights a model starts from is
:mod:`dltrain.models.start_weights`'s.
"""

from __future__ import annotations

import types
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from dltrain.errors import ConfigError

#: Layers a stage ends after: a pooling layer closes a block of convolutions.
POOLING = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
           nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
#: Layers that start a stage of their own when the stage so far already has weights.
DENSE = (nn.Linear,)
#: Convolutions start a stage as dense layers do, in a body without pooling to end stages.
CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


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
    """The model itself, under DDP's and ``torch.compile``'s wrappers (a user's model may
    have a layer named ``module`` of its own: only DDP's is unwrapped)."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
    return inner if isinstance(inner, nn.Module) else model


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
    weights (each dense block is a stage), and so does a convolution in a body without pooling
    (``model.pool=none``: each conv block is a stage). Layers without parameters before the
    first weights of a stage join that stage; those after the last weights join the last stage.
    So ``model=cnn`` with 2 conv blocks and 1 dense layer has 3 stages: ``conv1..pool1``,
    ``conv2..pool2`` and ``flatten..act1`` (the dense block, the flatten before it).

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

    starts = DENSE if any(isinstance(layer, POOLING) for _, layer in named) else (*DENSE, *CONV)
    for name, layer in named:
        if isinstance(layer, starts) and any(_has_parameters(m) for m in current.values()):
            close()
        current[name] = layer
        block = _has_parameters(layer) and any(True for _ in layer.children())
        if isinstance(layer, (*POOLING, nn.Flatten)) or block:
            close()
    if any(_has_parameters(layer) for layer in current.values()):
        stages.append(current)
    elif stages:  # layers without weights after the last weights (a body without weights is no stage)
        stages[-1].update(current)
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


# --- the transfer keys --------------------------------------------------------------------

#: The ``model.*`` keys of :class:`~dltrain.config.schemas.TransferConfig`: the build step
#: takes them out of a model's options (a builder gets ``weights`` only when it takes it).
TRANSFER_KEYS = ("weights", "freeze", "freeze_epochs", "backbone_lr")


@dataclass(frozen=True)
class TransferOptions:
    """A model's transfer keys (see :class:`~dltrain.config.schemas.TransferConfig`)."""

    weights: str = "none"
    freeze: str = "none"
    freeze_epochs: int = 0
    backbone_lr: float = 1.0

    @property
    def used(self) -> bool:
        """Whether any key asks for freezing or a backbone learning rate of its own."""
        return self.freeze != "none" or self.freeze_epochs > 0 or self.backbone_lr != 1.0


def split_options(opts: dict[str, Any], takes_weights: bool,
                  has_keys: bool) -> tuple[dict[str, Any], TransferOptions | None]:
    """A model's options as its builder's keyword arguments, and its transfer keys apart
    (None for a model whose schema has none). ``weights`` stays with the builder when it takes it.

    Args:
        has_keys: whether the model's schema has the transfer keys (a ``model=custom`` may take
            a ``freeze`` of its own).
    """
    if not has_keys:
        return opts, None
    opts = dict(opts)
    transfer = TransferOptions(**{key: opts.pop(key) for key in TRANSFER_KEYS if key in opts})
    if takes_weights:
        opts["weights"] = transfer.weights
    return opts, transfer


# --- freezing ----------------------------------------------------------------------------

def stages_to_freeze(found: TransferParts, freeze: str, key: str = "model.freeze") -> list[nn.Module]:
    """The stages ``model.freeze`` names: ``none``, ``backbone`` (every stage) or the first N.

    Raises:
        ConfigError: N is more than the model has stages, naming them, or the model has no stage
            (only its head has weights): nothing would freeze.
    """
    if freeze == "none":
        return []
    if not found.stages:
        raise ConfigError(f"{key}={freeze}, but the model has no stages before its head (only the head has "
                          f"weights), so nothing would freeze: use {key}=none.")
    if freeze == "backbone":
        return list(found.stages)
    count = int(freeze)
    if count > len(found.stages):
        raise ConfigError(f"{key}={count}, but the model has {len(found.stages)} stages before its head "
                          f"({', '.join(stage_names(found.stages))}): freeze at most {len(found.stages)}, "
                          "or model.freeze=backbone.")
    return list(found.stages[:count])


class Freeze:
    """Freezes stages and releases them: no gradient for their parameters, and their batch
    norm layers kept in eval mode (fastai's BnFreeze) so that training steps leave their
    running statistics as they were, even though the trainer calls ``model.train()``.

    Args:
        stages: the modules to freeze (:func:`stages_to_freeze`).
    """

    def __init__(self, stages: list[nn.Module]) -> None:
        self.stages = stages
        self.active = False

    def apply(self) -> None:
        """Freeze the stages (nothing happens when they are frozen already)."""
        if self.active:
            return
        for stage in self.stages:
            stage.requires_grad_(False)
            for norm in self._norms(stage):
                # An instance attribute shadows nn.Module.train: model.train() reaches each
                # child through child.train(mode), so the layer stays in eval mode, and no
                # hook runs in the forward pass for torch.compile to trace.
                norm.train = types.MethodType(_stay_in_eval, norm)
                norm.training = False
        self.active = True

    def release(self) -> int:
        """Make the stages trainable again; returns how many parameters that made trainable."""
        if not self.active:
            return 0
        for stage in self.stages:
            stage.requires_grad_(True)
            for norm in self._norms(stage):
                del norm.train  # nn.Module.train again: the next model.train() sets training mode
        self.active = False
        return self.parameters()

    def parameters(self) -> int:
        """How many parameters the stages hold."""
        return sum(p.numel() for stage in self.stages for p in stage.parameters())

    @staticmethod
    def _norms(stage: nn.Module) -> list[_BatchNorm]:
        return [m for m in stage.modules() if isinstance(m, _BatchNorm)]


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


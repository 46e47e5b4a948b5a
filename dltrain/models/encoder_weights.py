"""An autoencoder's encoder as the start of another model (``model.weights=<autoencoder run>/
checkpoints/best.pt``): the encoder's layers, in order, load into the model's first layers with
weights (its head excluded), each into a layer of the same kind and shape. A classifier whose first
layers are the encoder's (``model=mlp`` with the encoder's ``hidden`` widths, ``model=cnn`` with its
conv channels) starts from what the autoencoder learnt without labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import nn

from dltrain.errors import ConfigError
from dltrain.models.transfer import parts

ENCODER, DECODER = "encoder.", "decoder."


class EncoderStart(NamedTuple):
    """The encoder's tensors renamed for the model, and where each of the model's layers came from.

    Attributes:
        weights: the tensors under the model's names.
        sources: the model's layer name -> the encoder's layer it came from.
        unused: the encoder's layers beyond the model's body (a deeper encoder), not loaded.
    """

    weights: dict[str, torch.Tensor]
    sources: dict[str, str]
    unused: list[str]


def is_autoencoder(weights: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict is an autoencoder's (tensors under ``encoder.`` and ``decoder.``)."""
    return any(k.startswith(ENCODER) for k in weights) and any(k.startswith(DECODER) for k in weights)


def layers(state: Mapping[str, torch.Tensor], prefix: str = "") -> list[tuple[str, dict[str, torch.Tensor]]]:
    """The layers of a state dict whose keys start with ``prefix``, in the order their tensors
    come (a module's registration order: the forward order of a sequential network), each as
    ``(its name without the prefix, {tensor name: tensor})``."""
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        if key.startswith(prefix):
            layer, _, leaf = key[len(prefix):].rpartition(".")
            grouped.setdefault(layer, {})[leaf] = tensor
    return list(grouped.items())


def encoder_start(model: nn.Module, weights: Mapping[str, torch.Tensor], where: str,
                  model_name: str = "this model") -> EncoderStart:
    """Rename the encoder's tensors of an autoencoder's ``weights`` to ``model``'s first layers.

    Args:
        model: the model to start (a classifier).
        weights: the autoencoder's state dict (:func:`is_autoencoder`).
        where: ``key=path``, naming the file in messages.
        model_name: the model's option, for messages.

    Raises:
        ConfigError: an encoder layer meets a model layer of another kind or shape (both shapes
            named), or the model has no layer before its head to load into.
    """
    found = parts(model)
    head = next((name for name, module in model.named_modules() if found is not None and module is found.head), None)
    own = [(name, tensors) for name, tensors in layers(model.state_dict())
           if head is None or not (name == head or name.startswith(head + "."))]
    encoder = layers(weights, ENCODER)
    if not own:
        raise ConfigError(f"{where}: model={model_name} has no layer before its head to load the autoencoder's "
                          "encoder into: give it hidden layers (model.hidden) or conv blocks (model.channels).")
    renamed: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    for (source, tensors), (name, mine) in zip(encoder, own, strict=False):
        if set(tensors) != set(mine) or any(tensors[k].shape != mine[k].shape for k in mine):
            raise ConfigError(f"{where}: the autoencoder's layer encoder.{source} {_shapes(tensors)} does not fit "
                              f"model={model_name}'s layer {name} {_shapes(mine)}: give the model the encoder's "
                              "layers first (model=mlp with the encoder's hidden widths and bottleneck, model=cnn "
                              "with its conv channels), or start it from no weights (model.weights=none).")
        renamed.update({f"{name}.{leaf}" if name else leaf: tensor for leaf, tensor in tensors.items()})
        sources[name] = f"encoder.{source}" if source else "encoder"
    return EncoderStart(renamed, sources, [f"encoder.{source}" for source, _ in encoder[len(own):]])


def _shapes(tensors: Mapping[str, torch.Tensor]) -> str:
    """``(weight (256, 784), bias (256,))``: a layer's tensors in a message."""
    return "(" + ", ".join(f"{leaf} {tuple(t.shape)}" for leaf, t in tensors.items()
                           if leaf not in ("num_batches_tracked",)) + ")"

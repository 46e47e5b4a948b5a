"""``model=sequential``: any feed-forward network as a list of layers (Keras' ``Sequential``),
and the classic networks shipped as presets of it (``model=mnist_net``, ``model=lenet5``, ...)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from dltrain.models.layer_spec import build_layers
from dltrain.models.registry import MODELS

#: Classic networks written as layer lists: each is ``model=NAME``, a preset of this schema in
#: ``conf/model/NAME.yaml`` whose ``layers`` are the network, and the activation an ``init=``
#: scheme's gain follows for it (None: relu's, as for any layer list).
CLASSIC_NETWORKS = {"lenet5": "tanh", "mnist_net": None, "notes_cnn": None, "resnet_small": None, "vgg_small": None}


def build_sequential(
    input_shape: tuple[int, ...],
    num_outputs: int,
    layers: Sequence[str] = ("flatten", "dense:128", "relu"),
) -> nn.Sequential:
    """The layers of ``layers`` in order, then the output layer ``out``.

    Each layer's input shape is the previous one's output, worked out here from
    ``input_shape``; when the list ends on feature maps, a ``flatten`` comes before ``out``.
    Dropout and batch norm are layers of the list (``regularization.dropout`` and
    ``batch_norm`` do not apply).

    Args:
        input_shape: shape of one example without the batch dimension, e.g. ``(1, 28, 28)``.
        num_outputs: width of the output layer (classes, or regression targets).
        layers: layer specs (``conv:32:3``, ``relu``, ``maxpool:2``, ``flatten``, ``dense:128``, ...;
            see :mod:`dltrain.models.layer_spec`).

    Returns:
        An ``nn.Sequential`` of layers named ``conv1``, ``relu1``, ``pool1``, ..., ``out``,
        mapping ``(B, *input_shape)`` to ``(B, num_outputs)`` logits.

    Raises:
        ConfigError: naming the first layer that does not fit its input.
    """
    body, shape = build_layers(layers, input_shape)
    if len(shape) != 1:
        body["flatten"] = nn.Flatten()  # (B, C, H, W) -> (B, C * H * W)
        shape = (math.prod(shape),)
    body["out"] = nn.Linear(shape[0], num_outputs)  # logits: losses apply softmax/sigmoid
    return nn.Sequential(body)


# Dropout and batch norm are the list's own layers, where the user puts them.
_HINT = "put dropout:P and bn layers in model.layers where you want them"
MODELS.register("sequential", regularization_layers=False, regularization_hint=_HINT)(build_sequential)
for _name, _activation in CLASSIC_NETWORKS.items():
    MODELS.register(_name, regularization_layers=False, regularization_hint=_HINT,
                    init_activation=_activation)(build_sequential)

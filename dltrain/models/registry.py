"""The model registry: ``model=NAME`` builds ``MODELS.get(NAME)``, and ``MODELS.facts(NAME)``
says what the rest of dltrain needs to know about that model."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dltrain.registry import Registry


@dataclass(frozen=True)
class InputNormalization:
    """What inputs a model's weights expect, as a pretrained backbone declares it (torchvision's
    weights ``meta`` and ``transforms()``, timm's ``pretrained_cfg``).

    Attributes:
        mean, std: per channel, of inputs scaled to [0, 1]; None: the statistics fitted on the
            training split (a backbone trained from scratch).
        size: the ``(height, width)`` the weights were trained at; None: the data's own size.
        channels: how many channels the model reads (3 for ImageNet backbones: grayscale
            images are repeated to 3 channels); None: the data's own.
        source: where the statistics come from, for ``data.json`` (``"ResNet18_Weights.IMAGENET1K_V1"``).
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    size: tuple[int, int] | None = None
    channels: int | None = None
    source: str = ""


@dataclass(frozen=True)
class ModelFacts:
    """What dltrain needs to know about a model option, registered with its builder
    (``@MODELS.register("lstm", reads_tokens=True, init_activation="tanh")``).

    Attributes:
        reads_tokens: the builder takes ``vocab_size`` and embeds token ids (text data);
            a model without it is refused text data at start-up.
        init_activation: the activation an ``init=`` scheme's gain follows when the config
            names none (``model.activation`` / ``model.nonlinearity``); LSTM and GRU compute with tanh.
        regularization_layers: the builder takes ``dropout`` and ``batch_norm`` from
            ``regularization.*``; a model without them gets a warning that they do not apply,
            ending in ``regularization_hint`` (what to do instead).
        user_code: the model is the user's code, named by ``model._target_``: a checkpoint may
            name that code (and is trusted only as the user says), and the model's failures at
            start-up are the user's to fix, reported as config errors.
        input_normalization: for models whose weights expect their own input (pretrained
            backbones): a function of the model's options (the ``model.*`` keys) that says
            what that input is (:class:`InputNormalization`), or None when these options need
            none. None (the default): the preprocessing fitted on the training split.
        own_init: for models whose builder initialises the layers its own way (torchvision's
            networks): a function of the model's options saying how, the model summary's
            footnote for its ``default`` layers. None: PyTorch's layer defaults.
        tasks: the ``task=`` options it can be trained by (``supervised``: its output is
            compared with the data's targets); another task is refused in one line.
    """

    reads_tokens: bool = False
    init_activation: str | None = None
    regularization_layers: bool = True
    regularization_hint: str = "add the layers to your module instead"
    user_code: bool = False
    input_normalization: Callable[[Mapping[str, Any]], InputNormalization | None] | None = None
    own_init: Callable[[Mapping[str, Any]], str] | None = None
    tasks: tuple[str, ...] = ("supervised",)


MODELS: Registry[ModelFacts] = Registry("model", ModelFacts)

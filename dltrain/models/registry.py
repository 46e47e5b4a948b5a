"""The model registry: ``model=NAME`` builds ``MODELS.get(NAME)``, and ``MODELS.facts(NAME)``
says what the rest of dltrain needs to know about that model."""

from __future__ import annotations

from dataclasses import dataclass

from dltrain.registry import Registry


@dataclass(frozen=True)
class InputNormalization:
    """How a model expects its image inputs prepared, as a pretrained backbone declares it
    (timm's ``pretrained_cfg``): per-channel ``mean`` and ``std`` of inputs scaled to [0, 1],
    and the ``(height, width)`` it was trained at (None: any size)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: tuple[int, int] | None = None


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
            ``regularization.*``; a model without them gets a warning that they do not apply.
        user_code: the model is the user's code, named by ``model._target_``: a checkpoint may
            name that code (and is trusted only as the user says), and the model's failures at
            start-up are the user's to fix, reported as config errors.
        input_normalization: the mean/std/size the model's weights expect, for backbones
            trained elsewhere; None (every model today) keeps the preprocessing fitted on the
            training split. A model that sets it is refused at start-up, in one line, until
            the image preprocessing (:class:`dltrain.data.preprocessing.images.Images`, which has
            the same mean, std and size) takes it instead of fitting its own.
    """

    reads_tokens: bool = False
    init_activation: str | None = None
    regularization_layers: bool = True
    user_code: bool = False
    input_normalization: InputNormalization | None = None


MODELS: Registry[ModelFacts] = Registry("model", ModelFacts)

"""Weight initialisation schemes (``init=``).

Every builder takes ``(model, activation=None, **its_options)``, initialises the model in
place and returns module name -> scheme applied (``"he_normal(relu)"``, ``"zeros"``, ...)
for every layer that owns parameters (a leaf module, or attention as a whole: :func:`layers`):
the Init column of the model summary.

What a scheme touches: the weights of ``nn.Linear``, ``nn.Conv1d/2d/3d``, every
``weight_*`` matrix of ``nn.RNN/LSTM/GRU`` and the projections of ``nn.MultiheadAttention``;
their biases start at 0 (except under ``default``). Normalisation layers (weight 1, bias 0),
embeddings and any other module keep PyTorch's own initialisation and are reported as ``"default"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dltrain.errors import ConfigError
from dltrain.registry import Registry


@dataclass(frozen=True)
class InitFacts:
    """What dltrain needs to know about an ``init=`` scheme, registered with its builder.

    Attributes:
        check: validates the scheme's keys (called with them) without a model, so a run fails
            at start-up, before the data loads; None for schemes whose keys need no check.
    """

    check: Callable[..., object] | None = None


INITS: Registry[InitFacts] = Registry("init", InitFacts)

#: Modules whose ``weight`` (and ``bias``) a scheme initialises.
FEEDFORWARD = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Modules that are one layer with their children: attention computes with its ``out_proj``'s
#: weight itself, never calling it, so the init and the model summary take the whole module.
WHOLE_LAYERS = (nn.MultiheadAttention,)
#: Negative slope of ``nn.LeakyReLU()``, the module ``model.activation=leaky_relu`` builds.
LEAKY_RELU_SLOPE = 0.01
#: dltrain activation name -> the nonlinearity name ``torch.nn.init.calculate_gain`` knows.
#: gelu and elu have no gain in torch; both behave like relu for large inputs (identity on
#: the positive side, ~0 on the negative), so relu's gain sqrt(2) is the usual stand-in.
TORCH_NONLINEARITY = {
    "relu": "relu",
    "leaky_relu": "leaky_relu",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "gelu": "relu",
    "elu": "relu",
    "identity": "linear",
}

# fill(weight, nonlinearity) initialises one weight tensor in place.
Fill = Callable[[torch.Tensor, str], None]


def layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) for every layer, in definition order: each leaf module, and each of
    :data:`WHOLE_LAYERS` in place of its children."""
    whole: list[str] = []  # the name prefixes of the whole layers' children
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in whole):
            continue
        if isinstance(module, WHOLE_LAYERS):
            whole.append(f"{name}." if name else "")
            yield name, module
        elif not list(module.children()):
            yield name, module


def _leaves_with_params(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) for every layer (:func:`layers`) that owns parameters, in definition order."""
    for name, module in layers(model):
        if any(True for _ in module.parameters()):
            yield name, module


def _nonlinearity(nonlinearity: str | None, activation: str | None, module: nn.Module) -> str:
    """The dltrain activation name a gain-scaled scheme is matched to, for ``module``.

    ``init.nonlinearity`` wins; otherwise a recurrent module uses its own nonlinearity
    (tanh, or relu for ``nn.RNN(nonlinearity="relu")``: the gates of LSTM/GRU are
    sigmoid/tanh, and the model's head activation says nothing about them); attention's
    projections feed dot products and a residual sum, no activation, so they take the
    identity's gain 1; any other module uses the model's activation, and relu when the model
    names none.
    """
    if nonlinearity is not None:
        name, key = nonlinearity, "init.nonlinearity"
    elif isinstance(module, nn.RNNBase):
        name, key = getattr(module, "nonlinearity", "tanh"), "init.nonlinearity"
    elif isinstance(module, nn.MultiheadAttention):
        name, key = "identity", "init.nonlinearity"
    else:
        name, key = activation or "relu", "model.activation"
    if name not in TORCH_NONLINEARITY:
        raise ConfigError(f"{key}={name} is not a known activation: choose one of {', '.join(TORCH_NONLINEARITY)}.")
    return name


def _gain(nonlinearity: str) -> float:
    """``calculate_gain`` for a dltrain activation name."""
    return nn.init.calculate_gain(TORCH_NONLINEARITY[nonlinearity], LEAKY_RELU_SLOPE)


def _fan_in(weight: torch.Tensor) -> int:
    """Inputs per output unit: in_features (Linear), in_channels/groups * kernel area (Conv), dim 1 (RNN)."""
    return max(math.prod(weight.shape[1:]), 1)


def _init_model(model: nn.Module, scheme: str, fill: Fill, activation: str | None = None,
                nonlinearity: str | None = None, gain_scaled: bool = False) -> dict[str, str]:
    """Apply ``fill`` to every weight a scheme touches and zero their biases.

    Args:
        model: initialised in place.
        scheme: how the summary names the scheme; gain-scaled ones get ``(nonlinearity)`` appended.
        fill: initialises one weight tensor, given the nonlinearity it is matched to.
        activation: the model's activation name, or None.
        nonlinearity: ``init.nonlinearity``; None matches each module as in :func:`_nonlinearity`.
        gain_scaled: whether the scheme depends on the nonlinearity.
    """
    applied: dict[str, str] = {}
    for name, module in _leaves_with_params(model):
        if isinstance(module, FEEDFORWARD):
            weights = [module.weight]
            biases = [module.bias] if module.bias is not None else []
        elif isinstance(module, nn.RNNBase):
            # weight_ih_l{k}[_reverse], weight_hh_l{k}[_reverse] (and weight_hr_l{k} with proj_size):
            # each a 2-D matrix with the gates stacked along dim 0, so fan_in is dim 1.
            params = dict(module.named_parameters(recurse=False))
            weights = [p for n, p in params.items() if n.startswith("weight_")]
            biases = [p for n, p in params.items() if n.startswith("bias_")]
        elif isinstance(module, nn.MultiheadAttention):
            # in_proj_weight: the query, key and value projections stacked along dim 0 (fan_in is
            # dim 1), as torch's own init takes it (or q/k/v_proj_weight apart); out_proj.weight.
            params = dict(module.named_parameters())
            weights = [p for n, p in params.items() if n.endswith("weight")]
            biases = [p for n, p in params.items() if "bias" in n]  # in_proj_bias, out_proj.bias, bias_k, bias_v
        else:
            applied[name] = "default"
            continue
        act = _nonlinearity(nonlinearity, activation, module) if gain_scaled else ""
        with torch.no_grad():
            for weight in weights:
                fill(weight, act)
            for bias in biases:
                bias.zero_()
        applied[name] = f"{scheme}({act})" if gain_scaled else scheme
    return applied


@INITS.register("default")
def init_default(model: nn.Module, activation: str | None = None) -> dict[str, str]:
    """Keep PyTorch's own initialisation (Kaiming-uniform with a=sqrt(5) for Linear and Conv)."""
    return {name: "default" for name, _ in _leaves_with_params(model)}


def xavier_gain(gain: float, nonlinearity: str | None) -> tuple[float, str]:
    """The gain a Xavier scheme scales by, and how the summary names it.

    Glorot's formula has no activation gain: 1 unless ``init.gain`` or
    ``init.nonlinearity`` asks for one, whatever the model's activation.

    Raises:
        ConfigError: both keys are set.
        ValueError: the gain is not a positive finite number (the schema's range refuses it
            first on the config path; zero or a negative gain would scale the weights silently).
    """
    if not (math.isfinite(gain) and gain > 0):
        raise ValueError(f"gain must be a positive finite number, got {gain}")
    if nonlinearity is None:
        return gain, "" if gain == 1 else f"gain={exact(gain)}"
    if gain != 1:
        raise ConfigError(f"init.gain={exact(gain)} and init.nonlinearity={nonlinearity} both set the gain: "
                          "keep one of them.")
    return _gain(_nonlinearity(nonlinearity, None, nn.Identity())), nonlinearity


def _xavier(model: nn.Module, scheme: str, fill: Callable[..., Any], gain: float,
            nonlinearity: str | None) -> dict[str, str]:
    """Apply ``fill(weight, gain=...)`` to every weight with one gain; the label names a gain other than 1."""
    value, shown = xavier_gain(gain, nonlinearity)
    applied = _init_model(model, scheme, lambda w, _act: fill(w, gain=value))
    label = f"{scheme}({shown})" if shown else scheme
    return {name: label if applied_as == scheme else applied_as for name, applied_as in applied.items()}


@INITS.register("xavier_uniform", check=xavier_gain)  # init.gain and init.nonlinearity both set
def init_xavier_uniform(model: nn.Module, activation: str | None = None, gain: float = 1.0,
                        nonlinearity: str | None = None) -> dict[str, str]:
    """Glorot uniform: U[-a, a], a = gain * sqrt(6 / (fan_in + fan_out)), gain 1 by default.

    ``activation`` (the model's) is not used: Glorot's formula has no activation gain.
    """
    return _xavier(model, "xavier_uniform", nn.init.xavier_uniform_, gain, nonlinearity)


@INITS.register("xavier_normal", check=xavier_gain)  # init.gain and init.nonlinearity both set
def init_xavier_normal(model: nn.Module, activation: str | None = None, gain: float = 1.0,
                       nonlinearity: str | None = None) -> dict[str, str]:
    """Glorot normal: N(0, variance = gain^2 * 2 / (fan_in + fan_out)), gain 1 by default.

    ``activation`` (the model's) is not used: Glorot's formula has no activation gain.
    """
    return _xavier(model, "xavier_normal", nn.init.xavier_normal_, gain, nonlinearity)


def _kaiming(fill: Callable[..., Any]) -> Fill:
    """A Fill calling ``kaiming_uniform_`` or ``kaiming_normal_`` in fan_in mode for a dltrain activation."""

    def apply(weight: torch.Tensor, act: str) -> None:
        # kaiming_* take the nonlinearity name and compute the gain themselves; `a` is
        # only read for leaky_relu.
        fill(weight, a=LEAKY_RELU_SLOPE if act == "leaky_relu" else 0.0, mode="fan_in",
             nonlinearity=TORCH_NONLINEARITY[act])

    return apply


@INITS.register("he_uniform")
def init_he_uniform(model: nn.Module, activation: str | None = None,
                    nonlinearity: str | None = None) -> dict[str, str]:
    """He/Kaiming uniform: U[-a, a], a = gain * sqrt(3 / fan_in) (sqrt(6 / fan_in) for relu)."""
    return _init_model(model, "he_uniform", _kaiming(nn.init.kaiming_uniform_), activation, nonlinearity,
                       gain_scaled=True)


@INITS.register("he_normal")
def init_he_normal(model: nn.Module, activation: str | None = None,
                   nonlinearity: str | None = None) -> dict[str, str]:
    """He/Kaiming normal: N(0, std = gain / sqrt(fan_in)) (sqrt(2 / fan_in) for relu)."""
    return _init_model(model, "he_normal", _kaiming(nn.init.kaiming_normal_), activation, nonlinearity,
                       gain_scaled=True)


@INITS.register("fan_in_uniform")
def init_fan_in_uniform(model: nn.Module, activation: str | None = None) -> dict[str, str]:
    """U[-1/sqrt(fan_in), 1/sqrt(fan_in)] for every weight."""

    def fill(weight: torch.Tensor, _act: str) -> None:
        bound = 1.0 / math.sqrt(_fan_in(weight))
        nn.init.uniform_(weight, -bound, bound)

    return _init_model(model, "fan_in_uniform", fill)


@INITS.register("fan_in_normal")
def init_fan_in_normal(model: nn.Module, activation: str | None = None) -> dict[str, str]:
    """N(0, std = 1/sqrt(fan_in)) for every weight."""
    return _init_model(model, "fan_in_normal",
                       lambda w, _act: nn.init.normal_(w, mean=0.0, std=1.0 / math.sqrt(_fan_in(w))))


@INITS.register("orthogonal")
def init_orthogonal(model: nn.Module, activation: str | None = None,
                    nonlinearity: str | None = None) -> dict[str, str]:
    """Orthogonal matrices (rows or columns orthonormal) scaled by the activation's gain.

    Conv kernels are flattened to ``(out_channels, in_channels * kernel area)``; the
    stacked gate matrices of LSTM/GRU are made orthogonal as a whole.
    """
    return _init_model(model, "orthogonal", lambda w, act: nn.init.orthogonal_(w, gain=_gain(act)),
                       activation, nonlinearity, gain_scaled=True)


@INITS.register("zeros")
def init_zeros(model: nn.Module, activation: str | None = None) -> dict[str, str]:
    """Every weight and bias 0: the units of a layer stay identical, so the net cannot learn."""
    return _init_model(model, "zeros", lambda w, _act: nn.init.zeros_(w))


@INITS.register("constant")
def init_constant(model: nn.Module, activation: str | None = None, value: float = 0.01) -> dict[str, str]:
    """Every weight ``value``, biases 0: like zeros, the symmetry between units never breaks."""
    return _init_model(model, f"constant({exact(value)})", lambda w, _act: nn.init.constant_(w, value))


def exact(x: float) -> str:
    """``x`` short when that is exact (``2``, ``0.25``), else every digit (``1.0000001``): a
    label never shows a value other than the one used."""
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def _number(x: float) -> str:
    return f"{x:.4g}"


#: scheme -> its weights' distribution, given the gain g the label names (1 where it names none).
FORMULAS: dict[str, Callable[[float], str]] = {
    "xavier_normal": lambda g: f"w ~ N(0, variance {_number(2 * g * g)}/(fan_in+fan_out))",
    "xavier_uniform": lambda g: f"w ~ U(-a, a), a = sqrt({_number(6 * g * g)}/(fan_in+fan_out))",
    "he_normal": lambda g: f"w ~ N(0, variance {_number(g * g)}/fan_in)",
    "he_uniform": lambda g: f"w ~ U(-a, a), a = sqrt({_number(3 * g * g)}/fan_in)",
    "orthogonal": lambda g: f"w = {_number(g)} * Q, Q (out, fan_in) with orthonormal rows or columns",
    "fan_in_normal": lambda _g: "w ~ N(0, variance 1/fan_in)",
    "fan_in_uniform": lambda _g: "w ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))",
    "zeros": lambda _g: "w = 0",
    "constant": lambda g: f"w = {exact(g)}",
}

#: PyTorch's own initialisation, by the layers that keep it (the summary's Kind column).
DEFAULT_FORMULAS: tuple[tuple[str, Callable[[str], bool], str], ...] = (
    ("Linear, Conv", lambda kind: kind.removeprefix("Lazy").startswith(("Linear", "Conv")),
     "w, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))"),
    ("RNN, LSTM, GRU", lambda kind: kind in ("RNN", "LSTM", "GRU"),
     "w, b ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))"),
    ("MultiheadAttention", lambda kind: kind == "MultiheadAttention",
     "in_proj w ~ U(-a, a), a = sqrt(6/(fan_in+fan_out)), out_proj w ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), b = 0"),
    ("norm layers", lambda kind: "Norm" in kind, "w = 1, b = 0"),
    ("Embedding", lambda kind: kind.startswith("Embedding"), "w ~ N(0, 1)"),
    # the transformer's own parameters (dltrain/models/transformer.py), as ViT and BERT/GPT-2 start them
    ("ClassToken", lambda kind: kind == "ClassToken", "w = 0"),
    ("LearnedPositions", lambda kind: kind == "LearnedPositions", "w ~ N(0, std 0.02)"),
)


def _default_formula(kinds: Collection[str]) -> str:
    """What PyTorch's own initialisation draws for the layer ``kinds`` labelled ``default``
    (Linear and Conv when no kinds are given); other kinds keep their own."""
    parts = [f"{names}: {formula}" for names, matches, formula in DEFAULT_FORMULAS
             if any(map(matches, kinds or ("Linear",)))]
    known = [kind for kind in kinds if any(matches(kind) for _, matches, _ in DEFAULT_FORMULAS)]
    parts += [f"{kind}: its own" for kind in dict.fromkeys(kinds) if kind not in known]
    return f"default: PyTorch's own ({'; '.join(parts)})"


def init_formula(label: str, kinds: Collection[str] = ()) -> str:
    """What a label of :func:`apply_init` (``"he_normal(relu)"``, ``"xavier_normal(gain=2)"``) draws.

    The argument in brackets is the activation whose gain scales the scheme, ``gain=X``, or
    ``constant``'s value. ``kinds``: the layer kinds that carry the label, which say what
    ``default`` means (under another scheme it labels norm layers and embeddings).
    """
    scheme, _, arg = label.removesuffix(")").partition("(")
    if scheme == "default":
        return _default_formula(kinds)
    if arg in TORCH_NONLINEARITY:
        g = _gain(arg)
    else:
        g = float(arg.removeprefix("gain=")) if arg else 1.0
    formula = FORMULAS.get(scheme)
    return f"{label}: {formula(g)}, b = 0" if formula else f"{label}: biases 0"


def apply_init(model: nn.Module, name: str, activation: str | None = None, **options: Any) -> dict[str, str]:
    """Initialise ``model`` in place with scheme ``name``.

    Args:
        model: the model to initialise.
        name: the ``init=`` option (a name in ``INITS``).
        activation: the model's activation name (``model.activation``), or None for
            models that have none; gain-scaled schemes match it unless told otherwise.
        **options: the init config's keys other than ``name`` (``nonlinearity``, ``value``).

    Returns:
        module name -> scheme applied, for every layer with parameters (the summary's Init column).
    """
    return INITS.build(name, model, activation=activation, **options)

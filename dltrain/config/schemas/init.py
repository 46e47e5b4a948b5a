"""``init=``: the weight initialisations' keys."""

from dataclasses import dataclass

from dltrain.config.schemas.spec import ACTIVATIONS, spec


@dataclass
class InitConfig:
    """``init=default|zeros|fan_in_uniform|fan_in_normal``: schemes without keys."""

    name: str = "default"


@dataclass
class XavierInitConfig:
    """``init=xavier_*``: Glorot's variance 2/(fan_in+fan_out), times gain² when asked for."""

    name: str = "xavier_uniform"
    gain: float = spec(1.0, gt=0, help="scales every weight; 1 is Glorot's and Keras's glorot_* formula")
    nonlinearity: str | None = spec(None, choices=ACTIVATIONS,
                                    help="null: gain 1 (or init.gain); relu, tanh, ...: that activation's gain")


@dataclass
class GainInitConfig:
    """``init=he_*|orthogonal``: schemes scaled for the activation that follows."""

    name: str = "he_normal"
    nonlinearity: str | None = spec(None, choices=ACTIVATIONS,
                                    help="null matches the model's activation (tanh for recurrent models)")


@dataclass
class ConstantInitConfig:
    """``init=constant``: every weight set to ``value``."""

    name: str = "constant"
    value: float = spec(0.01, help="the value of every weight")

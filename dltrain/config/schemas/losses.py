"""``loss=``: the training objectives' keys."""

from dataclasses import dataclass
from typing import Any

from dltrain.config.schemas.spec import spec


@dataclass
class LossConfig:
    """``loss=auto|mse|rmse|mae``: losses with no keys of their own."""

    name: str = "auto"


@dataclass
class HuberConfig:
    """``loss=huber``: squared error below ``delta``, absolute error above."""

    name: str = "huber"
    delta: float = spec(1.0, gt=0)


@dataclass
class BCEConfig:
    """``loss=bce``: binary cross-entropy on logits."""

    name: str = "bce"
    pos_weight: float | None = spec(None, gt=0, help="weight of positive examples; > 1 favours recall")


@dataclass
class CrossEntropyConfig:
    """``loss=cross_entropy|nll``: negative log-likelihood of the class, optionally weighted."""

    name: str = "cross_entropy"
    class_weights: Any = spec(None, help="null, balanced, or a list with one weight per class")

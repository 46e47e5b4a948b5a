"""``optim=``: the optimizers' keys (``torch.optim``'s arguments)."""

from dataclasses import dataclass

from dltrain.config.schemas.spec import spec

# Field names and defaults follow the torch signatures; a test checks that they cover them.

@dataclass
class SGDConfig:
    """``optim=sgd|momentum|nesterov``: ``torch.optim.SGD``."""

    name: str = "sgd"
    lr: float = spec(0.01, ge=0)
    momentum: float = spec(0.0, ge=0, le=1)
    dampening: float = spec(0.0, ge=0, le=1)
    weight_decay: float = spec(0.0, ge=0)
    nesterov: bool = False
    maximize: bool = False
    foreach: bool | None = None
    fused: bool | None = None


@dataclass
class AdamConfig:
    """``optim=adam``: ``torch.optim.Adam``."""

    name: str = "adam"
    lr: float = spec(1e-3, ge=0)
    betas: list[float] = spec([0.9, 0.999], items={"ge": 0, "lt": 1}, length=2)
    eps: float = spec(1e-8, gt=0)
    weight_decay: float = spec(0.0, ge=0)
    amsgrad: bool = False
    decoupled_weight_decay: bool = False
    maximize: bool = False
    foreach: bool | None = None
    fused: bool | None = None


@dataclass
class AdamWConfig:
    """``optim=adamw``: ``torch.optim.AdamW`` (decoupled weight decay)."""

    name: str = "adamw"
    lr: float = spec(1e-3, ge=0)
    betas: list[float] = spec([0.9, 0.999], items={"ge": 0, "lt": 1}, length=2)
    eps: float = spec(1e-8, gt=0)
    weight_decay: float = spec(0.01, ge=0)
    amsgrad: bool = False
    maximize: bool = False
    foreach: bool | None = None
    fused: bool | None = None


@dataclass
class NAdamConfig:
    """``optim=nadam``: ``torch.optim.NAdam`` (Adam with Nesterov momentum)."""

    name: str = "nadam"
    lr: float = spec(2e-3, ge=0)
    betas: list[float] = spec([0.9, 0.999], items={"ge": 0, "lt": 1}, length=2)
    eps: float = spec(1e-8, gt=0)
    weight_decay: float = spec(0.0, ge=0)
    momentum_decay: float = spec(4e-3, ge=0)
    decoupled_weight_decay: bool = False
    maximize: bool = False
    foreach: bool | None = None


@dataclass
class RAdamConfig:
    """``optim=radam``: ``torch.optim.RAdam`` (Adam whose step is rectified while the variance
    estimate is still unreliable, a built-in warm-up)."""

    name: str = "radam"
    lr: float = spec(1e-3, ge=0)
    betas: list[float] = spec([0.9, 0.999], items={"ge": 0, "lt": 1}, length=2)
    eps: float = spec(1e-8, gt=0)
    weight_decay: float = spec(0.0, ge=0)
    decoupled_weight_decay: bool = False
    maximize: bool = False
    foreach: bool | None = None


@dataclass
class AdamaxConfig:
    """``optim=adamax``: ``torch.optim.Adamax`` (Adam with the infinity norm of past gradients in
    place of their running mean square)."""

    name: str = "adamax"
    lr: float = spec(2e-3, ge=0)
    betas: list[float] = spec([0.9, 0.999], items={"ge": 0, "lt": 1}, length=2)
    eps: float = spec(1e-8, gt=0)
    weight_decay: float = spec(0.0, ge=0)
    maximize: bool = False
    foreach: bool | None = None


@dataclass
class RMSpropConfig:
    """``optim=rmsprop``: ``torch.optim.RMSprop``."""

    name: str = "rmsprop"
    lr: float = spec(1e-2, ge=0)
    alpha: float = spec(0.99, ge=0, le=1, help="decay of the running average of squared gradients")
    eps: float = spec(1e-8, gt=0)
    weight_decay: float = spec(0.0, ge=0)
    momentum: float = spec(0.0, ge=0, le=1)
    centered: bool = False
    maximize: bool = False
    foreach: bool | None = None


@dataclass
class AdagradConfig:
    """``optim=adagrad``: ``torch.optim.Adagrad``."""

    name: str = "adagrad"
    lr: float = spec(1e-2, ge=0)
    lr_decay: float = spec(0.0, ge=0)
    weight_decay: float = spec(0.0, ge=0)
    initial_accumulator_value: float = spec(0.0, ge=0)
    eps: float = spec(1e-10, gt=0)
    maximize: bool = False
    foreach: bool | None = None
    fused: bool | None = None


@dataclass
class AdadeltaConfig:
    """``optim=adadelta``: ``torch.optim.Adadelta``."""

    name: str = "adadelta"
    lr: float = spec(1.0, ge=0)
    rho: float = spec(0.9, ge=0, le=1)
    eps: float = spec(1e-6, gt=0)
    weight_decay: float = spec(0.0, ge=0)
    maximize: bool = False
    foreach: bool | None = None


@dataclass
class LBFGSConfig:
    """``optim=lbfgs``: ``torch.optim.LBFGS``; the trainer supplies the closure it needs."""

    name: str = "lbfgs"
    lr: float = spec(1.0, ge=0)
    max_iter: int = spec(20, ge=1, help="iterations per optimizer step (per batch)")
    max_eval: int | None = spec(None, ge=1)
    tolerance_grad: float = spec(1e-7, ge=0)
    tolerance_change: float = spec(1e-9, ge=0)
    history_size: int = spec(100, ge=1)
    line_search_fn: str | None = spec("strong_wolfe", choices=("strong_wolfe",))
    maximize: bool = False

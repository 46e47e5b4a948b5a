"""``scheduler=``: the learning-rate schedules' keys."""

from dataclasses import dataclass

from dltrain.config.schemas.spec import spec


@dataclass
class SchedulerConfig:
    """``scheduler=none``: a constant learning rate (after the optional warm-up)."""

    name: str = "none"
    warmup_epochs: int = spec(0, ge=0, help="epochs of linear warm-up before the schedule starts")


@dataclass
class StepSchedulerConfig(SchedulerConfig):
    """``scheduler=step``: multiply the LR by ``gamma`` every ``step_size`` epochs."""

    name: str = "step"
    step_size: int = spec(10, ge=1)
    gamma: float = spec(0.1, gt=0)


@dataclass
class MultiStepSchedulerConfig(SchedulerConfig):
    """``scheduler=multistep``: multiply the LR by ``gamma`` at each milestone epoch."""

    name: str = "multistep"
    milestones: list[int] = spec([10, 20], items={"ge": 1})
    gamma: float = spec(0.1, gt=0)


@dataclass
class ExponentialSchedulerConfig(SchedulerConfig):
    """``scheduler=exponential``: multiply the LR by ``gamma`` every epoch."""

    name: str = "exponential"
    gamma: float = spec(0.95, gt=0)


@dataclass
class CosineSchedulerConfig(SchedulerConfig):
    """``scheduler=cosine``: cosine annealing from the LR down to ``eta_min``."""

    name: str = "cosine"
    T_max: int | None = spec(None, ge=1, help="epochs of the half cosine; null: the epochs left after warm-up")
    eta_min: float = spec(0.0, ge=0)


@dataclass
class PlateauSchedulerConfig(SchedulerConfig):
    """``scheduler=plateau``: reduce the LR when the monitored metric stops improving."""

    name: str = "plateau"
    monitor: str | None = spec(None, help="a logged metric; null: trainer.early_stopping.monitor")
    mode: str = spec("auto", choices=("auto", "min", "max"))
    factor: float = spec(0.1, gt=0, lt=1)
    patience: int = spec(2, ge=0)
    threshold: float = spec(1e-4, ge=0)
    threshold_mode: str = spec("rel", choices=("rel", "abs"))
    cooldown: int = spec(0, ge=0)
    min_lr: float = spec(0.0, ge=0)
    eps: float = spec(1e-8, ge=0)


@dataclass
class OneCycleSchedulerConfig(SchedulerConfig):
    """``scheduler=onecycle``: one cycle up to ``max_lr`` and down, stepped every batch."""

    name: str = "onecycle"
    max_lr: float | None = spec(None, gt=0, help="peak LR; null: optim.lr")
    pct_start: float = spec(0.3, gt=0, lt=1)
    anneal_strategy: str = spec("cos", choices=("cos", "linear"))
    cycle_momentum: bool = True
    base_momentum: float = spec(0.85, ge=0, le=1)
    max_momentum: float = spec(0.95, ge=0, le=1)
    div_factor: float = spec(25.0, gt=0)
    final_div_factor: float = spec(1e4, gt=0)
    three_phase: bool = False

"""Learning-rate schedules (``scheduler=``) and the optional linear warm-up in front of them.

Each builder wraps a torch scheduler in an :class:`LRSchedule`, the one object the trainer
drives: ``step_batch()`` after every optimizer step, ``step_epoch(metrics)`` after every
epoch, ``state_dict()`` into the checkpoint. Warm-up is done here rather than with torch's
``SequentialLR`` so that it composes with ``ReduceLROnPlateau`` as well.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    ExponentialLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    ReduceLROnPlateau,
    StepLR,
)

from dltrain.errors import ConfigError
from dltrain.registry import Registry
from dltrain.training.callbacks import infer_mode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerFacts:
    """What dltrain needs to know about a ``scheduler=`` option, registered with its builder.

    Attributes:
        needs_monitor: the schedule steps on a logged metric, ``scheduler.monitor`` (null: the
            early-stopping monitor), which has to be logged for the data's task.
        warnings: given ``max_epochs`` and the option's keys, what will not go as its preset
            describes within a run of that length; None for schedules with nothing to say.
        peak_lr_key: the option's key that sets the highest learning rate it reaches, in place
            of ``optim.lr`` (what ``dltrain-lr-find`` suggests a value for); None: ``optim.lr``.
    """

    needs_monitor: bool = False
    warnings: Callable[..., list[str]] | None = None
    peak_lr_key: str | None = None


SCHEDULERS: Registry[SchedulerFacts] = Registry("scheduler", SchedulerFacts)


class LRSchedule:
    """A torch LR scheduler (or none) behind an optional linear warm-up.

    With ``warmup_epochs`` W > 0, epoch k = 1..W runs at ``base_lr * k / (W + 1)`` for every
    param group; epoch W + 1 runs at ``base_lr`` and is epoch 0 of the wrapped schedule, so
    its milestones, step sizes and T_max count after the warm-up.

    Args:
        name: the scheduler option (``step``, ``plateau``, ...), for messages.
        optimizer: the optimizer whose param groups are scheduled.
        scheduler: the torch scheduler, built on ``optimizer`` just before; None keeps the LR.
        warmup_epochs: epochs of linear warm-up (not with a per-batch scheduler).
        per_batch: step the scheduler after every optimizer step instead of every epoch.
        monitor: the metric fed to ``ReduceLROnPlateau`` at the end of each epoch.
    """

    def __init__(self, name: str, optimizer: torch.optim.Optimizer, scheduler: LRScheduler | None = None, *,
                 warmup_epochs: int = 0, per_batch: bool = False, monitor: str | None = None) -> None:
        self.name = name
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.warmup_epochs = warmup_epochs
        self.per_batch = per_batch
        self.monitor = monitor
        self.epoch = 0  # epochs finished (step_epoch calls so far)
        # The torch scheduler is built first and leaves the LR at its epoch-0 value; that is
        # what the warm-up rises to and what is restored when the warm-up ends.
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        if warmup_epochs > 0:
            self._set_lrs([lr / (warmup_epochs + 1) for lr in self.base_lrs])

    @property
    def lr(self) -> float:
        """The current learning rate of param group 0."""
        return float(self.optimizer.param_groups[0]["lr"])

    def step_batch(self) -> None:
        """Advance a per-batch schedule (onecycle) by one optimizer step; others ignore it."""
        if not self.per_batch or self.scheduler is None:
            return
        # OneCycleLR's last LR (min_lr) belongs to step total_steps - 1; one more step would
        # extrapolate the cosine back up and two would raise, so the final LR is held instead.
        total_steps = getattr(self.scheduler, "total_steps", None)
        if total_steps is None or self.scheduler.last_epoch < total_steps - 1:
            self.scheduler.step()

    def step_epoch(self, metrics: dict[str, float], validated: bool = True) -> None:
        """Advance by one epoch, given the epoch's row of metrics; plateau does not see a
        validation metric of an epoch that did not validate (``trainer.val_every_n_epochs``).

        Raises:
            ConfigError: plateau's monitored metric is not in ``metrics``.
        """
        value = None
        if self.monitor is not None:
            if self.monitor not in metrics:
                raise ConfigError(
                    f"scheduler.monitor={self.monitor} is not a logged metric (logged: {', '.join(sorted(metrics))}): "
                    "set scheduler.monitor to one of them."
                )
            value = float(metrics[self.monitor])
        self.epoch += 1
        if self.epoch < self.warmup_epochs:
            self._set_lrs([lr * (self.epoch + 1) / (self.warmup_epochs + 1) for lr in self.base_lrs])
        elif self.epoch == self.warmup_epochs:
            # Chainable torch schedulers multiply the group's current LR, so the schedule
            # must start from exactly base_lr to reproduce the unwarmed one, shifted.
            self._set_lrs(self.base_lrs)
        elif self.scheduler is not None and not self.per_batch:
            if isinstance(self.scheduler, ReduceLROnPlateau):
                if validated or not self.monitor.startswith("val_"):
                    self.scheduler.step(value)
            else:
                self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        """Plain data (numbers, strings, lists, dicts) for an exact resume."""
        groups = []
        for group in self.optimizer.param_groups:
            saved: dict[str, Any] = {"lr": float(group["lr"])}
            if self._cycles_momentum():
                # OneCycleLR moves momentum (or beta1) too; restore it with the LR.
                key = "betas" if "betas" in group else "momentum"
                saved[key] = _plain(group[key])
            groups.append(saved)
        return {
            "name": self.name,
            "epoch": self.epoch,
            "warmup_epochs": self.warmup_epochs,
            "base_lrs": list(self.base_lrs),
            "groups": groups,
            "scheduler": None if self.scheduler is None else _plain(self.scheduler.state_dict()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`, into the optimizer's param groups as well."""
        self.epoch = int(state["epoch"])
        self.warmup_epochs = int(state["warmup_epochs"])
        self.base_lrs = [float(lr) for lr in state["base_lrs"]]
        for group, saved in zip(self.optimizer.param_groups, state["groups"], strict=True):
            for key, value in saved.items():
                group[key] = tuple(value) if key == "betas" else value
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(dict(state["scheduler"]))
            if isinstance(self.scheduler, MultiStepLR):
                # Saved as a plain dict; MultiStepLR needs a Counter (``.elements()``).
                self.scheduler.milestones = Counter({int(k): v for k, v in self.scheduler.milestones.items()})

    def _cycles_momentum(self) -> bool:
        return isinstance(self.scheduler, OneCycleLR) and self.scheduler.cycle_momentum

    def _set_lrs(self, lrs: list[float]) -> None:
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr

    def __repr__(self) -> str:
        return f"LRSchedule({self.name}, warmup_epochs={self.warmup_epochs}, epoch={self.epoch}, lr={self.lr:.4g})"


def _plain(obj: Any) -> Any:
    """Torch state as plain dicts and lists (a Counter becomes a dict, a tuple a list)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _uses_momentum(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer runs with momentum (SGD/RMSprop with momentum > 0) or betas (Adam family)."""
    return any(group.get("momentum", 0) > 0 or group.get("betas", (0,))[0] > 0 for group in optimizer.param_groups)


def _torch_checked(name: str, make: Callable[[], LRScheduler]) -> LRScheduler:
    """Build a torch scheduler, turning its ValueError into a one-line config error."""
    try:
        return make()
    except (ValueError, ZeroDivisionError) as err:
        raise ConfigError(f"scheduler={name}: {str(err).rstrip('.!')}.") from err


@SCHEDULERS.register("none")
def build_none(optimizer: torch.optim.Optimizer, *, max_epochs: int, steps_per_epoch: int,
               warmup_epochs: int = 0) -> LRSchedule:
    """A constant LR, after the optional warm-up."""
    return LRSchedule("none", optimizer, None, warmup_epochs=warmup_epochs)


@SCHEDULERS.register("step")
def build_step(optimizer: torch.optim.Optimizer, *, max_epochs: int, steps_per_epoch: int, warmup_epochs: int = 0,
               step_size: int = 10, gamma: float = 0.1) -> LRSchedule:
    """``StepLR``: multiply the LR by ``gamma`` every ``step_size`` epochs."""
    sched = _torch_checked("step", lambda: StepLR(optimizer, step_size=step_size, gamma=gamma))
    return LRSchedule("step", optimizer, sched, warmup_epochs=warmup_epochs)


@SCHEDULERS.register("multistep")
def build_multistep(optimizer: torch.optim.Optimizer, *, max_epochs: int, steps_per_epoch: int,
                    warmup_epochs: int = 0, milestones: list[int] | None = None, gamma: float = 0.1) -> LRSchedule:
    """``MultiStepLR``: multiply the LR by ``gamma`` at each milestone epoch."""
    milestones = [10, 20] if milestones is None else [int(m) for m in milestones]
    sched = _torch_checked("multistep", lambda: MultiStepLR(optimizer, milestones=milestones, gamma=gamma))
    return LRSchedule("multistep", optimizer, sched, warmup_epochs=warmup_epochs)


@SCHEDULERS.register("exponential")
def build_exponential(optimizer: torch.optim.Optimizer, *, max_epochs: int, steps_per_epoch: int,
                      warmup_epochs: int = 0, gamma: float = 0.95) -> LRSchedule:
    """``ExponentialLR``: multiply the LR by ``gamma`` every epoch."""
    sched = _torch_checked("exponential", lambda: ExponentialLR(optimizer, gamma=gamma))
    return LRSchedule("exponential", optimizer, sched, warmup_epochs=warmup_epochs)


def _cosine_warnings(max_epochs: int, warmup_epochs: int = 0, T_max: int | None = None, **_: Any) -> list[str]:
    """A cosine shorter than the epochs after warm-up rises again after its minimum."""
    if T_max is not None and T_max < max_epochs - warmup_epochs:
        return [f"scheduler.T_max={T_max} is shorter than the {max_epochs - warmup_epochs} epochs after warm-up: "
                "the cosine rises again after its minimum (leave T_max null to end at eta_min)"]
    return []


@SCHEDULERS.register("cosine", warnings=_cosine_warnings)
def build_cosine(optimizer: torch.optim.Optimizer, *, max_epochs: int, steps_per_epoch: int, warmup_epochs: int = 0,
                 T_max: int | None = None, eta_min: float = 0.0) -> LRSchedule:
    """``CosineAnnealingLR`` over ``T_max`` epochs (default: the epochs left after warm-up)."""
    t_max = max(1, max_epochs - warmup_epochs) if T_max is None else T_max
    sched = _torch_checked("cosine", lambda: CosineAnnealingLR(optimizer, T_max=t_max, eta_min=eta_min))
    return LRSchedule("cosine", optimizer, sched, warmup_epochs=warmup_epochs)


@SCHEDULERS.register("plateau", needs_monitor=True)
def build_plateau(optimizer: torch.optim.Optimizer, *, max_epochs: int, steps_per_epoch: int, warmup_epochs: int = 0,
                  monitor: str | None = "val_loss", mode: str = "auto", factor: float = 0.1, patience: int = 2,
                  threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0, min_lr: float = 0.0,
                  eps: float = 1e-8) -> LRSchedule:
    """``ReduceLROnPlateau`` on the metric ``monitor`` (``mode=auto``: from its name)."""
    if not monitor:
        raise ConfigError("scheduler=plateau needs a metric to watch: set scheduler.monitor (e.g. val_loss).")
    mode = infer_mode(monitor) if mode == "auto" else mode
    sched = _torch_checked("plateau", lambda: ReduceLROnPlateau(
        optimizer, mode=mode, factor=factor, patience=patience, threshold=threshold,
        threshold_mode=threshold_mode, cooldown=cooldown, min_lr=min_lr, eps=eps))
    return LRSchedule("plateau", optimizer, sched, warmup_epochs=warmup_epochs, monitor=monitor)


@SCHEDULERS.register("onecycle", peak_lr_key="max_lr")
def build_onecycle(optimizer: torch.optim.Optimizer, *, max_epochs: int, steps_per_epoch: int, warmup_epochs: int = 0,
                   max_lr: float | None = None, pct_start: float = 0.3, anneal_strategy: str = "cos",
                   cycle_momentum: bool = True, base_momentum: float = 0.85, max_momentum: float = 0.95,
                   div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False) -> LRSchedule:
    """``OneCycleLR`` over ``max_epochs * steps_per_epoch`` optimizer steps, stepped per batch."""
    if warmup_epochs > 0:
        raise ConfigError(
            "scheduler=onecycle warms up by itself (scheduler.pct_start): set scheduler.warmup_epochs=0."
        )
    if cycle_momentum and not _uses_momentum(optimizer):
        # Cycling would switch momentum on for plain SGD or RMSprop (torch writes it into
        # the param groups) and cannot work for Adagrad or Adadelta: cycle only what the
        # optimizer already has. Checked before OneCycleLR, which rewrites the param groups.
        log.info("scheduler=onecycle: %s runs without momentum here, so the momentum is not cycled",
                 type(optimizer).__name__)
        cycle_momentum = False
    total_steps = round(max_epochs * steps_per_epoch)  # a fraction per epoch when trainer.max_steps ends sooner
    # torch divides by each phase's length in steps, (end - start); it must not be 0.
    rise = float(pct_start) * total_steps
    ends = [rise - 1, 2 * rise - 2, total_steps - 1] if three_phase else [rise - 1, total_steps - 1]
    if any(end == start for start, end in zip([0.0, *ends[:-1]], ends, strict=True)):
        raise ConfigError(
            f"scheduler=onecycle cannot split {total_steps} optimizer steps into its phases with "
            f"scheduler.pct_start={pct_start:g}: train for more steps (trainer.max_epochs) "
            "or change scheduler.pct_start."
        )
    head_lr = float(optimizer.param_groups[0]["lr"])
    if max_lr is None:
        max_lr = head_lr
    # Groups with a learning rate of their own (a backbone's, model.backbone_lr) cycle in
    # proportion: max_lr is group 0's peak.
    peaks = [max_lr * (float(group["lr"]) / head_lr) if head_lr else max_lr for group in optimizer.param_groups]
    sched = _torch_checked("onecycle", lambda: OneCycleLR(
        optimizer, max_lr=peaks, total_steps=total_steps, pct_start=float(pct_start),
        anneal_strategy=anneal_strategy, cycle_momentum=cycle_momentum, base_momentum=base_momentum,
        max_momentum=max_momentum, div_factor=div_factor, final_div_factor=final_div_factor,
        three_phase=three_phase))
    return LRSchedule("onecycle", optimizer, sched, per_batch=True)


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, *, max_epochs: int, steps_per_epoch: int,
                    warmup_epochs: int = 0, **options: Any) -> LRSchedule:
    """The schedule registered as ``name`` on ``optimizer``.

    Args:
        name: the scheduler option (``none``, ``step``, ``cosine``, ...).
        optimizer: the optimizer, freshly built (its LRs are the base LRs).
        max_epochs: epochs the run will train (cosine's default T_max, onecycle's length).
        steps_per_epoch: optimizer steps per epoch (onecycle's length).
        warmup_epochs: epochs of linear warm-up before the schedule starts.
        **options: the scheduler config's own keys, without ``name`` and ``warmup_epochs``;
            for plateau, ``monitor`` and ``mode`` already resolved by the caller.

    Raises:
        ConfigError: an unknown name or a value torch rejects.
    """
    return SCHEDULERS.build(name, optimizer, max_epochs=max_epochs, steps_per_epoch=steps_per_epoch,
                            warmup_epochs=warmup_epochs, **options)

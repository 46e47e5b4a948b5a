"""The learning-rate range test: train a copy of the run's experiment while the learning
rate grows exponentially, and read a good learning rate off the loss curve.

The experiment is built exactly as a run builds it (:func:`dltrain.build.build_experiment`,
seeded with ``cfg.seed``) and stepped through the run's own :class:`OptimizerStep`, so
clipping, the weight penalty, augmentation and mixed precision act as they would in
training. Nothing is restored into any run: the finder trains its own copy and leaves the
global random generators as it found them, so a run started afterwards in the same process
is the run it would have been.

``from dltrain.training.lr_find import lr_find; finding = lr_find(cfg)``; the command line
is ``dltrain-lr-find`` (:mod:`dltrain.cli.lr_find`).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from dltrain.build import Experiment, build_experiment, step_options
from dltrain.config.suggest import override_key
from dltrain.config.validation import validate_once
from dltrain.errors import ConfigError
from dltrain.optim import OPTIMIZERS
from dltrain.report.rerun import rerun_command
from dltrain.schedulers import SCHEDULERS
from dltrain.training.device import resolve_device
from dltrain.training.distributed import environment
from dltrain.training.rng import rng_state, seed_everything, set_rng_state
from dltrain.training.step import OptimizerStep

log = logging.getLogger("dltrain")

#: The smoothed loss above this many times its best so far ends the test: the LR is too high.
DIVERGENCE_FACTOR = 4.0
#: The default smoothing: an average over about the last 5 steps (of medians of 5). On the digits
#: MLP with SGD the loss falls in some 15 steps (lr 0.3 to 0.9); 0.98 (about 50 steps) lags it
#: and suggests 0.9, where the raw loss is already at its minimum and erratic; 0.8 suggests 0.68,
#: in the steep part of the raw descent, for seeds 0, 1 and 2 alike. The running median keeps
#: early spikes out of it (tests/test_lr_find.py).
BETA = 0.8
#: Share of the recorded steps at the start that the suggestion ignores: the first batches'
#: losses are noisy and a spike there would look like a steep descent afterwards.
SKIP_START = 0.1
#: Share of the recorded steps at the end (just before divergence) that it ignores.
SKIP_END = 0.05
#: A descent counts only when the smoothed loss falls by this share of its value at the start
#: of the search to its minimum: less is noise (a ramp too short to train the model moves a
#: 2.3 loss by 0.01), and its "steepest descent" a random step.
MIN_DROP = 0.05


@dataclass
class LRFinding:
    """The range test's curve and the learning rate it suggests.

    Attributes:
        lrs: the learning rate of param group 0 at each step (the others keep their ratio to it).
        losses: the training loss (the data loss, without the weight penalty) of each step.
        smoothed: the bias-corrected exponential moving average of ``losses``.
        suggestion: the suggested learning rate, rounded to two significant digits.
        rule: ``steepest descent`` or ``minimum / 10``: which rule gave it.
        reason: the numbers behind it, in words.
        key: the override that sets it (``optim.lr``, or ``scheduler.max_lr`` for onecycle).
        steepest_step, minimum_step: the steps (0-based) of the steepest descent of the
            smoothed loss (None when it does not descend) and of its minimum.
        num_steps: the steps the ramp was planned for (fewer were run when it diverged).
        stopped: why the test ended before its last step (None: it ran them all).
        settings: the ramp's settings and the seed, for ``lr_find.json``.
        warnings: why the suggestion may mislead (the loss never fell, or was lowest at the
            last step), one line each, for the console and ``lr_find.json``.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    rule: str
    reason: str
    key: str
    steepest_step: int | None
    minimum_step: int
    num_steps: int
    stopped: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def minimum_lr(self) -> float:
        """The learning rate where the smoothed loss was lowest."""
        return self.lrs[self.minimum_step]

    def command(self, overrides: Sequence[str], config_dir: str | None = None, config_name: str | None = None) -> str:
        """The ``dltrain`` command that trains with the suggestion: the finder's ``--config-dir`` and
        ``--config-name`` (when given), its ``overrides`` (e.g. ``optim=sgd``) without any earlier
        value of the suggested key, then the key."""
        kept = [o for o in overrides if override_key(o) != self.key]
        return rerun_command([*kept, f"{self.key}={format_lr(self.suggestion)}"], config_dir, config_name)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``lr_find.json``."""
        return {**asdict(self), "minimum_lr": self.minimum_lr}


def format_lr(lr: float) -> str:
    """A learning rate with two significant digits, as the command line takes it (``3.2e-02``)."""
    return f"{lr:.1e}"


def lr_find(cfg: DictConfig, *, start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int = 200,
            beta: float = BETA) -> LRFinding:
    """Run the range test on the experiment ``cfg`` builds, and suggest a learning rate.

    Args:
        cfg: a config composed from ``conf/train.yaml`` (``dltrain.compose``).
        start_lr, end_lr: the learning rate of the first and the last step.
        num_steps: training steps from ``start_lr`` to ``end_lr`` (the training batches are
            cycled when the split has fewer); the test stops earlier when the loss diverges.
        beta: the smoothing of the loss (an exponential moving average, bias-corrected).

    Returns:
        The curve and the suggestion; no file is written.

    Raises:
        ConfigError: an optimizer that takes a closure (LBFGS), or several processes (torchrun).
    """
    validate_once(cfg)
    check_settings(cfg, start_lr=start_lr, end_lr=end_lr, num_steps=num_steps, beta=beta)
    with _own_generators():
        lrs, losses, smoothed, stopped = _ramp(cfg, start_lr, end_lr, num_steps, beta)
    peak = SCHEDULERS.facts(cfg.scheduler.name).peak_lr_key
    key = f"scheduler.{peak}" if peak else "optim.lr"
    return LRFinding(lrs, losses, smoothed, key=key, num_steps=num_steps, stopped=stopped,
                     settings={"start_lr": start_lr, "end_lr": end_lr, "num_steps": num_steps, "beta": beta,
                               "seed": int(cfg.seed)},
                     **suggest(lrs, smoothed))


def check_settings(cfg: DictConfig, *, start_lr: float, end_lr: float, num_steps: int, beta: float) -> None:
    """Refuse a range test that cannot run, before anything is built.

    Raises:
        ConfigError: an optimizer that takes a closure (LBFGS), several processes (torchrun),
            or settings out of range.
    """
    if OPTIMIZERS.facts(cfg.optim.name).closure:
        raise ConfigError(f"optim={cfg.optim.name} searches its own step sizes with a line search in every step, "
                          "so a learning-rate range test has no meaning for it: choose another optimizer "
                          "(e.g. optim=sgd or optim=adam) to find a learning rate.")
    if environment().world_size > 1:
        raise ConfigError("dltrain-lr-find runs in one process: start it without torchrun "
                          "(the learning rate it suggests holds for the same global batch size).")
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"lr_find.start_lr={start_lr} and lr_find.end_lr={end_lr}: the ramp needs "
                          "0 < start_lr < end_lr.")
    if num_steps < 10:
        raise ConfigError(f"lr_find.num_steps={num_steps} is too few to read a curve from: give 10 or more.")
    if not 0 <= beta < 1:
        raise ConfigError(f"lr_find.beta={beta} is out of range: it must be >= 0 and < 1.")


@contextmanager
def _own_generators() -> Iterator[None]:
    """Python's, NumPy's and torch's (CPU and CUDA) generators as they were before, whatever
    the test draws: a run started afterwards draws what it would have drawn without it."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


def _ramp(cfg: DictConfig, start_lr: float, end_lr: float, num_steps: int,
          beta: float) -> tuple[list[float], list[float], list[float], str | None]:
    """Build the experiment and step it along the exponential ramp; returns the learning
    rates, the losses, the smoothed losses, and why it stopped early (None: it did not)."""
    seed_everything(cfg.seed)  # as a run seeds itself before it builds
    exp = build_experiment(cfg, resolve_device(cfg.device))
    try:
        step = exp.task.make_step(exp.model, exp.optimizer, exp.loss_fn, step_options(cfg, exp))  # task='s step
        return _steps(exp, step, start_lr, end_lr, num_steps, beta)
    finally:
        for batches in exp.batches:  # a DataLoader's worker processes (data read from disk) end here
            if hasattr(batches, "close"):
                batches.close()


def _steps(exp: Experiment, step: OptimizerStep, start_lr: float, end_lr: float, num_steps: int,
           beta: float) -> tuple[list[float], list[float], list[float], str | None]:
    """The ramp's steps on ``exp``'s training batches: see :func:`_ramp`."""
    groups = exp.optimizer.param_groups
    head = float(groups[0]["lr"])
    # backbone_lr groups keep their ratio to the head's rate (the schedulers keep it too).
    ratios = [float(g["lr"]) / head if head else 1.0 for g in groups]
    lrs, losses, smoothed = [], [], []
    smoother = SmoothedLoss(beta)
    exp.model.train()
    for i, (x, y) in zip(range(num_steps), _cycle(exp.batches[0]), strict=False):
        lr = start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))
        for group, ratio in zip(groups, ratios, strict=True):
            group["lr"] = lr * ratio
        _, loss = step(x, y)
        value = float(loss.detach())  # one host sync a step: the range test reads every loss
        if not math.isfinite(value):
            return lrs, losses, smoothed, f"the loss was {value} at step {i + 1} (lr {format_lr(lr)})"
        current = smoother.update(value)
        lrs.append(lr)
        losses.append(value)
        smoothed.append(current)
        if smoother.diverged:
            return lrs, losses, smoothed, (f"the smoothed loss {current:.3g} passed {DIVERGENCE_FACTOR:g}x its best "
                                           f"({smoother.best:.3g}) at step {i + 1} (lr {format_lr(lr)})")
    return lrs, losses, smoothed, None


class SmoothedLoss:
    """The exponential moving average of the losses so far, bias-corrected (the first steps
    are not pulled towards 0), and its best value.

    Each loss enters the average as the median of the last ``window`` losses (the lower one
    of an even count): a spike of one or two batches never enters it, where a plain average
    would carry it for about ``1 / (1 - beta)`` steps and its decay would look like the
    steepest descent of the curve.

    Args:
        beta: the weight of the past: 0.98 averages over about the last 50 steps.
        window: the number of losses of the running median (1: none).
    """

    def __init__(self, beta: float, window: int = 5) -> None:
        self.beta, self.average, self.count, self.best, self.value = beta, 0.0, 0, math.inf, math.nan
        self.recent: deque[float] = deque(maxlen=window)

    def update(self, loss: float) -> float:
        """Add a step's loss; returns the smoothed loss."""
        self.count += 1
        self.recent.append(loss)
        median = sorted(self.recent)[(len(self.recent) - 1) // 2]
        self.average = self.beta * self.average + (1 - self.beta) * median
        self.value = self.average / (1 - self.beta ** self.count)
        self.best = min(self.best, self.value)
        return self.value

    @property
    def diverged(self) -> bool:
        """The smoothed loss is above ``DIVERGENCE_FACTOR`` times its best (a loss that can be
        negative, as a likelihood's, is never called diverged this way: only when not finite)."""
        return self.best > 0 and self.value > DIVERGENCE_FACTOR * self.best


def _cycle(batches: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches, epoch after epoch (a new order each epoch)."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            return


def suggest(lrs: Sequence[float], smoothed: Sequence[float]) -> dict[str, Any]:
    """The learning rate at the steepest descent of the smoothed loss against log10(lr),
    searched between the first ``SKIP_START`` of the steps and the minimum; the minimum's
    learning rate / 10 when the curve does not descend there, or falls by less than
    ``MIN_DROP`` of its start value (then a warning says the ramp did not train the model).
    A minimum at the last step warns that the curve never turned up.

    Returns:
        ``suggestion``, ``rule``, ``reason``, ``steepest_step``, ``minimum_step`` and ``warnings``.

    Raises:
        ConfigError: fewer than 5 steps were recorded (the loss diverged at once).
    """
    n = len(smoothed)
    if n < 5:
        raise ConfigError(f"the loss diverged after {n} steps of the range test, too few to read a curve from: "
                          "lower lr_find.start_lr.")
    values, log_lrs = np.asarray(smoothed, dtype=float), np.log10(np.asarray(lrs, dtype=float))
    first, last = max(1, int(n * SKIP_START)), n - max(1, int(n * SKIP_END))  # the window [first, last)
    minimum = first + int(np.argmin(values[first:]))
    tenth = lrs[minimum] / 10
    at_min = f"the minimum was at {format_lr(lrs[minimum])} (step {minimum + 1} of {n}), /10 = {format_lr(tenth)}"
    end = min(minimum + 1, last)
    start, lowest = float(values[first]), float(values[minimum])
    fell = start - lowest >= MIN_DROP * abs(start)
    warnings = _warnings(lrs, minimum, fell, start, lowest)
    steepest = None
    if fell and end - first >= 3:
        slopes = np.gradient(values[first:end], log_lrs[first:end])
        if slopes.min() < 0:
            steepest = first + int(np.argmin(slopes))
    if steepest is None:
        why = "" if fell else f" by {MIN_DROP:.0%} of its start value ({start:.3g} to {lowest:.3g})"
        return {"suggestion": _round(tenth), "rule": "minimum / 10", "steepest_step": None, "minimum_step": minimum,
                "reason": f"the smoothed loss does not descend{why} before its minimum; {at_min}",
                "warnings": warnings}
    slope = float(np.gradient(values[first:end], log_lrs[first:end])[steepest - first])
    return {"suggestion": _round(lrs[steepest]), "rule": "steepest descent", "steepest_step": steepest,
            "minimum_step": minimum, "warnings": warnings,
            "reason": f"steepest descent of the smoothed loss ({slope:.3g} per decade), at step {steepest + 1} of {n}; "
                      f"{at_min}"}


def _warnings(lrs: Sequence[float], minimum: int, fell: bool, start: float, lowest: float) -> list[str]:
    """The lines that say why a suggestion may mislead: see :func:`suggest`."""
    warnings = []
    if not fell:
        warnings.append(f"the smoothed loss never fell by {MIN_DROP:.0%} ({start:.3g} at the start, {lowest:.3g} at "
                        "best): the ramp did not train the model and the suggestion means little; give more steps "
                        "(lr_find.num_steps) or a wider range (lr_find.start_lr, lr_find.end_lr)")
    if minimum == len(lrs) - 1:
        warnings.append(f"the smoothed loss was lowest at the last step (lr {format_lr(lrs[minimum])}): it never "
                        "turned up, so a better learning rate may lie beyond the ramp; raise lr_find.end_lr or "
                        "lr_find.num_steps")
    return warnings


def _round(lr: float) -> float:
    """``lr`` as :func:`format_lr` prints it, so the printed command trains with the value reported."""
    return float(format_lr(lr))

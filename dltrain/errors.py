"""Errors a user can act on.

Anything raised as a :class:`UserError` reaches the command line as one line naming the
key or file at fault and what to do, with a non-zero exit and no traceback (a full one
only with ``HYDRA_FULL_ERROR=1``). Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import math
from typing import Any


class UserError(Exception):
    """A problem with the user's input, config or environment, not with dltrain."""

    exit_code = 2


class ConfigError(UserError):
    """A config value is missing, out of range or inconsistent with the data."""


class TrainingDiverged(UserError):
    """Training produced NaN or infinite numbers; the fields say what and where.

    Its message states the facts; what to change is said where the error reaches the user
    (:func:`dltrain.messages.describe_divergence`), so the trainer knows no config key.

    Attributes:
        what: :attr:`LOSS` (the training loss), :attr:`WEIGHTS`, :attr:`METRIC` (the
            monitored metric, named by ``metric``) or :attr:`PEER` (another rank's loss).
        epoch: the 1-based epoch it happened in.
        step: the step of the epoch where it was found (None for the monitored metric).
        steps: the number of steps in the epoch.
        global_step: ``step`` counted over the whole run (for the training loss).
        value: the value that was not finite, where one was read (else NaN).
        lr: the first parameter group's learning rate when it was found.
        metric: the monitored metric's name, for :attr:`METRIC`.
        exact: it happened at ``step`` (or, for the weights, at the epoch's last step);
            False when it happened at or before ``step``, where it was checked.
    """

    exit_code = 3
    LOSS, WEIGHTS, METRIC, PEER = "training loss", "weights", "monitored metric", "another rank"

    def __init__(self, what: str, epoch: int, *, lr: float, step: int | None = None, steps: int | None = None,
                 global_step: int | None = None, value: float = math.nan, metric: str | None = None,
                 exact: bool = True) -> None:
        self.what, self.epoch, self.lr, self.step, self.steps = what, epoch, lr, step, steps
        self.global_step, self.value, self.metric, self.exact = global_step, value, metric, exact
        super().__init__(self._facts())

    def _facts(self) -> str:
        if self.what == self.LOSS:
            return (f"the training loss became {self.value} in epoch {self.epoch} at step {self.step} of {self.steps} "
                    f"(global step {self.global_step})")
        if self.what == self.PEER:
            return (f"the training loss of another rank became NaN or infinite in epoch {self.epoch} by step "
                    f"{self.step} of {self.steps}")
        if self.what == self.METRIC:
            return f"{self.metric} became {self.value} at epoch {self.epoch}"
        where = "at its last step" if self.exact else f"by step {self.step}"
        return f"the weights became NaN or infinite in epoch {self.epoch} {where}"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with its fields, e.g. from a sweep's worker process
        fields = {k: getattr(self, k) for k in ("lr", "step", "steps", "global_step", "value", "metric", "exact")}
        return functools.partial(type(self), self.what, self.epoch, **fields), ()


def first_line(err: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

"""How long a run trains: ``trainer.max_steps``, ``trainer.max_time`` and
``trainer.val_every_n_epochs``.

``max_steps`` ends the epoch it is reached in (that epoch validates and is checkpointed as
any other); ``max_time`` stops after the step it runs out at, as a signal stops a run (the
partial epoch saved in ``last.pt``), and the run still tests its best weights and writes its
results. The clock is the trainer's ``train_seconds`` (every segment of a resumed run), read
with ``time.perf_counter()``: no device work per step.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from dltrain.errors import ConfigError

#: The two forms ``trainer.max_time`` takes (the schema's pattern checks them first).
MAX_TIME_FORMS = "a number of seconds (90, 0.5) or DD:HH:MM:SS (00:01:30:00)"
_CLOCK = re.compile(r"(\d+):(\d\d):(\d\d):(\d\d)")


class TimeLimitReached(BaseException):  # noqa: N818 - a stop, as Interrupted is, not an error
    """``trainer.max_time`` ran out; raised after a step, with the weights after that step.

    A ``BaseException``, as :class:`~dltrain.training.signals.Interrupted` is: no
    ``except Exception`` on the way up mistakes it for a failure.
    """

    def __init__(self, epoch: int, step: int, steps: int) -> None:
        self.epoch, self.step, self.steps = epoch, step, steps
        super().__init__(f"in epoch {epoch} after batch {step} of {steps}")  # batches: optimizer steps count k of them


def parse_max_time(value: Any) -> float | None:
    """``trainer.max_time`` in seconds: a number (Hydra reads ``90`` as an int), a string of
    one, or ``DD:HH:MM:SS``; None for no limit.

    Raises:
        ConfigError: any other value, naming the key and the two forms.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        clock = _CLOCK.fullmatch(text)
        try:
            seconds = (float(text) if clock is None else
                       ((int(clock[1]) * 24 + int(clock[2])) * 60 + int(clock[3])) * 60 + float(clock[4]))
        except ValueError:
            seconds = math.nan
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"trainer.max_time={value} is not valid: write {MAX_TIME_FORMS}, or null for no limit.")
    return seconds


def schedule_length(max_epochs: int, steps_per_epoch: int, max_steps: int | None) -> tuple[int, float]:
    """The epochs and optimizer steps per epoch a schedule is sized on: the run's length, or
    ``max_steps`` when that comes first (as Lightning sizes OneCycleLR on the smaller).

    An epoch-based schedule (cosine's T_max) sees the epochs the run starts; a per-step one
    (onecycle) sees ``epochs * steps_per_epoch == max_steps`` steps, so its steps per
    epoch may be a fraction.
    """
    if max_steps is None or steps_per_epoch < 1 or max_steps >= max_epochs * steps_per_epoch:
        return max_epochs, steps_per_epoch
    epochs = -(-max_steps // steps_per_epoch)
    return epochs, steps_per_epoch if max_steps % steps_per_epoch == 0 else max_steps / epochs


@dataclass(frozen=True)
class Budget:
    """When the trainer stops and which epochs validate.

    Attributes:
        max_steps: stop once ``global_step`` (optimizer steps) reaches it; None: no limit.
        max_seconds: stop after the step at which the run's training seconds reach it.
        val_every_n_epochs: validate epochs N, 2N, ... and the last one.
    """

    max_steps: int | None = None
    max_seconds: float | None = None
    val_every_n_epochs: int = 1

    def steps_done(self, global_step: int) -> bool:
        """Whether ``max_steps`` optimizer steps have been taken."""
        return self.max_steps is not None and global_step >= self.max_steps

    def validates(self, epoch: int, last: bool) -> bool:
        """Whether epoch ``epoch`` validates: every ``val_every_n_epochs``-th, and the ``last``
        one (max_epochs or max_steps reached)."""
        return last or epoch % self.val_every_n_epochs == 0

    def stop_reason(self, global_step: int, max_epochs: int) -> str:
        """Why training that ran to its end stopped: max_steps, or else max_epochs."""
        if self.steps_done(global_step):
            return f"reached trainer.max_steps={self.max_steps}"
        return f"reached trainer.max_epochs={max_epochs}"


def make_budget(max_steps: int | None, max_time: Any, val_every_n_epochs: int, *, fast_dev_run: bool) -> Budget:
    """The budget of ``trainer.max_steps``, ``max_time`` and ``val_every_n_epochs`` (a
    fast_dev_run has none)."""
    if fast_dev_run:
        return Budget()
    return Budget(max_steps, parse_max_time(max_time), val_every_n_epochs)


def time_limit_reason(max_time: Any, seconds: float, stop: TimeLimitReached, path: Any) -> str:
    """The ``stop_reason`` of a run ``trainer.max_time`` ended, saved to ``path``."""
    return (f"reached trainer.max_time={max_time} after {seconds:.1f} s of training, {stop}: saved {path}; "
            f"continue with resume={path} and a larger trainer.max_time")

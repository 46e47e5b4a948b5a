"""One optimizer step on a batch, and the forward pass evaluation shares with it.

[augment the batch] -> forward (under autocast for bf16/fp16) -> loss (+ weight penalty) ->
backward (of the loss scaled for fp16) -> [clip] -> optimizer step. An optimizer that needs
a closure (LBFGS) takes the same path inside the closure it re-evaluates.

The grad scaler is always there, enabled for float16 only: disabled, each of its calls passes
through (under a microsecond per step in all). Autocast is not: a forward pass inside
``torch.autocast(enabled=False)`` made a small MLP's CPU step about 5% slower (one thread,
64 examples a batch: 0.56 ms instead of 0.54), so without an autocast dtype the forward pass
runs in a context that does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from inspect import Parameter, signature
from typing import Any

import torch
from torch import nn

from dltrain.training.profiler import Profiler

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class StepOptions:
    """How each step runs, besides the model, optimizer and loss; everything off by default.

    Attributes:
        penalty: returns the weight penalty added to the training loss (L1, or L2 for LBFGS).
        augment: transforms each training batch of inputs (never validation or test).
        mix: mixes each training batch, after ``augment``, into inputs and soft targets
            (MixUp, CutMix); the loss trains on those, the caller's metrics on the labels.
        grad_clip: clip the gradients' total norm to this value.
        grad_clip_value: clip every gradient element to ``[-value, value]``.
        autocast_dtype: run forward passes under autocast to this dtype (bf16, fp16); with
            float16 the loss is scaled too (``torch.amp.GradScaler``).
        memory_format: the layout of every batch the model sees (``torch.channels_last``
            for ``trainer.channels_last``); a batch already in it is used as it is, others
            (the affine augmentations' output, DataLoader batches) are converted.
        closure: the optimizer re-evaluates the loss within its step (LBFGS's line search),
            through a closure that runs the forward and backward passes; None asks the
            optimizer (its ``step`` requires a ``closure`` argument).
        forward: what computes the outputs, e.g. ``torch.compile(model)``; defaults to the
            model, which keeps the weights, modes and state dict either way.
        train_forward: what computes the outputs of training steps, when not ``forward``:
            the DistributedDataParallel wrapper, whose backward averages the gradients over
            the ranks (evaluation runs without it: no rank waits for another's batches).
        accumulate_grad_batches: this many batches make one optimizer step
            (:class:`~dltrain.training.accumulate.Accumulation` drives :meth:`OptimizerStep.micro_step`).
    """

    penalty: Callable[[], torch.Tensor] | None = None
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None
    mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    grad_clip: float | None = None
    grad_clip_value: float | None = None
    autocast_dtype: torch.dtype | None = None
    memory_format: torch.memory_format | None = None
    closure: bool | None = None
    forward: Forward | None = None
    train_forward: Forward | None = None
    accumulate_grad_batches: int = 1


def needs_closure(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step`` requires a ``closure`` argument (LBFGS's does)."""
    try:
        closure = signature(optimizer.step).parameters.get("closure")
    except (TypeError, ValueError):  # a step without a signature Python can read
        return False
    return closure is not None and closure.default is Parameter.empty


class OptimizerStep:
    """Takes optimizer steps on batches: ``step(x, y)`` returns the outputs and the data loss.

    Args:
        model, optimizer, loss_fn: what to train, how, and against what.
        options: how each step runs.
        profiler: times the augmentation, forward, backward and optimizer phases
            (``trainer.profiler``); by default nothing is timed.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                 options: StepOptions, profiler: Profiler | None = None) -> None:
        self.model, self.optimizer, self.loss_fn, self.options = model, optimizer, loss_fn, options
        self.phase = (profiler or Profiler()).phase  # off: one shared nullcontext() for every phase
        self.penalty = options.penalty or None  # a penalty with nothing to add costs nothing per step
        self.forward = options.forward if options.forward is not None else model  # a compiled module has no truth value
        self.train_forward = options.train_forward if options.train_forward is not None else self.forward
        device_type, dtype = next(model.parameters()).device.type, options.autocast_dtype
        self.autocast = partial(torch.autocast, device_type, dtype=dtype) if dtype is not None else nullcontext
        self.scaler = torch.amp.GradScaler(device_type, enabled=dtype == torch.float16)
        self.closure = options.closure if options.closure is not None else needs_closure(optimizer)

    def outputs_and_loss(self, x: torch.Tensor, y: torch.Tensor,
                         forward: Forward | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The outputs of ``forward`` (the evaluation forward by default) and their loss."""
        if forward is None:  # not `or`: a compiled module has no truth value
            forward = self.forward
        if self.options.memory_format is not None:
            x = x.contiguous(memory_format=self.options.memory_format)  # no copy when the batch is in it already
        with self.autocast():
            output = forward(x)  # (B, num_outputs)
            return output, self.loss_fn(output, y)

    def begin_evaluation(self) -> None:
        """Called before each evaluation of a split (a GAN's step restarts its evaluation latents)."""

    def eval_outputs_and_loss(self, x: torch.Tensor, y: torch.Tensor,
                              forward: Forward | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """What validation and the test compute per batch: the outputs and their loss against
        ``y``; a task's step compares them with another target (an autoencoder's: ``x``)."""
        return self.outputs_and_loss(x, y, forward)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on a batch; returns the outputs and the data loss (no penalty)."""
        x, y = self.augmented(x, y)
        if self.closure:
            return self._closure_step(x, y)
        output, loss, total = self._training_loss(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        with self.phase("backward"):
            self.scaler.scale(total).backward()
        self._update()
        return output, loss

    def micro_step(self, x: torch.Tensor, y: torch.Tensor, weight: float, *, first: bool, last: bool,
                   sync: AbstractContextManager[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """One micro-batch of a group that makes one optimizer step: its gradient, weighted by
        ``weight`` (its share of the group's examples), is added to the group's; the weight
        penalty is added once, with the ``last``, after which the optimizer steps. The forward
        and backward passes run inside ``sync`` (DDP's ``no_sync`` before the last)."""
        x, y = self.augmented(x, y)
        if first:
            self.optimizer.zero_grad(set_to_none=True)
        with sync:
            with self.phase("forward"):
                output, loss = self.outputs_and_loss(x, y, self.train_forward)
                total = loss * weight
                if last and self.penalty is not None:
                    total = total + self.penalty()
            with self.phase("backward"):
                self.scaler.scale(total).backward()
        if last:
            self._update()
        return output, loss

    def augmented(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch the loss sees: augmented inputs, then MixUp/CutMix's mixed inputs and targets."""
        with self.phase("augment"):
            if self.options.augment is not None:
                x = self.options.augment(x)
            if self.options.mix is not None:
                x, y = self.options.mix(x, y)
            return x, y

    def _update(self) -> None:
        """Clip the gradients and step the optimizer (through the grad scaler)."""
        with self.phase("optimizer"):
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            self._clip()
            self.scaler.step(self.optimizer)
            self.scaler.update()

    def _training_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The outputs, the data loss, and the loss to minimise (with the weight penalty)."""
        with self.phase("forward"):
            output, loss = self.outputs_and_loss(x, y, self.train_forward)
            return output, loss, loss + self.penalty() if self.penalty is not None else loss

    def _clip(self) -> None:
        if self.options.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.options.grad_clip)
        if self.options.grad_clip_value is not None:
            nn.utils.clip_grad_value_(self.model.parameters(), self.options.grad_clip_value)

    def _closure_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first: list[tuple[torch.Tensor, torch.Tensor]] = []

        def closure() -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            output, loss, total = self._training_loss(x, y)
            with self.phase("backward"):
                total.backward()
            self._clip()
            if not first:  # the metrics report the loss before the step, as for other optimizers
                first.append((output.detach(), loss.detach()))
            return total

        with self.phase("optimizer"):  # less the closure's forward and backward passes, timed as theirs
            self.optimizer.step(closure)
        return first[0]

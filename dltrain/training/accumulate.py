"""Gradient accumulation (``trainer.accumulate_grad_batches=k``): k micro-batches make one
optimizer step whose gradient is that of all their examples in one batch.

Each micro-batch's mean loss is weighted by its share of the group's examples, not by 1/k,
so a group of unequal batches (the epoch's smaller last batch, or its last group of fewer
than k) still has the gradient of one batch of its examples. That share is known before the
group's first backward pass because the group's batches are read from the iterator first:
they are tensors already, and their sizes are Python ints (no read from the device). Under
a class-weighted cross-entropy (``loss.class_weights``), which divides by the sum of the
targets' weights, a micro-batch's share is its targets' weights over the group's (device
tensors, still no read).

Groups start at every k-th batch of an epoch. Under DistributedDataParallel every micro-step
but the group's last runs under ``no_sync``: the summed gradients are all-reduced once. An
interrupt may come inside a group; the checkpoint then holds the gradients summed so far and
the examples they came from (:meth:`Accumulation.state_dict`), so a resume takes the same step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from itertools import islice
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from dltrain.errors import ConfigError
from dltrain.losses import CrossEntropy
from dltrain.training.distributed import Ranks
from dltrain.training.step import OptimizerStep

Batch = tuple[torch.Tensor, torch.Tensor]


def check_accumulation(k: int, optim: str, closure: bool) -> None:
    """Refuse accumulation with an optimizer that re-evaluates its batch's loss in its step.

    Raises:
        ConfigError: naming both keys and what to do.
    """
    if k > 1 and closure:
        raise ConfigError(f"trainer.accumulate_grad_batches={k} cannot be used with optim={optim}, which "
                          "re-evaluates the loss of one batch within its step: set trainer.accumulate_grad_batches=1 "
                          "(and a larger trainer.batch_size), or choose another optimizer.")


def optimizer_steps(batches: int, k: int) -> int:
    """Optimizer steps in an epoch of ``batches`` batches, ``k`` to a step (the last group may be short)."""
    return -(-batches // k)


def group_end(done: int, k: int, batches: int) -> int:
    """The batch (counted from 1) that ends the group of batch ``done + 1`` in an epoch of ``batches``."""
    return min((done // k + 1) * k, batches)


def _no_sync(forward: Any) -> Callable[[], AbstractContextManager[Any]] | None:
    """DDP's ``no_sync`` of the training forward (through ``torch.compile``'s wrapper); None without DDP."""
    module = getattr(forward, "_orig_mod", forward)
    return module.no_sync if isinstance(module, DistributedDataParallel) else None


def _class_weight(step: OptimizerStep) -> torch.Tensor | None:
    """The class weights of a cross-entropy on class indices (MixUp's soft targets are
    averaged over the examples); None for any other loss."""
    loss = step.loss_fn
    weight = getattr(loss, "weight", None)
    return weight if isinstance(loss, CrossEntropy) and weight is not None and step.options.mix is None else None


class Accumulation:
    """Takes the micro-steps of groups of ``k`` batches: called once per batch, as
    :class:`OptimizerStep` is, it steps the optimizer after each group's last batch.

    Args:
        step: what runs the forward and backward passes and the optimizer step.
        k: batches to an optimizer step.
        ranks: the processes training together; a checkpoint holds their mean gradients.
    """

    def __init__(self, step: OptimizerStep, k: int, ranks: Ranks) -> None:
        self.step, self.k, self.ranks = step, k, ranks
        self.params = list(step.model.parameters())
        self.no_sync = _no_sync(step.train_forward)
        self.done = 0  # examples of the group under way trained on so far
        self.total = 0  # examples of the group under way
        self.last = False  # the next micro-step ends its group
        self.stepped = False  # the last micro-step ended its group: the optimizer stepped
        # Cross-entropy with class weights divides by the sum of the targets' weights, not by the
        # examples: then a micro-batch counts as that sum (a device tensor, never read here).
        self.class_weight = _class_weight(step)
        self.weighed: torch.Tensor | float = 0.0  # the targets' weights of the group so far (class weights)
        self.part: torch.Tensor | int = 0  # what the next micro-batch counts as

    def batches(self, batches: Iterable[Batch], count: int, done: int) -> Iterator[Batch]:
        """The batches of an epoch of ``count`` after the ``done`` trained already, read a group
        at a time so each group's number of examples is known before its first micro-step."""
        source = iter(batches)
        while True:
            size = group_end(done, self.k, count) - done if done < count else self.k
            group = list(islice(source, size))
            if not group:
                return
            w = self.class_weight
            parts = [int(x.shape[0]) if w is None else w[y].sum() for x, y in group]
            self.total = (self.done if w is None else self.weighed) + sum(parts)  # before a resume, too
            for i, batch in enumerate(group):
                self.last, self.part = i == len(group) - 1, parts[i]
                yield batch
            done += len(group)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One micro-step on a batch of :meth:`batches`; returns the outputs and the data loss."""
        n, last = int(x.shape[0]), self.last
        sync = self.no_sync() if self.no_sync is not None and not last else nullcontext()
        output, loss = self.step.micro_step(x, y, self.part / self.total, first=self.done == 0, last=last, sync=sync)
        self.done, self.stepped = 0 if last else self.done + n, last
        if self.class_weight is not None:
            self.weighed = 0.0 if last else self.weighed + self.part
        return output, loss

    def state_dict(self) -> dict[str, Any] | None:
        """Inside a group, its examples so far on all ranks together and the gradients they summed
        (the mean of every rank's: the one all-reduce skipped so far, which any number of ranks
        can continue);
        None between groups."""
        if self.done == 0:
            return None
        grads = [p.grad.detach().cpu().clone() if p.grad is not None else None for p in self.params]
        examples, weighed = self.done, float(self.weighed)  # a checkpoint's one read of the targets' weights
        if self.ranks.distributed:
            every = self.ranks.all_gather((self.done, weighed, grads))
            examples = sum(done for done, _, _ in every)  # the group's examples on all ranks, like its gradient
            weighed = sum(w for _, w, _ in every)
            grads = [None if g is None else torch.stack([rank[i] for _, _, rank in every]).mean(0)
                     for i, g in enumerate(grads)]
        return {"examples": examples, "grads": grads, "weighed": weighed}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue the group :meth:`state_dict` saved (None: none was under way)."""
        if state is None:
            return
        if len(state["grads"]) != len(self.params):  # a resume turns a RuntimeError into its one line
            raise RuntimeError(f"the checkpoint holds {len(state['grads'])} accumulated gradients for a model of "
                               f"{len(self.params)} trained parameters")
        for p, grad in zip(self.params, state["grads"], strict=True):
            p.grad = None if grad is None else grad.to(device=p.device, dtype=p.dtype)
        # The examples of all ranks: each of this run's ranks trains its share of the group.
        self.done = int(state["examples"]) // self.ranks.world_size
        if self.class_weight is not None:  # written before it was kept: as many examples of the mean weight
            weighed = state.get("weighed", self.done * self.ranks.world_size * float(self.class_weight.mean()))
            self.weighed = torch.tensor(weighed / self.ranks.world_size, device=self.class_weight.device)

"""What a checkpoint holds of a :class:`~dltrain.training.trainer.Trainer`, and how it is restored.

The trainer's ``state_dict``/``load_state_dict`` delegate here, so the loop and the
assembly of its saved state are read apart.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from dltrain.optim import match_state_layouts
from dltrain.training.averaging import STATE_KEY as AVERAGED_KEY
from dltrain.training.checkpoint import seconds_so_far, to_cpu
from dltrain.training.metrics import MetricAccumulator
from dltrain.training.optimizer_state import check_loaded_optimizer, load_checked_optimizer_state
from dltrain.training.rng import restore_rank_rng, rng_state

# The trainer imports this module, so it is typed ``Any`` here: a Trainer, its state read and set.
Trainer = Any


def trainer_state(trainer: Trainer) -> dict[str, Any]:
    """The whole training state, as tensors and plain data (``weights_only=True`` loads it):
    weights, optimizer, schedule, grad scaler, counters, early stopping, the best weights
    (when they are not the current ones), the metrics history, the training seconds so far,
    every RNG, the data order, and inside an epoch (after an interrupt) the steps done, the
    metric sums so far and, inside a group of accumulated batches, its gradients so far."""
    inside = trainer.step_in_epoch > 0
    best = trainer.best_state
    if best is not None and trainer.stopper.best_epoch == trainer.epoch and not inside:
        best = None  # the current weights are the best ones: no second copy
    batches = trainer.train_batches
    order = batches.order.state_dict(trainer.step_in_epoch) if hasattr(batches, "order") else None
    rng = rng_state()
    ranks = _ranks_state(trainer, rng)  # every rank gathers in the same order
    unfinished = _partial_epoch(trainer) if inside else None
    return {
        "model": trainer.model.state_dict(),
        # The averaged weights (EMA, SWA) and the averager's counters; None without averaging.
        AVERAGED_KEY: trainer.averaging.state_dict() if trainer.averaging is not None else None,
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
        "grad_scaler": trainer.step.scaler.state_dict() if trainer.step.scaler.is_enabled() else None,
        "epoch": trainer.epoch,
        "global_step": trainer.global_step,
        "early_stopping": trainer.stopper.state_dict(),
        # trainer.checkpoint.save_top_k: the kept files and their values; None without top-k.
        "top_k": trainer.top_k.state_dict() if trainer.top_k is not None else None,
        "best_value": trainer.stopper.best,
        "best_model": best,
        "history": [dict(row) for row in trainer.history],
        "train_seconds": trainer.train_seconds,
        "rng": rng,
        "data_order": order,
        "partial_epoch": unfinished,
        # task=: the task's own state (a GAN's second optimizer, ...); None for supervised training.
        "task": trainer.objective.state_dict(),
        **ranks,
    }


def _partial_epoch(trainer: Trainer) -> dict[str, Any]:
    """The epoch under way: steps done, the metric sums so far (every rank's, merged), its LR
    and seconds, and the group of accumulated batches under way (None: none)."""
    partial_train = trainer._epoch_acc.state_dict()
    if trainer.ranks.distributed:
        partial_train = MetricAccumulator.merged(
            trainer.task, trainer.ranks.all_gather(to_cpu(partial_train))).state_dict()
    return {
        "step": trainer.step_in_epoch, "train": partial_train, "lr": trainer._epoch_lr,
        "seconds": time.perf_counter() - trainer._epoch_started,
        "accumulated": trainer.accumulation.state_dict() if trainer.accumulation is not None else None,
    }


def _ranks_state(trainer: Trainer, rng: dict[str, Any]) -> dict[str, Any]:
    """One file for all ranks: the world size and every rank's random state (nothing alone)."""
    if not trainer.ranks.distributed:
        return {}
    return {"world_size": trainer.ranks.world_size, "rng_ranks": trainer.ranks.all_gather(to_cpu(rng))}


def load_trainer_state(trainer: Trainer, state: dict[str, Any]) -> None:
    """Continue from :func:`trainer_state`. Weights, optimizer and counters are restored now;
    the data order and the RNGs when ``fit`` starts, after everything that draws random
    numbers while a run is set up."""
    trainer.model.load_state_dict(state["model"])
    if trainer.averaging is not None:  # an older checkpoint (no averaged_model) starts it again
        trainer.averaging.load_state_dict(state.get(AVERAGED_KEY))
    load_checked_optimizer_state(trainer.optimizer, state["optimizer"], "optimizer state")
    match_state_layouts(trainer.optimizer)
    if trainer.scheduler is not None and state.get("scheduler") is not None:
        trainer.scheduler.load_state_dict(state["scheduler"])
        check_loaded_optimizer(trainer.optimizer, "scheduler state")  # its saved groups write into the optimizer's
    if trainer.step.scaler.is_enabled() and state.get("grad_scaler") is not None:
        trainer.step.scaler.load_state_dict(state["grad_scaler"])
    trainer.epoch, trainer.global_step = int(state["epoch"]), int(state["global_step"])
    trainer.stopper.load_state_dict(state["early_stopping"])
    if trainer.top_k is not None:  # a checkpoint written without top-k (or before it) has kept none
        trainer.top_k.load_state_dict(state.get("top_k"))
    trainer.history = [dict(row) for row in state["history"]]
    trainer.best_state = None
    if trainer.restore_best_weights and trainer.stopper.best_epoch is not None:
        saved = state.get("best_model")
        trainer.best_state = ({k: v.to(trainer.device) for k, v in saved.items()} if saved is not None else
                              {k: v.detach().clone() for k, v in trainer.evaluated_model.state_dict().items()})
    trainer._resume_partial = state.get("partial_epoch")
    if trainer.accumulation is not None and trainer._resume_partial:  # older checkpoints have no such key
        trainer.accumulation.load_state_dict(trainer._resume_partial.get("accumulated"))
    trainer._seconds_before = seconds_so_far(state)
    trainer.objective.load_state_dict(state.get("task"))  # None from a checkpoint written before tasks
    # The data order and the step count carry over to any world size: trainer.batch_size is
    # the global batch, so step k of an epoch is the same batch of examples on 1 rank or 8.
    ranks = trainer.ranks
    trainer._pending = (state.get("data_order"),
                        partial(restore_rank_rng, state["rng"], state.get("rng_ranks"), ranks.rank, ranks.world_size))


def restore_data_order(trainer: Trainer, train_batches: Any) -> None:
    """At the start of ``fit`` after a resume: the data order and the RNGs as they were saved."""
    if trainer._pending is None:
        return
    order, rng = trainer._pending
    trainer._pending = None
    if order is not None and hasattr(train_batches, "order"):
        train_batches.order.load_state_dict(order)
    rng()


def start_epoch(trainer: Trainer) -> None:
    """The counters of the epoch about to train: fresh, or those of the unfinished epoch a
    mid-epoch checkpoint saved."""
    unfinished, trainer._resume_partial = trainer._resume_partial, None
    trainer._epoch_acc = MetricAccumulator(trainer.task)
    if unfinished:
        if trainer.ranks.is_main:  # the sums of every rank's steps so far (merged when saved)
            trainer._epoch_acc.load_state_dict(unfinished["train"], trainer.device)
        trainer.step_in_epoch = int(unfinished["step"])
        trainer._epoch_lr = float(unfinished["lr"])
        trainer._epoch_started = time.perf_counter() - float(unfinished["seconds"])
    else:
        trainer.step_in_epoch = 0
        trainer._epoch_lr = trainer._lr()  # the LR this epoch trains with
        trainer._epoch_started = time.perf_counter()

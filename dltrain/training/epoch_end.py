"""The end of a training epoch: SWA's average, the validation the budget asks for, the
averaged weights' metrics beside the raw ones, and whether the monitored metric improved.

The trainer calls :func:`validate_epoch` then :func:`watch` after each epoch's training;
each feature's logic stays in its own module (averaging, budget), this only orders them.
"""

from __future__ import annotations

from typing import Any

from dltrain.training.averaging import averaged_beside

# The trainer imports this module, so they are typed ``Any`` here: a Trainer, and its Batches.
Trainer = Any
Batches = Any


def validate_epoch(trainer: Trainer, number: int, train: dict[str, float], train_batches: Batches,
                   val_batches: Batches | None) -> tuple[dict[str, Any], bool]:
    """SWA's end of epoch, the epoch's validation unless ``trainer.val_every_n_epochs`` skips
    it, and with ``evaluate_averaged=false`` the averaged weights' ``val_avg_*`` metrics.

    Returns:
        The epoch's row (rank 0's on every rank) and whether the epoch validated.
    """
    averaging, profiler = trainer.averaging, trainer.profiler
    if averaging is not None:  # SWA averages the epoch's last weights (and recomputes BN for them)
        with profiler.phase("averaging"):
            averaging.end_epoch(number, train_batches)
    last = number == trainer.max_epochs or trainer.budget.steps_done(trainer.global_step)
    validates = val_batches is not None and trainer.budget.validates(number, last)  # trainer.val_every_n_epochs
    val = None
    if validates:
        with profiler.phase("evaluation"):
            val = trainer.evaluate(val_batches, stoppable=True)
    # evaluate_averaged=false: the averaged weights' val_avg_* columns
    evaluate = (lambda module: trainer.evaluate(val_batches, model=module)) if validates else None
    beside = {}
    if trainer.validates and averaging is not None:
        with profiler.phase("evaluation"):
            beside = averaged_beside(averaging, evaluate, train)
    # Rank 0's row on every rank (the metrics are the same, the timings not): every
    # decision taken from it (early stopping, the schedule, checkpoints) is the same.
    return trainer.ranks.broadcast({**trainer.epoch_row(number, train, val), **beside}), validates


def watch(trainer: Trainer, number: int, row: dict[str, Any], validates: bool) -> bool:
    """Whether epoch ``number`` improved the monitored metric; if so, its evaluated weights
    are kept for ``restore_best`` (``restore_best_weights``)."""
    monitor = trainer.stopper.monitor  # None: a validation monitor in a run without validation
    # An epoch that did not validate is not seen: patience counts validations (of a metric that needs them).
    watched = monitor is not None and (validates or not trainer.objective.needs_validation(monitor))
    improved = watched and trainer.stopper.update(number, row[monitor])
    if improved and trainer.restore_best_weights:
        trainer.best_state = {k: v.detach().clone() for k, v in trainer.evaluated_model.state_dict().items()}
    return improved

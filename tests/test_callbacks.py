"""Early stopping over hand-written metric sequences."""

from __future__ import annotations

import math

import pytest

from dltrain.callbacks import EarlyStopping, infer_mode


def run(stopper: EarlyStopping, values: list[float]) -> int | None:
    """Feed ``values`` as epochs 1..n; the epoch after which it stops, or None."""
    for epoch, value in enumerate(values, start=1):
        stopper.update(epoch, value)
        if stopper.should_stop:
            return epoch
    return None


def test_plateau_stops_after_patience_epochs_without_improvement():
    # lr=0: the loss never moves. Epoch 1 sets the best, 2-4 do not improve -> stop after 4.
    stopper = EarlyStopping("val_loss", patience=3)
    assert run(stopper, [1.0] * 10) == 4
    assert stopper.best == 1.0 and stopper.best_epoch == 1


def test_improvements_reset_the_count():
    stopper = EarlyStopping("val_loss", patience=2)
    assert run(stopper, [5, 4, 4.5, 3, 3.5, 3.2, 3.1]) == 6
    assert stopper.best_epoch == 4 and stopper.best == 3


def test_min_delta():
    # Improvements of 0.05 do not count with min_delta 0.1.
    stopper = EarlyStopping("val_loss", min_delta=0.1, patience=2)
    assert run(stopper, [1.0, 0.95, 0.9, 0.85]) == 3
    assert stopper.best == 1.0
    stopper = EarlyStopping("val_loss", min_delta=0.1, patience=2)
    assert run(stopper, [1.0, 0.85, 0.7, 0.55]) is None and stopper.best == 0.55


def test_max_mode():
    stopper = EarlyStopping("val_accuracy", mode="max", patience=1)
    assert run(stopper, [0.5, 0.6, 0.7, 0.65]) == 4
    assert stopper.best == 0.7 and stopper.best_epoch == 3


def test_patience_zero_stops_at_first_non_improvement():
    stopper = EarlyStopping("val_loss", patience=0)
    assert run(stopper, [3, 2, 1, 1.5, 0.5]) == 4


def test_disabled_tracks_best_without_stopping():
    stopper = EarlyStopping("val_loss", patience=0, enabled=False)
    assert run(stopper, [3, 4, 5, 2, 6]) is None
    assert stopper.best == 2 and stopper.best_epoch == 4


def test_non_finite_is_never_an_improvement():
    stopper = EarlyStopping("val_loss", patience=2)
    assert run(stopper, [math.nan, 1.0, math.inf, math.inf]) == 4
    assert stopper.best == 1.0 and stopper.best_epoch == 2


def test_auto_mode_from_name():
    assert infer_mode("val_loss") == "min" and infer_mode("val_rmse") == "min"
    assert infer_mode("val_accuracy") == "max" and infer_mode("val_r2") == "max"
    assert EarlyStopping("train_accuracy").mode == "max"


def test_state_dict_round_trip():
    a = EarlyStopping("val_loss", patience=3)
    run(a, [3, 2, 2.5])
    b = EarlyStopping("val_loss", patience=3)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict() == {"best": 2, "best_epoch": 2, "wait": 1, "should_stop": False}
    assert run(a, [2.6, 2.7]) == 2 and [b.update(4, 2.6), b.update(5, 2.7)] == [False, False] and b.should_stop


@pytest.mark.parametrize("mode", ["min", "max"])
def test_first_finite_value_is_best(mode):
    stopper = EarlyStopping("m", mode=mode)
    assert stopper.update(1, 42.0) and stopper.best == 42.0

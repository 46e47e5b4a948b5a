"""Early stopping over hand-written metric sequences."""

from __future__ import annotations

import math

import pytest

from dltrain.training.callbacks import EarlyStopping, infer_mode


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


def test_non_finite_is_never_an_improvement_without_check_finite():
    # check_finite off: NaN/inf only count toward patience.
    stopper = EarlyStopping("val_loss", patience=2, check_finite=False)
    assert run(stopper, [math.nan, 1.0, math.inf, math.inf]) == 4
    assert stopper.best == 1.0 and stopper.best_epoch == 2
    assert not stopper.non_finite and stopper.stopped_epoch == 4
    assert stopper.stop_reason == "no improvement in val_loss for 2 epochs (patience 2)"


def test_auto_mode_from_name():
    assert infer_mode("val_loss") == "min" and infer_mode("val_rmse") == "min"
    assert infer_mode("val_accuracy") == "max" and infer_mode("val_r2") == "max"
    assert EarlyStopping("train_accuracy").mode == "max"


@pytest.mark.parametrize("mode", ["min", "max"])
def test_first_finite_value_is_best(mode):
    stopper = EarlyStopping("m", mode=mode)
    assert stopper.update(1, 42.0) and stopper.best == 42.0


def run_from(stopper: EarlyStopping, values: list[float], first_epoch: int) -> list[tuple[bool, bool]]:
    """Feed ``values`` as epochs ``first_epoch..``; (improved, should_stop) after each."""
    out = []
    for epoch, value in enumerate(values, start=first_epoch):
        out.append((stopper.update(epoch, value), stopper.should_stop))
    return out


def is_plain(obj) -> bool:
    """True if ``obj`` is built only from int, float, str, bool, None, dict and list."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return True
    if isinstance(obj, list):
        return all(is_plain(v) for v in obj)
    if isinstance(obj, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in obj.items())
    return False


def test_improvement_returns_true_and_records_best():
    stopper = EarlyStopping("val_loss", patience=3)
    assert [stopper.update(e, v) for e, v in enumerate([5.0, 4.0, 4.5, 3.0], start=1)] == [True, True, False, True]
    assert stopper.best == 3.0 and stopper.best_epoch == 4 and stopper.wait == 0
    assert not stopper.should_stop and stopper.stopped_epoch is None and stopper.stop_reason is None


def test_plateau_stop_epoch_and_reason():
    stopper = EarlyStopping("val_loss", patience=3)
    assert run(stopper, [1.0] * 10) == 4
    assert stopper.stopped_epoch == 4 and stopper.wait == 3 and not stopper.non_finite
    assert stopper.stop_reason == "no improvement in val_loss for 3 epochs (patience 3)"


def test_stopped_epoch_is_the_first_stop():
    # Updates after the stop (a trainer that ignores it) do not move stopped_epoch.
    stopper = EarlyStopping("val_loss", patience=1)
    for epoch, value in enumerate([1.0, 1.0, 1.0, 1.0], start=1):
        stopper.update(epoch, value)
    assert stopper.should_stop and stopper.stopped_epoch == 2 and stopper.wait == 3


def test_min_delta_is_absolute_and_applies_in_max_mode():
    stopper = EarlyStopping("val_accuracy", min_delta=-0.1, patience=1)
    assert stopper.min_delta == 0.1 and stopper.mode == "max"
    assert run(stopper, [0.5, 0.65, 0.7]) == 3  # 0.7 beats 0.65 by only 0.05
    assert stopper.best == 0.65 and stopper.best_epoch == 2


def test_baseline_min_never_beaten_stops_after_patience():
    stopper = EarlyStopping("val_loss", patience=3, baseline=1.0)
    assert run(stopper, [1.5, 1.2, 1.0, 0.9]) == 3  # 1.0 does not strictly beat the baseline
    assert stopper.best is None and stopper.best_epoch is None and stopper.wait == 3
    assert stopper.stop_reason == "val_loss did not beat the baseline 1 in 3 epochs (patience 3)"


def test_baseline_min_beaten_later_improves():
    stopper = EarlyStopping("val_loss", patience=3, baseline=1.0)
    assert [stopper.update(e, v) for e, v in enumerate([1.5, 1.2, 0.9, 0.95, 0.8], start=1)] == \
        [False, False, True, False, True]
    assert stopper.best == 0.8 and stopper.best_epoch == 5 and stopper.wait == 0 and not stopper.should_stop


def test_baseline_max_mode():
    stopper = EarlyStopping("val_accuracy", patience=2, baseline=0.75)
    assert run(stopper, [0.5, 0.75]) == 2
    assert stopper.stop_reason == "val_accuracy did not beat the baseline 0.75 in 2 epochs (patience 2)"
    stopper = EarlyStopping("val_accuracy", patience=2, baseline=0.75)
    assert run(stopper, [0.5, 0.8, 0.79, 0.78]) == 4
    assert stopper.best == 0.8 and stopper.best_epoch == 2
    assert stopper.stop_reason == "no improvement in val_accuracy for 2 epochs (patience 2)"


def test_baseline_and_min_delta_both_apply():
    # 0.95 beats the baseline but not the best (0.99) by min_delta 0.1.
    stopper = EarlyStopping("val_loss", min_delta=0.1, patience=1, baseline=1.0)
    assert run(stopper, [0.99, 0.95]) == 2
    assert stopper.best == 0.99 and stopper.best_epoch == 1


def test_max_mode_stop_reason():
    stopper = EarlyStopping("val_accuracy", mode="max", patience=1)
    assert run(stopper, [0.5, 0.6, 0.7, 0.65]) == 4
    assert stopper.stop_reason == "no improvement in val_accuracy for 1 epochs (patience 1)"


def test_patience_zero_details():
    stopper = EarlyStopping("val_loss", patience=0)
    assert run(stopper, [3, 3]) == 2
    assert stopper.best == 3 and stopper.best_epoch == 1 and stopper.stopped_epoch == 2
    assert stopper.stop_reason == "no improvement in val_loss for 1 epochs (patience 0)"


def test_start_from_epoch_skips_early_epochs():
    # Epochs 1-2 are warm-up: their (better) values must not become best nor count toward patience.
    stopper = EarlyStopping("val_loss", patience=2, start_from_epoch=2)
    assert stopper.update(1, 0.1) is False and stopper.update(2, 0.2) is False
    assert stopper.best is None and stopper.best_epoch is None and stopper.wait == 0
    assert stopper.update(3, 1.0) is True and stopper.best == 1.0 and stopper.best_epoch == 3
    assert run_from(stopper, [1.0, 1.0], first_epoch=4) == [(False, False), (False, True)]
    assert stopper.stopped_epoch == 5


def test_start_from_epoch_ignores_non_finite_during_warm_up():
    stopper = EarlyStopping("val_loss", patience=0, start_from_epoch=1)
    assert run(stopper, [math.nan, 2.0, 1.0, 1.5]) == 4
    assert not stopper.non_finite and stopper.best == 1.0 and stopper.best_epoch == 3


@pytest.mark.parametrize(("bad", "text"), [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")])
def test_check_finite_stops_at_once(bad, text):
    stopper = EarlyStopping("val_loss", patience=10)
    assert stopper.update(1, 2.0) is True and stopper.update(2, 1.0) is True
    assert stopper.update(3, bad) is False
    assert stopper.should_stop and stopper.non_finite and stopper.stopped_epoch == 3
    assert stopper.best == 1.0 and stopper.best_epoch == 2
    assert stopper.stop_reason == f"val_loss became {text} at epoch 3 (trainer.early_stopping.check_finite)"


def test_check_finite_on_first_epoch():
    stopper = EarlyStopping("val_loss")
    assert run(stopper, [math.nan, 1.0]) == 1
    assert stopper.best is None
    assert stopper.stop_reason == "val_loss became nan at epoch 1 (trainer.early_stopping.check_finite)"


def test_disabled_never_stops_even_on_non_finite():
    stopper = EarlyStopping("val_loss", patience=0, enabled=False)
    assert run(stopper, [3, math.nan, 2, math.inf, 2.5, 2.5]) is None
    assert stopper.best == 2 and stopper.best_epoch == 3 and stopper.wait == 3
    assert not stopper.non_finite and stopper.stopped_epoch is None and stopper.stop_reason is None


def test_best_is_a_plain_float():
    np = pytest.importorskip("numpy")
    stopper = EarlyStopping("val_loss")
    stopper.update(1, np.float32(0.5))
    assert type(stopper.best) is float and stopper.best == 0.5


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"patience": -1}, "patience must be >= 0, got -1"),
    ({"start_from_epoch": -2}, "start_from_epoch must be >= 0, got -2"),
    ({"mode": "up"}, "mode must be 'auto', 'min' or 'max', got 'up'"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EarlyStopping("val_loss", **kwargs)


def test_state_dict_contents():
    stopper = EarlyStopping("val_loss", min_delta=0.01, patience=3, baseline=2.5, start_from_epoch=1)
    run(stopper, [9.0, 3, 2, 2.5])
    assert stopper.state_dict() == {
        "best": 2.0, "best_epoch": 3, "wait": 1, "should_stop": False, "stopped_epoch": None,
        "non_finite": False, "non_finite_value": None,
        "monitor": "val_loss", "mode": "min", "min_delta": 0.01, "patience": 3, "baseline": 2.5,
        "start_from_epoch": 1,
    }


@pytest.mark.parametrize("values", [
    [3, 2, 2.5, 2.6, 2.7],  # a plateau stop
    [3, math.nan, 2],  # a non-finite stop
    [1.5],  # baseline never beaten
])
def test_state_dict_is_plain_data(values):
    stopper = EarlyStopping("val_loss", patience=1, baseline=1.0 if values == [1.5] else None)
    run(stopper, values)
    state = stopper.state_dict()
    assert is_plain(state)
    assert all(isinstance(v, (int, float, str, bool, type(None))) for v in state.values())


@pytest.mark.parametrize("split", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("kwargs", [
    {"patience": 2},
    {"patience": 2, "min_delta": 0.2, "baseline": 2.8},
    {"patience": 1, "start_from_epoch": 2},
    {"patience": 3, "mode": "max"},
])
def test_state_dict_round_trip_gives_the_same_future_decisions(split, kwargs):
    values = [3.0, 2.5, 2.6, 2.0, 2.1, 2.05, 1.0, 1.2, 1.3, 1.4]
    whole = EarlyStopping("val_loss", **kwargs)
    expected = run_from(whole, values, first_epoch=1)
    first = EarlyStopping("val_loss", **kwargs)
    head = run_from(first, values[:split], first_epoch=1)
    resumed = EarlyStopping("val_loss", **kwargs)
    resumed.load_state_dict(first.state_dict())
    assert resumed.state_dict() == first.state_dict()
    assert head + run_from(resumed, values[split:], first_epoch=split + 1) == expected
    assert resumed.state_dict() == whole.state_dict()
    assert resumed.stop_reason == whole.stop_reason


def test_state_dict_round_trip_keeps_a_non_finite_stop():
    a = EarlyStopping("val_loss", patience=3)
    run(a, [3, 2, -math.inf])
    b = EarlyStopping("val_loss", patience=100)  # a larger patience does not undo a non-finite stop
    b.load_state_dict(a.state_dict())
    assert b.should_stop and b.non_finite and b.stopped_epoch == 3 and b.best == 2
    assert b.stop_reason == "val_loss became -inf at epoch 3 (trainer.early_stopping.check_finite)"
    assert b.state_dict()["non_finite_value"] == "-inf"


def test_load_with_larger_patience_unstops():
    a = EarlyStopping("val_loss", patience=2)
    assert run(a, [3, 2, 2, 2]) == 4
    b = EarlyStopping("val_loss", patience=4)
    b.load_state_dict(a.state_dict())
    assert not b.should_stop and b.stopped_epoch is None and b.stop_reason is None
    assert b.best == 2 and b.best_epoch == 2 and b.wait == 2
    assert run_from(b, [1.5, 1.6, 1.6, 1.6, 1.6], first_epoch=5) == \
        [(True, False), (False, False), (False, False), (False, False), (False, True)]
    assert b.stopped_epoch == 9
    assert b.stop_reason == "no improvement in val_loss for 4 epochs (patience 4)"


def test_load_with_smaller_patience_stops():
    a = EarlyStopping("val_loss", patience=5)
    run(a, [3, 2, 2, 2])
    b = EarlyStopping("val_loss", patience=2)
    b.load_state_dict(a.state_dict())
    assert b.should_stop and b.stopped_epoch == 4  # the last recorded epoch
    assert b.stop_reason == "no improvement in val_loss for 2 epochs (patience 2)"


def test_load_into_disabled_does_not_stop():
    a = EarlyStopping("val_loss", patience=1)
    run(a, [3, 3])
    b = EarlyStopping("val_loss", patience=1, enabled=False)
    b.load_state_dict(a.state_dict())
    assert not b.should_stop and b.stopped_epoch is None and b.wait == 1


def test_load_old_four_key_format():
    old = {"best": 2, "best_epoch": 2, "wait": 1, "should_stop": False}
    b = EarlyStopping("val_loss", patience=3)
    b.load_state_dict(old)
    assert b.best == 2 and b.best_epoch == 2 and b.wait == 1
    assert not b.should_stop and b.stopped_epoch is None and not b.non_finite and b.stop_reason is None
    assert run_from(b, [2.6, 2.7], first_epoch=4) == [(False, False), (False, True)]
    assert b.stopped_epoch == 5
    # An old early-stopped checkpoint: the stop epoch is best_epoch + wait.
    b = EarlyStopping("val_loss", patience=3)
    b.load_state_dict({"best": 2.0, "best_epoch": 2, "wait": 3, "should_stop": True})
    assert b.should_stop and b.stopped_epoch == 5 and not b.non_finite
    assert b.stop_reason == "no improvement in val_loss for 3 epochs (patience 3)"
    b = EarlyStopping("val_loss", patience=10)
    b.load_state_dict({"best": 2.0, "best_epoch": 2, "wait": 3, "should_stop": True})
    assert not b.should_stop and b.stopped_epoch is None

"""The statistics of a sweep over seeds: confidence intervals, Welch's t-test, the grouping,
ranking and notes, on synthetic job rows."""

from __future__ import annotations

import math
import statistics
from typing import Any

import pytest
from scipy import stats

from dltrain.report.sweep_stats import describe, group_rows, is_grouped, welch_p


def row(job: int, best: float | None, status: str = "completed", monitor: str = "val_loss",
        **values: Any) -> dict[str, Any]:
    """A job row as the sweep summary reads it: swept values as typed, test metrics as floats."""
    test = {} if best is None else {"test_accuracy": 1.0 - best}
    return {"job": job, "status": status, "monitor": monitor, "best_value": best, **test, **values}


def test_describe_gives_the_sample_sd_and_a_t_interval_computed_by_hand() -> None:
    values = [0.31, 0.29, 0.35, 0.30]
    stat = describe(values)
    mean, sd = sum(values) / 4, statistics.stdev(values)  # stdev: ddof=1
    half = 3.182446305284263 * sd / math.sqrt(4)  # t(0.975, df=3) from a table
    assert stat.n == 4
    assert stat.mean == pytest.approx(mean) and stat.sd == pytest.approx(sd)
    assert (stat.ci_low, stat.ci_high) == (pytest.approx(mean - half), pytest.approx(mean + half))


def test_describe_of_one_value_has_no_spread_nor_interval() -> None:
    stat = describe([0.5])
    assert (stat.n, stat.mean, stat.sd, stat.ci_low, stat.ci_high) == (1, 0.5, None, None, None)
    assert describe([]).mean is None


def test_welch_p_equals_scipys_unequal_variance_t_test() -> None:
    a, b = [0.91, 0.93, 0.92, 0.95, 0.90], [0.88, 0.93, 0.85]
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    assert welch_p(a, [0.9]) is None  # n < 2: no test
    assert welch_p([0.5, 0.5], [0.5, 0.5]) is None  # no spread: scipy's NaN is no p-value


def test_jobs_are_grouped_by_the_other_swept_keys_and_ranked_by_the_group_mean() -> None:
    rows = [row(0, 0.30, optim="sgd", seed="0"), row(1, 0.32, optim="sgd", seed="1"),
            row(2, 0.33, optim="sgd", seed="2"), row(3, 0.20, optim="adam", seed="0"),
            row(4, 0.21, optim="adam", seed="1"), row(5, 0.22, optim="adam", seed="2")]
    groups = group_rows(rows, ["optim", "seed"], "val_loss", "min")
    assert [(g.rank, g.key, g.jobs, g.n) for g in groups] == [
        (1, {"optim": "adam"}, [3, 4, 5], 3), (2, {"optim": "sgd"}, [0, 1, 2], 3)]
    assert groups[0].stats["best_value"].mean == pytest.approx(0.21)
    assert groups[0].stats["test_accuracy"].mean == pytest.approx(0.79)
    assert groups[0].note == "best" and groups[0].p_value is None
    assert groups[1].p_value == pytest.approx(stats.ttest_ind([0.30, 0.32, 0.33], [0.20, 0.21, 0.22],
                                                              equal_var=False).pvalue)
    assert groups[1].p_value < 0.05 and groups[1].note == "worse than best (p<0.05)"
    assert [g.rank for g in group_rows(rows, ["optim", "seed"], "val_loss", "max")] == [1, 2]
    assert group_rows(rows, ["optim", "seed"], "val_loss", "max")[0].key == {"optim": "sgd"}


def test_close_groups_get_a_cant_tell_note_and_single_jobs_no_test() -> None:
    rows = [row(0, 0.30, lr="0.1", seed="0"), row(1, 0.36, lr="0.1", seed="1"), row(2, 0.33, lr="0.1", seed="2"),
            row(3, 0.31, lr="0.2", seed="0"), row(4, 0.35, lr="0.2", seed="1"), row(5, 0.34, lr="0.2", seed="2"),
            row(6, 0.10, lr="0.3", seed="0")]
    groups = group_rows(rows, ["lr", "seed"], "val_loss", "min")
    assert [g.key["lr"] for g in groups] == ["0.3", "0.1", "0.2"]
    assert [g.note for g in groups] == ["best", "n<2: no test", "n<2: no test"]  # the best has n=1
    groups = group_rows(rows[:6], ["lr", "seed"], "val_loss", "min")
    assert groups[1].p_value > 0.05 and groups[1].note == "can't tell apart with n=3"


def test_failed_jobs_are_counted_but_left_out_of_the_statistics() -> None:
    rows = [row(0, 0.3, optim="sgd", seed="0"), row(1, None, status="failed", optim="sgd", seed="1"),
            row(2, float("nan"), status="diverged", optim="sgd", seed="2"), row(3, 0.4, optim="sgd", seed="3"),
            row(4, None, status="failed", optim="adam", seed="0"), row(5, 0.2, monitor="val_accuracy",
                                                                      optim="adam", seed="1")]
    groups = group_rows(rows, ["optim", "seed"], "val_loss", "min")
    assert [(g.key["optim"], g.n, g.failed) for g in groups] == [("sgd", 2, 2), ("adam", 0, 2)]
    assert groups[0].stats["best_value"].values == [0.3, 0.4]
    assert groups[1].rank == 2 and groups[1].note == "no successful job" and groups[1].p_value is None


def test_a_sweep_over_the_seed_alone_is_one_group() -> None:
    assert is_grouped(["optim", "seed"]) and not is_grouped(["optim", "optim.lr"])
    [group] = group_rows([row(i, 0.1 * i, seed=str(i)) for i in range(1, 4)], ["seed"], "val_loss", "min")
    assert group.key == {} and group.label == "all jobs" and group.n == 3 and group.note == "best"

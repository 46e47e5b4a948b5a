"""A sweep's statistics over repeated seeds: the jobs grouped by their other swept values,
each group's mean, standard deviation and 95% confidence interval, the groups ranked by mean
and each compared with the best by Welch's t-test. Numbers only: sweep_groups.py shows them.

Rules for a group's note (``ALPHA`` = 0.05):
  - the best group: ``best``;
  - fewer than 2 successful jobs in it or in the best group: ``n<2: no test`` (no p-value);
  - no spread in either group (every seed gave the same value): ``no spread: no test``;
  - p < ALPHA: ``worse than best (p<0.05)``;
  - otherwise: ``can't tell apart with n=<its n>``: more seeds may separate them, or not.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dltrain.report.summary import SUCCESS

#: The key whose values are repeats of one configuration rather than configurations of their own.
SEED = "seed"
#: The significance level of the notes, and 1 - the confidence of the intervals.
ALPHA = 0.05


@dataclass
class Stat:
    """The statistics of one metric over a group's successful jobs."""

    values: list[float]
    mean: float | None = None
    sd: float | None = None  # sample standard deviation (ddof=1); None for n < 2
    ci_low: float | None = None  # 95% confidence interval of the mean (Student's t); None for n < 2
    ci_high: float | None = None

    @property
    def n(self) -> int:
        """How many values the statistics are of."""
        return len(self.values)


@dataclass
class Group:
    """The jobs of one configuration: its swept values other than the seed, and their statistics."""

    key: dict[str, Any]
    jobs: list[int]
    failed: int
    stats: dict[str, Stat]
    rows: list[dict[str, Any]] = field(repr=False, default_factory=list)
    rank: int | None = None
    p_value: float | None = None  # Welch's t-test of best_value against the best group's
    note: str = ""

    @property
    def n(self) -> int:
        """The number of successful jobs (the failed ones are excluded from the statistics)."""
        return self.stats["best_value"].n

    @property
    def label(self) -> str:
        """How tables and pictures name the group: its swept values other than the seed."""
        return ", ".join(f"{k}={v}" for k, v in self.key.items()) or "all jobs"


def is_grouped(params: Sequence[str]) -> bool:
    """Whether a sweep over ``params`` repeats configurations with several seeds."""
    return SEED in params


def describe(values: Sequence[float]) -> Stat:
    """Mean, sample standard deviation and the 95% Student's t confidence interval of the mean."""
    values = list(values)
    stat = Stat(values)
    n = len(values)
    if n == 0:
        return stat
    stat.mean = math.fsum(values) / n
    if n < 2:
        return stat
    from scipy import stats

    stat.sd = math.sqrt(math.fsum((v - stat.mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * stat.sd / math.sqrt(n)
    stat.ci_low, stat.ci_high = stat.mean - half, stat.mean + half
    return stat


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """The two-sided p-value of Welch's t-test (unequal variances); None when either has n < 2
    or neither varies."""
    if len(a) < 2 or len(b) < 2 or (len(set(a)) == 1 and len(set(b)) == 1):
        return None
    from scipy import stats

    with warnings.catch_warnings():  # nearly equal values: scipy warns of precision loss; the p-value says enough
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return p if math.isfinite(p) else None


def group_rows(rows: Iterable[dict[str, Any]], params: Sequence[str], monitor: str | None,
               mode: str | None) -> list[Group]:
    """The jobs of ``rows`` grouped by their values of ``params`` other than the seed, ranked by
    the group mean of ``best_value`` (``mode`` min or max), each compared with the best group.

    Args:
        rows: A sweep's job rows (``status``, ``monitor``, ``best_value``, ``test_*`` and one
            key per swept parameter).
        params: The swept parameters; the seed is the one left out of a group's key.
        monitor: The metric the sweep ranks by; a job that monitored another is not counted.
        mode: ``"min"`` or ``"max"``.

    Returns:
        The groups, best first; groups without a successful job last, in the order they ran.
    """
    keys = [p for p in params if p != SEED]
    members: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: r["job"]):
        members.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    metrics = sorted({k for row in rows for k in row if k.startswith("test_")})
    groups = [_group(dict(zip(keys, key, strict=True)), jobs, monitor, metrics) for key, jobs in members.items()]
    sign = -1.0 if mode == "max" else 1.0
    ranked = sorted((g for g in groups if g.n), key=lambda g: sign * g.stats["best_value"].mean)
    groups = ranked + [g for g in groups if not g.n]
    for i, group in enumerate(groups, start=1):
        group.rank = i
    if ranked:
        _compare(groups, ranked[0])
    return groups


def _group(key: dict[str, Any], rows: list[dict[str, Any]], monitor: str | None, metrics: list[str]) -> Group:
    ok = [row for row in rows if _counted(row, monitor)]
    stats = {"best_value": describe([row["best_value"] for row in ok])}
    for metric in metrics:
        stats[metric] = describe([row[metric] for row in ok if _finite(row.get(metric))])
    return Group(key=key, jobs=[row["job"] for row in rows], failed=len(rows) - len(ok), stats=stats, rows=rows)


def _compare(groups: list[Group], best: Group) -> None:
    """Set each group's p-value against ``best`` and its note (the rules in the module's docstring)."""
    for group in groups:
        if group is best:
            group.note = "best"
            continue
        if not group.n:
            group.note = "no successful job"
            continue
        a, b = group.stats["best_value"].values, best.stats["best_value"].values
        group.p_value = welch_p(a, b)
        if min(len(a), len(b)) < 2:
            group.note = "n<2: no test"
        elif group.p_value is None:
            group.note = "no spread: no test"
        elif group.p_value < ALPHA:
            group.note = f"worse than best (p<{ALPHA:g})"
        else:
            group.note = f"can't tell apart with n={group.n}"


def _counted(row: dict[str, Any], monitor: str | None) -> bool:
    """A successful job that monitored ``monitor`` and has a finite best value."""
    return (monitor is not None and row.get("status") in SUCCESS and row.get("monitor") == monitor
            and _finite(row.get("best_value")))


def _finite(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)

"""The pictures of a sweep over seeds and of its curves: the groups with error bars (sweep.png
when grouped) and every job's validation curve (sweep_curves.png). Drawn headless; each has a
``*_figure`` (the picture, for tests) and a ``plot_*`` (saved atomically)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dltrain.report.plots import DPI, _save
from dltrain.report.sweep_stats import Group, Stat

_BAR_COLOR, _BEST_COLOR, _SEED_COLOR = "#8fa9c4", "tab:orange", "0.2"
#: Colours of the groups (or jobs) of sweep_curves.png, reused in turn past ten.
_CYCLE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
          "tab:olive", "tab:cyan")


def groups_figure(groups: Sequence[Group], *, monitor: str, mode: str) -> Figure:
    """Draw each group's mean best value as a bar with its 95% confidence interval as an error
    bar, and every seed's value as a dot on it; the best group in orange. When every value sits
    far above 0 the axis is zoomed in, and the means are drawn as diamonds instead of bars (whose
    heights would no longer compare).

    Args:
        groups: Ranked groups (:func:`dltrain.report.sweep_stats.group_rows`), drawn in the order given.
        monitor: The metric the jobs monitored.
        mode: ``"min"`` or ``"max"``.

    Raises:
        ValueError: ``groups`` is empty.
    """
    if not groups:
        raise ValueError("no groups to plot")
    fig = Figure(figsize=(min(max(4.5, 1.5 + 0.9 * len(groups)), 12.0), 4.2), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    drawn = [i for i, g in enumerate(groups) if g.n]
    stats = [groups[i].stats["best_value"] for i in drawn]
    colors = [_BEST_COLOR if groups[i].note == "best" else _BAR_COLOR for i in drawn]
    limits = _zoom(stats)
    if limits is None or limits[0] <= 0:
        ax.bar(drawn, [s.mean for s in stats], width=0.6, color=colors)
    else:  # the axis does not start at 0: a bar's height would not compare with another's
        ax.scatter(drawn, [s.mean for s in stats], marker="D", s=60, color=colors, edgecolors="black", zorder=3,
                   label="group mean")
    with_ci = [(i, s) for i, s in zip(drawn, stats, strict=True) if s.ci_low is not None]
    if with_ci:
        ax.errorbar([i for i, _ in with_ci], [s.mean for _, s in with_ci],
                    yerr=[[s.mean - s.ci_low for _, s in with_ci], [s.ci_high - s.mean for _, s in with_ci]],
                    fmt="none", ecolor="black", capsize=6, linewidth=1.5, label="95% CI of the mean")
    for i, stat in zip(drawn, stats, strict=True):
        ax.plot([i] * stat.n, stat.values, linestyle="none", marker="o", markersize=4, color=_SEED_COLOR,
                alpha=0.7, label="one seed" if i == drawn[0] else "_nolegend_")
    if limits is not None:
        ax.set_ylim(*limits)
    labels = [f"{g.label}\nn={g.n}" + (f", {g.failed} failed" if g.failed else "") for g in groups]
    ax.set_xticks(range(len(groups)), labels=labels, fontsize="x-small", rotation=90 if len(groups) > 10 else 0)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_xlabel("group (its swept values other than the seed)")
    ax.set_ylabel(f"best {monitor}: mean and 95% CI")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    fig.suptitle(f"sweep: best {monitor} per group over seeds ({mode})")
    return fig


def _zoom(stats: Sequence[Stat]) -> tuple[float, float] | None:
    """The y-axis limits when every value (seeds and CIs) is above 0: from 0, or from above it when
    the values sit far above 0; None (matplotlib's own) when some value is 0 or below."""
    lows = [min([*s.values, s.ci_low if s.ci_low is not None else s.mean]) for s in stats]
    if not lows or min(lows) <= 0:
        return None
    highs = [max([*s.values, s.ci_high if s.ci_high is not None else s.mean]) for s in stats]
    span = max(highs) - min(lows)
    return max(0.0, min(lows) - 0.5 * span - 1e-12), max(highs) + 0.3 * span + 1e-12


def plot_groups(groups: Sequence[Group], path: str | Path, *, monitor: str, mode: str) -> Path:
    """Draw :func:`groups_figure` and save it as a PNG at ``path``, atomically; returns the path."""
    return _save(groups_figure(groups, monitor=monitor, mode=mode), path)


def curves_figure(curves: Sequence[tuple[str, Sequence[tuple[float, float]]]], *, monitor: str,
                  grouped: bool) -> Figure:
    """Overlay the monitored metric per epoch of every job, one colour per group.

    Args:
        curves: (group label, [(epoch, value), ...]) per job, in the order of the legend; a
            label that repeats is another seed of the same group.
        monitor: The metric drawn, e.g. ``val_loss``.
        grouped: Draw each job thin and each group's mean per epoch thick (a sweep over seeds);
            else one line per job.

    Raises:
        ValueError: ``curves`` is empty.
    """
    if not curves:
        raise ValueError("no curves to plot")
    fig = Figure(figsize=(7.5, 4.5), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    labels = list(dict.fromkeys(label for label, _ in curves))
    color = {label: _CYCLE[i % len(_CYCLE)] for i, label in enumerate(labels)}
    for label, points in curves:
        xs, ys = [e for e, _ in points], [v for _, v in points]
        if grouped:
            ax.plot(xs, ys, color=color[label], linewidth=0.8, alpha=0.45, label="_nolegend_")
        else:
            ax.plot(xs, ys, color=color[label], linewidth=1.6, marker="o", markersize=3, label=label)
    if grouped:
        for label in labels:
            xs, ys = _mean_curve([points for lab, points in curves if lab == label])
            n = sum(lab == label for lab, _ in curves)
            ax.plot(xs, ys, color=color[label], linewidth=2.8, label=f"{label} (mean of {n})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(monitor)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", title="group: thin = one seed" if grouped else "job")
    fig.suptitle(f"sweep: {monitor} per epoch of every job")
    return fig


def plot_curves(curves: Sequence[tuple[str, Sequence[tuple[float, float]]]], path: str | Path, *, monitor: str,
                grouped: bool) -> Path:
    """Draw :func:`curves_figure` and save it as a PNG at ``path``, atomically; returns the path."""
    return _save(curves_figure(curves, monitor=monitor, grouped=grouped), path)


def job_curves(sweep_dir: Path, rows: Sequence[dict[str, Any]], groups: Sequence[Group] | None,
               params: Sequence[str], monitor: str) -> list[tuple[str, list[tuple[float, float]]]]:
    """The curves of :func:`curves_figure`: each job's ``monitor`` per epoch, labelled by its group
    (when grouped, in the groups' rank order) or by its job number and swept values."""
    if groups is not None:
        labelled = [(g.label, row) for g in groups for row in g.rows]
    else:
        labelled = [(_job_name(row, params), row) for row in sorted(rows, key=lambda r: r["job"])]
    return [(label, points) for label, row in labelled
            if (points := read_curve(sweep_dir / row["run_dir"] / "metrics.csv", monitor))]


def read_curve(metrics_csv: Path, monitor: str) -> list[tuple[float, float]]:
    """(epoch, value) of ``monitor`` per epoch of a job's metrics.csv, finite values only, the last
    row of an epoch winning (a resumed run may repeat one); empty when absent or unreadable."""
    try:
        with metrics_csv.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return []
    by_epoch: dict[float, float] = {}
    for row in rows:
        epoch, value = _float(row.get("epoch")), _float(row.get(monitor))
        if epoch is not None and value is not None:
            by_epoch[epoch] = value
    return sorted(by_epoch.items())


def _mean_curve(curves: list[Sequence[tuple[float, float]]]) -> tuple[list[float], list[float]]:
    """The mean per epoch over the jobs that reached it (a job that stopped early leaves the mean)."""
    at: dict[float, list[float]] = {}
    for points in curves:
        for epoch, value in points:
            at.setdefault(epoch, []).append(value)
    epochs = sorted(at)
    return epochs, [math.fsum(at[e]) / len(at[e]) for e in epochs]


def _job_name(row: dict[str, Any], params: Sequence[str]) -> str:
    values = ", ".join(f"{p}={row.get(p)}" for p in params)
    return f"job {row['job']}" + (f": {values}" if values else "")


def _float(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None

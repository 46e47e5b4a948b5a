"""Plots a run and a sweep leave behind: curves.png and sweep.png (matplotlib, drawn headless)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dltrain.files import atomic_write
from dltrain.report.summary import SUCCESS

#: Resolution of the saved PNGs: enough to read, small enough to keep beside every run.
DPI = 100
#: The statuses of a sweep job that finished training; anything else is a failure.

#: Columns of metrics.csv that are not a train_*/val_* metric.
_NOT_METRICS = frozenset({"epoch", "lr", "epoch_seconds"})
#: Why training stopped before its last epoch, as the legend names it.
_STOP_LABELS = {"early_stopped": "early stop", "diverged": "diverged", "interrupted": "interrupted",
                "time_limit": "time limit"}
_TRAIN_COLOR, _VAL_COLOR, _LR_COLOR = "tab:blue", "tab:orange", "tab:green"
_BAR_COLOR, _BEST_COLOR, _FAILED_COLOR = "#8fa9c4", "tab:orange", "red"
_PANEL_WIDTH, _PANEL_HEIGHT = 4.2, 3.6


def curves_figure(history: Sequence[dict[str, Any]], *, monitor: str | None, best_epoch: int | None = None,
                  stopped_epoch: int | None = None, status: str | None = None, title: str | None = None) -> Figure:
    """Draw a run's training curves: loss, the monitored metric and the learning rate, side by side.

    Args:
        history: One row per epoch, as in metrics.csv (values may be numbers, None, NaN or strings).
        monitor: The metric the run monitored (e.g. ``val_accuracy``); its curve gets the best-epoch star.
            None for a run that monitored nothing (no validation split and a validation monitor).
        best_epoch: The epoch of the best monitored value, marked by a dashed line.
        stopped_epoch: The epoch training stopped at, marked when ``status`` says it stopped early.
        status: The run's status (``completed``, ``early_stopped``, ``diverged``, ``interrupted``...).
        title: The figure's title; a generic one naming ``status`` if None.

    Returns:
        The figure, not attached to any global state.

    Raises:
        ValueError: ``history`` is empty.
    """
    if not history:
        raise ValueError("no epochs to plot")
    epochs = [_epoch(row, i) for i, row in enumerate(history)]
    keys = list(dict.fromkeys(k for row in history for k in row if k not in _NOT_METRICS))
    series = {k: [_num(row.get(k)) for row in history] for k in [*keys, "lr"]}

    def has_data(key: str) -> bool:
        return any(math.isfinite(v) for v in series.get(key, ()))

    panels: list[tuple[str, list[str]]] = []  # (title, the curves it draws)
    losses = [k for k in ("train_loss", "val_loss") if has_data(k)]
    if losses:
        panels.append(("loss", losses))
    metric = [k for k in _metric_curves(monitor, keys) if has_data(k)]
    if metric:
        panels.append((_base(metric[0]), metric))
    if has_data("lr"):
        panels.append(("learning rate", ["lr"]))
    if not panels:  # a run that diverged in its first epoch still gets a figure saying so
        panels.append(("loss", []))

    width = _PANEL_WIDTH * len(panels)
    fig = Figure(figsize=(width, _PANEL_HEIGHT), dpi=DPI)
    # Fixed margins (in inches, for the tick labels and titles) rather than a layout engine,
    # which would double the time every run spends drawing this figure.
    fig.subplots_adjust(left=0.7 / width, right=1 - 0.15 / width, bottom=0.5 / _PANEL_HEIGHT,
                        top=1 - 0.6 / _PANEL_HEIGHT, wspace=0.32)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    drawn_on: dict[str, Axes] = {}
    for ax, (panel_title, curves) in zip(axes, panels, strict=True):
        for key in curves:
            # markers too, so that a single epoch or a point between gaps is still visible
            ax.plot(epochs, series[key], marker="o", markersize=3.5, linewidth=1.5, color=_curve_color(key), label=key)
            drawn_on[key] = ax
        if not curves:
            ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center", va="center", color="0.4")
        ax.set_title(panel_title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(panel_title if panel_title != "learning rate" else "lr")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if "lr" in drawn_on:
        lrs = [v for v in series["lr"] if math.isfinite(v)]
        if min(lrs) > 0 and max(lrs) / min(lrs) >= 10:
            drawn_on["lr"].set_yscale("log")

    stop = _STOP_LABELS.get(status or "") if stopped_epoch is not None else None
    for i, ax in enumerate(axes):
        # the lines go on every panel, their legend entries only on the first: one explanation is enough
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.35", linestyle="--", linewidth=1,
                       label=f"best epoch {best_epoch}" if i == 0 else "_nolegend_")
        if stop is not None:
            ax.axvline(stopped_epoch, color="red", linestyle=":", linewidth=1.5,
                       label=f"{stop} (epoch {stopped_epoch})" if i == 0 else "_nolegend_")
    if best_epoch is not None and monitor in drawn_on:
        at = [v for e, v in zip(epochs, series[monitor], strict=True) if e == best_epoch]
        if at and math.isfinite(at[-1]):  # the last row wins: a resumed run may repeat an epoch
            drawn_on[monitor].plot([best_epoch], [at[-1]], linestyle="none", marker="*", markersize=14,
                                   color=_curve_color(monitor), markeredgecolor="black", zorder=5,
                                   label="_nolegend_")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.suptitle(title or ("training curves" if status is None else f"training curves ({status})"))
    return fig


def plot_curves(history: Sequence[dict[str, Any]], path: str | Path, *, monitor: str | None,
                best_epoch: int | None = None, stopped_epoch: int | None = None, status: str | None = None,
                title: str | None = None) -> Path:
    """Draw :func:`curves_figure` and save it as a PNG at ``path``, atomically; returns the path."""
    fig = curves_figure(history, monitor=monitor, best_epoch=best_epoch, stopped_epoch=stopped_epoch,
                        status=status, title=title)
    return _save(fig, path)


def sweep_figure(rows: Sequence[dict[str, Any]], *, monitor: str, mode: str, params: Sequence[str]) -> Figure:
    """Draw a sweep: the best value of every job, and (for one or two swept parameters) value against parameter.

    Args:
        rows: One per job, with ``job``, ``status``, ``best_value`` and one key per name in ``params``
            holding the value as typed on the command line.
        monitor: The metric the jobs monitored, e.g. ``val_loss``.
        mode: ``"min"`` or ``"max"``: which best value is the best job's.
        params: The swept parameters, in the order they were swept.

    Returns:
        The figure, not attached to any global state.

    Raises:
        ValueError: ``rows`` is empty, or ``mode`` is neither ``"min"`` nor ``"max"``.
    """
    if not rows:
        raise ValueError("no jobs to plot")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
    params = list(params)
    values = [_num(row.get("best_value")) for row in rows]
    ok = [str(row.get("status")) in SUCCESS and math.isfinite(v) for row, v in zip(rows, values, strict=True)]
    good = [i for i in range(len(rows)) if ok[i]]
    best = (min if mode == "min" else max)(good, key=lambda i: values[i]) if good else None
    with_params = 1 <= len(params) <= 2 and best is not None

    # the job panel widens with the number of jobs so that their tick labels stay readable
    jobs_width = min(max(4.5, 1.5 + 0.55 * len(rows)), 12.0)
    widths = [jobs_width, 4.8] if with_params else [jobs_width]
    fig = Figure(figsize=(sum(widths), 4.2), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(widths), squeeze=False, width_ratios=widths)[0]
    _draw_jobs(axes[0], rows, values, ok, best, monitor, params)
    if with_params:
        _draw_against_params(axes[1], rows, values, ok, best, monitor, params)
    fig.suptitle(f"sweep: best {monitor} per job ({mode})")
    return fig


def plot_sweep(rows: Sequence[dict[str, Any]], path: str | Path, *, monitor: str, mode: str,
               params: Sequence[str]) -> Path:
    """Draw :func:`sweep_figure` and save it as a PNG at ``path``, atomically; returns the path."""
    return _save(sweep_figure(rows, monitor=monitor, mode=mode, params=params), path)


def _draw_jobs(ax: Axes, rows: Sequence[dict[str, Any]], values: list[float], ok: list[bool], best: int | None,
               monitor: str, params: list[str]) -> None:
    positions = list(range(len(rows)))
    others = [i for i in positions if ok[i] and i != best]
    if others:
        bars = ax.bar(others, [values[i] for i in others], width=0.7, color=_BAR_COLOR)
        ax.bar_label(bars, fmt="%.4g", fontsize="x-small", padding=2)
    if best is not None:
        bars = ax.bar([best], [values[best]], width=0.7, color=_BEST_COLOR, label=f"best: job {rows[best].get('job')}")
        ax.bar_label(bars, fmt="%.4g", fontsize="x-small", padding=2)
    failed = [i for i in positions if not ok[i]]
    if failed:
        # x in data, y in axes coordinates: the markers sit at the bottom whatever the values' range
        ax.plot(failed, [0.04] * len(failed), linestyle="none", marker="x", markersize=9, markeredgewidth=2,
                color=_FAILED_COLOR, transform=ax.get_xaxis_transform(), clip_on=False, label="failed")
    if best is None:
        ax.text(0.5, 0.5, "no job succeeded", transform=ax.transAxes, ha="center", va="center", color="0.4")
        ax.set_yticks([])
    labels = [_job_label(row, params) for row in rows]
    ax.set_xticks(positions, labels=labels, fontsize="x-small", rotation=90 if len(rows) > 12 else 0)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("job")
    ax.set_ylabel(f"best {monitor}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")


def _draw_against_params(ax: Axes, rows: Sequence[dict[str, Any]], values: list[float], ok: list[bool],
                         best: int | None, monitor: str, params: list[str]) -> None:
    first = params[0]
    second = params[1] if len(params) == 2 else None
    typed = [_text(row.get(first)) for row in rows if row.get(first) is not None]
    parsed = [_float(t) for t in typed]
    numeric = bool(parsed) and all(v is not None for v in parsed)
    # categories in the order the jobs ran, i.e. the order typed on the command line
    categories = list(dict.fromkeys(typed))

    position = {t: float(t) if numeric else float(categories.index(t)) for t in categories}

    def x_of(row: dict[str, Any]) -> float:
        return position[_text(row.get(first))]

    plotted = [i for i in range(len(rows)) if ok[i] and rows[i].get(first) is not None]
    groups: dict[str, list[int]] = {}
    for i in plotted:
        groups.setdefault(_text(rows[i].get(second)) if second else "", []).append(i)
    for group, members in groups.items():
        members.sort(key=lambda i: x_of(rows[i]))
        ax.plot([x_of(rows[i]) for i in members], [values[i] for i in members], marker="o", markersize=5,
                label=f"{second}={group}" if second else "_nolegend_")
    if best in plotted:
        ax.plot([x_of(rows[best])], [values[best]], linestyle="none", marker="*", markersize=15, color=_BEST_COLOR,
                markeredgecolor="black", zorder=5, label="_nolegend_")
    if not plotted:
        ax.text(0.5, 0.5, f"no successful job has {first}", transform=ax.transAxes, ha="center", va="center",
                color="0.4")
    xs = [x_of(rows[i]) for i in plotted]
    if numeric and xs and min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(range(len(categories)), labels=[_short(c, 14) for c in categories], fontsize="small",
                      rotation=45 if len(categories) > 6 else 0)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    ax.set_xlabel(first)
    ax.set_ylabel(f"best {monitor}")
    ax.grid(alpha=0.3)
    if second:
        ax.legend(fontsize="small")


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=DPI)
    return path


def _num(value: Any) -> float:
    """A plottable float; NaN (a gap in the curve) for anything missing, unparsable or non-finite."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _float(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _epoch(row: dict[str, Any], index: int) -> float:
    epoch = _num(row.get("epoch"))
    return epoch if math.isfinite(epoch) else float(index + 1)  # epochs count from 1


def _base(name: str) -> str:
    """``accuracy`` for ``train_accuracy`` and ``val_accuracy``."""
    for prefix in ("train_", "val_"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _is_loss(name: str) -> bool:
    return _base(name) == "loss"


def _metric_curves(monitor: str | None, keys: list[str]) -> list[str]:
    """The columns of the metric panel: the monitored metric and its train/val counterpart, or, when the
    run monitors a loss (already on the loss panel) or nothing, the first validation metric that is not a
    loss (the first training one in a run without validation)."""
    candidates = [] if monitor is None or _is_loss(monitor) else [monitor]
    candidates += [k for k in keys if k.startswith("val_") and not _is_loss(k)]
    candidates += [k for k in keys if k.startswith("train_") and not _is_loss(k)]
    for name in candidates:
        pair = [f"train_{_base(name)}", f"val_{_base(name)}"] if _base(name) != name else [name]
        found = [k for k in pair if k in keys]
        if found:
            return found
    return []


def _curve_color(key: str) -> str:
    if key.startswith("train_"):
        return _TRAIN_COLOR
    return _VAL_COLOR if key.startswith("val_") else _LR_COLOR


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _job_label(row: dict[str, Any], params: list[str]) -> str:
    job = _text(row.get("job"))
    if not params:
        return job
    return f"{job}\n{_short(', '.join(_short(_text(row.get(p)), 12) for p in params), 24)}"

"""``gradients.png``: the gradient flow of a run, drawn from its ``diagnostics.csv``.

One line per layer over the epochs: its gradient norm (log scale; vanishing gradients show as
the first layers' lines orders of magnitude below the last's), its update-to-weight ratio
(log scale, the ~1e-3 rule of thumb marked) and, when the model has ReLU, sigmoid or tanh
modules, their fraction of dead or saturated units.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, MaxNLocator

from dltrain.report.plots import DPI, _num, _save

#: The update-to-weight ratio a healthy step is often said to have.
RULE_OF_THUMB = 1e-3
_PANEL_WIDTH, _PANEL_HEIGHT = 4.6, 3.8
_LEGEND_COLUMNS, _LINE_INCHES = 3, 0.17  # the legends' columns, and the height of one of their lines

Series = dict[str, tuple[list[int], list[float]]]


def plot_gradients(csv_path: str | Path, path: str | Path) -> Path:
    """Draw ``csv_path`` (a run's diagnostics.csv) into ``path`` (PNG); returns ``path``.

    Raises:
        ValueError: the CSV holds no rows.
    """
    with Path(csv_path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{csv_path} holds no rows")
    return _save(gradients_figure(rows), path)


def gradients_figure(rows: list[dict[str, str]]) -> Figure:
    """The figure of diagnostics.csv's ``rows``: gradient norms, update ratios and, when there
    are any, dead or saturated fractions, one panel each."""
    panels = [(title, scale, series) for title, scale, series in (
        ("gradient norm", "log", _series(rows, "grad_norm")),
        ("update / weight norm", "log", _series(rows, "update_ratio")),
        ("dead (ReLU) or saturated units", "linear",
         {**_series(rows, "dead_fraction"), **_series(rows, "saturated_fraction")}),
    ) if series or title == "gradient norm"]
    width = _PANEL_WIDTH * len(panels)
    # The legends go under the panels, where they hide no line's end: room for the longest.
    legend = _LINE_INCHES * max(math.ceil((len(series) + 1) / _LEGEND_COLUMNS) for _, _, series in panels)
    height = _PANEL_HEIGHT + legend
    fig = Figure(figsize=(width, height), dpi=DPI)
    fig.subplots_adjust(left=0.7 / width, right=1 - 0.15 / width, bottom=(0.55 + legend) / height,
                        top=1 - 0.6 / height, wspace=0.3)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, scale, series) in zip(axes, panels, strict=True):
        for layer, (epochs, values) in series.items():
            ax.plot(epochs, values, marker=".", label=layer)
        if title.startswith("update"):
            ax.axhline(RULE_OF_THUMB, color="gray", linestyle="--", linewidth=1, label="1e-3")
        if series and scale == "log" and any(v > 0 for _, values in series.values() for v in values):
            ax.set_yscale("log")
            # plain text ("6e-02"), not math text: as readable, and a quarter of the figure's time
            ax.yaxis.set_major_formatter(LogFormatter())
            ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
        if scale == "linear":  # fractions: the whole 0..1 range, so 0.02 does not look like 1
            ax.set_ylim(-0.03, 1.03)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if series:  # under the axes, below "epoch": a fixed place costs no search and hides no data
            ax.legend(fontsize="x-small", ncol=_LEGEND_COLUMNS, loc="upper center", bbox_to_anchor=(0.5, -0.16),
                      frameon=False)
    fig.suptitle("layer by layer, the first step of each epoch (diagnostics.csv)")
    return fig


def _series(rows: list[dict[str, str]], column: str) -> Series:
    """Each layer's finite, plottable values of ``column``, by epoch, in the layers' order."""
    series: Series = {}
    for row in rows:
        value = _num(row.get(column))
        if math.isfinite(value):
            epochs, values = series.setdefault(row["layer"], ([], []))
            epochs.append(int(row["epoch"]))
            values.append(value)
    return series

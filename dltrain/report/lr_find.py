"""What ``dltrain-lr-find`` leaves in its folder: ``lr_find.json`` (the curve, the suggestion
and the command to run next) and ``lr_find.png`` (the loss against the learning rate)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from dltrain.files import write_json
from dltrain.report.plots import DPI, _save

if TYPE_CHECKING:  # the figure needs no torch
    from dltrain.training.lr_find import LRFinding

log = logging.getLogger("dltrain")

_LOSS_COLOR, _SMOOTH_COLOR, _SUGGEST_COLOR, _TENTH_COLOR = "#9db7d5", "tab:blue", "tab:red", "tab:green"


def lr_find_figure(finding: LRFinding) -> Figure:
    """The loss and the smoothed loss of each step against its learning rate (log axis), with
    the suggestion and the smoothed minimum's learning rate / 10 marked."""
    fig = Figure(figsize=(6.4, 4.2), dpi=DPI)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.13, top=0.88)
    ax = fig.subplots()
    ax.plot(finding.lrs, finding.losses, color=_LOSS_COLOR, linewidth=0.8, label="loss")
    ax.plot(finding.lrs, finding.smoothed, color=_SMOOTH_COLOR, linewidth=2, label="smoothed loss")
    ax.set_xscale("log")
    ax.set_xlabel(f"learning rate ({finding.key})")
    ax.set_ylabel("training loss")
    tenth = finding.minimum_lr / 10
    ax.axvline(tenth, color=_TENTH_COLOR, linestyle=":", label=f"minimum / 10 = {tenth:.1e}")
    ax.axvline(finding.suggestion, color=_SUGGEST_COLOR, linestyle="--",
               label=f"suggested {finding.suggestion:.1e} ({finding.rule})")
    if finding.steepest_step is not None:
        step = finding.steepest_step
        ax.plot([finding.lrs[step]], [finding.smoothed[step]], "o", color=_SUGGEST_COLOR)
    # The divergence at the end would flatten the rest of the curve: keep it in view, but only just.
    low = min(min(finding.smoothed), min(finding.losses))
    high = max(finding.smoothed[: max(1, len(finding.smoothed) // 10)])
    ax.set_ylim(low - 0.1 * (high - low), high + 0.5 * (high - low) if high > low else low + 1)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    stopped = "stopped at divergence" if finding.stopped else "every step run"
    ax.set_title(f"learning-rate range test: {len(finding.lrs)} of {finding.num_steps} steps ({stopped})",
                 fontsize=10)
    return fig


def write_lr_find(folder: str | Path, finding: LRFinding, overrides: Sequence[str], command: str) -> list[str]:
    """Write ``lr_find.json`` and ``lr_find.png`` into ``folder``; returns the names written.
    A picture that cannot be drawn is one warning: the numbers stand without it."""
    folder = Path(folder)
    write_json(folder / "lr_find.json", {"overrides": list(overrides), **finding.to_dict(), "command": command})
    written = ["lr_find.json"]
    try:
        _save(lr_find_figure(finding), folder / "lr_find.png")
        written.append("lr_find.png")
    except Exception as err:  # noqa: BLE001 - a plot is never worth the result
        log.warning("warning: could not draw lr_find.png: %s", err)
    return written

"""An autoencoder's latent codes of the test split: ``latents.csv`` (one row per example: its row
as ``predictions.csv`` names it, its label when the data has classes, ``z0 .. z<K-1>``) and
``latents.png`` (the codes in 2-D: themselves for a bottleneck of 2, else their first two
principal components, coloured by label).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from matplotlib.figure import Figure

from dltrain.files import atomic_write
from dltrain.report.csv_table import write_table
from dltrain.report.plots import DPI, _save

#: Above this many labels the plot colours by label without a legend (it would hide the points).
LEGEND_LIMIT = 20


def latent_rows(codes: torch.Tensor, rows: Sequence[Any], labels: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One dict per example: ``row``, ``label`` (when ``labels`` is given), then ``z0 .. z<K-1>``.

    Args:
        codes: the latent codes ``(N, K)``.
        rows: each example's identifier, as ``predictions.csv`` names it.
        labels: each example's class name, or None for data without classes.
    """
    values = codes.detach().float().cpu().reshape(len(codes), -1).tolist()  # (N, K)
    out = []
    for i, code in enumerate(values):
        row: dict[str, Any] = {"row": rows[i]}
        if labels is not None:
            row["label"] = labels[i]
        row.update({f"z{j}": float(f"{v:.6g}") for j, v in enumerate(code)})
        out.append(row)
    return out


def write_latents(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write :func:`latent_rows` as a spreadsheet-safe CSV file, all at once."""
    with atomic_write(path, newline="") as f:
        write_table(f, rows)
    return Path(path)


class Projection(NamedTuple):
    """The codes drawn in 2-D.

    Attributes:
        points: ``(N, 2)``.
        axes: the two axes' names (``z0``, ``z1``, or ``PC1``, ``PC2``).
        how: what the points are, for the plot's title.
    """

    points: np.ndarray
    axes: tuple[str, str]
    how: str


def project_2d(codes: torch.Tensor) -> Projection:
    """The codes ``(N, K)`` in 2-D: themselves for K <= 2 (a zero second axis for K = 1), else
    their first two principal components, from the SVD of the centred codes (exact, not
    randomised: the same codes always give the same picture)."""
    z = codes.detach().double().cpu().reshape(len(codes), -1)  # (N, K)
    k = z.shape[1]
    if k <= 2:
        points = torch.cat([z, torch.zeros(len(z), 2 - k, dtype=z.dtype)], dim=1)
        return Projection(points.numpy(), ("z0", "z1" if k == 2 else "(none)"), f"the {k}-D codes themselves")
    centred = z - z.mean(dim=0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)  # rows of vh: the principal directions
    variance = s**2
    share = float(variance[:2].sum() / variance.sum()) if float(variance.sum()) > 0 else 0.0
    return Projection((centred @ vh[:2].T).numpy(), ("PC1", "PC2"),
                      f"first two principal components of the {k}-D codes (SVD; {share:.0%} of their variance)")


def latents_figure(codes: torch.Tensor, labels: Sequence[str] | None = None,
                   class_names: Sequence[str] | None = None, split: str = "test") -> Figure:
    """Draw the codes in 2-D (:func:`project_2d`), one colour per label when labels are given.

    Args:
        codes: the latent codes ``(N, K)``.
        labels: each example's class name, or None.
        class_names: the legend's order (every class of the data); defaults to the labels' own order.
        split: the split's name, for the title.

    Returns:
        The figure, not attached to any global state.
    """
    projection = project_2d(codes)
    fig = Figure(figsize=(6.4, 5.6), dpi=DPI)
    fig.subplots_adjust(left=0.12, right=0.78 if labels is not None else 0.96, bottom=0.1, top=0.88)
    ax = fig.add_subplot()
    x, y = projection.points[:, 0], projection.points[:, 1]
    size = 6 if len(x) > 2000 else 12
    if labels is None:
        ax.scatter(x, y, s=size, alpha=0.6, color="tab:blue", linewidths=0)
    else:
        names = list(dict.fromkeys([*(class_names or []), *labels]))
        colours = _colours(len(names))
        by_label = np.asarray(labels, dtype=object)
        for i, name in enumerate(names):
            chosen = by_label == name
            if chosen.any():
                ax.scatter(x[chosen], y[chosen], s=size, alpha=0.7, color=colours[i], linewidths=0, label=str(name))
        if len(names) <= LEGEND_LIMIT:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", markerscale=2, frameon=False,
                      title="label")
    ax.set_xlabel(projection.axes[0])
    ax.set_ylabel(projection.axes[1])
    ax.grid(alpha=0.3)
    fig.suptitle(f"latent codes of the {len(x)} {split} examples:\n{projection.how}", fontsize="medium")
    return fig


def _colours(n: int) -> list[Any]:
    """``n`` distinct colours: tab10 up to 10, tab20 up to 20, else a continuous map."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["viridis"](i / max(1, n - 1)) for i in range(n)]


def plot_latents(codes: torch.Tensor, path: str | Path, labels: Sequence[str] | None = None,
                 class_names: Sequence[str] | None = None) -> Path:
    """Draw :func:`latents_figure` and save it as a PNG at ``path``, atomically; returns the path."""
    return _save(latents_figure(codes, labels, class_names), path)

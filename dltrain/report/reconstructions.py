"""``reconstructions.png``: a few test inputs, their noisy versions (when the autoencoder trains
to denoise) and the model's reconstructions, side by side. Images are shown as pixels, the
data's standardisation undone; the rows of a table are shown as a heatmap of their (standardised)
values, one panel per kind.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dltrain.report.plots import DPI, _save


def reconstructions_figure(panels: Sequence[tuple[str, torch.Tensor]], data: Any, captions: Sequence[str],
                           title: str) -> Figure:
    """Draw each panel's examples in a row (images) or as a heatmap (anything else).

    Args:
        panels: ``(name, batch)`` in the order drawn: ``input``, ``noisy input`` (denoising),
            ``reconstruction``; every batch ``(N, *input_shape)`` in the model's input space.
        data: the run's :class:`~dltrain.data.DataSplits` (its preprocessing turns images back
            into pixels), or None.
        captions: one per example (its row and label), under the inputs.
        title: the figure's title.

    Returns:
        The figure, not attached to any global state.
    """
    first = panels[0][1]
    if first.dim() == 4:
        from dltrain.report.report_plots import GRID_COLUMNS, display_images, image_grid_figure

        n = min(len(first), GRID_COLUMNS)
        images, labels = [], []
        for k, (name, batch) in enumerate(panels):  # one row of the grid per panel, padded with white
            pixels = display_images(batch[:n], data)  # (n, C, H, W) in [0, 1]
            images += [pixels, torch.ones(GRID_COLUMNS - n, *pixels.shape[1:])]
            labels += [f"{name}\n{captions[i]}" if k == 0 else name for i in range(n)] + [""] * (GRID_COLUMNS - n)
        return image_grid_figure(torch.cat(images), labels, title)
    return _heatmaps(panels, captions, title)


def _heatmaps(panels: Sequence[tuple[str, torch.Tensor]], captions: Sequence[str], title: str) -> Figure:
    """One heatmap per panel: the examples as rows, the features as columns, on one colour scale."""
    values = [batch.detach().float().cpu().reshape(len(batch), -1).numpy() for _, batch in panels]  # (N, F) each
    bound = max(float(np.abs(v).max(initial=0.0)) for v in values) or 1.0
    n, features = values[0].shape
    width = min(14.0, 2.0 + len(panels) * max(2.5, 0.18 * features))
    fig = Figure(figsize=(width, 1.6 + 0.3 * n), dpi=DPI)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    fig.subplots_adjust(left=0.12, right=0.9, bottom=0.15, top=0.8, wspace=0.1)
    image = None
    for k, (ax, (name, _), v) in enumerate(zip(axes, panels, values, strict=True)):
        image = ax.imshow(v, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto", interpolation="nearest")
        ax.set_title(name, fontsize="small")
        ax.set_xlabel("feature (standardised)", fontsize="small")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # features are columns: whole numbers
        ax.set_yticks(range(n))
        ax.set_yticklabels([str(c) for c in captions] if k == 0 else [], fontsize="x-small")
    fig.colorbar(image, ax=list(axes), fraction=0.03)
    fig.suptitle(textwrap.fill(title, int(width * 9)), fontsize="medium")  # about 9 characters an inch
    return fig


def plot_reconstructions(panels: Sequence[tuple[str, torch.Tensor]], data: Any, captions: Sequence[str],
                         path: str | Path, title: str) -> Path:
    """Draw :func:`reconstructions_figure` and save it as a PNG at ``path``, atomically; returns the path."""
    return _save(reconstructions_figure(panels, data, captions, title), path)

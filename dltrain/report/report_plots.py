"""The pictures of a run's report: confusion matrix, ROC and precision-recall curves, predicted
against true values, and grids of images with captions (matplotlib, drawn headless).

Each picture is a ``*_figure`` function, which tests inspect, and a ``plot_*`` function that
saves it as a PNG, atomically.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dltrain.report.plots import DPI, _save, _short

#: Cell numbers are drawn up to this many classes; beyond it they no longer fit in a cell.
MAX_ANNOTATED_CLASSES = 20
#: Class names are drawn on the axes up to this many classes; beyond it they overlap, and the
#: axes show class indices instead.
MAX_NAMED_CLASSES = 100
#: Class names longer than this are shortened on the axes (with an ellipsis).
NAME_LIMIT = 14
#: Images per row of a grid.
GRID_COLUMNS = 8
_WRONG_COLOR, _RIGHT_COLOR = "red", "black"
_TILE_INCHES = 1.15  # width of one image of a grid
_TITLE_INCHES = 0.45


def confusion_figure(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> Figure:
    """Draw a confusion matrix twice: as counts, and normalised by row (each true class sums to 1,
    so the diagonal holds each class's recall).

    Args:
        matrix: ``(K, K)`` counts, rows the true classes, columns the predicted ones.
        class_names: the ``K`` class names, shortened on the axes when long.

    Returns:
        The figure, not attached to any global state.

    Raises:
        ValueError: ``matrix`` is not square, or not as wide as ``class_names``.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    k = len(class_names)
    if counts.ndim != 2 or counts.shape != (k, k):
        raise ValueError(f"the confusion matrix has shape {counts.shape}, not ({k}, {k}) for {k} class names")
    totals = counts.sum(axis=1, keepdims=True)  # (K, 1): examples of each true class
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)  # a class never seen: zeros

    names = tick_names(class_names) if k <= MAX_NAMED_CLASSES else None
    fig, axes = _matrix_axes(k, names)
    _draw_matrix(*axes[0], counts, names, vmax=max(int(counts.max(initial=0)), 1), label=str, title="counts")
    _draw_matrix(*axes[1], shares, names, vmax=1.0, label=_share if k <= 10 else _short_share,
                 title="normalised by true class (recall on diagonal)")
    unnamed = "" if names is not None else " (axes: class index; names in summary.json)"
    fig.suptitle(f"confusion matrix: {int(counts.sum())} examples, {k} classes{unnamed}")
    return fig


def _matrix_axes(k: int, names: list[str] | None) -> tuple[Figure, list[tuple[Axes, Axes]]]:
    """A figure with two square panels, each with its colour bar's axes, the margins fixed in inches from
    the tick labels' size (a layout engine would double the time every run spends drawing it)."""
    side = _side(k)
    size, rotate = _tick_style(k, names)
    label = 0.3 if names is None else 0.1 + max(map(len, names)) * size * 0.62 / 72  # the longest tick label
    left, bottom = label + 0.45, (label if rotate else 0.3) + 0.45  # and the axis label beyond it
    bar, gap, bar_labels, top = 0.15, 0.12, 0.5, 0.8  # colour bar, its tick labels; panel and figure titles
    panel = left + side + gap + bar + bar_labels
    width, height = math.ceil(20 * panel) / 10, math.ceil(10 * (bottom + side + top)) / 10  # whole pixels
    fig = Figure(figsize=(width, height), dpi=DPI)
    axes = []
    for i in range(2):
        x = i * width / 2 + left
        ax = fig.add_axes((x / width, bottom / height, side / width, side / height))
        cax = fig.add_axes(((x + side + gap) / width, bottom / height, bar / width, side / height),
                           label="<colorbar>")
        axes.append((ax, cax))
    return fig, axes


def _side(k: int) -> float:
    """A panel's side in inches: it grows with the classes, to a page's width."""
    return min(max(3.2, 1.2 + 0.15 * k), 8.0)


def _tick_style(k: int, names: list[str] | None) -> tuple[float, bool]:
    """The tick labels' font size (as large as a row's height allows, 5 to 9 points) and
    whether the predicted classes' stand upright."""
    size = round(min(9.0, max(5.0, 0.55 * _side(k) * 72 / k)), 1)
    return size, names is not None and (k > 10 or max(map(len, names)) * k > 60)  # long or many names


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path) -> Path:
    """Draw :func:`confusion_figure` and save it as a PNG at ``path``, atomically; returns the path."""
    return _save(confusion_figure(matrix, class_names), path)


def tick_names(class_names: Sequence[str], limit: int = NAME_LIMIT) -> list[str]:
    """The class names as the axes show them: shortened by their middle to ``limit`` characters,
    and led by their index when shortening leaves two alike."""
    names = [_middle(str(name), limit) for name in class_names]
    if len(set(names)) < len(names):
        names = [f"{i}:{_middle(str(name), limit - len(str(i)) - 1)}" for i, name in enumerate(class_names)]
    return names


def _share(value: float) -> str:
    return f"{value:.2f}"


def _short_share(value: float) -> str:
    """A share in at most three characters (``.37``), for the narrow cells of many classes."""
    if value >= 0.995 or value == 0:
        return f"{value:.0f}"
    return f"{value:.2f}".lstrip("0")


def _middle(name: str, limit: int) -> str:
    """``name`` shortened to ``limit`` characters by its middle: names that share a prefix or a
    suffix (``class_1_dog``, ``class_2_dog``) stay told apart."""
    if len(name) <= limit:
        return name
    head = (limit - 1) // 2
    return f"{name[:head]}…{name[-(limit - 1 - head):]}"


def _draw_matrix(ax: Axes, cax: Axes, values: np.ndarray, names: list[str] | None, *, vmax: float,
                 label: Callable[[Any], str], title: str) -> None:
    k = len(values)
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax, interpolation="nearest", aspect="auto")
    ax.figure.colorbar(image, cax=cax)
    size, rotate = _tick_style(k, names)
    if names is not None:
        ax.set_xticks(range(k), labels=names, fontsize=size, rotation=90 if rotate else 0)
        ax.set_yticks(range(k), labels=names, fontsize=size)
    else:  # too many names to read: a few class indices, as matplotlib places them
        ax.tick_params(labelsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize="medium")
    if k > MAX_ANNOTATED_CLASSES:
        return
    for (row, col), value in np.ndenumerate(values):
        text = label(value)
        if float(text) == 0:  # empty cells read faster (and each number drawn costs time in every run)
            continue
        # dark text on light cells, light on dark ones
        ax.text(col, row, text, ha="center", va="center", fontsize=size,
                color="white" if value > vmax / 2 else "black")


def roc_pr_figure(fpr: Sequence[float], tpr: Sequence[float], roc_auc: float, recall: Sequence[float],
                  precision: Sequence[float], average_precision: float, positive: str,
                  positive_rate: float | None = None) -> Figure:
    """Draw a binary classifier's ROC curve (with the chance diagonal) and its precision-recall
    curve (with the positive rate, the precision of guessing), their areas in the legends.

    Args:
        fpr, tpr: the ROC curve's points.
        roc_auc: the area under it.
        recall, precision: the precision-recall curve's points.
        average_precision: the area under it, as average precision.
        positive: the positive class's name.
        positive_rate: the share of positives; None: the precision where recall is highest
            (every example called positive), which a full curve includes.

    Returns:
        The figure, not attached to any global state.
    """
    fig = _two_panels(4.6)
    roc, pr = fig.subplots(1, 2)
    roc.plot(fpr, tpr, color="tab:blue", linewidth=1.8, label=f"ROC (AUC = {roc_auc:.3f})")
    roc.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1, label="chance (AUC = 0.5)")
    roc.set_xlabel("false positive rate")
    roc.set_ylabel("true positive rate (recall)")
    roc.set_title(f"ROC curve: AUC = {roc_auc:.3f}", fontsize="medium")

    if positive_rate is None:
        r, p = np.asarray(recall, dtype=float), np.asarray(precision, dtype=float)
        positive_rate = float(p[r == r.max()].min()) if len(r) else math.nan
    pr.step(recall, precision, where="post", color="tab:orange", linewidth=1.8,
            label=f"precision-recall (AP = {average_precision:.3f})")
    pr.axhline(positive_rate, color="0.5", linestyle="--", linewidth=1,
               label=f"chance (positive rate {positive_rate:.2f})")
    pr.set_xlabel("recall")
    pr.set_ylabel("precision")
    pr.set_title(f"precision-recall: AP = {average_precision:.3f}", fontsize="medium")
    for ax in (roc, pr):
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="lower right" if ax is roc else "lower left")
    fig.suptitle(f"positive class: {positive}")
    return fig


def _two_panels(height: float, width: float = 9.6) -> Figure:
    """A figure for two panels side by side, its margins fixed in inches for tick and axis labels
    and titles (a layout engine would double the time every run spends drawing it)."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.2 / width, bottom=0.6 / height, top=1 - 0.75 / height,
                        wspace=0.3)
    return fig


def plot_roc_pr(fpr: Sequence[float], tpr: Sequence[float], roc_auc: float, recall: Sequence[float],
                precision: Sequence[float], average_precision: float, path: str | Path, positive: str,
                positive_rate: float | None = None) -> Path:
    """Draw :func:`roc_pr_figure` and save it as a PNG at ``path``, atomically; returns the path."""
    fig = roc_pr_figure(fpr, tpr, roc_auc, recall, precision, average_precision, positive, positive_rate)
    return _save(fig, path)


def regression_figure(truth: Any, prediction: Any, target: str) -> Figure:
    """Draw predictions against the true values (on the line y = x when exact) and the residuals
    (prediction - truth) against the predictions (a pattern around zero is what the model missed).

    Args:
        truth, prediction: the values, in the target's units; several target columns are drawn together.
        target: the target's name, for the axes.

    Returns:
        The figure, not attached to any global state.

    Raises:
        ValueError: ``truth`` and ``prediction`` differ in size.
    """
    y = np.asarray(truth, dtype=float).ravel()
    p = np.asarray(prediction, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{y.size} true values but {p.size} predictions")
    finite = np.isfinite(y) & np.isfinite(p)
    y, p = y[finite], p[finite]
    residual = p - y
    alpha = 0.8 if len(y) <= 200 else max(0.15, 0.8 * math.sqrt(200 / len(y)))  # dense clouds stay readable
    fig = _two_panels(4.4)
    scatter, residuals = fig.subplots(1, 2)
    scatter.scatter(y, p, s=12, alpha=alpha, color="tab:blue", edgecolors="none")
    low, high = (float(min(y.min(), p.min())), float(max(y.max(), p.max()))) if len(y) else (0.0, 1.0)
    scatter.plot([low, high], [low, high], color="0.3", linestyle="--", linewidth=1, label="y = x (exact)")
    scatter.set_xlabel(f"true {target}")
    scatter.set_ylabel(f"predicted {target}")
    scatter.set_title("predicted vs true", fontsize="medium")
    scatter.legend(fontsize="small", loc="upper left")  # a fixed place: "best" searches every point
    residuals.scatter(p, residual, s=12, alpha=alpha, color="tab:orange", edgecolors="none")
    residuals.axhline(0, color="0.3", linestyle="--", linewidth=1, label="zero residual")
    residuals.set_xlabel(f"predicted {target}")
    residuals.set_ylabel("residual (predicted - true)")
    residuals.set_title("residuals", fontsize="medium")
    residuals.legend(fontsize="small", loc="upper right")
    for ax in (scatter, residuals):
        ax.grid(alpha=0.3)
    dropped = int((~finite).sum())
    fig.suptitle(f"{target}: {len(y)} examples" + (f" ({dropped} non-finite left out)" if dropped else ""))
    return fig


def plot_regression(truth: Any, prediction: Any, path: str | Path, target: str) -> Path:
    """Draw :func:`regression_figure` and save it as a PNG at ``path``, atomically; returns the path."""
    return _save(regression_figure(truth, prediction, target), path)


def image_grid_figure(images: torch.Tensor, captions: Sequence[str], title: str,
                      wrong: Sequence[bool] | None = None) -> Figure:
    """Draw images in rows of :data:`GRID_COLUMNS`, each with its caption under it.

    The images are laid out as one mosaic in one axes: one image to draw, not one per example.

    Args:
        images: ``(N, C, H, W)`` floats in [0, 1] (clipped to it): one channel in gray, three as
            RGB, any other number by their first channel, in gray.
        captions: one per image; a line break makes a second line.
        title: the figure's title.
        wrong: per image, True to write its caption in red (a wrong prediction).

    Returns:
        The figure, not attached to any global state.

    Raises:
        ValueError: ``images`` is not a batch of images, or the captions (or ``wrong``) do not
            match it in number.
    """
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(f"expected a non-empty batch of images (N, C, H, W), got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    if len(captions) != n or (wrong is not None and len(wrong) != n):
        raise ValueError(f"{n} images but {len(captions)} captions" +
                         (f" and {len(wrong)} wrong flags" if wrong is not None else ""))
    pixels = images.detach().float().cpu().clamp(0, 1)
    pixels = pixels if c == 3 else pixels[:, :1]
    columns = min(GRID_COLUMNS, n)
    rows = math.ceil(n / columns)
    lines = max(str(caption).count("\n") + 1 for caption in captions)
    scale = w / _TILE_INCHES  # image pixels per inch
    gap_x = max(1, round(0.12 * scale))  # between images
    gap_y = max(1, round((0.1 + 0.17 * lines) * scale))  # under each image: its caption
    mosaic = np.ones((rows * (h + gap_y), columns * (w + gap_x), pixels.shape[1]))  # white between images
    for i, image in enumerate(pixels.numpy()):  # (C, H, W)
        top, left = (i // columns) * (h + gap_y), (i % columns) * (w + gap_x) + gap_x // 2
        mosaic[top:top + h, left:left + w] = image.transpose(1, 2, 0)

    width, height = mosaic.shape[1] / scale, mosaic.shape[0] / scale
    fig = Figure(figsize=(width, height + _TITLE_INCHES), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, height / (height + _TITLE_INCHES)))
    if mosaic.shape[2] == 1:
        ax.imshow(mosaic[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    else:
        ax.imshow(mosaic, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    size = 8 if lines == 1 else 7
    for i, caption in enumerate(captions):
        x = (i % columns) * (w + gap_x) + gap_x // 2 + (w - 1) / 2
        y = (i // columns) * (h + gap_y) + h + 0.03 * scale
        color = _WRONG_COLOR if wrong is not None and wrong[i] else _RIGHT_COLOR
        ax.text(x, y, _short(str(caption), 40), ha="center", va="top", fontsize=size, color=color)
    fig.suptitle(title, y=1 - 0.08 / (height + _TITLE_INCHES), va="top", fontsize="medium")
    return fig


def plot_image_grid(images: torch.Tensor, captions: Sequence[str], path: str | Path, title: str,
                    wrong: Sequence[bool] | None = None) -> Path:
    """Draw :func:`image_grid_figure` and save it as a PNG at ``path``, atomically; returns the path."""
    return _save(image_grid_figure(images, captions, title, wrong), path)


def display_images(x: torch.Tensor, data: Any) -> torch.Tensor:
    """A batch of model inputs ``(N, C, H, W)`` as pixels in [0, 1] to show: the data's fitted
    preprocessing undone (its recorded normalisation; grayscale repeated to several channels
    comes back as one), or, for data without one, each image scaled from its own minimum to
    its maximum.

    Args:
        x: model inputs, standardised as training standardises them (on any device).
        data: the :class:`~dltrain.data.DataSplits` they come from (anything with a
            ``preprocessing`` that can turn inputs back into ``pixels``), or None.

    Returns:
        float32 ``(N, C', H, W)`` on the CPU, clipped to [0, 1].
    """
    x = x.detach().float().cpu()
    undo = getattr(getattr(data, "preprocessing", None), "pixels", None)
    if undo is not None:
        return undo(x).clamp(0, 1)
    flat = x.reshape(len(x), -1)  # (N, C * H * W)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    span = torch.where(high > low, high - low, torch.ones_like(high))  # a constant image comes out black
    return ((x - low[:, None, None, None]) / span[:, None, None, None]).clamp(0, 1)

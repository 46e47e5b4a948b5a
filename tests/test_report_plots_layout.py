"""The report's pictures are laid out with fixed margins (no layout engine), a confusion matrix of
many classes shows class indices instead of names that would overlap, and gradients.png's
legends sit under the panels, where they hide no line."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from dltrain.report.diagnostics_plot import gradients_figure
from dltrain.report.report_plots import MAX_NAMED_CLASSES, confusion_figure, regression_figure, roc_pr_figure
from tests.test_report_plots import confusion, panels


def _rows(layers: int, epochs: int = 4) -> list[dict[str, str]]:
    """diagnostics.csv rows of ``layers`` Linear layers whose gradients keep growing."""
    return [{"epoch": str(e), "layer": f"fc{i}", "kind": "Linear", "grad_norm": str(10.0 ** (e + i)),
             "update_ratio": str(1e-3 * e)} for e in range(1, epochs + 1) for i in range(layers)]


def test_no_picture_uses_a_layout_engine():
    figures = [confusion_figure(confusion(10), [str(i) for i in range(10)]), gradients_figure(_rows(3)),
               roc_pr_figure([0, 1], [0, 1], 0.5, [1, 0], [0.5, 1], 0.5, positive="x"),
               regression_figure(np.arange(5.0), np.arange(5.0), target="y")]
    assert all(fig.get_layout_engine() is None for fig in figures)


def test_many_classes_show_class_indices_not_their_names():
    k = MAX_NAMED_CLASSES + 1
    fig = confusion_figure(confusion(k), [f"class_{i}" for i in range(k)])
    FigureCanvasAgg(fig).draw()
    for ax in panels(fig):
        shown = [t.get_text() for t in ax.get_xticklabels() if -0.5 <= t.get_position()[0] <= k - 0.5]
        assert 0 < len(shown) < 12 and all(text.isdigit() for text in shown)  # a few indices
        assert not ax.texts
    assert "class index" in fig.get_suptitle()
    named = panels(confusion_figure(confusion(MAX_NAMED_CLASSES), [f"c{i}" for i in range(MAX_NAMED_CLASSES)]))
    assert [t.get_text() for t in named[0].get_yticklabels()][:2] == ["c0", "c1"]


def test_gradient_legends_sit_under_the_panels():
    fig = gradients_figure(_rows(9))
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend().get_window_extent(renderer)
        assert legend.y1 < ax.get_window_extent(renderer).y0  # below the data, none of it hidden
        assert legend.y0 >= 0  # and inside the picture
    log_panels = [ax for ax in fig.axes if ax.get_yscale() == "log"]
    labels = [t.get_text() for ax in log_panels for t in ax.get_yticklabels(minor=True) + ax.get_yticklabels()]
    assert log_panels and any(labels) and not any("$" in text for text in labels)  # plain text, no math text

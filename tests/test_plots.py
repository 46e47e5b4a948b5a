"""curves.png and sweep.png: what the figures show, and that they are saved as real PNGs."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from PIL import Image, ImageStat

from dltrain.report.plots import curves_figure, plot_curves, plot_sweep, sweep_figure


def history(epochs: int = 6, *, accuracy: bool = True, lrs: list[float] | None = None) -> list[dict[str, Any]]:
    """Rows as metrics.csv holds them: falling losses, rising accuracies."""
    rows = []
    for e in range(1, epochs + 1):
        row: dict[str, Any] = {"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.2 / e + 0.01 * e}
        if accuracy:
            row |= {"train_accuracy": 1 - 0.5 / e, "val_accuracy": 1 - 0.6 / e}
        row |= {"lr": lrs[e - 1] if lrs else 1e-3, "epoch_seconds": 0.04}
        rows.append(row)
    return rows


def legend_texts(fig: Figure) -> list[str]:
    texts = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    return texts + [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def line(ax, label: str):
    return next(ln for ln in ax.get_lines() if ln.get_label() == label)


def assert_png(path: Path) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.width > 0 and img.height > 0
        assert ImageStat.Stat(img.convert("L")).var[0] > 0  # something was drawn
    assert 0 < path.stat().st_size < 150_000
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left beside it


def test_plot_curves_writes_a_png_atomically(tmp_path):
    path = tmp_path / "curves.png"
    assert plot_curves(history(), path, monitor="val_accuracy", best_epoch=3) == path
    assert_png(path)


def test_classification_has_loss_metric_and_lr_panels():
    fig = curves_figure(history(), monitor="val_accuracy")
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy", "learning rate"]
    assert {ln.get_label() for ln in fig.axes[1].get_lines()} == {"train_accuracy", "val_accuracy"}


def test_regression_with_only_losses_has_two_panels():
    fig = curves_figure(history(accuracy=False), monitor="val_loss")
    assert [ax.get_title() for ax in fig.axes] == ["loss", "learning rate"]


def test_a_monitored_loss_puts_the_first_validation_metric_on_the_second_panel():
    rows = [{**r, "val_f1": 0.5, "train_f1": 0.4} for r in history(accuracy=False)]
    fig = curves_figure(rows, monitor="val_loss", best_epoch=2)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "f1", "learning rate"]
    star = [ln for ln in fig.axes[0].get_lines() if ln.get_marker() == "*"]  # on the val_loss curve
    assert len(star) == 1 and list(star[0].get_ydata()) == pytest.approx([2.2 / 2 + 0.02])


def test_best_epoch_and_early_stop_are_marked():
    fig = curves_figure(history(), monitor="val_accuracy", best_epoch=3, stopped_epoch=5, status="early_stopped")
    texts = legend_texts(fig)
    assert "best epoch 3" in texts and "early stop (epoch 5)" in texts
    for ax in fig.axes:  # the lines are drawn on every panel
        styles = {(ln.get_linestyle(), tuple(ln.get_xdata())) for ln in ax.get_lines()}
        assert ("--", (3, 3)) in styles and (":", (5, 5)) in styles
    star = [ln for ln in fig.axes[1].get_lines() if ln.get_marker() == "*"]
    assert len(star) == 1
    assert (list(star[0].get_xdata()), list(star[0].get_ydata())) == ([3], pytest.approx([1 - 0.6 / 3]))


@pytest.mark.parametrize(("status", "text"), [("diverged", "diverged (epoch 4)"),
                                              ("interrupted", "interrupted (epoch 4)")])
def test_other_stops_are_named(status, text):
    assert text in legend_texts(curves_figure(history(), monitor="val_accuracy", stopped_epoch=4, status=status))


def test_a_completed_run_has_no_stop_marker():
    fig = curves_figure(history(), monitor="val_accuracy", best_epoch=6, stopped_epoch=6, status="completed")
    assert legend_texts(fig).count("best epoch 6") == 1
    assert not [t for t in legend_texts(fig) if "(epoch" in t]
    assert not [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_linestyle() == ":"]


def test_a_single_epoch_still_plots(tmp_path):
    fig = curves_figure(history(1), monitor="val_accuracy", best_epoch=1)
    assert len(fig.axes) == 3
    assert line(fig.axes[0], "val_loss").get_marker() == "o"  # one point, visible without a line
    assert_png(plot_curves(history(1), tmp_path / "curves.png", monitor="val_accuracy", best_epoch=1))


def test_a_diverged_history_leaves_gaps(tmp_path):
    rows = history(4)
    rows[2] |= {"train_loss": float("nan"), "val_loss": float("inf"), "val_accuracy": None}
    rows[3] |= {"train_loss": None, "val_loss": float("nan"), "train_accuracy": float("-inf"), "val_accuracy": None}
    fig = curves_figure(rows, monitor="val_accuracy", stopped_epoch=4, status="diverged")
    val_loss = line(fig.axes[0], "val_loss").get_ydata()
    assert math.isfinite(val_loss[1]) and math.isnan(val_loss[2]) and math.isnan(val_loss[3])
    assert_png(plot_curves(rows, tmp_path / "curves.png", monitor="val_accuracy", stopped_epoch=4,
                           status="diverged"))


def test_a_history_with_no_finite_value_still_plots(tmp_path):
    rows = [{"epoch": 1, "train_loss": float("nan"), "val_loss": None}]
    assert len(curves_figure(rows, monitor="val_loss").axes) == 1
    assert_png(plot_curves(rows, tmp_path / "curves.png", monitor="val_loss", stopped_epoch=1, status="diverged"))


def test_rows_read_back_from_csv_plot_as_numbers(tmp_path):
    rows = history(3)
    rows[1]["val_accuracy"] = None  # written as ""
    with (tmp_path / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with (tmp_path / "metrics.csv").open() as f:
        read = list(csv.DictReader(f))
    assert read[0]["epoch"] == "1" and read[1]["val_accuracy"] == ""
    fig = curves_figure(read, monitor="val_accuracy", best_epoch=3)
    assert len(fig.axes) == 3
    assert list(line(fig.axes[0], "train_loss").get_xdata()) == [1.0, 2.0, 3.0]
    assert list(line(fig.axes[0], "train_loss").get_ydata()) == pytest.approx([2.0, 1.0, 2.0 / 3])
    assert math.isnan(line(fig.axes[1], "val_accuracy").get_ydata()[1])


def test_lr_axis_is_logarithmic_only_when_it_spans_a_decade():
    decayed = curves_figure(history(3, lrs=[1e-1, 1e-2, 1e-3]), monitor="val_accuracy")
    assert decayed.axes[2].get_yscale() == "log"
    constant = curves_figure(history(3, lrs=[1e-3, 1e-3, 5e-4]), monitor="val_accuracy")
    assert constant.axes[2].get_yscale() == "linear"


def test_empty_inputs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no epochs to plot"):
        curves_figure([], monitor="val_loss")
    with pytest.raises(ValueError, match="no jobs to plot"):
        plot_sweep([], tmp_path / "sweep.png", monitor="val_loss", mode="min", params=["lr"])
    assert not list(tmp_path.iterdir())


def job(n: int, status: str, best: float | None, **params: Any) -> dict[str, Any]:
    return {"job": n, "status": status, "best_value": best, **params}


LR_SWEEP = [job(0, "completed", 0.9, lr="1e-4"), job(1, "completed", 0.5, lr="1e-3"),
            job(2, "early_stopped", 0.3, lr="0.01"), job(3, "diverged", None, lr="1e-1")]


def test_plot_sweep_writes_a_png_atomically(tmp_path):
    path = tmp_path / "sweep.png"
    assert plot_sweep(LR_SWEEP, path, monitor="val_loss", mode="min", params=["lr"]) == path
    assert_png(path)


def test_one_numeric_param_gets_a_sorted_log_axis():
    rows = [LR_SWEEP[2], LR_SWEEP[0], LR_SWEEP[1], job(4, "completed", 0.7, lr="0.1")]
    fig = sweep_figure(rows, monitor="val_loss", mode="min", params=["lr"])
    assert len(fig.axes) == 2
    ax = fig.axes[1]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "lr"
    curve = next(ln for ln in ax.get_lines() if ln.get_marker() == "o")
    assert list(curve.get_xdata()) == [1e-4, 1e-3, 1e-2, 1e-1]
    assert list(curve.get_ydata()) == [0.9, 0.5, 0.3, 0.7]
    assert fig.get_suptitle() == "sweep: best val_loss per job (min)"


def test_categorical_param_keeps_the_order_typed():
    rows = [job(0, "completed", 0.8, optimizer="sgd"), job(1, "completed", 0.9, optimizer="adam"),
            job(2, "completed", 0.7, optimizer="sgd")]
    ax = sweep_figure(rows, monitor="val_accuracy", mode="max", params=["optimizer"]).axes[1]
    assert ax.get_xscale() == "linear"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sgd", "adam"]


def test_two_params_get_one_line_per_value_of_the_second():
    rows = [job(i, "completed", 0.1 * (i + 1), lr=lr, batch_size=bs)
            for i, (lr, bs) in enumerate([("0.01", "32"), ("0.1", "32"), ("0.01", "64"), ("0.1", "64")])]
    fig = sweep_figure(rows, monitor="val_loss", mode="min", params=["lr", "batch_size"])
    assert len(fig.axes) == 2
    assert sorted(t.get_text() for t in fig.axes[1].get_legend().get_texts()) == ["batch_size=32", "batch_size=64"]
    assert list(line(fig.axes[1], "batch_size=32").get_ydata()) == pytest.approx([0.1, 0.2])
    assert list(line(fig.axes[1], "batch_size=64").get_ydata()) == pytest.approx([0.3, 0.4])
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks[0] == "0\n0.01, 32"


@pytest.mark.parametrize("params", [[], ["a", "b", "c"]])
def test_no_or_many_params_show_the_jobs_only(params):
    rows = [job(i, "completed", 1.0 + i, a="1", b="2", c="3") for i in range(3)]
    assert len(sweep_figure(rows, monitor="val_loss", mode="min", params=params).axes) == 1


def test_a_sweep_where_every_job_failed(tmp_path):
    rows = [job(0, "failed", None, lr="0.1"), job(1, "diverged", float("nan"), lr="1.0")]
    fig = sweep_figure(rows, monitor="val_loss", mode="min", params=["lr"])
    assert len(fig.axes) == 1
    assert not fig.axes[0].patches  # no bars
    assert "failed" in legend_texts(fig)
    assert_png(plot_sweep(rows, tmp_path / "sweep.png", monitor="val_loss", mode="min", params=["lr"]))


def test_failed_jobs_are_crossed_out_not_barred():
    rows = [*LR_SWEEP, job(4, "completed", float("inf"), lr="0.5"), job(5, "missing", None, lr="0.2")]
    fig = sweep_figure(rows, monitor="val_loss", mode="min", params=["lr"])
    ax = fig.axes[0]
    assert "failed" in legend_texts(fig)
    assert list(line(ax, "failed").get_xdata()) == [3, 4, 5]
    assert sorted(bar.get_x() + bar.get_width() / 2 for bar in ax.patches) == pytest.approx([0, 1, 2])
    curve = next(ln for ln in fig.axes[1].get_lines() if ln.get_marker() == "o")
    assert list(curve.get_ydata()) == [0.9, 0.5, 0.3]  # the failed jobs are left out of panel 2


@pytest.mark.parametrize(("mode", "best"), [("min", 0.2), ("max", 0.8)])
def test_the_best_job_is_highlighted(mode, best):
    # the failed job's value would win either way: it must not count
    rows = [job(0, "completed", 0.5, lr="0.1"), job(1, "already_finished", 0.8, lr="0.2"),
            job(2, "early_stopped", 0.2, lr="0.3"), job(3, "interrupted", 0.5 if mode == "min" else 0.9, lr="0.4"),
            job(4, "diverged", 0.0 if mode == "min" else 1.0, lr="0.5")]
    ax = sweep_figure(rows, monitor="val_metric", mode=mode, params=["lr"]).axes[0]
    colors = [to_rgba(bar.get_facecolor()) for bar in ax.patches]
    assert len(colors) == 3
    odd = [bar for bar, c in zip(ax.patches, colors, strict=True) if colors.count(c) == 1]
    assert len(odd) == 1 and odd[0].get_height() == best
    assert f"best: job {[r['job'] for r in rows if r['best_value'] == best][0]}" in legend_texts(ax.figure)


def test_a_single_job_sweep(tmp_path):
    rows = [job(0, "completed", 0.42, lr="0.01")]
    fig = sweep_figure(rows, monitor="val_loss", mode="min", params=["lr"])
    assert len(fig.axes) == 2 and len(fig.axes[0].patches) == 1
    assert_png(plot_sweep(rows, tmp_path / "sweep.png", monitor="val_loss", mode="min", params=["lr"]))


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode"):
        sweep_figure(LR_SWEEP, monitor="val_loss", mode="best", params=["lr"])

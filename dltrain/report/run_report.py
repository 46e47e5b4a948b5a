"""The report a run writes after its test evaluation, and ``dltrain-eval`` for any checkpoint
and split: the numbers (``summary.json``'s ``report``, ``eval.json``'s), ``worst_predictions.csv``
and the pictures (:mod:`dltrain.report.report_plots`), and its lines on the console.

A report is never worth the run: a failure to write it, or to draw one of its pictures, is
a warning, and the run's results stand.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dltrain.errors import first_line
from dltrain.files import atomic_write
from dltrain.report.classification import (
    binary_curves,
    classification_report,
    confusion_matrix,
    example_losses,
    multilabel_report,
    positive_scores,
    predicted_classes,
    worst,
)
from dltrain.report.regression import regression_report, target_units
from dltrain.report.tables import SplitOutputs, write_table

if TYPE_CHECKING:
    from rich.console import Console
    from torch.utils.data import Dataset

    from dltrain.data import DataSplits

log = logging.getLogger("dltrain")

#: Every file a report may write, in the order they are named.
REPORT_FILES = ("confusion_matrix.png", "worst_predictions.csv", "worst_predictions.png", "roc_pr.png",
                "regression.png")
#: How many of the worst predictions worst_predictions.png shows.
GRID = 16
#: Above this many classes the console shows only the worst ones by F1.
CONSOLE_CLASSES = 20


def write_report(folder: Path, split: SplitOutputs, data: DataSplits, inputs: torch.Tensor | Dataset | None = None,
                 name: str = "test", *, matrix: torch.Tensor | None = None) -> dict[str, Any] | None:
    """Write the report of ``split``'s outputs into ``folder`` and return its numbers.

    Args:
        folder: where its files go (the run directory).
        split: the outputs gathered on rank 0 (:func:`~dltrain.report.tables.write_test_predictions`).
        data: the run's data: its task, class names and target scale.
        inputs: the split's inputs (``data.x_test``), for the worst predictions' pictures of image data.
        name: the split's name (``test`` or ``val``), as the pictures and warnings say it.
        matrix: the outputs' confusion matrix when the caller has computed it
            (:func:`~dltrain.report.classification.confusion_matrix`); None: computed here.

    Returns:
        The numbers (per class, averages, most confused pairs, AUCs; or the regression's
        errors), or None when the report failed, which is then a warning.
    """
    try:
        if data.task == "regression":
            return _regression(folder, split, data)
        names = class_names(data)
        if data.task == "multilabel":
            return multilabel_report(split.outputs, split.targets, names)
        return _classes(folder, split, data, names, inputs, name, matrix)
    except Exception as err:  # noqa: BLE001 - the report is never worth the run's results
        log.warning("warning: could not write the report of the %s split: %s", name, first_line(err))
        return None


def class_names(data: DataSplits) -> list[str]:
    """The name of each class (or label), its index where the data names none."""
    names = list(data.class_names or [])
    return [str(names[i]) if i < len(names) else str(i) for i in range(data.num_outputs)]


def _classes(folder: Path, split: SplitOutputs, data: DataSplits, names: list[str],
             inputs: torch.Tensor | Dataset | None, split_name: str, matrix: torch.Tensor | None) -> dict[str, Any]:
    """Confusion matrix, per-class scores, the worst predictions, and for binary data the curves."""
    outputs, targets = split.outputs.cpu(), split.targets.long().cpu()
    predicted = predicted_classes(outputs)
    matrix = confusion_matrix(targets, predicted, len(names)) if matrix is None else matrix.cpu()
    report = classification_report(matrix, names)
    _draw(folder, "confusion_matrix.png", lambda plots, path: plots.plot_confusion_matrix(matrix.tolist(), names, path))
    losses = example_losses(outputs, targets)
    order = worst(losses.loss)
    rows = [{"rank": k + 1, "row": split.rows[i], "target": names[int(targets[i])],
             "prediction": names[int(predicted[i])], "confidence": round(float(losses.confidence[i]), 6),
             losses.name: round(float(losses.loss[i]), 6)} for k, i in enumerate(order.tolist())]
    with atomic_write(folder / "worst_predictions.csv", newline="") as f:
        write_table(f, rows)
    if data.task == "binary":
        curves = binary_curves(positive_scores(outputs), targets)
        if curves is not None:  # a split of one class has no curves
            report.update(positive=names[1], roc_auc=round(curves.roc_auc, 6),
                          average_precision=round(curves.average_precision, 6))
            _draw(folder, "roc_pr.png", lambda plots, path: plots.plot_roc_pr(
                curves.fpr, curves.tpr, curves.roc_auc, curves.recall, curves.precision, curves.average_precision,
                path, positive=names[1]))
    if inputs is not None and len(data.input_shape) == 3:  # (C, H, W): pictures to show
        shown = order[:GRID].tolist()
        _draw(folder, "worst_predictions.png", lambda plots, path: plots.plot_image_grid(
            plots.display_images(_examples(inputs, [split.positions[i] for i in shown]), data),
            [f"true {row['target']}\npred {row['prediction']} {row['confidence']:.0%}" for row in rows[:GRID]],
            path, f"worst {split_name} predictions (highest {losses.name.replace('_', '-')})",
            wrong=[row["target"] != row["prediction"] for row in rows[:GRID]]))
    return report


def _examples(inputs: torch.Tensor | Dataset, positions: list[int]) -> torch.Tensor:
    """The inputs at ``positions`` of a split, as one batch on the CPU."""
    if torch.is_tensor(inputs):
        return inputs[torch.tensor(positions, device=inputs.device)].cpu()
    return torch.stack([inputs[i][0] for i in positions]).cpu()


def _regression(folder: Path, split: SplitOutputs, data: DataSplits) -> dict[str, Any]:
    """Errors in the target's units, and the scatter and residuals of every value."""
    truth, prediction = (target_units(t, data.target_scale) for t in (split.targets, split.outputs))
    report = regression_report(truth, prediction)
    target = str(data.info.get("target") or "target")
    _draw(folder, "regression.png", lambda plots, path: plots.plot_regression(
        truth.flatten().numpy(), prediction.flatten().numpy(), path, target=target))
    return report


def _draw(folder: Path, name: str, draw: Callable[[Any, Path], Any]) -> None:
    """``draw(report_plots, folder / name)``: a picture is never worth the report, so a
    failure is one warning line."""
    try:
        from dltrain.report import report_plots  # matplotlib, only when a report is drawn

        draw(report_plots, folder / name)
    except Exception as err:  # noqa: BLE001 - a picture is never worth the run
        log.warning("warning: could not draw %s: %s", name, first_line(err))


def print_report(report: dict[str, Any] | None, split: str = "test", console: Console | None = None) -> None:
    """The report's lines after the results table: per-class scores (the worst classes by F1
    when there are many), the most confused pairs, the binary curves' areas, or a regression's errors."""
    if not report:
        return
    from rich.console import Console

    console = console or Console()
    if "per_class" in report:
        console.print(class_table(report, split))
    if report.get("most_confused"):
        pairs = ", ".join(f"{p['true']} -> {p['predicted']}: {p['count']} ({p['share']:.0%})"
                          for p in report["most_confused"])
        # soft_wrap: one line in a log, however many classes and however long their names
        console.print(f"most confused (true -> predicted: count, share of the true class): {pairs}", soft_wrap=True)
    if "roc_auc" in report:
        console.print(f"ROC AUC {report['roc_auc']:.4f}, average precision {report['average_precision']:.4f} "
                      f"(positive class: {report['positive']})")
    if "r2" in report:
        console.print(f"MAE {report['mae']:.4g}, RMSE {report['rmse']:.4g}, R² {report['r2']:.4f} ({split} split, "
                      "in the target's units)")


def class_table(report: dict[str, Any], split: str = "test") -> Any:
    """The per-class table: every class, or the :data:`CONSOLE_CLASSES` // 2 worst by F1 when
    there are more than :data:`CONSOLE_CLASSES`, then the averages."""
    from rich.table import Table

    per_class = report["per_class"]
    shown = list(per_class)
    caption = None
    if len(shown) > CONSOLE_CLASSES:
        shown = sorted(shown, key=lambda name: per_class[name]["f1"])[:CONSOLE_CLASSES // 2]
        caption = f"the {len(shown)} classes of lowest F1; {len(per_class) - len(shown)} more in summary.json"
    table = Table(title=f"per class ({split} split)", caption=caption, header_style="bold")
    table.add_column("class")
    for column in ("precision", "recall", "f1", "support"):
        table.add_column(column, justify="right")

    def add(name: str, row: dict[str, Any], **style: Any) -> None:
        table.add_row(name, *(f"{row[k]:.4f}" for k in ("precision", "recall", "f1")), str(row["support"]), **style)

    for i, name in enumerate(shown):
        add(name, per_class[name], end_section=i == len(shown) - 1)  # a rule before the averages
    add("macro avg", report["macro_avg"])
    add("weighted avg", report["weighted_avg"])
    return table

"""What a run leaves behind: metrics.csv, predictions.csv, versions for summary.json."""

from __future__ import annotations

import csv
import platform
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from dltrain.data.batches import shard_range
from dltrain.files import atomic_write
from dltrain.report.csv_table import FORMULA_START, spreadsheet_safe, write_table  # noqa: F401  (their old home)

if TYPE_CHECKING:
    from dltrain.data import DataSplits
    from dltrain.training.distributed import Ranks


class MetricsCSV:
    """``metrics.csv``: one row per epoch, flushed as it is written so a kill loses nothing.

    The columns are fixed by the first row; later rows may not add columns. ``rows`` keeps
    what was written (a diverged epoch's row too), for the run's ``curves.png``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.columns: list[str] | None = None
        self.rows: list[dict[str, Any]] = []

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(dict(row))
        new = self.columns is None
        if new:
            self.columns = list(row)
        with self.path.open("w" if new else "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(row.get(k)) for k in self.columns})


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries that decide a run's numbers."""
    out = {"python": platform.python_version()}
    for dist in ("dltrain", "torch", "torchvision", "hydra-core", "omegaconf", "numpy", "scikit-learn"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def prediction_rows(outputs: torch.Tensor, targets: torch.Tensor, task: str, class_names: list[str] | None,
                    target_scale: tuple[float, float] | None, row_ids: list[Any] | None = None,
                    ) -> list[dict[str, Any]]:
    """One row per example: the target and the prediction in the data's own terms.

    Classes are reported by name (``class_names``) with the model's confidence in the
    predicted class; multi-label predictions list the labels predicted, joined by ``|``;
    regression values are mapped back to the target's units with ``target_scale``.

    Args:
        outputs: the model's outputs ``(N, width)`` (logits, or log-probabilities for nll).
        targets: the split's targets, as in ``DataSplits``.
        task: the data's task.
        class_names: name of each class index (classification).
        target_scale: ``(mean, std)`` a regression target was standardised with.
        row_ids: an identifier of each example in its source (e.g. its row in a CSV file);
            defaults to the position in the split.
    """
    outputs, targets = outputs.float().cpu(), targets.cpu()
    n = len(targets)
    ids = row_ids if row_ids is not None else list(range(n))
    names = class_names or []

    def name(i: int) -> str:
        return names[i] if i < len(names) else str(i)

    if task in ("binary", "multiclass"):
        if outputs.shape[1] == 1:  # one binary logit (loss=bce)
            p1 = torch.sigmoid(outputs[:, 0])
            pred = (p1 > 0.5).long()
            conf = torch.where(pred == 1, p1, 1 - p1)
        else:  # softmax of logits; of log-probabilities too, since it is shift-invariant
            probs = torch.softmax(outputs, dim=1)
            conf, pred = probs.max(dim=1)
        return [{"row": ids[i], "target": name(int(targets[i])), "prediction": name(int(pred[i])),
                 "confidence": round(float(conf[i]), 6)} for i in range(n)]
    if task == "multilabel":
        on = outputs > 0
        return [{"row": ids[i], "target": "|".join(name(j) for j in range(on.shape[1]) if targets[i, j] > 0.5),
                 "prediction": "|".join(name(j) for j in range(on.shape[1]) if on[i, j])} for i in range(n)]
    mean, std = target_scale or (0.0, 1.0)
    values = outputs * std + mean  # (N, columns)
    truth = targets.reshape(n, -1).float() * std + mean
    if values.shape[1] == 1:
        return [{"row": ids[i], "target": float(f"{truth[i, 0]:.6g}"), "prediction": float(f"{values[i, 0]:.6g}")}
                for i in range(n)]
    rows = []
    for i in range(n):
        row: dict[str, Any] = {"row": ids[i]}
        for j in range(values.shape[1]):
            row[f"target_{j}"] = float(f"{truth[i, j]:.6g}")
            row[f"prediction_{j}"] = float(f"{values[i, j]:.6g}")
        rows.append(row)
    return rows


def write_predictions(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write prediction rows (see :func:`prediction_rows`) as a CSV file, all at once: a run
    stopped while writing it leaves no half a file."""
    if not rows:
        return
    with atomic_write(path, newline="") as f:
        write_table(f, rows)


class SplitOutputs(NamedTuple):
    """A model's outputs on (a part of) a split, with what names each example.

    Attributes:
        outputs: ``(N, width)``, as the model gave them.
        targets: the examples' targets, as in ``DataSplits``.
        positions: each example's position in the split.
        rows: each example's identifier in its source, as predictions.csv names it.
    """

    outputs: torch.Tensor
    targets: torch.Tensor
    positions: list[int]
    rows: list[Any]


def write_test_predictions(path: Path, outputs: list[torch.Tensor], data: DataSplits,
                           ranks: Ranks) -> SplitOutputs | None:
    """``predictions.csv`` of the test split from every rank's ``outputs`` (each rank's are
    for its contiguous part of the split), written by rank 0 in the split's order.

    Returns:
        On rank 0, what it wrote the file from (the run's report reads it too); else None.
    """
    # Which examples of the split the outputs are: a prefix of each rank's part (all of it,
    # unless fast_dev_run cut it short).
    start = shard_range(len(data.y_test), ranks.rank, ranks.world_size)[0]
    parts = ranks.all_gather((start, [o.cpu() for o in outputs])) if ranks.distributed else [(start, outputs)]
    index = [i for first, outs in parts for i in range(first, first + sum(len(o) for o in outs))]
    outputs = [o for _, outs in parts for o in outs]
    if not (outputs and ranks.is_main):
        return None
    rows = data.info.get("test_rows")
    gathered = SplitOutputs(torch.cat(outputs), data.y_test[torch.tensor(index, device=data.y_test.device)], index,
                            [rows[i] for i in index] if rows is not None else index)
    write_predictions(path, prediction_rows(gathered.outputs, gathered.targets, data.task, data.class_names,
                                            data.target_scale, gathered.rows))
    return gathered

"""The output of ``dltrain-predict``, whatever computed the predictions (a checkpoint's model,
or an exported ONNX file): one row per input in the data's own terms (:func:`prediction_rows`),
the check that an existing output file may be replaced (:func:`check_output`), and the atomic
write (:func:`write_rows`). Imports no torch.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dltrain.data.preprocessing import drift
from dltrain.errors import UserError

TOOL = "dltrain-predict"


def prediction_rows(result: np.ndarray, ids: Sequence[Any], data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per input, rounded as ``predictions.csv`` is.

    Args:
        result: for classes, the probability of each class (or label) ``(N, K)``: a class name,
            ``confidence`` and a ``p_<class>`` column per class (labels above 0.5 joined by ``|``
            for multi-label data); for regression, values in the target's units ``(N, T)``:
            ``prediction``, or ``prediction_<j>`` for several targets; for ``latents`` (an exported
            autoencoder's encoder) the codes ``(N, K)``: ``z0 .. z<K-1>``.
        ids: what names each input (row number or image path).
        data: the checkpoint's data record (``task``, ``class_names``, ``num_outputs``).
    """
    task, names = data["task"], list(data.get("class_names") or [])
    if task == "latents":  # an exported autoencoder's encoder: each input's latent code
        return [{"input": ids[i], **{f"z{j}": float(f"{v:.6g}") for j, v in enumerate(result[i])}}
                for i in range(len(ids))]
    names += [str(i) for i in range(len(names), max(result.shape[1], data["num_outputs"]))]
    if task in ("binary", "multiclass"):
        pred, confidence = result.argmax(axis=1), result.max(axis=1)
        return [{"input": ids[i], "prediction": names[int(pred[i])], "confidence": round(float(confidence[i]), 6),
                 **{f"p_{name}": round(float(p), 6) for name, p in zip(names, result[i], strict=False)}}
                for i in range(len(ids))]
    if task == "multilabel":
        return [{"input": ids[i], "prediction": "|".join(n for n, p in zip(names, result[i], strict=False) if p > 0.5),
                 **{f"p_{name}": round(float(p), 6) for name, p in zip(names, result[i], strict=False)}}
                for i in range(len(ids))]
    if result.shape[1] == 1:
        return [{"input": ids[i], "prediction": float(f"{result[i, 0]:.6g}")} for i in range(len(ids))]
    return [{"input": ids[i], **{f"prediction_{j}": float(f"{v:.6g}") for j, v in enumerate(result[i])}}
            for i in range(len(ids))]


def check_output(output: Path, ckpt: Path, source: Path, overwrite: bool = False) -> None:
    """Refuse an ``output`` that would replace a file dltrain-predict did not write: one is
    recognised by its shape (see :func:`is_predictions_file`); an empty file holds nothing to
    lose. ``overwrite`` allows any other regular file, but never the checkpoint or the input
    being read, nor what is not a regular file (a folder, a pipe, a device).

    Raises:
        UserError: naming the file and how to choose another.
    """
    for role, path in (("the checkpoint", ckpt), ("the input file", source)):
        if output.exists() and path.exists() and output.samefile(path):
            raise UserError(f"output={output} is {role}: write the predictions to another file (output=...)")
    if not output.exists():
        return
    if not output.is_file():
        kind = "a folder" if output.is_dir() else "not a regular file (a pipe, a device or a socket)"
        raise UserError(f"output={output} is {kind}: write the predictions to a file (output=....csv)")
    if overwrite or output.stat().st_size == 0 or is_predictions_file(output):
        return
    raise UserError(f"output={output} exists and is not a predictions file of {TOOL} (it does not have the "
                    f"columns {TOOL} writes), and dltrain never overwrites a file it did not write: choose another "
                    "output=... or pass overwrite=true")


#: The most of an existing output file read to recognise it (a predictions file is rewritten whole anyway).
_RECOGNISE_BYTES = 8 << 20


def is_predictions_file(path: Path) -> bool:
    """Whether ``path`` has the shape :func:`write_rows` gives this tool's output: the header
    ``input,prediction[,confidence,p_<class>...]`` (or ``input,p_...`` columns of several labels,
    or ``input,prediction_0,prediction_1,...``; an autoencoder's ``input,z0,z1,...`` or
    ``input,reconstruction_error[,reconstruction]``), with or without a last ``input_warnings``
    column of flags, every row as wide as it, and probabilities in [0, 1]. A user's file that
    merely starts with ``input,prediction`` does not pass."""
    try:
        if path.stat().st_size > _RECOGNISE_BYTES:
            return False
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    if not rows:
        return False
    header, body = rows[0], rows[1:]
    if len(header) < 2 or header[0] != "input":
        return False
    flagged = header[-1] == drift.COLUMN  # outputs written before this column was added lack it
    rest = header[1:-1] if flagged else header[1:]
    if not rest:
        return False
    numbered = [f"prediction_{j}" for j in range(len(rest))]
    probabilities = [c for c in rest if c.startswith("p_")]
    shapes = (rest == numbered,
              rest == [f"z{j}" for j in range(len(rest))],  # an autoencoder's latent codes
              rest in (["reconstruction_error"], ["reconstruction_error", "reconstruction"]),
              rest == ["prediction"],
              rest[:2] == ["prediction", "confidence"] and len(probabilities) == len(rest) - 2 >= 1,
              rest[0] == "prediction" and len(probabilities) == len(rest) - 1 >= 1)
    if not any(shapes) or any(len(row) != len(header) for row in body):
        return False
    if flagged and not all(drift.is_flag_cell(row[-1]) for row in body):
        return False
    columns = [i for i, c in enumerate(header) if c == "confidence" or c.startswith("p_")]
    try:
        return all(0.0 <= float(row[i]) <= 1.0 for row in body for i in columns)
    except ValueError:
        return False


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as a CSV file atomically (temporary file + rename).

    Raises:
        UserError: the file cannot be written.
    """
    from dltrain.files import atomic_write
    from dltrain.report.csv_table import write_table

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, newline="") as f:
            write_table(f, rows)
    except OSError as err:
        raise UserError(f"output={path} cannot be written: {err.strerror or err}") from err


def warn(message: str) -> None:
    """Print a warning about the inputs read, as this tool's."""
    print(f"{TOOL}: warning: {message}", file=sys.stderr)


def flagged(rows: list[dict[str, Any]], flags: Sequence[str]) -> list[dict[str, Any]]:
    """``rows`` with each input's drift flags as the last column (see :mod:`dltrain.data.preprocessing.drift`)."""
    return [{**row, drift.COLUMN: flag} for row, flag in zip(rows, flags, strict=True)]


def write_predictions(target: Path, source: Path, rows: list[dict[str, Any]]) -> int:
    """Write the rows of :func:`flagged` to ``target``, say so, and warn once when inputs do not
    look like the training data.

    Returns:
        The number of rows written.

    Raises:
        UserError: no rows (nothing read from ``source``), or the file cannot be written.
    """
    if not rows:
        raise UserError(f"input={source} gave nothing to predict: check the file")
    write_rows(target, rows)
    print(f"{TOOL}: wrote {len(rows)} predictions to {target}")
    if warning := drift.summary([row[drift.COLUMN] for row in rows]):
        warn(f"{warning}.")
    return len(rows)

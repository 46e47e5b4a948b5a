"""``dltrain-predict``: a checkpoint's predictions for new inputs, which are preprocessed
from what the checkpoint recorded about its training data, never from the training files.

    dltrain-predict ckpt=PATH input=PATH output=predictions.csv [device=auto] [batch_size=512]

The output CSV has one row per input: ``input`` (the row number in the CSV, 0 = first data
row, or the image's path relative to the input folder), then ``prediction`` (a class name;
labels joined by ``|`` for multi-label data; a value in the target's units for regression,
``prediction_<j>`` for several targets) and for classes ``confidence`` and one
``p_<class>`` probability column per class (per label for multi-label data), and last
``input_warnings``: empty, or why the input does not look like the training data (see
:mod:`dltrain.data.preprocessing.drift`), with one warning on stderr for them all.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from dltrain.data.preprocessing import drift
from dltrain.errors import UserError
from dltrain.inference.restore import REQUIRED, TRUST_KEYS, Key, Restored, load_model, parse_args, run_tool

TOOL = "dltrain-predict"
KEYS = {
    "ckpt": Key(REQUIRED, "the checkpoint: a run's checkpoints/best.pt or last.pt"),
    "input": Key(REQUIRED, "what to predict (see above)"),
    "output": Key(REQUIRED, "the CSV file to write; an existing one only if dltrain-predict wrote it"),
    "device": Key("auto", "auto, cpu, cuda, cuda:N or mps; auto takes a GPU when there is one"),
    "batch_size": Key(512, "inputs per forward pass"),
    "overwrite": Key(False, "true: replace output= even if it is not an earlier dltrain-predict file"),
    **TRUST_KEYS,
}
ABOUT = """Predict with a checkpoint, preprocessing the inputs exactly as its training data was. input is:
{inputs}
The output CSV has one row per input: input (row number from 0, or image path), prediction,
for classes confidence and a p_<class> probability per class, and input_warnings: why the
input does not look like the training data (resized, inverted, out_of_range: columns,
unknown_words), if it does not."""
EXAMPLE = f"{TOOL} ckpt=outputs/2024-05-01/12-00-00/checkpoints/best.pt input=new.csv output=predictions.csv"


def predict_file(ckpt: str | Path, source: str | Path, output: str | Path, device: str = "auto",
                 batch_size: int = 512, *, model_target: str | None = None, trust_code: bool = False,
                 overwrite: bool = False) -> int:
    """Predict every row or image of ``source`` (the ``input`` key) with ``ckpt`` and write ``output``.

    ``model_target`` and ``trust_code`` say what a ``model=custom`` checkpoint may import
    (``target`` and ``trust_code`` of :func:`~dltrain.inference.restore.load_model`).

    Returns:
        The number of rows written.

    Raises:
        UserError: a bad checkpoint or device, inputs that cannot be read or do not match
            what the model was trained on, or a dataset whose inputs this tool does not read.
    """
    source, target = Path(source), Path(output)
    check_output(target, Path(ckpt), source, overwrite)
    restored = load_model(ckpt, device, target=model_target, trust_code=trust_code)
    dev = next((p.device for p in restored.model.parameters()), torch.device("cpu"))
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        for ids, x, flags in read_flagged_inputs(restored, source, batch_size):
            batch = output_rows(restored.model(x.to(dev)).float().cpu(), ids, restored.data)
            rows += [{**row, drift.COLUMN: flag} for row, flag in zip(batch, flags, strict=True)]
    if not rows:
        raise UserError(f"input={source} gave nothing to predict: check the file")
    write_rows(target, rows)
    print(f"{TOOL}: wrote {len(rows)} predictions to {target}")
    if warning := drift.summary([row[drift.COLUMN] for row in rows]):
        print(f"{TOOL}: warning: {warning}.", file=sys.stderr)
    return len(rows)


def read_inputs(restored: Restored, path: Path, batch_size: int) -> Iterator[tuple[list[Any], torch.Tensor]]:
    """Batches ``(ids, inputs)`` of ``path`` preprocessed for the model in ``restored``.

    Raises:
        UserError: see :func:`predict_file`.
    """
    for ids, x, _ in read_flagged_inputs(restored, path, batch_size):
        yield ids, x


def read_flagged_inputs(restored: Restored, path: Path,
                        batch_size: int) -> Iterator[tuple[list[Any], torch.Tensor, list[str]]]:
    """:func:`read_inputs` with each input's flags: why it does not look like the training
    data (see :mod:`dltrain.data.preprocessing.drift`), empty where it does. The checkpoint's fitted
    preprocessing reads and preprocesses them (see :mod:`dltrain.data.preprocessing`).

    Raises:
        UserError: see :func:`predict_file`.
    """
    from dltrain.data import preprocessing

    prep = preprocessing.from_record(restored.data, restored.cfg.data, restored.path)
    if prep is None:
        dataset = restored.data["dataset"]
        raise UserError(f"{TOOL} does not read inputs of data={dataset}: it reads those of data="
                        f"{', '.join(preprocessing.readable(listed_data()))}; for data={dataset} call the model "
                        "from Python (dltrain.inference.load_model)")
    yield from prep.read(path, batch_size, _warn)


def _warn(message: str) -> None:
    print(f"{TOOL}: warning: {message}", file=sys.stderr)


# --- output ------------------------------------------------------------------------------------------------------


def check_output(output: Path, ckpt: Path, source: Path, overwrite: bool = False) -> None:
    """Refuse an ``output`` that would replace a file dltrain-predict did not write: one is
    recognised by its shape (see :func:`_is_predictions_file`); an empty file holds nothing to
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
    if overwrite or output.stat().st_size == 0 or _is_predictions_file(output):
        return
    raise UserError(f"output={output} exists and is not a predictions file of {TOOL} (it does not have the "
                    f"columns {TOOL} writes), and dltrain never overwrites a file it did not write: choose another "
                    "output=... or pass overwrite=true")


#: The most of an existing output file read to recognise it (a predictions file is rewritten whole anyway).
_RECOGNISE_BYTES = 8 << 20


def _is_predictions_file(path: Path) -> bool:
    """Whether ``path`` has the shape :func:`write_rows` gives this tool's output: the header
    ``input,prediction[,confidence,p_<class>...]`` (or ``input,p_...`` columns of several labels,
    or ``input,prediction_0,prediction_1,...``), with or without a last ``input_warnings``
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


def output_rows(outputs: torch.Tensor, ids: list[Any], data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per input from the model's outputs ``(N, width)``, in the data's own terms
    (class names, probabilities, the target's units), rounded as ``predictions.csv`` is."""
    task, names = data["task"], list(data.get("class_names") or [])
    names += [str(i) for i in range(len(names), max(outputs.shape[1], data["num_outputs"]))]
    if task in ("binary", "multiclass"):
        if outputs.shape[1] == 1:  # one binary logit (loss=bce)
            p1 = torch.sigmoid(outputs[:, 0])
            probs = torch.stack([1 - p1, p1], dim=1)  # (N, 2)
        else:  # softmax of logits, or of log-probabilities (nll): the same probabilities
            probs = torch.softmax(outputs, dim=1)
        confidence, pred = probs.max(dim=1)
        return [{"input": ids[i], "prediction": names[int(pred[i])], "confidence": round(float(confidence[i]), 6),
                 **{f"p_{name}": round(float(p), 6) for name, p in zip(names, probs[i], strict=False)}}
                for i in range(len(ids))]
    if task == "multilabel":
        probs = torch.sigmoid(outputs)
        return [{"input": ids[i], "prediction": "|".join(n for n, o in zip(names, outputs[i], strict=False) if o > 0),
                 **{f"p_{name}": round(float(p), 6) for name, p in zip(names, probs[i], strict=False)}}
                for i in range(len(ids))]
    mean, std = data.get("target_scale") or (0.0, 1.0)
    values = outputs * std + mean  # (N, targets)
    if values.shape[1] == 1:
        return [{"input": ids[i], "prediction": float(f"{values[i, 0]:.6g}")} for i in range(len(ids))]
    return [{"input": ids[i], **{f"prediction_{j}": float(f"{v:.6g}") for j, v in enumerate(values[i])}}
            for i in range(len(ids))]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as a CSV file atomically (temporary file + rename).

    Raises:
        UserError: the file cannot be written.
    """
    from dltrain.files import atomic_write
    from dltrain.report.tables import write_table

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, newline="") as f:
            write_table(f, rows)
    except OSError as err:
        raise UserError(f"output={path} cannot be written: {err.strerror or err}") from err


def listed_data() -> list[str]:
    """The ``data=`` options in the order their schemas are declared, the order help lists them in."""
    from dltrain.config.schemas import GROUP_SCHEMAS

    return list(GROUP_SCHEMAS["data"])


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``dltrain-predict``."""
    def run() -> None:
        from dltrain.data.preprocessing import inputs_help

        # The datasets registered, by what their inputs are, in the order the options are declared.
        about = ABOUT.format(inputs=inputs_help(listed_data()))
        args = parse_args(sys.argv[1:] if argv is None else list(argv), TOOL, KEYS, about=about, example=EXAMPLE,
                          config_keys=False)
        predict_file(args["ckpt"], args["input"], args["output"], args["device"], args["batch_size"],
                     model_target=args["model._target_"], trust_code=args["trust_code"], overwrite=args["overwrite"])

    run_tool(TOOL, run)


if __name__ == "__main__":
    main()

"""``dltrain-predict``: a checkpoint's predictions for new inputs, which are preprocessed
from what the checkpoint recorded about its training data, never from the training files.

    dltrain-predict ckpt=PATH input=PATH output=predictions.csv [device=auto] [batch_size=512]

The output CSV has one row per input: ``input`` (the row number in the CSV, 0 = first data
row, or the image's path relative to the input folder), then ``prediction`` (a class name;
labels joined by ``|`` for multi-label data; a value in the target's units for regression,
``prediction_<j>`` for several targets) and for classes ``confidence`` and one
``p_<class>`` probability column per class (per label for multi-label data), and last
``input_warnings``: empty, or why the input does not look like the training data (see
:mod:`dltrain.inference.drift`), with one warning on stderr for them all.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dltrain.inference import drift
from dltrain.errors import UserError
from dltrain.inference.restore import REQUIRED, TRUST_KEYS, Key, Restored, load_model, parse_args, run_tool

if TYPE_CHECKING:
    import pandas as pd

TOOL = "dltrain-predict"
POINT_DATA = ("xor", "moons", "spirals", "sine")
IMAGE_DATA = ("digits", "mnist", "fashion_mnist", "cifar10", "image_folder")
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
  data=csv          a CSV with the training feature columns (other columns are ignored)
  data=text_csv     a CSV with the training text column
  data=xor, moons, spirals, sine
                    a CSV with a header whose numeric columns are the inputs, in order (2 per row; 1 for sine)
  data=digits, mnist, fashion_mnist, cifar10, image_folder
                    a folder of images (searched recursively; hidden and non-image files skipped) or one image
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
    data (see :mod:`dltrain.inference.drift`), empty where it does.

    Raises:
        UserError: see :func:`predict_file`.
    """
    dataset = restored.data["dataset"]
    if dataset in IMAGE_DATA:
        yield from _image_batches(restored, path, batch_size)
        return
    if dataset == "csv":
        x, flags = _table_inputs(restored, path)
    elif dataset == "text_csv":
        x, flags = _text_inputs(restored, path)
    elif dataset in POINT_DATA:
        x, flags = _point_inputs(restored, path)
    else:
        raise UserError(f"{TOOL} does not read inputs of data={dataset}: it reads those of data=csv, text_csv, "
                        f"{', '.join(POINT_DATA + IMAGE_DATA)}; for data={dataset} call the model from Python "
                        "(dltrain.inference.restore.load_model)")
    for start in range(0, len(x), batch_size):
        yield list(range(start, min(start + batch_size, len(x)))), x[start:start + batch_size], \
            flags[start:start + batch_size]


# --- tables ------------------------------------------------------------------------------------------------------


def _read(restored: Restored, path: Path) -> Any:
    from dltrain.data.tabular import read_table

    return read_table(path, restored.cfg.data.get("delimiter", ","), key="input")


def _table_inputs(restored: Restored, path: Path) -> tuple[torch.Tensor, list[str]]:
    """``data=csv``: the feature columns, gaps filled, numbers standardised and the other
    columns one-hot encoded with the training split's statistics, in ``encoded_features`` order;
    and each row's ``out_of_range`` flag (see :mod:`dltrain.inference.drift`)."""
    from dltrain.data.cells import read_numbers, rows_text

    data = restored.data
    table = _read(restored, path)
    features = data["features"]
    if lacking := [c for c in features if c not in table.columns]:
        raise UserError(f"input={path} has no column {', '.join(lacking)}: the model reads the columns "
                        f"{', '.join(features)} (others are ignored); add the missing ones")
    x = table[features].copy()
    # The model reads these columns as numbers: a cell that is not one is a missing value, as in training.
    strays = read_numbers(x, list(data["numeric_scaling"]), share=0.0)
    gaps = x.isna().sum()
    gaps = gaps[gaps > 0]
    if len(gaps):
        listed = ", ".join(f"{c} ({n} row{'s' if n > 1 else ''}{_stray_note(strays.get(c))})" for c, n in gaps.items())
        if data.get("missing") != "mean":
            raise UserError(f"input={path} has empty cells in {listed}: the model was trained with "
                            f"data.missing={data.get('missing')}, which gives no values to fill them with; "
                            "fill them in")
        fills = {**{c: s["mean"] for c, s in data["numeric_scaling"].items()},
                 **data.get("fill_values_new_rows", {}), **data.get("fill_values", {})}
        if unfilled := [c for c in gaps.index if c not in fills]:
            raise UserError(f"input={path} has empty cells in {', '.join(unfilled)}, which had none in training, "
                            "so this checkpoint records no value to fill them with: fill them in")
        for column in gaps.index:
            x[column] = x[column].fillna(fills[column])
        if strays:
            print(f"{TOOL}: warning: cells that are not numbers filled as missing values (data.missing=mean): "
                  f"{', '.join(f'{c} ({rows_text(s.rows)}: {s.describe()})' for c, s in strays.items())}",
                  file=sys.stderr)

    columns = data["encoded_features"]
    out = np.zeros((len(x), len(columns)), dtype=np.float32)
    for j, (column, stats) in enumerate(data["numeric_scaling"].items()):
        out[:, j] = _standardised(x[column], stats["mean"], stats["std"], path)
    flags = drift.range_flags({c: x[c].to_numpy(dtype=np.float64) for c in data["numeric_scaling"]},
                              data.get("numeric_range"))
    position = len(data["numeric_scaling"])
    for column, categories in data["categorical"].items():
        index, position = _one_hot_columns(column, categories, columns, position)
        other = index.pop(None, None)  # where categories never seen in training go, if anywhere
        for row, value in enumerate(x[column].astype(str)):
            j = index.get(value, other)
            if j is not None:
                out[row, j] = 1.0
    if position != len(columns):
        raise UserError(f"checkpoint {restored.path}: its encoded_features do not match its columns' encodings, "
                        "so the inputs cannot be encoded as in training: use the checkpoint as dltrain wrote it")
    return torch.from_numpy(out), flags


def _standardised(cells: pd.Series, mean: float, std: float, path: Path) -> np.ndarray:
    """``(cells - mean) / std`` in float32, as the model reads a numeric column.

    Raises:
        UserError: an infinite cell, or one whose value does not fit float32 (``1e39``),
            naming the column and its rows.
    """
    from dltrain.data.cells import rows_text

    values = cells.to_numpy(dtype=np.float64)
    if (infinite := np.isinf(values)).any():
        raise UserError(f"input={path}: column {cells.name} holds infinite numbers in "
                        f"{rows_text(cells.index[infinite])} (0 = the first data row): the model reads finite "
                        "numbers; fix those cells")
    with np.errstate(over="ignore"):
        out = ((values - mean) / std).astype(np.float32)
    if not (finite := np.isfinite(out)).all():
        raise UserError(f"input={path}: column {cells.name} holds numbers too large for the model in "
                        f"{rows_text(cells.index[~finite])} (0 = the first data row): fix those cells")
    return out


def _stray_note(stray: Any) -> str:
    """``; row 3 not numbers: '?'`` for the cells of a numeric column that were not numbers
    (a :class:`~dltrain.data.cells.Stray`, or None)."""
    from dltrain.data.cells import rows_text

    if stray is None:
        return ""
    return f"; {rows_text(stray.rows)} not numbers: {', '.join(repr(v) for v in stray.values[:3])}"


def _one_hot_columns(column: str, categories: list[str], columns: list[str],
                     position: int) -> tuple[dict[str | None, int], int]:
    """Where scikit-learn's OneHotEncoder put each category of ``column``: its output columns
    start at ``position`` in ``columns``, the frequent categories in order, then
    ``<column>_infrequent_sklearn`` for the rest (and unseen ones) when the encoder made one.

    Returns:
        category -> output column (``None`` -> the infrequent column), and the position after them.
    """
    index: dict[str | None, int] = {}
    infrequent = []
    for category in categories:
        if position < len(columns) and columns[position] == f"{column}_{category}":
            index[category] = position
            position += 1
        else:
            infrequent.append(category)
    if position < len(columns) and columns[position] == f"{column}_infrequent_sklearn":
        index.update({category: position for category in infrequent})
        index[None] = position
        position += 1
    return index, position


def _text_inputs(restored: Restored, path: Path) -> tuple[torch.Tensor, list[str]]:
    """``data=text_csv``: token ids of the text column with the training vocabulary, cut to
    ``data.max_length`` and padded with 0 to at least the training length; and each text's
    ``unknown_words`` flag (see :mod:`dltrain.inference.drift`)."""
    from dltrain.data.text import UNK_ID, Vocabulary, tokenize

    data, cfg = restored.data, restored.cfg.data
    table = _read(restored, path)
    column = data["text_column"]
    if column not in table.columns:
        raise UserError(f"input={path} has no column {column}: the model reads its texts from a column "
                        f"named {column}; name it so")
    vocab = Vocabulary(data["vocabulary"])
    ids = [vocab.encode(tokenize(text, cfg.get("lowercase", True))[:cfg.get("max_length", 200)]) or [UNK_ID]
           for text in table[column].fillna("").astype(str)]
    x = torch.zeros((len(ids), max(*map(len, ids), data.get("padded_length") or 1)), dtype=torch.long)
    for row, sequence in enumerate(ids):
        x[row, :len(sequence)] = torch.tensor(sequence)
    known = [sum(i != UNK_ID for i in sequence) for sequence in ids]
    return x, drift.text_flags(known, [len(sequence) for sequence in ids])


def _point_inputs(restored: Restored, path: Path) -> tuple[torch.Tensor, list[str]]:
    """Generated point data: the CSV's numeric columns, standardised as the training split was;
    and each row's ``out_of_range`` flag (see :mod:`dltrain.inference.drift`)."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    data = restored.data
    table = _read(restored, path)
    numeric = [c for c in table.columns if is_numeric_dtype(table[c]) and not is_bool_dtype(table[c])]
    width = data["input_shape"][0]
    if len(numeric) != width:
        plural = "s" if width > 1 else ""
        raise UserError(f"input={path} has {len(numeric)} numeric columns ({', '.join(map(str, numeric))}), "
                        f"but the data={data['dataset']} model reads {width} number{plural} per row: give a CSV "
                        f"whose numeric columns are exactly its {width} input{plural}, in order")
    if gaps := int(table[numeric].isna().any(axis=1).sum()):
        raise UserError(f"input={path} has {gaps} rows with empty cells: fill them in")
    scaling = data.get("input_scaling") or {"mean": [0.0] * width, "std": [1.0] * width}
    if not len(scaling["mean"]) == len(scaling["std"]) == width:
        raise UserError(f"checkpoint {restored.path}: its input_scaling does not hold {width} means and standard "
                        "deviations, so the inputs cannot be scaled as in training: use the checkpoint as dltrain "
                        "wrote it")
    columns = [_standardised(table[c], m, s, path) for c, m, s in zip(numeric, scaling["mean"], scaling["std"],
                                                                      strict=True)]
    bounds = data.get("input_range")
    ranges = dict(zip(map(str, numeric), zip(bounds["min"], bounds["max"], strict=True), strict=True)) \
        if bounds and len(bounds["min"]) == width else None
    flags = drift.range_flags({str(c): table[c].to_numpy(dtype=np.float64) for c in numeric}, ranges)
    return torch.from_numpy(np.stack(columns, axis=1)), flags


# --- images ------------------------------------------------------------------------------------------------------


def _image_batches(restored: Restored, path: Path,
                   batch_size: int) -> Iterator[tuple[list[str], torch.Tensor, list[str]]]:
    """Batches of decoded, standardised images, their paths relative to ``path`` and their
    flags (see :mod:`dltrain.inference.drift`); files Pillow cannot decode are skipped with one
    warning at the end."""
    from dltrain.data.image_folder import DECODE_ERRORS, decode_with_depth
    from dltrain.data.pixel_depth import describe_skipped, skip_reason

    size, color, standardize = _image_preprocessing(restored)
    brightness = drift.training_brightness(restored.data)
    root, files = _image_files(path)
    skipped, reasons = [], []
    for start in range(0, len(files), batch_size):
        ids, images, flags = [], [], []
        for file in files[start:start + batch_size]:
            try:
                image, _, _, native = decode_with_depth(file, size, color)  # uint8 (C, H, W)
            except DECODE_ERRORS as err:
                skipped.append(file.relative_to(root).as_posix())
                reasons.append(skip_reason(err))
                continue
            ids.append(file.relative_to(root).as_posix())
            images.append(image)
            flags.append(drift.image_flags(native, image, restored.data, brightness))
        if images:
            yield ids, standardize(torch.stack(images)), flags
    if skipped:
        print(f"{TOOL}: warning: skipped {len(skipped)} unreadable image{'s' if len(skipped) > 1 else ''}: "
              f"{describe_skipped(skipped, reasons)}", file=sys.stderr)


def _image_preprocessing(restored: Restored) -> tuple[list[int], str, Callable[[torch.Tensor], torch.Tensor]]:
    """Image size, colour, and the function from uint8 images ``(N, C, H, W)`` to the model's
    inputs, as the training dataset computed them."""
    data = restored.data
    if data["dataset"] == "digits":
        if "pixel_scaling" not in data:
            raise UserError(f"checkpoint {restored.path} was written before dltrain recorded how data=digits scales "
                            "its pixels: train it again to predict from images")
        mean = torch.tensor(data["pixel_scaling"]["mean"], dtype=torch.float64).reshape(1, 1, 8, 8)
        std = torch.tensor(data["pixel_scaling"]["std"], dtype=torch.float64).reshape(1, 1, 8, 8)
        top = data["pixel_max"]

        def digits(images: torch.Tensor) -> torch.Tensor:
            # The dataset's pixels are ink counts 0..16: image values map to the nearest count.
            counts = torch.round(images.double() * top / 255)
            return ((counts - mean) / std).float()

        return data["image_size"], data["color"], digits
    channels, *size = data["input_shape"]
    size = data.get("image_size", size)
    color = data.get("color", "grayscale" if channels == 1 else "rgb")
    mean = torch.tensor(data["normalization"]["mean"], dtype=torch.float32).reshape(1, -1, 1, 1)
    std = torch.tensor(data["normalization"]["std"], dtype=torch.float32).reshape(1, -1, 1, 1)

    def scaled(images: torch.Tensor) -> torch.Tensor:  # (x / 255 - mean) / std per channel, as in training
        return images.float().div_(255).sub_(mean).div_(std)

    return size, color, scaled


def _image_files(path: Path) -> tuple[Path, list[Path]]:
    """The folder names are relative to, and the image files under ``path`` (or ``path`` itself,
    one image), sorted by relative path; hidden entries and non-image files are skipped.

    Raises:
        UserError: ``path`` is missing, not an image, or a folder without images.
    """
    from dltrain.data.image_folder import IMG_EXTENSIONS

    if path.is_file():
        if not path.name.lower().endswith(IMG_EXTENSIONS):
            raise UserError(f"input={path} is not an image ({', '.join(IMG_EXTENSIONS)}): give a folder of images "
                            "or one image")
        return path.parent, [path]
    if not path.is_dir():
        raise UserError(f"input={path} does not exist: give a folder of images or one image")
    files = []
    for parent, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files += [Path(parent, n) for n in names if not n.startswith(".") and n.lower().endswith(IMG_EXTENSIONS)]
    if not files:
        raise UserError(f"input={path} holds no image files ({', '.join(IMG_EXTENSIONS)}): give a folder of images")
    return path, sorted(files, key=lambda f: f.relative_to(path).as_posix())


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


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``dltrain-predict``."""
    def run() -> None:
        args = parse_args(sys.argv[1:] if argv is None else list(argv), TOOL, KEYS, about=ABOUT, example=EXAMPLE,
                          config_keys=False)
        predict_file(args["ckpt"], args["input"], args["output"], args["device"], args["batch_size"],
                     model_target=args["model._target_"], trust_code=args["trust_code"], overwrite=args["overwrite"])

    run_tool(TOOL, run)


if __name__ == "__main__":
    main()

"""The checks a reader of ``model.json`` makes before it trusts it: every entry it reads of the
type it reads it as, and the entries that say the same thing twice (the data record and the
input, the task and the output) in agreement, so that a file changed by hand is refused in one
line rather than failing deep in a reader. Imports no torch."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dltrain.errors import UserError

TASKS = ("binary", "multiclass", "multilabel", "regression", "latents")  # latents: an autoencoder's encoder
OUTPUTS = {"regression": "values", "latents": "latents"}  # what a model of each task returns; else probabilities
COLORS = {"grayscale": 1, "rgb": 3}
#: The largest image side a model.json may name (a graph of that size would not fit in memory anyway).
MAX_SIDE = 4096


def _int(value: Any, low: int = 0) -> bool:
    return type(value) is int and value >= low


def _name(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _delimiter(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 1 and value not in "\n\r\""


def _plain_file(value: Any) -> bool:
    """A file name in the folder itself: no folder, no ``..``."""
    return isinstance(value, str) and value not in ("", ".", "..") and Path(value).name == value and "\\" not in value


def _columns(value: Any) -> bool:
    """``input.columns`` of a table: one entry per feature, a category list for a categorical one."""
    if not isinstance(value, list) or not value:
        return False
    for column in value:
        if not isinstance(column, dict) or not isinstance(column.get("name"), str):
            return False
        if column.get("type") == "categorical":
            categories = column.get("categories")
            if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
                return False
        elif column.get("type") != "numeric":
            return False
    return True


def _tokenizer(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("pattern"), str) and type(value.get("lowercase")) is bool


def _image_size(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_int(v, 1) and v <= MAX_SIDE for v in value)


Check = Callable[[Any], bool]
#: What each section's entries must be, and in words.
COMMON: dict[str, dict[str, tuple[Check, str]]] = {
    "input": {"name": (_name, "a name"), "kind": (_name, "a kind's name"),
              "dtype": (lambda v: v in ("float32", "float64", "int64"), "float32, float64 or int64"),
              "shape": (lambda v: isinstance(v, list) and len(v) >= 2, "a list of sizes")},
    "output": {"name": (lambda v: v in ("probabilities", "values", "latents"), "probabilities, values or latents"),
               "shape": (lambda v: isinstance(v, list) and len(v) == 2 and _int(v[1], 1), "[batch, outputs]")},
    "data": {"task": (lambda v: v in TASKS, f"one of {', '.join(TASKS)}"),
             "num_outputs": (lambda v: _int(v, 1), "a whole number"),
             "class_names": (lambda v: v is None or isinstance(v, list) and all(isinstance(c, str) for c in v),
                             "a list of names or null")},
}
#: A kind's own entries of ``input``.
INPUT: dict[str, dict[str, tuple[Check, str]]] = {
    "table": {"columns": (_columns, "a list of columns, each with a name and a type (categorical: a list of "
                                    "categories)"),
              "delimiter": (_delimiter, "one character")},
    "text": {"tokenizer": (_tokenizer, "a pattern and lowercase true or false"),
             "max_length": (lambda v: _int(v, 1), "a whole number of at least 1"),
             "delimiter": (_delimiter, "one character"),
             "vocabulary_file": (_plain_file, "a file name in the model's folder")},
    "images": {"image_size": (_image_size, f"[height, width] of 1..{MAX_SIDE} pixels"),
               "color": (lambda v: v in COLORS, "grayscale or rgb")},
    "ink_counts": {"image_size": (_image_size, f"[height, width] of 1..{MAX_SIDE} pixels"),
                   "color": (lambda v: v == "grayscale", "grayscale")},
}
#: Entries of the data record a kind reads, beside those of every kind.
DATA: dict[str, dict[str, tuple[Check, str]]] = {
    "ink_counts": {"pixel_max": (lambda v: _int(v, 1), "a whole number of at least 1")},
}
#: Entries that are optional (older files, or a default that holds).
OPTIONAL = {"input.delimiter", "data.class_names"}


def check_card(where: Path, card: Mapping[str, Any], kinds: Mapping[str, Any]) -> None:
    """Refuse a ``model.json`` (at ``where``) whose entries are missing, of the wrong type, or
    contradict each other; ``kinds``: the input kinds this reader reads.

    Raises:
        UserError: naming ``model.json``, the first entry at fault and what it should be.
    """
    for section in ("input", "output", "data"):
        if not isinstance(card.get(section), dict):
            _refuse(where, f"its {section} is not an object")
    kind = card["input"].get("kind")
    _entries(where, card, "input", COMMON["input"])
    if kind not in kinds:
        raise UserError(f"{where}: its input kind {kind!r} is not one this dltrain reads ({', '.join(kinds)}): "
                        "use the dltrain version that exported it")
    _entries(where, card, "input", INPUT.get(kind, {}))
    _entries(where, card, "output", COMMON["output"])
    _entries(where, card, "data", {**COMMON["data"], **DATA.get(kind, {})})
    _agree(where, card, kind)


def _entries(where: Path, card: Mapping[str, Any], section: str, checks: Mapping[str, tuple[Check, str]]) -> None:
    entries = card[section]
    for key, (check, what) in checks.items():
        if key not in entries:
            if f"{section}.{key}" in OPTIONAL:
                continue
            raise UserError(f"{where} has no {section}.{key}: the file was changed after dltrain-export wrote it; "
                            "export the checkpoint again")
        if not check(entries[key]):
            _refuse(where, f"its {section}.{key} is {_short(entries[key])}, not {what}")


def _agree(where: Path, card: Mapping[str, Any], kind: str) -> None:
    """The entries stated twice agree: task, output name and width; image size, color and channels."""
    spec, data, output = card["input"], card["data"], card["output"]
    task = data["task"]
    if card.get("task", task) != task:
        _refuse(where, f"its task {_short(card.get('task'))} and data.task {task!r} differ")
    if output["name"] != OUTPUTS.get(task, "probabilities"):
        _refuse(where, f"its output.name {output['name']!r} is not what a {task} model returns")
    columns = output.get("columns")
    if columns is not None and (not isinstance(columns, list) or len(columns) != output["shape"][1]):
        _refuse(where, f"its output.columns do not name the {output['shape'][1]} outputs of output.shape")
    if kind in ("images", "ink_counts"):
        size, color = spec["image_size"], spec["color"]
        if spec["shape"][1:] != [COLORS[color], *size]:
            _refuse(where, f"its input.image_size {size} and color {color} do not match input.shape {spec['shape']}")
        if data.get("image_size", size) != size or data.get("color", color) != color:
            _refuse(where, "its data.image_size or data.color differ from input.image_size and input.color")
    if kind == "table" and len(spec["columns"]) != spec["shape"][-1]:
        _refuse(where, f"its input.columns name {len(spec['columns'])} columns, and input.shape has "
                       f"{spec['shape'][-1]}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _refuse(where: Path, what: str) -> None:
    raise UserError(f"{where}: {what}: the file was changed after dltrain-export wrote it; export the checkpoint "
                    "again")

"""``dltrain-predict ckpt=<folder>/model.onnx``: an exported model's predictions, computed by
onnxruntime alone. The folder ``dltrain-export`` wrote holds ``model.json`` (what the graph
reads and returns, and the training data's record) beside the model file; the inputs are read
as the checkpoint's own ``dltrain-predict`` reads them (:mod:`dltrain.inference.onnx_inputs`)
and the output CSV has the same rows and columns (:mod:`dltrain.inference.rows`).

Imports no torch, Hydra, OmegaConf, scikit-learn or matplotlib: it runs where only
onnxruntime, numpy and pandas (and Pillow, for images) are installed, with dltrain installed
without its dependencies (``pip install --no-deps dltrain``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dltrain.errors import UserError, first_line
from dltrain.export.card_check import check_card
from dltrain.export.contract import CARD, CARD_VERSION, is_card_version, onnx_session
from dltrain.inference.onnx_inputs import READERS, read_raw
from dltrain.inference.rows import TOOL, check_output, flagged, prediction_rows, warn, write_predictions
from dltrain.inference.tool import REQUIRED, Key, parse_args, run_tool

#: ``model.json``'s dtypes as onnxruntime names its tensors' element types.
ORT_TYPES = {"float32": "tensor(float)", "float64": "tensor(double)", "int64": "tensor(int64)"}
KEYS = {
    "ckpt": Key(REQUIRED, "the exported model: the model.onnx of a folder dltrain-export wrote"),
    "input": Key(REQUIRED, "what to predict: what the checkpoint's dltrain-predict reads (model.json's input)"),
    "output": Key(REQUIRED, "the CSV file to write; an existing one only if dltrain-predict wrote it"),
    "device": Key("auto", "cpu, or cuda / cuda:N where onnxruntime has CUDA; auto: cpu"),
    "batch_size": Key(512, "inputs per run of the model"),
    "overwrite": Key(False, "true: replace output= even if it is not an earlier dltrain-predict file"),
}
ABOUT = """Predict with a model exported by dltrain-export, with onnxruntime alone (no torch): the inputs
are read as the checkpoint's dltrain-predict reads them (a folder of images or one image, or a CSV),
as model.json beside the model file describes, and the output CSV is the same."""
EXAMPLE = f"{TOOL} ckpt=outputs/2024-05-01/12-00-00/export-best-onnx/model.onnx input=new.csv output=predictions.csv"


@dataclass
class Exported:
    """An exported model loaded in onnxruntime.

    Attributes:
        card: its ``model.json``.
        session: the onnxruntime session.
        path: the model file.
    """

    card: dict[str, Any]
    session: Any
    path: Path

    def run(self, x: np.ndarray) -> np.ndarray:
        """The graph's output (probabilities or values) for one batch of raw inputs.

        Raises:
            UserError: onnxruntime refuses the inputs ``model.json`` said to give it.
        """
        try:
            return self.session.run([self.card["output"]["name"]], {self.card["input"]["name"]: x})[0]
        except Exception as err:  # onnxruntime's own types (InvalidArgument, Fail, ...)
            raise UserError(f"{self.path} refuses the inputs read as {self.path.parent / CARD} describes them "
                            f"({first_line(err)}): use the {CARD} dltrain-export wrote with this file") from None


def load_exported(path: str | Path, device: str = "auto") -> Exported:
    """The ONNX model at ``path`` with the ``model.json`` beside it, checked against each other.

    Raises:
        UserError: the file or ``model.json`` is missing or unreadable, ``model.json`` is of
            another layout version, or does not describe the file's input and output.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ckpt={path} does not exist: give the model.onnx of a folder dltrain-export wrote")
    card = read_card(path)
    session = _session(path, device)
    _check_io(path, card, session)
    return Exported(card, session, path)


def read_card(path: Path) -> dict[str, Any]:
    """``model.json`` beside ``path``, with the entries this tool reads checked.

    Raises:
        UserError: naming ``model.json`` and what is wrong with it.
    """
    where = path.parent / CARD
    try:
        card = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"ckpt={path} has no {CARD} beside it, which says how to read its inputs: keep the folder "
                        "dltrain-export wrote whole, or export the checkpoint again") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{where} cannot be read as JSON ({first_line(err)}): export the checkpoint again") from None
    if not isinstance(card, dict) or "dltrain_export" not in card:
        raise UserError(f"{where} is not a model.json of dltrain-export (it has no dltrain_export entry): "
                        "export the checkpoint again")
    if not is_card_version(card["dltrain_export"]):
        raise UserError(f"{where} has layout version {_short(card['dltrain_export'])}, and this dltrain reads version "
                        f"{CARD_VERSION}: use the dltrain version that exported it, or export the checkpoint again")
    _check_entries(where, card)
    return card


def _check_entries(where: Path, card: dict[str, Any]) -> None:
    """Refuse a ``model.json`` of another format, or whose entries this tool reads are missing,
    of the wrong type or contradict each other (:func:`~dltrain.export.card_check.check_card`).

    Raises:
        UserError: naming ``model.json`` and the first entry at fault.
    """
    if card.get("format", "onnx") != "onnx":
        raise UserError(f"{where} describes a {_short(card['format'])} export, not an ONNX file: give the model.onnx "
                        "of an export with format=onnx")
    check_card(where, card, READERS)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _session(path: Path, device: str) -> Any:
    """An onnxruntime session of ``path`` on ``device``.

    Raises:
        UserError: onnxruntime is not installed, lacks the device, or cannot load the file.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError(f"ckpt={path} is an ONNX model, and onnxruntime is not installed: pip install "
                        "onnxruntime") from None
    if device in ("auto", "cpu"):
        providers: list[Any] = ["CPUExecutionProvider"]
    elif device == "cuda" or device.startswith("cuda:") and device[5:].isdigit():
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UserError(f"device={device}: this onnxruntime has no CUDA (pip install onnxruntime-gpu), or use "
                            "device=cpu")
        providers = [("CUDAExecutionProvider", {"device_id": int(device[5:] or 0)})]
    else:
        raise UserError(f"device={device} is not one onnxruntime runs on here: use device=cpu, cuda or cuda:N")
    try:
        return onnx_session(path, providers)
    except Exception as err:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...) for a bad file
        raise UserError(f"ckpt={path} cannot be loaded by onnxruntime ({first_line(err)}): give the model.onnx "
                        "dltrain-export wrote") from None


def _check_io(path: Path, card: dict[str, Any], session: Any) -> None:
    """Refuse a model whose one input and one output are not those ``model.json`` describes
    (names, element types, ranks and fixed sizes).

    Raises:
        UserError: naming both files and the difference.
    """
    for role, spec, found in (("input", card["input"], session.get_inputs()),
                              ("output", card["output"], session.get_outputs())):
        described = f"{spec['name']} {spec.get('dtype', 'float32')} {spec['shape']}"
        if len(found) != 1:
            raise UserError(f"ckpt={path} has {len(found)} {role}s, and {CARD} describes one ({described}): use the "
                            f"{CARD} dltrain-export wrote with this file")
        actual = found[0]
        fixed = [(a, b) for a, b in zip(actual.shape, spec["shape"], strict=False)
                 if isinstance(a, int) and isinstance(b, int)]
        if (actual.name != spec["name"] or actual.type != ORT_TYPES.get(spec.get("dtype", "float32"))
                or len(actual.shape) != len(spec["shape"]) or any(a != b for a, b in fixed)):
            raise UserError(f"ckpt={path}: its {role} is {actual.name} {actual.type} {actual.shape}, and {CARD} "
                            f"describes {described}: use the {CARD} dltrain-export wrote with this file")


def predict_exported(ckpt: str | Path, source: str | Path, output: str | Path, device: str = "auto",
                     batch_size: int = 512, *, overwrite: bool = False) -> int:
    """Predict every row or image of ``source`` with the exported model ``ckpt`` and write
    ``output``, as :func:`dltrain.inference.predict.predict_file` does with a checkpoint.

    Returns:
        The number of rows written.

    Raises:
        UserError: a bad model file or ``model.json``, or inputs that cannot be read or do not
            match what the model was trained on.
    """
    path, source, target = Path(ckpt), Path(source), Path(output)
    check_output(target, path, source, overwrite)
    model = load_exported(path, device)
    rows: list[dict[str, Any]] = []
    for ids, x, flags in read_raw(model.card, path.parent, source, batch_size, warn):
        rows += flagged(prediction_rows(model.run(x), ids, model.card["data"]), flags)
    return write_predictions(target, source, rows)


def main(argv: Sequence[str]) -> None:
    """``dltrain-predict`` with ``ckpt=<...>.onnx`` (its console script calls this for one)."""
    def run() -> None:
        args = parse_args(list(argv), TOOL, KEYS, about=ABOUT, example=EXAMPLE, config_keys=False)
        predict_exported(args["ckpt"], args["input"], args["output"], args["device"], args["batch_size"],
                         overwrite=args["overwrite"])

    run_tool(TOOL, run)

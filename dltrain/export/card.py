"""``model.json``: what an exported model reads and returns, and what the caller does outside
the graph, so that it can be used without dltrain; and the files beside it (``vocab.txt``)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from dltrain.export.autoencoder import LATENTS, card_entry
from dltrain.export.contract import CARD_VERSION
from dltrain.export.graph import ExportGraph


def output_spec(graph: ExportGraph, data: dict[str, Any]) -> dict[str, Any]:
    """``model.json``'s ``output``: its name, shape, a column name per output and their meaning."""
    task, width = data["task"], graph.width
    if task == "regression":
        columns = ["prediction"] if width == 1 else [f"prediction_{j}" for j in range(width)]
        meaning = "the predicted value of each target, in the target's own units"
    elif task == LATENTS:
        columns = [f"z{j}" for j in range(width)]
        meaning = "the latent code of each input: the output of the autoencoder's encoder"
    else:
        names = list(data.get("class_names") or [])
        names += [str(i) for i in range(len(names), width)]
        columns = [f"p_{name}" for name in names[:width]]
        meaning = ("the probability of each label (sigmoid; a label is predicted above 0.5)" if task == "multilabel"
                   else "the probability of each class (they sum to 1; the prediction is the largest)")
    return {"name": graph.head.name, "dtype": "float32", "shape": ["batch", width], "columns": columns,
            "meaning": meaning}


def input_spec(graph: ExportGraph, kind: str) -> dict[str, Any]:
    """``model.json``'s ``input``: its name, kind, dtype, shape (``batch`` first), layout and the kind's entries."""
    inputs = graph.inputs
    dtype = str(inputs.dtype).removeprefix("torch.")
    return {"name": inputs.name, "kind": kind, "dtype": dtype, "shape": ["batch", *inputs.shape],
            "layout": inputs.layout, **inputs.entries()}


def model_card(graph: ExportGraph, restored: Any, *, kind: str, fmt: str, file: str, versions: dict[str, Any],
               verification: dict[str, Any]) -> dict[str, Any]:
    """What ``model.json`` holds for ``graph`` written as ``file`` in format ``fmt``.

    Args:
        graph: the exported graph.
        restored: the checkpoint it was made from (:func:`dltrain.inference.restore.load_model`).
        kind: the kind of preprocessing of its inputs.
        fmt: ``onnx``, ``torchscript`` or ``exported_program``.
        file: the model file's name in the folder.
        versions: the versions of what wrote and reads it (dltrain, torch, onnx, opset, ...).
        verification: the verification's split, examples, largest difference, tolerance and runtime.
    """
    data = dict(restored.data)
    return {
        "dltrain_export": CARD_VERSION, "format": fmt, "file": file, "task": data["task"],
        **(card_entry() if data["task"] == LATENTS else {}),
        "dataset": data.get("dataset"), "class_names": data.get("class_names"),
        "input": input_spec(graph, kind), "output": output_spec(graph, data),
        "outside_the_graph": graph.inputs.outside,
        "data": {k: v for k, v in data.items() if k != "vocabulary"},
        "versions": versions,
        "source": {"checkpoint": str(restored.path), "sha256": sha256(Path(restored.path)),
                   "epoch": restored.state.get("epoch")},
        "verification": verification,
    }


def sha256(path: Path) -> str:
    """The file's SHA-256, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_files(graph: ExportGraph) -> dict[str, str]:
    """The text files written beside the model file (``vocab.txt`` for text inputs)."""
    return graph.inputs.files()

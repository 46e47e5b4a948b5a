"""What an export folder's writer (:mod:`dltrain.export.cli`) and its readers
(:mod:`dltrain.inference.onnx_predict`) share: the files' names, ``model.json``'s layout
version, and the onnxruntime session an ONNX file runs in. Imports no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The file beside the model that describes it, and the version of its layout.
CARD, CARD_VERSION = "model.json", 1
#: A text model's vocabulary, one token per line.
VOCABULARY_FILE = "vocab.txt"
#: The model file of each format ``dltrain-export`` writes.
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.pt", "exported_program": "model.pt2"}
#: Every name an export folder may hold.
OWN_FILES = frozenset({CARD, VOCABULARY_FILE, *MODEL_FILES.values()})


def is_card_version(value: Any) -> bool:
    """Whether ``value`` is this layout's version: the integer, not ``true`` nor ``"1"``."""
    return type(value) is int and value == CARD_VERSION


def onnx_session(path: Path, providers: list[Any]) -> Any:
    """An onnxruntime session of the ONNX file ``path`` on ``providers``, logging errors only
    (its warnings about graph optimisations are not the user's)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=providers)

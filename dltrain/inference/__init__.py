"""Using a checkpoint: restore a model, dltrain-eval, dltrain-predict."""

from __future__ import annotations

from typing import Any

__all__ = ["load_model"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package (dltrain-predict's start, --help) must not load torch and the models.
    if name == "load_model":
        from dltrain.inference.restore import load_model

        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The check after writing: the checkpoint's test split through the exported file (raw inputs,
its own runtime) and through dltrain (the model on its inputs, then ``dltrain-predict``'s
probabilities or values), compared output by output.

Tolerances: probabilities differ by float32 rounding (the graph computes what dltrain computes,
in another order), so at most about 1e-6;
:data:`PROBABILITY_TOLERANCE` leaves room for a deeper network's accumulated rounding and no room
for a wrong preprocessing (a pixel off by one moves probabilities by far more). Values are
compared in the target's units against :data:`VALUE_TOLERANCE` times the target's standard
deviation: the model's outputs are standardised values. An autoencoder's latent codes (its
encoder's export) are unbounded: :data:`VALUE_TOLERANCE` of the largest code's size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dltrain.errors import UserError
from dltrain.export.raw import Examples

PROBABILITY_TOLERANCE = 1e-4
VALUE_TOLERANCE = 1e-4


def tolerance(data: dict[str, Any]) -> float:
    """The largest difference allowed between the exported file's outputs and dltrain's."""
    if data["task"] != "regression":
        return PROBABILITY_TOLERANCE
    _, std = data.get("target_scale") or (0.0, 1.0)
    return VALUE_TOLERANCE * float(std)


def reference(model: torch.nn.Module, inputs: torch.Tensor, data: dict[str, Any], batch_size: int) -> np.ndarray:
    """dltrain's outputs for ``inputs``: the model's probabilities or values
    (:func:`~dltrain.inference.predict.model_result`, unrounded: ``predictions.csv`` rounds them,
    and 6 significant digits of a value near 1e6 are coarser than the tolerance), ``(N, outputs)``."""
    from dltrain.inference.predict import model_result

    parts = []
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            parts.append(model_result(model(inputs[start:start + batch_size]).float(), data).double().numpy())
    return np.concatenate(parts)


def exported(run: Callable[[np.ndarray], np.ndarray], raw: torch.Tensor, batch_size: int) -> np.ndarray:
    """The exported file's outputs for ``raw``, ``batch_size`` examples per call."""
    parts = [run(raw[start:start + batch_size].numpy()) for start in range(0, len(raw), batch_size)]
    return np.concatenate(parts).astype(np.float64)


def verify(run: Callable[[np.ndarray], np.ndarray], model: torch.nn.Module, examples: Examples,
           data: dict[str, Any], batch_size: int) -> dict[str, Any]:
    """Compare the exported file (``run``) with dltrain on ``examples``.

    Returns:
        ``model.json``'s ``verification`` (without ``runtime``): split, examples, largest difference, tolerance.

    Raises:
        UserError: the largest difference is above the tolerance, or the outputs' shapes differ.
    """
    ours, theirs = exported(run, examples.raw, batch_size), reference(model, examples.inputs, data, batch_size)
    if ours.shape != theirs.shape:
        raise UserError(f"the exported model returns outputs of shape {list(ours.shape)} where dltrain gives "
                        f"{list(theirs.shape)}: nothing was written; please report this")
    largest = float(np.nanmax(np.abs(ours - theirs))) if np.isfinite(ours).all() else float("inf")
    limit = tolerance(data) if data["task"] != "latents" else latent_tolerance(theirs)
    return {"split": "test", "examples": len(ours), "max_abs_diff": largest, "tolerance": limit}


def latent_tolerance(codes: np.ndarray) -> float:
    """An exported encoder's tolerance: latent codes are unbounded, so :data:`VALUE_TOLERANCE` of the
    largest code's size (float32 rounding is relative to it), and at least :data:`VALUE_TOLERANCE`."""
    return VALUE_TOLERANCE * max(1.0, float(np.abs(codes).max(initial=0.0)))


def describe(result: dict[str, Any]) -> str:
    """``largest difference: 4.8e-07 over 270 test examples (tolerance 1e-04)``."""
    return (f"largest difference: {result['max_abs_diff']:.1e} over {result['examples']} test examples "
            f"(tolerance {result['tolerance']:.0e})")


def check(result: dict[str, Any], fmt: str) -> None:
    """Refuse an export whose outputs differ from dltrain's by more than the tolerance.

    Raises:
        UserError: naming the difference, the tolerance and the format.
    """
    if not result["max_abs_diff"] <= result["tolerance"]:
        raise UserError(f"the format={fmt} file's outputs differ from dltrain's ({describe(result)}), so it was not "
                        "kept: try another format, or report this")

"""A GAN's own training state in a checkpoint (the ``task`` entry): the fixed latent batch,
the discriminator's optimizer (the generator's is the checkpoint's ``optimizer``) and the
SHA-256 of the ``task.scorer`` file the run scores with (None without one). Read back,
it is hostile input: every entry is checked before it is used, and a bad one is one line."""

from __future__ import annotations

from typing import Any

import torch

from dltrain.tasks.base import BadTaskState
from dltrain.training.optimizer_state import load_checked_optimizer_state

LATENTS, D_OPTIMIZER, SCORER_SHA256 = "latents", "discriminator_optimizer", "scorer_sha256"


def _refuse(what: str) -> BadTaskState:
    """What is wrong, in words that follow ``the checkpoint's`` in the resume's one line."""
    return BadTaskState(what)


def checked_latents(entry: Any, shape: tuple[int, int]) -> torch.Tensor:
    """The saved latent batch, if it is a finite float32 tensor of ``shape`` ``(num_samples, latent_size)``.

    Raises:
        BadTaskState: anything else (the resume names the checkpoint in its one line).
    """
    if not torch.is_tensor(entry) or entry.dtype != torch.float32 or tuple(entry.shape) != tuple(shape):
        got = f"a {entry.dtype} tensor of shape {tuple(entry.shape)}" if torch.is_tensor(entry) else \
            f"a {type(entry).__name__}"
        raise _refuse(f"fixed latent batch (task=gan's) is {got}, not a float32 {shape[0]}x{shape[1]} tensor "
                      "(task.num_samples x model.latent_size)")
    if not bool(torch.isfinite(entry).all()):
        raise _refuse("fixed latent batch (task=gan's) holds non-finite values")
    return entry.clone()


def checked_sha256(entry: Any) -> str | None:
    """The saved scorer's SHA-256 (64 lowercase hex digits), or None: none saved (a run without
    ``task.scorer``, or a checkpoint written before it was recorded).

    Raises:
        BadTaskState: anything else (the resume names the checkpoint in its one line).
    """
    if entry is None:
        return None
    if not (isinstance(entry, str) and len(entry) == 64 and all(c in "0123456789abcdef" for c in entry)):
        raise _refuse(f"scorer's SHA-256 (task=gan's) is {type(entry).__name__} {str(entry)[:20]!r}, not 64 hex "
                      "digits")
    return entry


def load_adam_state(optimizer: torch.optim.Optimizer, entry: Any) -> None:
    """Load a saved optimizer state into ``optimizer`` (the discriminator's Adam), checked as the
    run's optimizer is (:func:`~dltrain.training.optimizer_state.load_checked_optimizer_state`).

    Raises:
        BadOptimizerState: anything it refuses (the resume names the checkpoint in its one line).
    """
    load_checked_optimizer_state(optimizer, entry, "discriminator's optimizer state (task=gan's)")

"""A GAN's own training state in a checkpoint (the ``task`` entry): the fixed latent batch and
the discriminator's optimizer (the generator's is the checkpoint's ``optimizer``). Read back,
it is hostile input: every entry is checked before it is used, and a bad one is one line."""

from __future__ import annotations

from typing import Any

import torch

from dltrain.tasks.base import BadTaskState

LATENTS, D_OPTIMIZER = "latents", "discriminator_optimizer"
ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")


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


def load_adam_state(optimizer: torch.optim.Optimizer, entry: Any) -> None:
    """Load a saved optimizer state into ``optimizer`` (the discriminator's Adam), once it has
    the groups, parameter count and per-parameter moments (each of its parameter's shape,
    floating point) that ``optimizer`` keeps.

    Raises:
        BadTaskState: any of them differs (the resume names the checkpoint in its one line).
    """
    what = "discriminator's optimizer state (task=gan's) is"
    if not (isinstance(entry, dict) and isinstance(entry.get("state"), dict)
            and isinstance(entry.get("param_groups"), list)):
        raise _refuse(f"{what} a {type(entry).__name__} without state and param_groups")
    try:
        optimizer.load_state_dict(entry)
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as err:  # torch's checks of the groups
        raise _refuse(f"{what} for other parameters ({str(err).splitlines()[0] if str(err) else err!r})") \
            from None
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if not isinstance(state, dict):
                raise _refuse(f"{what} damaged (a {type(state).__name__} for a parameter)")
            for key, value in state.items():
                wanted = p.shape if key in ADAM_MOMENTS else torch.Size([])
                if not (torch.is_tensor(value) and value.is_floating_point() and value.shape == wanted):
                    raise _refuse(f"{what} damaged ({key} of a parameter of shape {tuple(p.shape)} "
                                  f"is {tuple(value.shape) if torch.is_tensor(value) else type(value).__name__})")

"""Every random number generator a run draws from: seeded at the start, saved in each
checkpoint and restored on resume, so a resumed run draws exactly what an uninterrupted
one would (dropout masks, augmentations, anything a custom model samples)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The state of Python's, NumPy's and torch's generators as tensors and plain data
    (loadable with ``weights_only=True``)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`. CUDA states are restored when this machine has as many
    devices as the one that saved them (a run moved between machines cannot be exact)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def fork_rng(rank: int) -> None:
    """Give this rank generators of its own, drawn from the current (shared) ones: after a
    resume at another world size, every rank starts from the same saved state."""
    seed_everything((int(torch.randint(0, 2**32, (1,)).item()) + rank) % 2**32)


def restore_rank_rng(saved: dict[str, Any], per_rank: list[dict[str, Any]] | None, rank: int,
                     world_size: int) -> None:
    """Restore this rank's generators from a checkpoint: its own state when the checkpoint has
    one per rank (``per_rank``) of a run of this size, else the ``saved`` one, forked per rank
    when there are several (a resume at another world size cannot draw exactly what the saved
    run would have)."""
    if per_rank is not None and len(per_rank) == world_size:
        set_rng_state(per_rank[rank])
        return
    set_rng_state(saved)
    if world_size > 1:
        fork_rng(rank)

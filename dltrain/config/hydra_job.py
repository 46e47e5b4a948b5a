"""What Hydra says about the job this process runs; outside Hydra (the Python API), that
there is none. This module imports no torch."""

from __future__ import annotations


def in_sweep() -> bool:
    """Whether this process runs a job of a sweep (``dltrain -m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # not under Hydra
        return False

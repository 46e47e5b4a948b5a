"""dltrain: deep-learning training from Hydra config files.

``from dltrain import train, compose`` gives the Python API; torch is imported only when
one of them is first used, so the command line starts fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["train", "compose", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from dltrain.training.run import train

        return train
    if name == "compose":
        from dltrain.config.compose import compose

        return compose
    raise AttributeError(f"module 'dltrain' has no attribute {name!r}")

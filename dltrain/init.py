"""Weight initialisation schemes (``init=``)."""

from __future__ import annotations

from torch import nn

from dltrain.registry import Registry

INITS = Registry("init")


@INITS.register("default")
def init_default(model: nn.Module) -> dict[str, str]:
    """Keep PyTorch's own initialisation (Kaiming-uniform with a=sqrt(5) for Linear)."""
    return {name: "default" for name, m in model.named_modules()
            if not list(m.children()) and any(True for _ in m.parameters(recurse=False))}


def apply_init(model: nn.Module, name: str) -> dict[str, str]:
    """Initialise ``model`` in place with scheme ``name``.

    Returns:
        module name -> scheme applied, for the model summary.
    """
    return INITS.build(name, model=model)

"""Optimizers (``optim=``). Each builder takes the parameters and the torch keyword
arguments; every hyperparameter of the torch optimizer is a config key."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from dltrain.errors import ConfigError
from dltrain.registry import Registry

OPTIMIZERS = Registry("optim")


def _checked(name: str, make: Callable[..., torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
    """Turn torch's ValueError for a bad combination (e.g. Nesterov without momentum)
    into a one-line config error naming the option."""

    def build(params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
        try:
            return make(params, **kwargs)
        except ValueError as err:
            raise ConfigError(f"optim={name}: {err}") from err

    build.__doc__ = f"Build ``{make.__module__}.{make.__qualname__}``."
    return build


OPTIMIZERS.register("sgd")(_checked("sgd", torch.optim.SGD))
OPTIMIZERS.register("adam")(_checked("adam", torch.optim.Adam))


def build_optimizer(name: str, params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
    """The optimizer registered as ``name`` over ``params`` with torch's keyword arguments."""
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    return OPTIMIZERS.build(name, params, **kwargs)

"""Optimizers (``optim=``). Each builder takes parameter groups and the torch keyword
arguments; every hyperparameter of the torch optimizer is a config key.

Weight decay, whether set as ``regularization.l2`` or as the optimizer's own
``weight_decay``, applies to the weights only: biases and normalisation parameters sit in
a parameter group without decay (see ``dltrain.regularization``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from dltrain.errors import ConfigError
from dltrain.registry import Registry
from dltrain.regularization import param_groups

OPTIMIZERS = Registry("optim")

#: Optimizers that re-evaluate the loss within a step: the trainer passes them a closure.
CLOSURE_OPTIMIZERS = ("lbfgs",)

#: Optimizers whose torch class has a fused step (one kernel updates every parameter),
#: which dltrain uses unless ``optim.fused`` or ``optim.foreach`` is set. torch's own
#: default is a Python loop over the parameters on the CPU (about ten small operations per
#: parameter tensor); the fused step made a small MLP's CPU epoch about a quarter faster
#: (see BENCHMARKS.md). It computes the same update, with float rounding of its own.
FUSED_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "adagrad")


def _checked(name: str, make: Callable[..., torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
    """Turn torch's ValueError for a bad combination (e.g. Nesterov without momentum)
    into a one-line config error naming the option."""

    def build(params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
        try:
            return make(params, **kwargs)
        except (ValueError, RuntimeError) as err:  # e.g. RuntimeError: fused and foreach cannot be True together
            raise ConfigError(f"optim={name}: {str(err).rstrip('.')}; change the optim.* value it names.") from err

    build.__doc__ = f"Build ``{make.__module__}.{make.__qualname__}``."
    return build


for _name, _cls in {
    "sgd": torch.optim.SGD, "momentum": torch.optim.SGD, "nesterov": torch.optim.SGD,
    "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "nadam": torch.optim.NAdam,
    "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta,
    "lbfgs": torch.optim.LBFGS,
}.items():
    OPTIMIZERS.register(_name)(_checked(_name, _cls))


def build_optimizer(name: str, model: nn.Module, l2: float = 0.0, split_groups: bool | None = None,
                    **kwargs: Any) -> torch.optim.Optimizer:
    """The optimizer registered as ``name`` over ``model``'s parameters.

    Args:
        name: the ``optim=`` option.
        model: whose parameters to optimise.
        l2: ``regularization.l2``, the weight decay on the weights. For LBFGS, which has no
            weight decay, the trainer adds it to the loss instead (``WeightPenalty``).
        split_groups: weights and the other parameters in two groups even without decay
            (None: only with decay; see :func:`~dltrain.regularization.param_groups`).
        **kwargs: the torch optimizer's keyword arguments (the ``optim.*`` keys).

    Raises:
        ConfigError: for values torch refuses, or decay set twice.
    """
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    if name in CLOSURE_OPTIMIZERS:  # one parameter group only: LBFGS refuses several
        return OPTIMIZERS.build(name, [p for p in model.parameters() if p.requires_grad], **kwargs)
    if name in FUSED_OPTIMIZERS and kwargs.get("fused") is None and kwargs.get("foreach") is None \
            and _fused_supported(model):
        kwargs["fused"] = True
    decay = kwargs.pop("weight_decay", 0.0)
    if l2 and decay and l2 != decay:
        raise ConfigError(f"regularization.l2={l2:g} and optim.weight_decay={decay:g} both set weight decay: "
                          "keep one of them and set the other to 0.")
    return OPTIMIZERS.build(name, param_groups(model, l2 or decay, split_groups), **kwargs)


def _fused_supported(model: nn.Module) -> bool:
    """Whether torch has fused optimizer kernels for every trainable parameter: floating
    point, on a device type it supports (CPU, CUDA, MPS, ...)."""
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices
    except ImportError:  # a torch without it: keep torch's default
        return False
    devices = _get_fused_kernels_supported_devices()  # the CPU from torch 2.4
    params = [p for p in model.parameters() if p.requires_grad]
    return bool(params) and all(p.is_floating_point() and p.device.type in devices for p in params)

"""Optimizers (``optim=``). Each builder takes parameter groups and the torch keyword
arguments; every hyperparameter of the torch optimizer is a config key.

Weight decay, whether set as ``regularization.l2`` or as the optimizer's own
``weight_decay``, applies to the weights only: biases and normalisation parameters sit in
a parameter group without decay (see ``dltrain.regularization``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dltrain.errors import ConfigError
from dltrain.registry import Registry
from dltrain.regularization import param_groups


@dataclass(frozen=True)
class OptimizerFacts:
    """What dltrain needs to know about an optimizer option, registered with its builder.

    Attributes:
        closure: the optimizer re-evaluates the loss within a step (LBFGS's line search): the
            trainer passes it a closure, L2 becomes a loss term, and it takes one parameter group.
        fused_kernel: the aten kernel of the torch class's fused step (one kernel updates
            every parameter), which dltrain uses where this torch has it for the device, unless
            ``optim.fused`` or ``optim.foreach`` is set. torch's own default is a Python loop
            over the parameters on the CPU (about ten small operations per parameter tensor);
            the fused step made a small MLP's CPU epoch about a quarter faster (see
            BENCHMARKS.md). It computes the same update, with float rounding of its own.
    """

    closure: bool = False
    fused_kernel: str | None = None


OPTIMIZERS: Registry[OptimizerFacts] = Registry("optim", OptimizerFacts)


def _checked(name: str, make: Callable[..., torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
    """Turn torch's ValueError for a bad combination (e.g. Nesterov without momentum)
    into a one-line config error naming the option."""

    def build(params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
        try:
            return make(params, **kwargs)
        except (ValueError, RuntimeError) as err:  # e.g. RuntimeError: fused and foreach cannot be True together
            raise ConfigError(f"optim={name}: {str(err).rstrip('.')}; change the optim.* value it names.") from err

    build.__doc__ = f"Build ``{make.__module__}.{make.__qualname__}``."
    build.__wrapped__ = make  # inspect.signature(build) is the torch optimizer's: what build takes
    return build


_SGD, _ADAM, _ADAMW, _ADAGRAD = "_fused_sgd_", "_fused_adam_", "_fused_adamw_", "_fused_adagrad_"
for _name, _cls, _facts in (
    ("sgd", torch.optim.SGD, {"fused_kernel": _SGD}), ("momentum", torch.optim.SGD, {"fused_kernel": _SGD}),
    ("nesterov", torch.optim.SGD, {"fused_kernel": _SGD}), ("adam", torch.optim.Adam, {"fused_kernel": _ADAM}),
    ("adamw", torch.optim.AdamW, {"fused_kernel": _ADAMW}), ("nadam", torch.optim.NAdam, {}),
    ("rmsprop", torch.optim.RMSprop, {}), ("adagrad", torch.optim.Adagrad, {"fused_kernel": _ADAGRAD}),
    ("adadelta", torch.optim.Adadelta, {}), ("lbfgs", torch.optim.LBFGS, {"closure": True}),
    ("radam", torch.optim.RAdam, {}),
    ("adamax", torch.optim.Adamax, {}),
):
    OPTIMIZERS.register(_name, **_facts)(_checked(_name, _cls))


def build_optimizer(name: str, model: nn.Module, l2: float = 0.0, saved_groups: list[dict[str, Any]] | None = None,
                    backbone: list[nn.Module] | None = None, backbone_lr: float = 1.0,
                    **kwargs: Any) -> torch.optim.Optimizer:
    """The optimizer registered as ``name`` over ``model``'s parameters.

    Args:
        name: the ``optim=`` option.
        model: whose parameters to optimise.
        l2: ``regularization.l2``, the weight decay on the weights. For LBFGS, which has no
            weight decay, the trainer adds it to the loss instead (``WeightPenalty``).
        saved_groups: a resumed checkpoint's parameter groups. The optimizer keeps their
            number (see :func:`~dltrain.regularization.param_groups`) and their step
            implementation (fused, foreach or torch's default), so the resume continues with
            the same arithmetic, whatever today's default is.
        backbone: the modules trained at ``backbone_lr`` times the learning rate (a model's
            stages, ``model.backbone_lr``); the rest of the model (the head) at the learning
            rate itself. Their parameters sit in groups of their own, after the head's, marked
            ``"backbone": True``: group 0 keeps the head's learning rate, which the run reports.
        backbone_lr: the backbone's learning rate as a fraction of the head's; 1 makes no groups.
        **kwargs: the torch optimizer's keyword arguments (the ``optim.*`` keys).

    Raises:
        ConfigError: for values torch refuses, or decay set twice.
        ValueError: a ``backbone_lr`` for an optimizer of one parameter group (LBFGS).
    """
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    facts = OPTIMIZERS.facts(name)
    if facts.closure and backbone and backbone_lr != 1.0:  # a config is refused earlier, by check_transfer
        raise ValueError(f"optim={name} takes one parameter group: it cannot give the backbone its own learning rate")
    if facts.closure:  # one parameter group only: LBFGS refuses several
        return OPTIMIZERS.build(name, [p for p in model.parameters() if p.requires_grad], **kwargs)
    if saved_groups:
        for key in ("fused", "foreach"):
            if kwargs.get(key) is None and key in saved_groups[0]:
                kwargs[key] = saved_groups[0][key] if key == "foreach" else bool(saved_groups[0][key])
        if kwargs.get("fused") and not _fused_supported(name, model):  # resumed on a device without the kernel
            kwargs["fused"] = False
    elif facts.fused_kernel and kwargs.get("fused") is None and kwargs.get("foreach") is None \
            and _fused_supported(name, model):
        kwargs["fused"] = True
    decay = kwargs.pop("weight_decay", 0.0)
    if l2 and decay and l2 != decay:
        raise ConfigError(f"regularization.l2={l2:g} and optim.weight_decay={decay:g} both set weight decay: "
                          "keep one of them and set the other to 0.")
    # The decay layout of the head's groups (the backbone's repeat it).
    split = len([g for g in saved_groups if not g.get("backbone")]) > 1 if saved_groups else None
    if not backbone or backbone_lr == 1.0:
        return OPTIMIZERS.build(name, param_groups(model, l2 or decay, split), **kwargs)
    in_backbone = {id(p) for module in backbone for p in module.parameters()}
    head = param_groups(model, l2 or decay, split, keep=lambda p: id(p) not in in_backbone)
    body = param_groups(model, l2 or decay, split, keep=lambda p: id(p) in in_backbone)
    lr = kwargs["lr"] if "lr" in kwargs else inspect.signature(OPTIMIZERS.get(name)).parameters["lr"].default
    for group in body:
        group.update(lr=lr * backbone_lr, backbone=True)
    return OPTIMIZERS.build(name, head + body, **kwargs)


def _fused_supported(name: str, model: nn.Module) -> bool:
    """Whether this torch has the fused kernel of optimizer ``name`` for the device of every
    trainable parameter (not every device has one for every optimizer), the parameters are
    floating point, and no layer makes sparse gradients (which fused steps refuse)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params or not all(p.is_floating_point() for p in params):
        return False
    if any(getattr(module, "sparse", False) is True for module in model.modules()):
        return False  # nn.Embedding(sparse=True) and nn.EmbeddingBag(sparse=True)
    has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key
    keys = {"cpu": "CPU", "cuda": "CUDA", "mps": "MPS", "xpu": "XPU"}
    devices = {p.device.type for p in params}
    kernel = OPTIMIZERS.facts(name).fused_kernel
    return kernel is not None and all(dev in keys and has_kernel(f"aten::{kernel}", keys[dev]) for dev in devices)


def match_state_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (moments, momentum buffers) its parameter's
    memory layout. A checkpoint's state comes back in the layout it was saved in; after a
    resume that changes ``trainer.channels_last``, a fused step, which reads the tensors as
    flat memory, would pair a weight's elements with the wrong moments."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    optimizer.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)

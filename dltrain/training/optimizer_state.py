"""An optimizer's state read back from a checkpoint, checked before a step uses it.

A checkpoint is hostile input: torch's ``load_state_dict`` checks the parameter groups' sizes but
not the values in them, nor the per-parameter state (a moment of the wrong shape makes the fused
CPU step write past its end). :func:`load_checked_optimizer_state` loads an entry, then checks
every group's hyperparameters and every parameter's state; anything else is one line.
"""

from __future__ import annotations

import math
from typing import Any

import torch

#: Per-parameter state kept with its parameter's shape and dtype (Adam's, SGD's, RMSprop's, ...).
PARAMETER_SHAPED = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg", "grad_avg",
                    "acc_delta", "sum", "exp_inf", "ax", "prev", "step_size")
#: Group values that are finite non-negative numbers, plain numbers, and flags.
NON_NEGATIVE = ("lr", "eps", "weight_decay")
NUMBERS = ("momentum", "dampening")
FLAGS = ("fused", "foreach", "amsgrad", "maximize", "capturable", "differentiable", "decoupled_weight_decay",
         "nesterov")


class BadOptimizerState(ValueError):
    """A checkpoint's optimizer state is not what dltrain saves (damaged or crafted): the message
    says what is wrong, in words that follow ``resume=<file>: the checkpoint's``."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def group_problem(group: dict[str, Any]) -> str | None:
    """What is wrong with one parameter group's hyperparameters (None: nothing)."""
    for key in NON_NEGATIVE:
        if key in group and not (_number(group[key]) and group[key] >= 0):
            return f"{key} is {group[key]!r}, not a finite number >= 0"
    for key in NUMBERS:
        if key in group and not _number(group[key]):
            return f"{key} is {group[key]!r}, not a finite number"
    betas = group.get("betas", (0.0, 0.0))
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(_number(b) and 0 <= b < 1 for b in betas)):
        return f"betas is {betas!r}, not two numbers in [0, 1)"
    for key in FLAGS:
        if group.get(key) is not None and not isinstance(group[key], bool):
            return f"{key} is {group[key]!r}, not true, false or None"
    return None


def parameter_problem(p: torch.Tensor, state: Any) -> str | None:
    """What is wrong with one parameter's state (None: nothing)."""
    if not isinstance(state, dict):
        return f"a {type(state).__name__} for a parameter's state"
    for key, value in state.items():
        if key == "step":
            scalar = torch.is_tensor(value) and value.dim() == 0 and value.is_floating_point()
            if not (scalar or _number(value)):
                return f"step of a parameter is {_described(value)}, not a scalar"
        elif key in PARAMETER_SHAPED and value is not None:
            got = (type(value).__name__ if not torch.is_tensor(value) else tuple(value.shape)
                   if value.shape != p.shape else f"{value.dtype}, not {p.dtype}" if value.dtype != p.dtype else None)
            if got is not None:
                return f"{key} of a parameter of shape {tuple(p.shape)} is {got}"
    return None


def flat_state_problem(state: Any, numel: int, dtype: torch.dtype) -> str | None:
    """What is wrong with the state LBFGS keeps on its first parameter (None: nothing): flat
    tensors of all ``numel`` parameters, lists of them, scalars; NAdam's ``mu_product`` a scalar."""
    if not isinstance(state, dict):
        return None  # parameter_problem names it
    for key in ("d", "prev_flat_grad"):
        value = state.get(key)
        if value is not None and not _tensor_like(value, (numel,), dtype):
            return f"{key} is {_described(value)}, not a {dtype} tensor of shape ({numel},)"
    for key, shape in (("old_dirs", (numel,)), ("old_stps", (numel,)), ("ro", ()), ("al", ())):
        value = state.get(key)
        if value is not None and not (isinstance(value, list) and all(
                v is None or _tensor_like(v, shape, dtype) for v in value)):
            return f"{key} is {_described(value)}, not a list of {dtype} tensors of shape {shape}"
    for key in ("t", "prev_loss", "mu_product", "H_diag"):
        value = state.get(key)
        if value is not None and not (_number(value) or _tensor_like(value, (), None)):
            return f"{key} is {_described(value)}, not a finite scalar"
    for key in ("func_evals", "n_iter"):
        value = state.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return f"{key} is {_described(value)}, not a count"
    return None


def _tensor_like(value: Any, shape: tuple[int, ...], dtype: torch.dtype | None) -> bool:
    """A tensor of ``shape`` (and ``dtype`` unless None), finite where it holds one number."""
    if not (torch.is_tensor(value) and tuple(value.shape) == shape and value.is_floating_point()
            and (dtype is None or value.dtype == dtype)):
        return False
    return bool(torch.isfinite(value)) if value.dim() == 0 else True


def _described(value: Any) -> str:
    return f"a {value.dtype} tensor of shape {tuple(value.shape)}" if torch.is_tensor(value) else \
        f"a {type(value).__name__}"


def load_checked_optimizer_state(optimizer: torch.optim.Optimizer, entry: Any, what: str) -> None:
    """Load ``entry`` (a saved ``state_dict``) into ``optimizer`` once it holds its parameter
    groups, sane hyperparameters in each, and per-parameter state of each parameter's shape and dtype.

    Args:
        what: the entry in words (``optimizer state``, ``discriminator's optimizer state (task=gan's)``).

    Raises:
        BadOptimizerState: anything else (the resume names the checkpoint in its one line).
    """
    if not (isinstance(entry, dict) and isinstance(entry.get("state"), dict)
            and isinstance(entry.get("param_groups"), list)
            and all(isinstance(g, dict) for g in entry["param_groups"])):
        raise BadOptimizerState(f"{what} is a {type(entry).__name__} without state and param_groups")
    try:
        optimizer.load_state_dict(entry)
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError, AttributeError) as err:  # torch's own checks
        raise BadOptimizerState(f"{what} is for other parameters or damaged "
                                f"({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    check_loaded_optimizer(optimizer, what)


def check_loaded_optimizer(optimizer: torch.optim.Optimizer, what: str) -> None:
    """Check the hyperparameters and state ``optimizer`` holds now: after its own state is
    loaded, and again once anything else read from the checkpoint (the scheduler's saved
    groups) has written into its groups.

    Raises:
        BadOptimizerState: the first thing wrong, in words.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    numel = sum(p.numel() for p in params)
    for group in optimizer.param_groups:
        problem = group_problem(group)
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            problem = problem or parameter_problem(p, state) or flat_state_problem(state, numel, p.dtype)
        if problem:
            raise BadOptimizerState(f"{what} is damaged ({problem})")

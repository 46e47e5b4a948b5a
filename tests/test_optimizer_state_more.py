"""Every ``optim=`` option's own state passes the checkpoint's optimizer check and a crafted
moment of it is refused; LBFGS's flat state and NAdam's ``mu_product`` are checked; a
scheduler's saved groups, which write into the optimizer's, are checked after they do."""

from __future__ import annotations

import inspect
import re

import pytest
import torch
from torch import nn

from dltrain.optim import OPTIMIZERS, build_optimizer
from dltrain.training.optimizer_state import BadOptimizerState, load_checked_optimizer_state
from tests.test_optimizer_state import checkpoints, resumed  # noqa: F401  (a fixture, and its helper)

#: Keyword arguments an option needs to be itself (its preset's), and the moment a crafted state replaces.
KWARGS = {"momentum": {"momentum": 0.9}, "nesterov": {"momentum": 0.9, "nesterov": True}}
MOMENT = {"sgd": "momentum_buffer", "momentum": "momentum_buffer", "nesterov": "momentum_buffer",
          "adam": "exp_avg", "adamw": "exp_avg", "nadam": "exp_avg_sq", "radam": "exp_avg", "adamax": "exp_inf",
          "adagrad": "sum", "adadelta": "acc_delta", "rmsprop": "square_avg", "lbfgs": "d"}
CASES = [(name, foreach) for name in OPTIMIZERS.names()
         for foreach in ((None, True, False) if "foreach" in inspect.signature(
             OPTIMIZERS.get(name).__wrapped__).parameters else (None,))]


def stepped(name: str, foreach: bool | None) -> torch.optim.Optimizer:
    """``name``'s optimizer over a tiny model, stepped twice."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    kwargs = dict(KWARGS.get(name, {}), **({} if foreach is None else {"foreach": foreach}))
    optimizer = build_optimizer(name, model, **kwargs)
    x = torch.randn(5, 3)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss

    for _ in range(2):
        optimizer.step(closure)
    return optimizer


def test_every_option_is_covered():
    assert set(MOMENT) == set(OPTIMIZERS.names())


@pytest.mark.parametrize(("name", "foreach"), CASES)
def test_each_option_s_real_state_loads_and_a_crafted_moment_is_refused(name, foreach):
    saved = stepped(name, foreach).state_dict()
    assert name == "sgd" or MOMENT[name] in saved["state"][0]  # plain SGD keeps no state
    load_checked_optimizer_state(stepped(name, foreach), saved, "optimizer state")  # its own state passes
    saved["state"].setdefault(0, {})[MOMENT[name]] = torch.zeros(7)
    with pytest.raises(BadOptimizerState, match=f"^optimizer state is (damaged|for other).*{MOMENT[name]}"):
        load_checked_optimizer_state(stepped(name, foreach), saved, "optimizer state")


@pytest.mark.parametrize(("name", "key", "value", "problem"), [
    ("lbfgs", "prev_flat_grad", torch.zeros(3), "prev_flat_grad is a torch.float32 tensor of shape (3,)"),
    ("lbfgs", "d", torch.zeros(34),
     "d is a torch.float32 tensor of shape (34,), not a torch.float32 tensor of shape (26,)"),  # 26 parameters
    ("lbfgs", "old_dirs", [torch.zeros(34), torch.zeros(2)], "old_dirs is a list"),
    ("lbfgs", "ro", torch.zeros(3), "ro is a torch.float32 tensor of shape (3,), not a list"),
    ("lbfgs", "t", "1", "t is a str, not a finite scalar"),
    ("lbfgs", "prev_loss", float("nan"), "prev_loss is a float, not a finite scalar"),
    ("lbfgs", "n_iter", -1, "n_iter is a int, not a count"),
    ("nadam", "mu_product", torch.ones(2), "mu_product is a torch.float32 tensor of shape (2,)"),
    ("nadam", "mu_product", torch.tensor(float("inf")), "mu_product is a torch.float32 tensor of shape ()"),
])
def test_lbfgs_flat_state_and_nadam_mu_product_are_checked(name, key, value, problem):
    saved = stepped(name, None).state_dict()
    saved["state"][0][key] = value
    with pytest.raises(BadOptimizerState, match=f"^optimizer state is damaged \\({re.escape(problem)}"):
        load_checked_optimizer_state(stepped(name, None), saved, "optimizer state")


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("lr", "0.1", "lr is '0.1', not a finite number >= 0"),
    ("betas", [5.0, 0.9], r"betas is \(5.0, 0.9\), not two numbers in \[0, 1\)"),
])
def test_a_scheduler_s_crafted_group_is_one_line(compose, tmp_path, checkpoints, key, value, problem):  # noqa: F811
    def damage(state):
        state["scheduler"]["groups"][0][key] = value

    err = resumed(compose, tmp_path, checkpoints, "supervised", damage)
    assert re.search(f"the checkpoint's scheduler state is damaged \\({problem}\\): resume a checkpoint", str(err))

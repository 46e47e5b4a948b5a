"""Optimizers, weight decay through parameter groups, and the L1/L2 penalty: the arithmetic
the notes teach, pinned on small known models."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
from torch import nn

from dltrain.config.validation import GROUP_SCHEMAS
from dltrain.errors import ConfigError
from dltrain.optim import OPTIMIZERS, build_optimizer
from dltrain.regularization import WeightPenalty, param_groups, split_weights
from dltrain.training.callbacks import EarlyStopping
from dltrain.training.trainer import Trainer

#: Every option, and those whose torch class has a fused step and those without one.
OPTIONS = OPTIMIZERS.names()
FUSED = [option for option in OPTIONS if OPTIMIZERS.facts(option).fused_kernel]
UNFUSED = [option for option in OPTIONS if not OPTIMIZERS.facts(option).fused_kernel]


def known_linear() -> nn.Linear:
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, -4.0]]))
        layer.bias.copy_(torch.tensor([5.0, -6.0]))
    return layer


def torch_class(option: str) -> type[torch.optim.Optimizer]:
    """The torch class that the option's builder makes from its preset."""
    return type(build_optimizer(option, _mlp(), **defaults(option)))


@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_builds_the_torch_class_its_schema_names(option):
    assert f"``torch.optim.{torch_class(option).__name__}``" in GROUP_SCHEMAS["optim"][option].__doc__


@pytest.mark.parametrize("option", OPTIONS)
def test_optimizer_schemas_cover_the_torch_signature(option):
    """Every hyperparameter of the torch optimizer is a config key (the internal switches
    ``differentiable`` and ``capturable`` aside)."""
    params = set(inspect.signature(torch_class(option)).parameters)
    params -= {"self", "params", "differentiable", "capturable"}
    keys = {f.name for f in dataclasses.fields(GROUP_SCHEMAS["optim"][option])}
    assert params <= keys, params - keys


def defaults(option: str) -> dict:
    """The option's preset values, as the config would pass them."""
    from dltrain import compose

    cfg = compose([f"optim={option}"]).optim
    return {k: v for k, v in dict(cfg).items() if k != "name"}


@pytest.mark.parametrize("option", OPTIONS)
def test_every_optimizer_builds_and_steps(option):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    opt = build_optimizer(option, model, **defaults(option))
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    before = [p.detach().clone() for p in model.parameters()]

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    closure()
    opt.step(closure)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_presets_momentum_and_nesterov():
    assert defaults("momentum")["momentum"] == 0.9 and not defaults("momentum")["nesterov"]
    assert defaults("nesterov")["momentum"] == 0.9 and defaults("nesterov")["nesterov"]


def test_nesterov_and_classical_momentum_take_different_steps():
    """Same start, same constant gradient (loss = w): classical momentum steps lr * v with
    v = g; Nesterov steps lr * (g + m * v). With lr 0.1, m 0.9, g 1: 0.9 against 0.81."""
    results = {}
    for option in ("momentum", "nesterov"):
        w = nn.Parameter(torch.tensor([1.0]))
        model = nn.Module()
        model.w = w
        opt = build_optimizer(option, model, **{**defaults(option), "lr": 0.1})  # presets: momentum 0.9
        for _ in range(2):
            opt.zero_grad()
            w.sum().backward()
            opt.step()
            results.setdefault(option, []).append(round(w.item(), 6))
    assert results["momentum"] == [0.9, pytest.approx(0.71)]  # v2 = 0.9 * 1 + 1 = 1.9
    assert results["nesterov"] == [0.81, pytest.approx(0.81 - 0.1 * (1 + 0.9 * 1.9))]


def test_nesterov_without_momentum_is_a_config_error():
    with pytest.raises(ConfigError, match="optim=nesterov: .*momentum"):
        build_optimizer("nesterov", nn.Linear(2, 2), lr=0.1, momentum=0.0, nesterov=True)


def test_l1_term_is_lambda_times_sum_of_absolute_weights():
    penalty = WeightPenalty(known_linear(), l1=0.1)
    assert penalty().item() == pytest.approx(0.1 * (1 + 2 + 3 + 4))  # biases (5, -6) excluded


def test_l1_and_l2_together_are_elastic_net():
    penalty = WeightPenalty(known_linear(), l1=0.1, l2=0.2)
    assert penalty().item() == pytest.approx(0.1 * 10 + 0.5 * 0.2 * (1 + 4 + 9 + 16))
    assert not WeightPenalty(known_linear())  # nothing to add: the trainer skips it


def test_weights_are_matrices_never_biases_or_norm_parameters():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.LazyLinear(3))
    model(torch.zeros(2, 1, 5, 5))
    weights, others = split_weights(model)
    assert {id(p) for p in weights} == {id(model[0].weight), id(model[3].weight)}
    assert {id(p) for p in others} == {id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[3].bias)}


@pytest.mark.parametrize("option,key", [("sgd", "l2"), ("adamw", "weight_decay"), ("adam", "l2")])
def test_biases_and_norm_parameters_get_no_weight_decay(option, key):
    """With a zero gradient only decay moves a parameter: the weights shrink, the bias and
    the batch-norm scale and shift stay exactly where they were."""
    model = nn.Sequential(known_linear(), nn.BatchNorm1d(2))
    kwargs = {**defaults(option), "lr": 0.1}
    kwargs["weight_decay"] = 0.5 if key == "weight_decay" else 0.0
    opt = build_optimizer(option, model, l2=0.5 if key == "l2" else 0.0, **kwargs)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = dict(model.named_parameters())
    assert (after["0.weight"].abs() < before["0.weight"].abs()).all()
    for name in ("0.bias", "1.weight", "1.bias"):
        assert torch.equal(after[name], before[name]), name
    if option == "sgd":  # w <- w - lr * l2 * w
        assert torch.allclose(after["0.weight"], before["0.weight"] * (1 - 0.1 * 0.5))


def test_decay_set_twice_is_refused():
    with pytest.raises(ConfigError, match=r"regularization.l2=0.1 and optim.weight_decay=0.01 both set weight decay"):
        build_optimizer("adamw", nn.Linear(2, 2), l2=0.1, weight_decay=0.01)


def test_param_groups_drop_empty_groups():
    assert len(param_groups(nn.Linear(2, 2, bias=False), 0.1)) == 1


def test_lbfgs_lowers_the_loss_on_a_quadratic():
    """Least squares is a quadratic in the weights: through the trainer's closure, one
    LBFGS step with a line search takes the loss from large to almost nothing."""
    torch.manual_seed(0)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([2.0, -3.0, 0.5]) + 1.0
    model = nn.Linear(3, 1)
    opt = build_optimizer("lbfgs", model, **defaults("lbfgs"))
    loss_fn = nn.MSELoss()
    start = loss_fn(model(x).squeeze(1), y).item()
    trainer = Trainer(model, opt, lambda out, t: loss_fn(out.squeeze(1), t), "regression", max_epochs=1,
                      stopper=EarlyStopping("val_loss", "min", 0.0, 1))
    _, loss = trainer.train_step(x, y)
    assert loss.item() == pytest.approx(start)  # the loss reported is the one before the step
    end = loss_fn(model(x).squeeze(1), y).item()
    assert start > 1 and end < 1e-4 * start


def test_lbfgs_gets_l2_as_a_loss_term_not_parameter_groups():
    model = nn.Linear(3, 1)
    opt = build_optimizer("lbfgs", model, l2=0.3, **defaults("lbfgs"))
    assert len(opt.param_groups) == 1


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("option", FUSED)
def test_optimizers_with_a_fused_step_use_it_by_default(option):
    optimizer = build_optimizer(option, _mlp(), **{**defaults(option), "lr": 0.01})
    assert all(group["fused"] is True for group in optimizer.param_groups)


@pytest.mark.parametrize("setting", [{"foreach": True}, {"foreach": False}, {"fused": False}])
def test_an_explicit_foreach_or_fused_is_left_alone(setting):
    optimizer = build_optimizer("adam", _mlp(), lr=0.01, **setting)
    assert all(not group["fused"] for group in optimizer.param_groups)
    for key, value in setting.items():
        assert all(group[key] is value for group in optimizer.param_groups)


@pytest.mark.parametrize("option", UNFUSED)
def test_optimizers_without_a_fused_step_keep_torchs_default(option):
    optimizer = build_optimizer(option, _mlp(), lr=0.01)
    assert not any(group.get("fused") for group in optimizer.param_groups)


@pytest.mark.parametrize("option", FUSED)
def test_the_fused_step_is_the_same_update_as_torchs_loop(option):
    """Ten steps with dltrain's default (fused) and torch's per-parameter loop end at the same
    weights, to float rounding; the two runs really take the two paths."""
    kwargs = {key: value for key, value in defaults(option).items() if key != "weight_decay"}  # decay: l2
    weights, fused = [], []
    for impl in ({}, {"foreach": False}):
        model = _mlp()
        optimizer = build_optimizer(option, model, l2=0.01, **{**kwargs, "lr": 0.05, **impl})
        fused.append([bool(group["fused"]) for group in optimizer.param_groups])
        generator = torch.Generator().manual_seed(1)
        for _ in range(10):
            x, y = torch.randn(16, 6, generator=generator), torch.randint(0, 3, (16,), generator=generator)
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert fused == [[True, True], [False, False]]  # weights and no-decay groups, fused then the loop
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-5, atol=1e-6)


def test_sparse_embeddings_keep_torchs_default_step():
    """Fused steps refuse sparse gradients: a model with nn.Embedding(sparse=True) keeps the
    step that takes them, and trains."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 4, sparse=True), nn.Flatten(), nn.Linear(12, 2))
    optimizer = build_optimizer("sgd", model, lr=0.1)
    assert not any(group["fused"] for group in optimizer.param_groups)
    loss = nn.functional.cross_entropy(model(torch.randint(0, 20, (5, 3))), torch.randint(0, 2, (5,)))
    loss.backward()
    optimizer.step()
    assert model[0].weight.grad.is_sparse


def test_a_resumed_optimizer_keeps_its_checkpoints_step_and_groups():
    saved = build_optimizer("adam", _mlp(), lr=0.01, foreach=False).state_dict()["param_groups"]
    resumed = build_optimizer("adam", _mlp(), lr=0.01, saved_groups=saved)
    assert [g["fused"] for g in resumed.param_groups] == [False] and resumed.param_groups[0]["foreach"] is False
    fused = build_optimizer("adam", _mlp(), lr=0.01, saved_groups=resumed.state_dict()["param_groups"])
    assert fused.param_groups[0]["fused"] is False  # what was saved, not today's default
    assert build_optimizer("adam", _mlp(), lr=0.01).param_groups[0]["fused"] is True

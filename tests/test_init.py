"""Weight-init schemes: the statistics each one promises, and what it touches."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dltrain.errors import ConfigError
from dltrain.init import INITS, apply_init
from dltrain.models.mlp import build_mlp


def big_linear(fan_in: int = 1000, fan_out: int = 1000) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(fan_in, fan_out)


def small_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 10))


def leaves_with_params(model: nn.Module) -> set[str]:
    return {name for name, m in model.named_modules()
            if not list(m.children()) and any(True for _ in m.parameters(recurse=False))}


def test_he_normal_std_is_sqrt_2_over_fan_in():
    layer = big_linear()
    assert apply_init(layer, "he_normal", activation="relu") == {"": "he_normal(relu)"}
    w = layer.weight
    assert abs(w.std().item() / math.sqrt(2 / 1000) - 1) < 0.05
    assert abs(w.mean().item()) < 1e-3
    assert torch.all(layer.bias == 0)


def test_he_normal_matches_tanh_gain():
    layer = big_linear()
    apply_init(layer, "he_normal", nonlinearity="tanh")
    assert abs(layer.weight.std().item() / ((5 / 3) / math.sqrt(1000)) - 1) < 0.05


def test_he_uniform_bound_is_sqrt_6_over_fan_in():
    layer = big_linear(500, 1000)
    apply_init(layer, "he_uniform")  # no activation named: relu
    bound = math.sqrt(6 / 500)
    top = layer.weight.abs().max().item()
    assert top <= bound and top > 0.99 * bound


def test_xavier_uniform_bound():
    layer = big_linear(300, 700)
    assert apply_init(layer, "xavier_uniform", nonlinearity="tanh") == {"": "xavier_uniform(tanh)"}
    bound = (5 / 3) * math.sqrt(6 / (300 + 700))
    top = layer.weight.abs().max().item()
    assert top <= bound and top > 0.99 * bound


def test_xavier_normal_std():
    layer = big_linear(300, 700)
    apply_init(layer, "xavier_normal", activation="identity")
    assert abs(layer.weight.std().item() / math.sqrt(2 / (300 + 700)) - 1) < 0.05


def test_fan_in_uniform_bound():
    layer = big_linear(400, 1000)
    assert apply_init(layer, "fan_in_uniform") == {"": "fan_in_uniform"}
    bound = 1 / math.sqrt(400)
    top = layer.weight.abs().max().item()
    assert top <= bound and top > 0.99 * bound


def test_fan_in_normal_std():
    layer = big_linear(400, 1000)
    apply_init(layer, "fan_in_normal")
    assert abs(layer.weight.std().item() * math.sqrt(400) - 1) < 0.05
    assert torch.all(layer.bias == 0)


@pytest.mark.parametrize(("activation", "gain"), [("relu", math.sqrt(2)), ("tanh", 5 / 3), ("identity", 1.0),
                                                  ("gelu", math.sqrt(2))])
def test_orthogonal_square_layer(activation, gain):
    layer = big_linear(256, 256)
    assert apply_init(layer, "orthogonal", activation=activation) == {"": f"orthogonal({activation})"}
    w = layer.weight
    torch.testing.assert_close(w @ w.T, gain**2 * torch.eye(256), atol=1e-4, rtol=0)


def test_leaky_relu_gain_uses_its_slope():
    layer = big_linear()
    apply_init(layer, "he_normal", activation="leaky_relu")
    expected = math.sqrt(2 / (1 + 0.01**2)) / math.sqrt(1000)
    assert abs(layer.weight.std().item() / expected - 1) < 0.05


def test_zeros_makes_every_linear_and_conv_parameter_zero():
    model = small_cnn()
    apply_init(model, "zeros")
    for m in (model[0], model[4]):
        assert all(torch.all(p == 0) for p in m.parameters())
    assert torch.all(model[1].weight == 1)  # BatchNorm keeps its own init


def test_constant_sets_weights_and_zeroes_biases():
    model = small_cnn()
    applied = apply_init(model, "constant", value=0.25)
    assert applied == {"0": "constant(0.25)", "1": "default", "4": "constant(0.25)"}
    for m in (model[0], model[4]):
        assert torch.all(m.weight == 0.25) and torch.all(m.bias == 0)


@pytest.mark.parametrize("name", [n for n in INITS.names() if n != "default"])
def test_biases_start_at_zero(name):
    torch.manual_seed(0)
    model = small_cnn()
    apply_init(model, name)
    assert torch.all(model[0].bias == 0) and torch.all(model[4].bias == 0)


def test_default_leaves_the_weights_unchanged():
    torch.manual_seed(0)
    model = build_mlp((1, 8, 8), 10, hidden=[32, 16], batch_norm=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    applied = apply_init(model, "default")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert set(applied) == leaves_with_params(model) and set(applied.values()) == {"default"}


def test_conv_fan_in_includes_kernel_area():
    conv = nn.Conv2d(16, 64, kernel_size=5)  # fan_in = 16 * 5 * 5 = 400
    torch.manual_seed(0)
    apply_init(conv, "fan_in_uniform")
    bound = 1 / math.sqrt(16 * 5 * 5)
    top = conv.weight.abs().max().item()
    assert top <= bound and top > 0.99 * bound
    apply_init(conv, "he_normal", activation="relu")
    assert abs(conv.weight.std().item() / math.sqrt(2 / 400) - 1) < 0.05


def test_lstm_weights_get_the_scheme_with_tanh_gain():
    torch.manual_seed(0)
    lstm = nn.LSTM(100, 200, num_layers=2, bidirectional=True)
    applied = apply_init(lstm, "he_normal", activation="relu")  # the head's activation does not apply
    assert applied == {"": "he_normal(tanh)"}
    for name, p in lstm.named_parameters():
        if name.startswith("bias_"):
            assert torch.all(p == 0), name
        else:
            expected = (5 / 3) / math.sqrt(p.shape[1])  # weight_ih: fan_in = input; weight_hh: hidden
            assert abs(p.std().item() / expected - 1) < 0.05, name
    assert apply_init(lstm, "orthogonal", nonlinearity="sigmoid") == {"": "orthogonal(sigmoid)"}


def test_rnn_uses_its_own_nonlinearity():
    rnn = nn.RNN(8, 16, nonlinearity="relu")
    assert apply_init(rnn, "he_uniform") == {"": "he_uniform(relu)"}


def test_mapping_names_the_modules():
    model = build_mlp((1, 8, 8), 10, hidden=[32, 16], activation="tanh", batch_norm=True)
    applied = apply_init(model, "he_normal", activation="tanh")
    assert applied == {"fc1": "he_normal(tanh)", "bn1": "default", "fc2": "he_normal(tanh)",
                       "bn2": "default", "out": "he_normal(tanh)"}


def test_embedding_keeps_its_default():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    before = model[0].weight.clone()
    assert apply_init(model, "zeros") == {"0": "default", "1": "zeros"}
    assert torch.equal(model[0].weight, before)


def test_unknown_nonlinearity_is_a_config_error():
    with pytest.raises(ConfigError, match=r"init.nonlinearity=swish is not a known activation"):
        apply_init(nn.Linear(2, 2), "he_normal", nonlinearity="swish")


@pytest.mark.parametrize("name", INITS.names())
def test_every_scheme_on_a_cnn_and_an_lstm(name):
    torch.manual_seed(0)
    options = {"value": 0.01} if name == "constant" else {}
    cnn, lstm = small_cnn(), nn.LSTM(6, 8, batch_first=True)
    for model in (cnn, lstm):
        applied = apply_init(model, name, activation="relu", **options)
        assert set(applied) == leaves_with_params(model)
        assert all(isinstance(v, str) and v.startswith(name) for k, v in applied.items()
                   if not isinstance(dict(model.named_modules())[k], nn.BatchNorm2d))
        assert all(torch.isfinite(p).all() for p in model.parameters())
    # the initialised models (not fresh ones) still compute finite outputs
    assert torch.isfinite(cnn(torch.randn(2, 1, 8, 8))).all()
    assert torch.isfinite(lstm(torch.randn(2, 5, 6))[0]).all()

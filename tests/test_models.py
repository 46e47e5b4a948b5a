"""The MLP builder and the model summary."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dltrain.config import ACTIVATIONS
from dltrain.errors import ConfigError
from dltrain.models import MODELS
from dltrain.models.mlp import build_mlp
from dltrain.models.summary import format_summary, summarize


def test_mlp_shapes_and_parameter_count():
    model = build_mlp((1, 8, 8), 10, hidden=[128, 64], activation="relu")
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    assert sum(p.numel() for p in model.parameters()) == (64 * 128 + 128) + (128 * 64 + 64) + (64 * 10 + 10)
    assert model(torch.randn(3, 64)).shape == (3, 10)  # already-flat input works too


def test_empty_hidden_is_a_linear_model():
    model = build_mlp((64,), 3, hidden=[])
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and linears[0].in_features == 64 and linears[0].out_features == 3
    assert not any(isinstance(m, (nn.ReLU, nn.Dropout, nn.BatchNorm1d)) for m in model.modules())


def test_batch_norm_block_order():
    """Linear(bias=False) -> BatchNorm -> activation -> dropout, as the notes prescribe."""
    model = build_mlp((4,), 2, hidden=[8, 6], activation="tanh", dropout=0.3, batch_norm=True)
    kinds = [type(m) for m in model.children()]
    block = [nn.Linear, nn.BatchNorm1d, nn.Tanh, nn.Dropout]
    assert kinds == [nn.Flatten, *block, *block, nn.Linear]
    assert model.fc1.bias is None and model.fc2.bias is None
    assert model.out.bias is not None  # the output layer keeps its bias
    assert model.dropout1.p == pytest.approx(0.3)


def test_no_dropout_layer_when_dropout_is_zero():
    model = build_mlp((4,), 2, hidden=[8], dropout=0.0)
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    assert model.fc1.bias is not None


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_activation_builds_and_steps(name):
    model = build_mlp((6,), 3, hidden=[5], activation=name)
    loss = model(torch.randn(4, 6)).square().mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_unknown_activation_is_a_config_error():
    with pytest.raises(ConfigError, match="model.activation=swish"):
        build_mlp((4,), 2, hidden=[3], activation="swish")


def test_models_registry_builds_mlp():
    model = MODELS.build("mlp", input_shape=(1, 8, 8), num_outputs=10, hidden=[16], activation="relu")
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_summary_table_rows_and_totals():
    model = build_mlp((1, 8, 8), 10, hidden=[32], batch_norm=True, dropout=0.1)
    model.train()
    rows = summarize(model, (1, 8, 8))
    assert [r.name for r in rows] == ["flatten", "fc1", "bn1", "act1", "dropout1", "out"]
    assert [r.output_shape for r in rows] == ["(-1, 64)", "(-1, 32)", "(-1, 32)", "(-1, 32)", "(-1, 32)", "(-1, 10)"]
    assert [r.params for r in rows] == [0, 64 * 32, 64, 0, 0, 330]
    assert model.training  # mode restored
    text = format_summary(rows, model)
    assert "Output shape" in text and f"Total params: {64 * 32 + 64 + 330:,}" in text

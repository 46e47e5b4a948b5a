"""The model builders (mlp, cnn, rnn/lstm/gru, custom) and the model summary."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from dltrain.config.validation import ACTIVATIONS
from dltrain.errors import ConfigError
from dltrain.models import MODELS
from dltrain.models.cnn import build_cnn
from dltrain.models.custom import build_custom
from dltrain.models.mlp import build_mlp
from dltrain.models.recurrent import RecurrentNet, build_gru, build_lstm, build_rnn
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


def test_unknown_activation_is_refused_by_the_schema(compose):
    # The schema checks the choice on the config path; the builder does not check it again.
    with pytest.raises(ConfigError, match=r"^model.activation=swish is not a known value: choose one of relu, "):
        compose(["model=mlp", "model.activation=swish"])
    with pytest.raises(KeyError, match="swish"):
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


# --- model=cnn -------------------------------------------------------------------------

# Pinned: 64 channels x 7x7 (MNIST-sized) or 8x8 (CIFAR-sized) after two 2x2 pools at padding=same.
@pytest.mark.parametrize(("shape", "flat"), [((1, 28, 28), 3136), ((3, 32, 32), 4096)])
def test_cnn_infers_the_flattened_size(shape, flat):
    model = build_cnn(shape, 10, channels=[32, 64], pool="max", pool_size=2, hidden=[128])
    assert model.fc1.in_features == flat
    assert model(torch.randn(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize(("kwargs", "flat"), [
    ({"padding": "valid"}, 16 * 5 * 5),      # 28 -conv-> 26 -pool-> 13 -conv-> 11 -pool-> 5
    ({"padding": "1"}, 16 * 7 * 7),          # OmegaConf hands numbers over as strings: 1 pixel keeps 28
    ({"padding": 2}, 16 * 8 * 8),            # 28 -> 30 -> 15 -> 17 -> 8
    ({"padding": "same", "stride": 2}, 16 * 2 * 2),  # 28 -> 14 -> 7 -> 4 -> 2 (k // 2 padding)
    ({"pool": "none"}, 16 * 28 * 28),
    ({"pool": "avg", "pool_size": 4}, 16 * 1 * 1),   # 28 -> 7 -> 1
])
def test_cnn_padding_stride_and_pooling(kwargs, flat):
    model = build_cnn((1, 28, 28), 3, channels=[8, 16], hidden=[4], **kwargs)
    assert model.fc1.in_features == flat
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 3)
    pools = [m for m in model.modules() if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    assert len(pools) == (0 if kwargs.get("pool") == "none" else 2)


def test_cnn_block_order_names_and_bias_under_batch_norm():
    model = build_cnn((1, 8, 8), 10, channels=[4, 8], hidden=[16], activation="tanh", dropout=0.25, batch_norm=True)
    names = [name for name, _ in model.named_children()]
    assert names == ["conv1", "bn1", "act1", "pool1", "conv2", "bn2", "act2", "pool2",
                     "flatten", "dropout0", "fc1", "fc_bn1", "fc_act1", "dropout1", "out"]
    kinds = [type(m) for m in model.children()]
    assert kinds[:4] == [nn.Conv2d, nn.BatchNorm2d, nn.Tanh, nn.MaxPool2d]
    assert model.conv1.bias is None and model.conv2.bias is None and model.fc1.bias is None
    assert model.out.bias is not None
    assert model.dropout0.p == pytest.approx(0.25)
    plain = build_cnn((1, 8, 8), 10, channels=[4], hidden=[])
    assert plain.conv1.bias is not None
    assert [name for name, _ in plain.named_children()] == ["conv1", "act1", "pool1", "flatten", "out"]


def test_cnn_steps_and_summarizes():
    model = build_cnn((1, 8, 8), 10, channels=[4, 8], hidden=[16], batch_norm=True, dropout=0.1)
    model(torch.randn(4, 1, 8, 8)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    rows = summarize(model, (1, 8, 8))
    assert rows[0].name == "conv1" and rows[0].output_shape == "(-1, 4, 8, 8)"
    assert next(r for r in rows if r.name == "flatten").output_shape == "(-1, 32)"  # 8 x 2 x 2
    assert rows[-1].output_shape == "(-1, 10)"


@pytest.mark.parametrize("kwargs,fixes", [
    ({"channels": [8, 8, 8, 8]},                            # 8 -> 4 -> 2 -> 1 -> 0
     "use fewer model.channels, model.pool=none or a smaller model.pool_size."),
    ({"channels": [8], "padding": "valid", "kernel_size": 9},
     "use fewer model.channels, model.pool=none, a smaller model.pool_size, a smaller model.kernel_size "
     "or model.padding=same."),
    ({"channels": [8], "pool_size": 16}, "use fewer model.channels, model.pool=none or a smaller model.pool_size."),
    ({"channels": [8] * 3, "pool": "none", "stride": 2, "padding": "valid"},  # 8 -> 3 -> 1 -> 0
     "use fewer model.channels, model.stride=1, a smaller model.kernel_size or model.padding=same."),
])
def test_cnn_shrinking_to_nothing_is_a_config_error(kwargs, fixes):
    """The message suggests only the changes that would help with these settings."""
    with pytest.raises(ConfigError, match=r"^model=cnn cannot fit \d+ conv blocks on 8x8 images") as info:
        build_cnn((1, 8, 8), 10, **kwargs)
    assert str(info.value).endswith(fixes)


@pytest.mark.parametrize("shape", [(64,), (8, 8), (1, 1, 8, 8)])
def test_cnn_needs_images(shape):
    with pytest.raises(ConfigError, match=r"model=cnn needs images .*use model=mlp"):
        build_cnn(shape, 10)


def test_cnn_bad_padding_or_pool_is_refused_by_the_schema(compose):
    with pytest.raises(ConfigError, match=r"^model.padding=full is not valid: expected same, valid or a number"):
        compose(["model=cnn", "model.padding=full"])
    with pytest.raises(ConfigError, match=r"^model.pool=min is not a known value: choose one of max, avg, none\.$"):
        compose(["model=cnn", "model.pool=min"])


def test_cnn_builder_refuses_what_it_cannot_read_without_a_config_message():
    with pytest.raises(ValueError, match="padding must be 'same', 'valid' or a number of pixels, got 'full'"):
        build_cnn((1, 8, 8), 10, padding="full")
    with pytest.raises(KeyError, match="min"):
        build_cnn((1, 8, 8), 10, pool="min")


# --- model=rnn|lstm|gru ----------------------------------------------------------------

RECURRENT = {"rnn": build_rnn, "lstm": build_lstm, "gru": build_gru}


@pytest.mark.parametrize("kind", RECURRENT)
@pytest.mark.parametrize(("shape", "features"), [((1, 8, 8), 8), ((7, 3), 3), ((5,), 1)])
def test_recurrent_shapes_and_backward(kind, shape, features):
    model = MODELS.build(kind, input_shape=shape, num_outputs=4, hidden_size=6)
    assert isinstance(model, RecurrentNet) and getattr(model, kind).input_size == features
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 4)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_an_image_is_read_row_by_row():
    model = build_gru((2, 4, 5), 3, hidden_size=4)
    x = torch.randn(2, 2, 4, 5)
    seq = model._as_sequence(x)  # (B, H, C * W)
    assert seq.shape == (2, 4, 10)
    assert torch.equal(seq[1, 2], torch.cat([x[1, 0, 2], x[1, 1, 2]]))


@pytest.mark.parametrize("kind", RECURRENT)
def test_bidirectional_doubles_the_head_input(kind):
    model = RECURRENT[kind]((6, 3), 2, hidden_size=5, bidirectional=True, num_layers=2, dropout=0.1)
    assert model.out.in_features == 10
    assert model(torch.randn(4, 6, 3)).shape == (4, 2)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_pooling_modes_read_the_sequence_output(pooling, bidirectional):
    torch.manual_seed(0)
    model = build_lstm((6, 3), 2, hidden_size=5, bidirectional=bidirectional, num_layers=2, pooling=pooling).eval()
    x = torch.randn(4, 6, 3)
    with torch.no_grad():
        seq, _ = model.lstm(x)  # (B, T, D * H)
        if pooling == "last":  # forward state after the last step, backward state after the first
            pooled = seq[:, -1] if not bidirectional else torch.cat([seq[:, -1, :5], seq[:, 0, 5:]], dim=1)
        else:
            pooled = seq.mean(dim=1) if pooling == "mean" else seq.amax(dim=1)
        torch.testing.assert_close(model(x), model.out(pooled))


@pytest.mark.parametrize("kind", RECURRENT)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_lengths_ignore_the_padding(kind, bidirectional, pooling):
    torch.manual_seed(0)
    model = RECURRENT[kind]((8, 3), 2, hidden_size=5, bidirectional=bidirectional, pooling=pooling).eval()
    x = torch.randn(3, 8, 3)  # padding steps hold noise: none of it may reach the output
    lengths = torch.tensor([8, 5, 2])
    with torch.no_grad():
        padded = model(x, lengths=lengths)
        for i, n in enumerate(lengths.tolist()):
            torch.testing.assert_close(padded[i], model(x[i:i + 1, :n])[0])


@pytest.mark.parametrize("kind", RECURRENT)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_token_ids_are_embedded_and_their_padding_ignored(kind, bidirectional):
    torch.manual_seed(0)
    model = RECURRENT[kind]((6,), 3, hidden_size=5, vocab_size=20, embedding_dim=4, bidirectional=bidirectional,
                            pooling="mean").eval()
    assert model.embedding.num_embeddings == 20 and model.embedding.embedding_dim == 4
    assert torch.all(model.embedding.weight[0] == 0)  # the padding id's vector
    x = torch.tensor([[5, 7, 2, 0, 0, 0], [3, 0, 0, 0, 0, 0]])  # texts of 3 and 1 tokens, padded with 0
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 3)
        torch.testing.assert_close(out[0], model(x[:1, :3])[0])  # the same text without padding
        torch.testing.assert_close(out[1], model(x[1:, :1])[0])
    model.train()
    model(x).sum().backward()
    assert model.embedding.weight.grad[0].abs().sum() == 0  # padding is never trained
    assert model.embedding.weight.grad[5].abs().sum() > 0


def test_token_ids_need_a_sequence_shape():
    with pytest.raises(ConfigError, match=r"model=lstm embeds token ids of shape \(time,\)"):
        build_lstm((6, 2), 2, vocab_size=10)


def test_recurrent_head_layers_and_names():
    model = build_rnn((1, 8, 8), 10, hidden_size=6, batch_norm=True, head_dropout=0.3, nonlinearity="relu")
    assert [name for name, _ in model.named_children()] == ["rnn", "bn", "dropout", "out"]
    assert model.rnn.nonlinearity == "relu" and model.dropout.p == pytest.approx(0.3)
    assert [r.name for r in summarize(model, (1, 8, 8))] == ["rnn", "bn", "dropout", "out"]
    bare = build_gru((1, 8, 8), 10, hidden_size=6)
    assert [name for name, _ in bare.named_children()] == ["gru", "out"]


def test_recurrent_config_errors():
    with pytest.raises(ConfigError, match=r"model\.dropout applies between stacked recurrent layers: set model\.num_"):
        build_lstm((8, 3), 2, dropout=0.2, num_layers=1)
    with pytest.raises(ConfigError, match=r"model=lstm reads examples"):
        build_lstm((1, 1, 8, 8), 2)


def test_recurrent_choices_are_refused_by_the_schema(compose):
    with pytest.raises(ConfigError, match=r"^model.pooling=first is not a known value: choose one of last, mean, max"):
        compose(["model=gru", "model.pooling=first"])
    with pytest.raises(ConfigError, match=r"^model.nonlinearity=sigmoid is not a known value: choose one of tanh, "):
        compose(["model=rnn", "model.nonlinearity=sigmoid"])


def test_recurrent_builders_refuse_unknown_choices_from_python():
    # Any other pooling would be read as max: refused, not run.
    with pytest.raises(ValueError, match="pooling must be one of last, mean, max, got 'first'"):
        build_gru((8, 3), 2, pooling="first")
    with pytest.raises(ValueError, match="nonlinearity 'sigmoid'"):  # torch.nn.RNN's own check
        build_rnn((8, 3), 2, nonlinearity="sigmoid")


# --- model=custom ----------------------------------------------------------------------

USER_MODULE = '''
import math

from torch import nn

NOT_CALLABLE = 3


class Net(nn.Module):
    def __init__(self, input_shape, num_outputs, width=8):
        super().__init__()
        self.input_shape, self.width = input_shape, width
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(),
                                  nn.Linear(width, num_outputs))

    def forward(self, x):
        return self.body(x)


class NoShape(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.LazyLinear(width))

    def forward(self, x):
        return self.body(x)


def make_net(num_outputs, **kwargs):
    model = nn.Linear(64, num_outputs)
    model.kwargs = kwargs
    return model


def needs_depth(depth, input_shape):
    return nn.Identity()


def returns_dict(**kwargs):
    return dict(kwargs)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Writes ``usernet_dltrain_test.py`` (and a module with a missing dependency) into the
    working directory, as a user's ``my_net.py``; sys.path and sys.modules are restored."""
    name = "usernet_dltrain_test"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    (tmp_path / "usernet_missing_dep.py").write_text("import no_such_dependency_xyz  # noqa\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".")])  # restored afterwards
    yield name
    for module in (name, "usernet_missing_dep"):
        sys.modules.pop(module, None)


def test_custom_class_gets_shape_outputs_and_extra_keys(user_module, tmp_path):
    model = MODELS.build("custom", input_shape=[1, 8, 8], num_outputs=10, _target_=f"{user_module}.Net", width=16)
    assert model.width == 16 and model.input_shape == (1, 8, 8)  # a tuple even from a list
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert str(tmp_path) in sys.path  # found through the current directory


def test_custom_passes_shape_and_outputs_only_when_accepted(user_module):
    model = build_custom((1, 8, 8), 10, _target_=f"{user_module}.NoShape", width=5)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 5)
    factory = build_custom((1, 8, 8), 3, _target_=f"{user_module}.make_net", extra=1)
    assert factory.out_features == 3  # by name
    assert factory.kwargs == {"extra": 1, "input_shape": (1, 8, 8)}  # through **kwargs


@pytest.mark.parametrize(("target", "kwargs", "message"), [
    ("no_such_module_xyz.Net", {}, "no module named no_such_module_xyz.*PYTHONPATH"),
    ("usernet_missing_dep.Net", {}, "imports no_such_dependency_xyz, which is not installed"),
    ("usernet_dltrain_test.Nett", {}, "has no attribute Nett.*did you mean usernet_dltrain_test.Net"),
    ("usernet_dltrain_test.NOT_CALLABLE", {}, "is a int, not a class or function"),
    ("usernet_dltrain_test.Net", {"depth": 3}, r"takes no argument model\.depth.*\+model\.KEY=VALUE"),
    ("usernet_dltrain_test.needs_depth", {}, r"needs depth: add \+model\.depth=VALUE"),
    ("usernet_dltrain_test.returns_dict", {}, "returned a dict, not a torch.nn.Module"),
    ("Net", {}, "is not a dotted import path"),
])
def test_custom_errors_name_the_target(user_module, target, kwargs, message):
    with pytest.raises(ConfigError, match=rf"^model\._target_={target}.*{message}.*\.$") as info:
        build_custom((1, 8, 8), 10, _target_=target, **kwargs)
    assert "\n" not in str(info.value)

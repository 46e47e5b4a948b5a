"""The layer-spec syntax of ``model.layers`` and ``model.head``: what each kind builds, the
shapes it works out (checked against a forward pass), the command line's grammar, and the
one-line refusal of a layer that does not fit its input."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from dltrain.errors import ConfigError
from dltrain.models.layer_spec import HEAD_KINDS, Conv2dSame, GlobalPool, build_layers
from dltrain.models.layers import ACTIVATIONS
from dltrain.models.residual import ResidualBlock

#: (specs, input shape, the shape worked out, the types of the layers built)
CASES = [
    (["conv:8:3"], (1, 12, 12), (8, 10, 10), [nn.Conv2d]),
    (["conv:8:3:same"], (1, 12, 12), (8, 12, 12), [nn.Conv2d]),
    (["conv:8:2:same"], (1, 12, 12), (8, 12, 12), [Conv2dSame]),  # even kernel: one side padded more
    (["conv:8:3:valid"], (1, 12, 12), (8, 10, 10), [nn.Conv2d]),
    (["conv:8:3:2"], (1, 12, 12), (8, 5, 5), [nn.Conv2d]),
    (["conv:8:3:2:same"], (1, 12, 12), (8, 6, 6), [nn.Conv2d]),  # ceil(12 / 2)
    (["conv:8:5:1:2"], (1, 12, 12), (8, 12, 12), [nn.Conv2d]),
    (["maxpool:2"], (3, 9, 9), (3, 4, 4), [nn.MaxPool2d]),
    (["avgpool:3:2"], (3, 9, 9), (3, 4, 4), [nn.AvgPool2d]),
    (["adaptiveavg:2"], (3, 9, 7), (3, 2, 2), [nn.AdaptiveAvgPool2d]),
    (["adaptivemax:1"], (3, 9, 7), (3, 1, 1), [nn.AdaptiveMaxPool2d]),
    (["globalavg"], (3, 9, 7), (3,), [GlobalPool]),
    (["globalmax"], (3, 9, 7), (3,), [GlobalPool]),
    (["bn"], (3, 4, 4), (3, 4, 4), [nn.BatchNorm2d]),
    (["flatten", "bn"], (3, 4, 4), (48,), [nn.Flatten, nn.BatchNorm1d]),
    (["dropout:0.25"], (3, 4, 4), (3, 4, 4), [nn.Dropout]),
    (["flatten", "dense:7"], (3, 4, 4), (7,), [nn.Flatten, nn.Linear]),
    (["res:3"], (3, 8, 8), (3, 8, 8), [ResidualBlock]),
    (["res:6:2"], (3, 8, 8), (6, 4, 4), [ResidualBlock]),
    (["res:6:2"], (3, 7, 7), (6, 4, 4), [ResidualBlock]),
    ([" relu ", "tanh"], (5,), (5,), [nn.ReLU, nn.Tanh]),
]


@pytest.mark.parametrize(("specs", "shape", "expected", "types"), CASES,
                         ids=[" ".join(c[0]) + str(c[1]) for c in CASES])
def test_each_kind_builds_its_layer_and_its_output_shape(specs, shape, expected, types):
    layers, out_shape = build_layers(specs, shape)
    assert out_shape == expected
    assert [type(layer) for layer in layers.values()] == types
    y = nn.Sequential(layers).eval()(torch.randn(2, *shape))
    assert tuple(y.shape[1:]) == expected  # the counted shape is what the layers compute


@pytest.mark.parametrize("kernel", [2, 4])
def test_an_even_kernel_is_padded_as_torchs_same_padding_pads_it_without_its_warning(kernel):
    torch.manual_seed(0)
    [conv] = build_layers([f"conv:3:{kernel}:same"], (2, 7, 9))[0].values()
    assert isinstance(conv, nn.Conv2d)  # init= and the summary treat it as the convolution it is
    x = torch.randn(2, 2, 7, 9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = conv(x)
    assert not caught
    reference = nn.Conv2d(2, 3, kernel, padding="same")
    reference.load_state_dict(conv.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own note about its copy
        torch.testing.assert_close(y, reference(x))


def test_every_activation_is_a_kind_by_its_name():
    layers, _ = build_layers(list(ACTIVATIONS), (4,))
    assert [type(layer) for layer in layers.values()] == list(ACTIVATIONS.values())


def test_layers_are_named_by_kind_and_counted():
    layers, _ = build_layers(["conv:4:3", "relu", "conv:4:3", "relu", "maxpool:2", "res:4", "globalavg", "bn",
                              "dropout:0.5", "dense:3", "gelu", "dropout:0.1"], (1, 10, 10))
    assert list(layers) == ["conv1", "relu1", "conv2", "relu2", "pool1", "res1", "pool2", "bn1", "dropout1", "fc1",
                            "gelu1", "dropout2"]


def test_each_dropout_has_its_own_probability():
    layers, _ = build_layers(["dropout:0.25", "flatten", "dense:8", "dropout:0.5"], (2, 3, 3))
    assert [layer.p for layer in layers.values() if isinstance(layer, nn.Dropout)] == [0.25, 0.5]


def test_the_residual_block_is_the_basic_block():
    """Two 3x3 conv + BN, ReLU after the add; a 1x1 conv + BN projection only when the shape changes."""
    same = ResidualBlock(4, 4)
    assert isinstance(same.shortcut, nn.Identity)
    assert [type(m) for m in ResidualBlock(4, 8).shortcut] == [nn.Conv2d, nn.BatchNorm2d]
    strided = ResidualBlock(4, 4, stride=2)
    assert strided.shortcut[0].stride == (2, 2) and strided.conv1.stride == (2, 2)
    # 2 * (3*3*4*4) conv weights, 2 * 8 batch-norm parameters, no conv bias
    assert sum(p.numel() for p in same.parameters()) == 2 * 9 * 16 + 2 * 8
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5)
    same.eval()
    inner = same.bn2(same.conv2(torch.relu(same.bn1(same.conv1(x)))))
    torch.testing.assert_close(same(x), torch.relu(inner + x))


def test_the_command_line_grammar_keeps_each_spec(compose):
    cfg = compose(["model=sequential",
                   "model.layers=[conv:32:3,relu,conv:64:3:1:same,maxpool:2,dropout:0.25,flatten,dense:128,relu]"])
    assert list(cfg.model.layers) == ["conv:32:3", "relu", "conv:64:3:1:same", "maxpool:2", "dropout:0.25",
                                      "flatten", "dense:128", "relu"]


@pytest.mark.parametrize(("specs", "message"), [
    (["conv:8:3", "conv:8:3", "conv:64:9"],
     r"model.layers\[2\]=conv:64:9: kernel 9 is larger than its 8x8 input: use a smaller kernel or padding same "
     r"\(conv:64:9:same\)\.$"),
    (["conv:8:3:1:1", "maxpool:2", "maxpool:2", "maxpool:2", "maxpool:2"],
     r"model.layers\[4\]=maxpool:2: pool size 2 is larger than its 1x1 input"),
    (["convv:8:3"], r"model.layers\[0\]=convv:8:3: 'convv' is not a layer kind here: did you mean conv\?"),
    (["maxpool:2", "denes:3"], r"model.layers\[1\]=denes:3: 'denes' is not a layer kind here: did you mean dense\?"),
    (["flatten", "conv:8:3"], r"model.layers\[1\]=conv:8:3: conv needs feature maps \(channels, height, width\), "
                              r"but its input has shape \(144,\)"),
    (["conv:8:3", "dense:10"], r"model.layers\[1\]=dense:10: needs flat features, but its input has shape "
                               r"\(8, 10, 10\): put flatten \(or globalavg\) before it\.$"),
    (["dropout:1"], r"model.layers\[0\]=dropout:1: P must be a number from 0 to below 1, got '1'\.$"),
    (["dropout:-0.1"], r"P must be a number from 0 to below 1"),
    (["dropout"], r"model.layers\[0\]=dropout: takes P"),
    (["conv:0:3"], r"model.layers\[0\]=conv:0:3: channels must be a whole number >= 1, got '0'\.$"),
    (["conv:8:3.5"], r"kernel must be a whole number >= 1, got '3.5'"),
    (["conv:8:3:1:full"], r"padding must be a whole number >= 0, got 'full'"),
    (["conv:8"], r"model.layers\[0\]=conv:8: takes conv:CHANNELS:KERNEL\[:STRIDE\]\[:PADDING\]\.$"),
    (["relu:2"], r"model.layers\[0\]=relu:2: takes no arguments\.$"),
    (["conv:8:2:2:same"], r"^model.layers\[0\]=conv:8:2:2:same: an even kernel \(2\) with stride 2 cannot pad the "
                          r"same on every side to give ceil\(size / 2\): use an odd kernel \(conv:8:3:2:same\), "
                          r"stride 1, or a padding in pixels\.$"),
    (["flatten", "res:8"], r"res needs feature maps"),
])
def test_a_layer_that_does_not_fit_is_one_line_naming_it(specs, message):
    with pytest.raises(ConfigError, match=message) as info:
        build_layers(specs, (1, 12, 12))
    assert "\n" not in str(info.value)


def test_the_head_takes_only_layers_of_a_vector():
    layers, shape = build_layers(["bn", "dropout:0.25", "dense:32", "relu", "dropout:0.5"], (64,), key="model.head",
                                 kinds=HEAD_KINDS)
    assert shape == (32,) and list(layers) == ["bn1", "dropout1", "fc1", "relu1", "dropout2"]
    with pytest.raises(ConfigError, match=r"^model.head\[1\]=conv:8:3: 'conv' is not a layer kind here: the kinds "
                                          r"are dense, dropout, bn, relu"):
        build_layers(["dense:8", "conv:8:3"], (64,), key="model.head", kinds=HEAD_KINDS)

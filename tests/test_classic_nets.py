"""The classic networks shipped as presets (``model=mnist_net``, ``lenet5``, ``notes_cnn``,
``vgg_small``, ``resnet_small``, ``mnist_rnn``): each, composed from its preset and built by
dltrain, has the parameters of the same network written by hand in torch, tensor for tensor,
and the published count where there is one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dltrain.build import build_experiment, group_options
from dltrain.models import MODELS
from dltrain.models.transfer import split_options

from .test_registry_walk import assert_every_parameter_learns


def conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]


class BasicBlock(nn.Module):
    """He et al.'s basic block with a projection shortcut where the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                                  nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


class MnistRNN(nn.Module):
    """pytorch/examples' mnist_rnn network."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(input_size=28, hidden_size=64, batch_first=True)
        self.batchnorm = nn.BatchNorm1d(64)
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)


#: preset -> (input shape, classes, the network by hand, the published parameter count or None)
NETWORKS = {
    # pytorch/examples mnist/main.py
    "mnist_net": ((1, 28, 28), 10, lambda: nn.Sequential(
        nn.Conv2d(1, 32, 3, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10)), 1_199_882),
    "lenet5": ((1, 28, 28), 10, lambda: nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10)),
        61_706),
    "notes_cnn": ((3, 32, 32), 10, lambda: nn.Sequential(
        nn.Conv2d(3, 16, 2, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 2, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 2, padding="same"), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 500), nn.ReLU(), nn.Dropout(0.25), nn.Linear(500, 10)), None),
    "vgg_small": ((3, 32, 32), 10, lambda: nn.Sequential(
        *conv_block(3, 64), *conv_block(64, 64), nn.MaxPool2d(2),
        *conv_block(64, 128), *conv_block(128, 128), nn.MaxPool2d(2),
        *conv_block(128, 256), *conv_block(256, 256), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256 * 4 * 4, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 10)), None),
    "resnet_small": ((3, 32, 32), 10, lambda: nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)), None),
    # pytorch/examples mnist_rnn/main.py
    "mnist_rnn": ((1, 28, 28), 10, MnistRNN, None),
}


def preset_model(compose, name: str, input_shape: tuple[int, ...], classes: int) -> nn.Module:
    """``model=name`` as its preset composes it, built as the build step builds it."""
    cfg = compose([f"model={name}"])
    # the transfer keys apart: every preset here is a model=sequential
    options, _ = split_options(group_options(cfg.model), takes_weights=False, has_keys=True)
    return MODELS.build(name, input_shape=input_shape, num_outputs=classes, **options)


def shapes(model: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in model.parameters()]


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_each_classic_network_has_the_parameters_of_the_hand_written_one(compose, name):
    input_shape, classes, by_hand, published = NETWORKS[name]
    model, reference = preset_model(compose, name, input_shape, classes), by_hand()
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in reference.parameters())
    assert shapes(model) == shapes(reference)  # the same tensors in the same order
    if published is not None:
        assert count == published
    assert model.eval()(torch.zeros(2, *input_shape)).shape == (2, classes)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_each_classic_network_learns_in_every_parameter_on_its_images(compose, name):
    input_shape, classes, _, _ = NETWORKS[name]
    torch.manual_seed(0)
    assert_every_parameter_learns(preset_model(compose, name, input_shape, classes), torch.randn(4, *input_shape))


@pytest.mark.parametrize(("name", "count"), [("notes_cnn", 528_054), ("mnist_rnn", 26_602)])
def test_the_counts_the_presets_state(compose, name, count):
    input_shape, classes, _, _ = NETWORKS[name]
    assert sum(p.numel() for p in preset_model(compose, name, input_shape, classes).parameters()) == count


def test_mnist_net_computes_what_pytorch_examples_net_computes(compose):
    """Same layers in the same order: with the same weights, the same logits."""
    torch.manual_seed(0)
    model = preset_model(compose, "mnist_net", (1, 28, 28), 10).eval()
    reference = NETWORKS["mnist_net"][2]().eval()
    reference.load_state_dict(dict(zip(reference.state_dict(), model.state_dict().values(), strict=True)))
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(model(x), reference(x))


def test_mnist_rnn_reads_the_image_row_by_row_as_pytorch_examples_does(compose):
    torch.manual_seed(0)
    model = preset_model(compose, "mnist_rnn", (1, 28, 28), 10).eval()
    ref = MnistRNN().eval()
    ref.load_state_dict(dict(zip(ref.state_dict(), model.state_dict().values(), strict=True)))
    x = torch.randn(3, 1, 28, 28)
    out, _ = ref.rnn(x.reshape(-1, 28, 28))
    expected = ref.fc2(torch.relu(ref.fc1(ref.batchnorm(out[:, -1, :]))))  # dropout is off in eval mode
    torch.testing.assert_close(model(x), expected)


def test_lenet5s_init_follows_its_tanh(compose, data_overrides):
    """init=he_normal scales LeNet-5's weights with tanh's gain, not relu's."""
    cfg = compose(["model=lenet5", "init=he_normal", "data=mnist", *data_overrides("mnist"), "device=cpu"])
    applied = build_experiment(cfg, torch.device("cpu")).init_applied
    assert applied["conv1"] == applied["fc1"] == "he_normal(tanh)"

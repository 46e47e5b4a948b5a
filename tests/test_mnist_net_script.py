"""benchmarks/mnist_net.py: its hand-written pytorch/examples net and ``dltrain model=mnist_net`` are the same
network, and the script trains and tests on the images dltrain trains and tests on."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from benchmarks.mnist_net import Net, count_params, dltrain_overrides, load_mnist
from dltrain import compose
from dltrain.build import build_model, load_data
from tests.files import write_mnist

EXAMPLES_PARAMS = 1_199_882  # pytorch/examples' mnist/main.py Net


def _dltrain_net() -> torch.nn.Module:
    """The model the benchmark's dltrain command builds, by dltrain's own build step (1x28x28 images, 10 classes)."""
    cfg = compose(dltrain_overrides("data", seed=0, epochs=1, device="cpu"))
    return build_model(cfg, SimpleNamespace(input_shape=(1, 28, 28), vocab_size=None), 10, [])


def test_model_mnist_net_is_the_scripts_net() -> None:
    hand, ours = Net(), _dltrain_net()
    assert count_params(hand) == count_params(ours) == EXAMPLES_PARAMS
    assert [p.shape for p in ours.parameters()] == [p.shape for p in hand.parameters()]
    with torch.no_grad():  # the script's weights in dltrain's layers, in order
        for mine, theirs in zip(ours.parameters(), hand.parameters(), strict=True):
            mine.copy_(theirs)
    x = torch.randn(4, 1, 28, 28)
    for train in (False, True):  # in training mode the same seed draws the same dropout masks
        hand.train(train), ours.train(train)
        torch.manual_seed(0)
        expected = hand(x)
        torch.manual_seed(0)
        torch.testing.assert_close(torch.log_softmax(ours(x), dim=1), expected)


def test_the_script_trains_and_tests_on_dltrains_images(tmp_path) -> None:
    write_mnist(tmp_path, n_train=60, n_test=20)
    hand = load_mnist(tmp_path)
    data = load_data(compose(dltrain_overrides(tmp_path, seed=0, epochs=1, device="cpu")), torch.device("cpu"))
    assert len(data.y_val) == 0  # data.val_fraction=0: all the training images train, as in the script
    assert torch.equal(data.y_train, hand.y_train) and torch.equal(data.y_test, hand.y_test)
    assert torch.equal(data.x_train, data.preprocessing.apply(hand.x_train))
    assert torch.equal(data.x_test, data.preprocessing.apply(hand.x_test))

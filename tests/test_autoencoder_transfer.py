"""An autoencoder's encoder as a classifier's start weights (``model.weights=<autoencoder run>/checkpoints/
best.pt``): its layers load into the classifier's first layers, the model summary says which, a deeper
encoder leaves a warning, and a layer of another shape is one line naming both shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from dltrain import compose, train
from dltrain.errors import ConfigError
from tests.conftest import run_cli
from tests.test_bad_input import error_line

FAST = ["trainer.fast_dev_run=true", "device=cpu", "trainer.diagnostics=false"]


def autoencoder_state(path: Path, widths: tuple[int, ...] = (64, 32, 8)) -> dict[str, torch.Tensor]:
    """A state dict of an MLP autoencoder on digits' 64 pixels (``encoder.*``: Linear layers through
    ``widths``; ``decoder.*``: back), seeded random weights, saved at ``path``."""
    torch.manual_seed(7)
    encoder, decoder = nn.Sequential(nn.Flatten()), nn.Sequential()
    for a, b in zip(widths, widths[1:], strict=False):
        encoder.extend([nn.Linear(a, b), nn.ReLU()])
        decoder.insert(0, nn.Linear(b, a))
    autoencoder = nn.Module()
    autoencoder.encoder, autoencoder.decoder = encoder, decoder
    state = autoencoder.state_dict()
    torch.save(state, path)
    return state


def model_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The trained model's weights in a run's last.pt."""
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_the_encoder_starts_the_classifier_s_first_layers(tmp_path):
    state = autoencoder_state(tmp_path / "ae.pt")
    # lr 0: the weights a run ends with are those it started from
    cfg = compose(["model=mlp", "model.hidden=[32,8]", f"model.weights={tmp_path / 'ae.pt'}", "optim.lr=0", *FAST])
    summary = train(cfg, run_dir=tmp_path / "run")
    trained = model_weights(tmp_path / "run")
    for source, layer in (("encoder.1", "fc1"), ("encoder.3", "fc2")):
        for leaf in ("weight", "bias"):
            assert torch.equal(trained[f"{layer}.{leaf}"], state[f"{source}.{leaf}"]), (layer, leaf)
    text = (tmp_path / "run" / "model_summary.txt").read_text()
    assert "pretrained (encoder.1)" in text and "pretrained (encoder.3)" in text
    out_row = next(line for line in text.splitlines() if line.startswith("out "))
    assert "pretrained" not in out_row  # the head is the classifier's own
    assert not summary["warnings"]


def test_a_deeper_encoder_loads_what_fits_and_says_what_it_left(tmp_path):
    state = autoencoder_state(tmp_path / "ae.pt")
    cfg = compose(["model=mlp", "model.hidden=[32]", f"model.weights={tmp_path / 'ae.pt'}", "optim.lr=0", *FAST])
    summary = train(cfg, run_dir=tmp_path / "run")
    assert torch.equal(model_weights(tmp_path / "run")["fc1.weight"], state["encoder.1.weight"])
    assert any("encoder.3" in warning and "not loaded" in warning for warning in summary["warnings"])


def test_from_the_command_line_a_layer_of_another_shape_is_one_line(tmp_path):
    autoencoder_state(tmp_path / "ae.pt")
    proc = run_cli(["model=mlp", "model.hidden=[16]", f"model.weights={tmp_path / 'ae.pt'}", "device=cpu",
                    "hydra.run.dir=run"], cwd=tmp_path)
    line = error_line(proc)
    assert "encoder.1 (weight (32, 64), bias (32,))" in line and "fc1 (weight (16, 64), bias (16,))" in line


def test_a_layer_of_another_shape_is_one_line_naming_both(tmp_path):
    autoencoder_state(tmp_path / "ae.pt")
    cfg = compose(["model=mlp", "model.hidden=[16]", f"model.weights={tmp_path / 'ae.pt'}", *FAST])
    with pytest.raises(ConfigError) as err:
        train(cfg, run_dir=tmp_path / "run")
    message = str(err.value)
    assert "\n" not in message
    assert "encoder.1 (weight (32, 64), bias (32,))" in message and "fc1 (weight (16, 64), bias (16,))" in message
    assert "model.weights=" in message


@pytest.mark.parametrize(("autoencoder", "classifier", "pairs"), [
    (["model.hidden=[32]"], ["model=mlp", "model.hidden=[32,8]"], [("fc1", "fc1"), ("codes", "fc2")]),
    (["model.encoder=conv", "model.channels=[4,8]"],
     ["model=cnn", "model.channels=[4,8]", "model.stride=2", "model.pool=none", "model.hidden=[8]"],
     [("conv1", "conv1"), ("conv2", "conv2"), ("codes", "fc1")]),
], ids=["mlp", "conv"])
def test_a_trained_autoencoder_s_encoder_starts_a_classifier(tmp_path, autoencoder, classifier, pairs):
    train(compose(["task=autoencoder", *autoencoder, "model.bottleneck=8", *FAST]), run_dir=tmp_path / "ae")
    best = tmp_path / "ae" / "checkpoints" / "best.pt"
    encoder = torch.load(best, weights_only=True)["model"]
    train(compose([*classifier, f"model.weights={best}", "optim.lr=0", *FAST]), run_dir=tmp_path / "clf")
    trained = model_weights(tmp_path / "clf")
    for source, layer in pairs:
        assert torch.equal(trained[f"{layer}.weight"], encoder[f"encoder.{source}.weight"]), layer
    assert f"pretrained (encoder.{pairs[-1][0]})" in (tmp_path / "clf" / "model_summary.txt").read_text()


def test_the_benchmark_s_labelled_set_and_its_sweep(tmp_path):
    """benchmarks/autoencoder.py: per_class training images of each digit, every test image, and one sweep
    that differs between its two starts only in model.weights."""
    from benchmarks.autoencoder import classifier_sweep, read_idx, write_labelled
    from tests.files import write_mnist

    raw = write_mnist(tmp_path / "mnist", n_train=60, n_test=20)
    labels = read_idx(raw / "train-labels-idx1-ubyte")
    train_count, test_count = write_labelled(tmp_path / "mnist", tmp_path / "labelled", 20)
    per_digit = {d: min(2, int((labels == d).sum())) for d in range(10)}
    assert train_count == sum(per_digit.values()) and test_count == 20
    for digit, count in per_digit.items():
        assert len(list((tmp_path / "labelled" / "train" / str(digit)).glob("*.png"))) == count
    sweep = classifier_sweep(tmp_path / "labelled", tmp_path / "best.pt", 5, [0, 1], tmp_path / "sweep")
    assert f"model.weights=none,{tmp_path / 'best.pt'}" in sweep and "seed=0,1" in sweep and sweep[1] == "-m"

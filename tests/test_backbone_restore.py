"""``model=torchvision`` rebuilt to receive its checkpoint computes what was trained, and what its
weights need is checked before any data is read: googlenet's input transform, a vit's size
from non-default weights, the size a one-size network reads, a damaged weights file, an edited
checkpoint record."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dltrain import compose
from dltrain.build import build_model, model_inputs
from dltrain.errors import ConfigError, UserError
from dltrain.models import MODELS
from dltrain.models.pretrained import TRANSFORMED_INPUT, cache_file, resolve_weights
from dltrain.training.checkpoint import CHECKPOINT_FORMAT, save_checkpoint

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def googlenet_file(tmp_path):
    """A state dict of googlenet as torchvision saves its trained weights (side branches, 1000 classes)."""
    from torchvision.models import get_model

    torch.manual_seed(0)
    net = get_model("googlenet", weights=None, aux_logits=True, init_weights=False, num_classes=1000).eval()
    torch.save(net.state_dict(), tmp_path / "googlenet.pth")
    return tmp_path / "googlenet.pth", net


def test_googlenet_restored_without_start_weights_computes_what_was_trained(tmp_path):
    file, _ = googlenet_file(tmp_path)
    options = {"arch": "googlenet", "image_size": [64, 64]}
    trained = MODELS.build("torchvision", input_shape=(3, 64, 64), num_outputs=4, weights=str(file), **options)
    with torch.device("meta"):  # as eval and predict rebuild it (its init skipped: every weight is then loaded)
        restored = MODELS.build("torchvision", input_shape=(3, 64, 64), num_outputs=4, weights="none", **options)
    restored.load_state_dict(trained.state_dict(), assign=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(trained.eval()(x), restored.eval()(x))


def test_googlenet_weights_declare_the_input_their_transform_made(tmp_path):
    file, reference = googlenet_file(tmp_path)
    declared = MODELS.facts("torchvision").input_normalization({"arch": "googlenet", "weights": str(file)})
    assert declared.mean == declared.std == TRANSFORMED_INPUT
    ours = MODELS.build("torchvision", input_shape=(3, 64, 64), num_outputs=1000, weights=str(file),
                        arch="googlenet", image_size=[64, 64]).eval()
    ours.net.fc.load_state_dict(reference.fc.state_dict())  # the head aside, the same weights
    reference.transform_input, reference.aux_logits = True, False
    images = torch.rand(2, 3, 64, 64)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    with torch.no_grad():  # torchvision's way (ImageNet statistics, transformed inside) and ours agree
        theirs = reference((images - mean) / std)
        declared_mean = torch.tensor(declared.mean).view(3, 1, 1)
        mine = ours((images - declared_mean) / torch.tensor(declared.std).view(3, 1, 1))
    torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-4)


def vit_config(weights: str, *more: str):
    return compose(["model=torchvision", "model.arch=vit_b_16", f"model.weights={weights}", "data=cifar10",
                    "device=cpu", *more])


def test_a_vit_rebuilt_for_its_checkpoint_keeps_the_size_of_its_named_weights(torch_home):
    data = SimpleNamespace(input_shape=(3, 32, 32), vocab_size=None)
    with torch.device("meta"):  # vit_b_16 at 384: no memory, no init, and no file read
        model = build_model(vit_config("IMAGENET1K_SWAG_E2E_V1"), data, 10, [], start_weights=False)
    assert model.net.image_size == 384 and model.resize._target == (384, 384)
    assert model.net.encoder.pos_embedding.shape[1] == (384 // 16) ** 2 + 1
    assert not torch_home.exists()


def test_a_vit_rebuilt_for_its_checkpoint_needs_no_weights_file(tmp_path, torch_home):
    data = SimpleNamespace(input_shape=(3, 32, 32), vocab_size=None)
    with torch.device("meta"):  # the file it started from is gone: its size is its default weights'
        model = build_model(vit_config(str(tmp_path / "gone.pth")), data, 10, [], start_weights=False)
    assert model.net.image_size == 224
    assert resolve_weights("vit_b_16", "IMAGENET1K_SWAG_E2E_V1", read=False).name == "IMAGENET1K_SWAG_E2E_V1"


def test_another_size_for_the_trained_weights_of_a_one_size_network_is_refused_before_the_data(torch_home):
    cfg = vit_config("IMAGENET1K_V1", "model.image_size=[384,384]", "model.download=false")
    with pytest.raises(ConfigError, match=r"^model.arch=vit_b_16 with IMAGENET1K_V1 reads 224x224 images, not "
                                          r"384x384: leave model.image_size null \(the images are resized\)\.$"):
        model_inputs(cfg)


def test_another_size_is_taken_by_a_network_that_pools_any_size(torch_home):
    (torch_home).mkdir(parents=True)
    from torchvision.models import ResNet18_Weights, get_model

    torch.save(get_model("resnet18", weights=None).state_dict(), cache_file(ResNet18_Weights.IMAGENET1K_V1))
    cfg = compose(["model=torchvision", "model.weights=DEFAULT", "model.image_size=[96,96]", "data=cifar10"])
    assert model_inputs(cfg).size == (96, 96)


def test_a_damaged_weights_file_stops_the_run_before_any_data_is_read(tmp_path, torch_home, monkeypatch):
    (tmp_path / "resnet18.pth").write_bytes(b"PK\x03\x04 not a whole file")
    read = []
    monkeypatch.setattr("dltrain.build.DATASETS.build", lambda *a, **k: read.append(a))
    cfg = compose(["model=torchvision", f"model.weights={tmp_path / 'resnet18.pth'}", "data=cifar10", "device=cpu"])
    from dltrain.build import build_experiment

    with pytest.raises(ConfigError, match=r"^model.weights=.*resnet18.pth cannot be loaded"):
        build_experiment(cfg, torch.device("cpu"))
    assert read == []


def test_a_damaged_cache_file_stops_the_run_before_any_data_is_read(torch_home):
    from torchvision.models import ResNet18_Weights

    torch_home.mkdir(parents=True)
    cache_file(ResNet18_Weights.IMAGENET1K_V1).write_bytes(b"truncated")
    with pytest.raises(ConfigError, match=r"^model.weights=DEFAULT: torch's cache file .* cannot be read"):
        model_inputs(compose(["model=torchvision", "model.weights=DEFAULT", "data=cifar10"]))


def test_an_edited_data_record_in_a_start_checkpoint_is_refused_in_one_line(tmp_path):
    state = {"format": CHECKPOINT_FORMAT, "model": {"resize.size": torch.tensor([32, 32])},
             "data": {"input_shape": [1, 32, 32], "normalization": {"mean": "x", "std": [0.2]}}}
    save_checkpoint(state, tmp_path / "edited.pt")
    cfg = compose(["model=torchvision", f"model.weights={tmp_path / 'edited.pt'}", "data=cifar10"])
    with pytest.raises(UserError, match=r"^checkpoint .*edited.pt: its data record's normalization=.* is not "):
        model_inputs(cfg)


def test_the_declared_input_is_asked_once_per_run(compose, tmp_path, data_overrides, monkeypatch):
    import dltrain.build
    from dltrain.build import build_experiment

    asked = []
    monkeypatch.setattr(dltrain.build, "model_inputs", lambda cfg: asked.append(cfg) or model_inputs(cfg))
    cfg = compose(["model=torchvision", "data=cifar10", *data_overrides("cifar10"), "device=cpu"])
    exp = build_experiment(cfg, torch.device("cpu"))
    assert len(asked) == 1 and exp.data.input_shape == (3, 32, 32)

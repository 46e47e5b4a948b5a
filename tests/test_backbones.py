"""``model=torchvision``: every family builds with its head sized from the data and divides into
stages; trained weights come from a file the test writes or from a torch cache it fills, never
from the network; the input each choice of weights expects (``input_normalization``)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from dltrain import train
from dltrain.build import build_experiment
from dltrain.data import DATASETS
from dltrain.errors import ConfigError
from dltrain.models import MODELS
from dltrain.models.backbones import Backbone
from dltrain.models.registry import InputNormalization
from dltrain.models.transfer import parts, stage_names
from dltrain.training.checkpoint import CHECKPOINT_FORMAT, save_checkpoint

#: The families the model option must build, and the head each calls its classifier.
FAMILIES = {"resnet18": "fc", "resnet50": "fc", "vgg16": "classifier.6", "alexnet": "classifier.6",
            "squeezenet1_1": "classifier.1", "mobilenet_v3_small": "classifier.3", "efficientnet_b0": "classifier.1",
            "convnext_tiny": "classifier.2", "vit_b_16": "heads.head",
            "regnet_x_400mf": "fc"}  # regnet computes its widths with tensors: it cannot be built on the meta device
#: More families, whose head is found under other names; built on the meta device (no memory, no init).
MORE_FAMILIES = {"densenet121": "classifier", "shufflenet_v2_x0_5": "fc",
                 "mnasnet0_5": "classifier.1", "googlenet": "fc", "inception_v3": "fc", "swin_t": "head",
                 "maxvit_t": "classifier.5", "wide_resnet50_2": "fc", "mobilenet_v2": "classifier.1",
                 "efficientnet_v2_s": "classifier.1", "vit_b_32": "heads.head", "swin_v2_t": "head"}
#: What torchvision's IMAGENET1K weights were trained on: ImageNet's per-channel statistics.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build(arch: str = "resnet18", num_outputs: int = 5, side: int = 64, **options) -> Backbone:
    return MODELS.build("torchvision", input_shape=(3, side, side), num_outputs=num_outputs, arch=arch, **options)


def assert_parts_cover_every_parameter_once(model: nn.Module) -> None:
    found = parts(model)
    owners = [id(p) for stage in found.stages for p in stage.parameters()] + [id(p) for p in found.head.parameters()]
    assert sorted(owners) == sorted(id(p) for p in model.parameters())


# --- every family --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", FAMILIES)
def test_every_family_builds_with_a_head_sized_from_the_data(arch):
    torch.manual_seed(0)
    model = build(arch, num_outputs=5)
    assert model.head_name == FAMILIES[arch]
    head = model.net.get_submodule(model.head_name)
    assert (head.out_features if isinstance(head, nn.Linear) else head.out_channels) == 5
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    assert parts(model).head is head
    assert_parts_cover_every_parameter_once(model)


@pytest.mark.parametrize("arch", MORE_FAMILIES)
def test_the_head_of_other_families_is_found_and_replaced(arch):
    with torch.device("meta"):
        model = build(arch, num_outputs=7, image_size=[224, 224])
    assert model.head_name == MORE_FAMILIES[arch]
    head = model.net.get_submodule(model.head_name)
    assert (head.out_features if isinstance(head, nn.Linear) else head.out_channels) == 7
    assert not any(name.startswith(("net.AuxLogits", "net.aux1", "net.aux2")) for name, _ in model.named_parameters())
    assert_parts_cover_every_parameter_once(model)


def test_resnet_stages_are_its_stem_and_its_four_layers():
    found = parts(build("resnet18"))
    assert stage_names(found.stages) == ["conv1..maxpool", "layer1", "layer2", "layer3", "layer4..avgpool"]


def test_vit_class_token_and_position_embedding_belong_to_the_first_stage():
    model = build("vit_b_16", image_size=[32, 32])
    first = {id(p) for p in parts(model).stages[0].parameters()}
    assert id(model.net.class_token) in first and id(model.net.encoder.pos_embedding) in first


def test_a_network_of_one_input_size_reads_its_default_weights_size_so_its_checkpoints_fit():
    from torchvision.models import get_model

    with torch.device("meta"):
        default = get_model("vit_b_16")  # the network torchvision's DEFAULT weights were saved from
        restored = build("vit_b_16", side=32)  # random weights: as eval, predict and resume build it
    shapes = {key: value.shape for key, value in restored.net.state_dict().items() if not key.startswith("heads.")}
    assert shapes == {key: value.shape for key, value in default.state_dict().items() if not key.startswith("heads.")}
    assert str(restored.resize) == "Resize(size=(224, 224))"
    assert inputs(arch="vit_b_16").size == (224, 224)  # and image_folder decodes at that size


def test_images_are_resized_to_the_size_the_network_reads():
    model = build("resnet18", image_size=[48, 40])
    seen = []
    model.net.conv1.register_forward_hook(lambda _m, inputs, _out: seen.append(tuple(inputs[0].shape)))
    model.eval()
    with torch.no_grad():
        model(torch.randn(2, 3, 20, 30))
    assert seen == [(2, 3, 48, 40)]
    assert [row for row in str(model).splitlines() if "Resize" in row] == ["  (resize): Resize(size=(48, 40))"]


def test_data_that_is_not_three_channel_images_is_refused_in_one_line_naming_the_image_datasets():
    with pytest.raises(ConfigError, match=r"^model=torchvision reads images of 3 channels, but this data's examples "
                                          r"have shape \(1, 28, 28\): use data=(.+)\.$") as caught:
        MODELS.build("torchvision", input_shape=(1, 28, 28), num_outputs=10)
    named = re.split(r", | or ", re.search(r"use data=(.+)\.$", str(caught.value))[1])
    assert named == [name for name in DATASETS.names() if DATASETS.facts(name).inputs == "images"]
    assert {"image_folder", "mnist", "cifar10"} <= set(named)


def test_a_family_that_cannot_read_the_size_says_what_to_set():
    with pytest.raises(ConfigError, match=r"^model.arch=maxvit_t cannot read 64x64 images \(Input size .*\): set "
                                          r"model.image_size, e.g. \[224,224\]\.$"):
        build("maxvit_t", image_size=[64, 64])


# --- weights from a file -------------------------------------------------------------------------------------------

def test_a_state_dict_file_of_the_network_is_loaded_all_but_the_head(tmp_path):
    from torchvision.models import get_model

    torch.manual_seed(1)
    original = get_model("resnet18", weights=None)  # 1000 classes, as torchvision's files hold it
    path = tmp_path / "resnet18-by-hand.pth"
    torch.save(original.state_dict(), path)
    torch.manual_seed(2)
    model = build("resnet18", num_outputs=4, weights=str(path))
    loaded = model.net.state_dict()
    for key, value in original.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(loaded[key], value), key
    assert loaded["fc.weight"].shape == (4, 512)
    assert tuple(model.resize.size.tolist()) == (224, 224)  # the size resnet18's default weights read


def test_a_file_that_does_not_fit_the_network_names_its_first_keys(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "stem.weight": torch.zeros(3)}, path)
    with pytest.raises(ConfigError, match=rf"^model.weights={path}: {path} does not fit torchvision's resnet18 "
                                          r"\(missing bn1.weight, bn1.bias, bn1.running_mean and \d+ more; unexpected "
                                          r"stem.weight\): give a state dict of resnet18 with its original 1000-class "
                                          r"head, or a dltrain checkpoint\.$"):
        build("resnet18", weights=str(path))


def test_a_dltrain_checkpoint_is_left_to_the_build_step(tmp_path):
    path = save_checkpoint({"format": CHECKPOINT_FORMAT, "model": {"net.fc.weight": torch.ones(5, 512)}},
                           tmp_path / "best.pt")
    model = build("resnet18", weights=str(path))  # built from random init: the build step loads it
    assert not torch.equal(model.net.fc.weight, torch.ones(5, 512))
    assert tuple(model.resize.size.tolist()) == (0, 0)


def test_a_model_restored_without_its_start_weights_resizes_as_it_was_trained(tmp_path):
    from torchvision.models import get_model

    path = tmp_path / "squeezenet.pth"
    torch.save(get_model("squeezenet1_1", weights=None).state_dict(), path)
    trained = build("squeezenet1_1", weights=str(path), side=32).eval()
    restored = build("squeezenet1_1", weights="none", side=32).eval()  # as eval, predict and resume build it
    restored.load_state_dict(trained.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(restored(x), trained(x))


# --- named weights: torch's cache, and the network only where allowed ----------------------------------------------

def test_named_weights_are_read_from_torch_cache_without_the_network(torch_home):
    from torchvision.models import get_model

    torch.manual_seed(3)
    original = get_model("squeezenet1_1", weights=None)
    torch_home.mkdir(parents=True)
    torch.save(original.state_dict(), torch_home / "squeezenet1_1-b8a52dc0.pth")  # the name torchvision's URL gives
    model = build("squeezenet1_1", num_outputs=3, weights="IMAGENET1K_V1", download=False)
    assert torch.equal(model.net.features[0].weight, original.features[0].weight)
    assert model.net.classifier[1].out_channels == 3
    assert build("squeezenet1_1", weights="DEFAULT").net.features[0].weight.equal(original.features[0].weight)


def test_named_weights_missing_with_download_false_name_the_file_and_folder(torch_home):
    with pytest.raises(ConfigError) as err:
        build("resnet18", weights="DEFAULT", download=False)
    assert str(err.value) == (
        f"model.weights=DEFAULT: resnet18-f37072fd.pth (ResNet18_Weights.IMAGENET1K_V1) is not in torch's cache "
        f"{torch_home} and model.download=false: put the file there (from "
        "https://download.pytorch.org/models/resnet18-f37072fd.pth), set TORCH_HOME to the folder above hub/ that "
        "holds it, or allow model.download=true.")
    assert not torch_home.exists()


def test_a_failed_download_names_the_file_the_url_and_the_folder(torch_home, monkeypatch):
    from urllib.error import URLError

    def offline(url, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError) as err:
        build("resnet18", weights="IMAGENET1K_V1")
    assert str(err.value) == (
        "model.weights=IMAGENET1K_V1: resnet18-f37072fd.pth could not be downloaded from "
        "https://download.pytorch.org/models/resnet18-f37072fd.pth (<urlopen error [Errno -3] Temporary failure in "
        f"name resolution>): put it in {torch_home} by hand (TORCH_HOME sets the folder), or use model.weights=none.")


def test_a_damaged_cache_file_is_named_with_what_to_do(torch_home):
    torch_home.mkdir(parents=True)
    (torch_home / "resnet18-f37072fd.pth").write_bytes(b"not a state dict")
    with pytest.raises(ConfigError, match=rf"^model.weights=DEFAULT: torch's cache file {torch_home}/"
                                          r"resnet18-f37072fd.pth cannot be read \(.+\): delete it \(it is downloaded "
                                          r"again\) or put an intact copy from https://download.pytorch.org/models/"
                                          r"resnet18-f37072fd.pth there\.$"):
        build("resnet18", weights="DEFAULT", download=False)


# --- names that do not exist ---------------------------------------------------------------------------------------

def test_an_unknown_network_lists_the_close_names():
    with pytest.raises(ConfigError, match=r"^model.arch=resnet19 is not a torchvision classification model: the "
                                          r"closest are resnet18, .*\.$"):
        build("resnet19")
    with pytest.raises(ConfigError, match=r"^model.arch=fasterrcnn_resnet50_fpn is not a torchvision classification "
                                          r"model: choose one of alexnet, convnext_base, .*, wide_resnet50_2\.$"):
        build("fasterrcnn_resnet50_fpn")


def test_a_weights_name_of_another_network_lists_this_network_names(torch_home):
    with pytest.raises(ConfigError) as err:
        build("resnet18", weights="IMAGENET1K_V2")
    assert str(err.value) == ("model.weights=IMAGENET1K_V2 is neither a file nor a weights name of "
                              "model.arch=resnet18: choose one of DEFAULT, IMAGENET1K_V1, a file, or none.")
    with pytest.raises(ConfigError, match=r"^model.weights=weights/r18.pth: no such file: "):
        build("resnet18", weights="weights/r18.pth")


# --- the input the weights expect ----------------------------------------------------------------------------------

def inputs(**options) -> InputNormalization:
    return MODELS.facts("torchvision").input_normalization({"name": "torchvision", "arch": "resnet18", **options})


def test_named_weights_declare_their_statistics_and_size(torch_home):
    assert inputs(weights="IMAGENET1K_V1") == InputNormalization(
        IMAGENET_MEAN, IMAGENET_STD, (224, 224), 3, "ResNet18_Weights.IMAGENET1K_V1")
    assert inputs(weights="ResNet18_Weights.IMAGENET1K_V1") == inputs(weights="default")  # torchvision's full name
    assert inputs(weights="DEFAULT", image_size=[160, 128]).size == (160, 128)
    assert inputs(arch="vit_h_14", weights="DEFAULT").size == (518, 518)  # SWAG weights read 518x518
    assert not torch_home.exists()  # nothing was downloaded or looked up


def test_named_weights_that_cannot_be_had_are_refused_before_any_data_is_read(torch_home):
    with pytest.raises(ConfigError, match=r"^model.weights=IMAGENET1K_V1: resnet18-f37072fd.pth "
                                          r"\(ResNet18_Weights.IMAGENET1K_V1\) is not in torch's cache "):
        inputs(weights="IMAGENET1K_V1", download=False)


def test_random_weights_fit_the_statistics_and_keep_the_data_size():
    assert inputs() == InputNormalization(None, None, None, 3, "fitted")
    assert inputs(image_size=[32, 32]).size == (32, 32)


def test_a_state_dict_file_declares_the_statistics_of_the_default_weights(tmp_path):
    path = tmp_path / "r50.pth"
    torch.save({"fc.bias": torch.zeros(1000)}, path)
    assert inputs(arch="resnet50", weights=str(path)) == InputNormalization(
        IMAGENET_MEAN, IMAGENET_STD, (224, 224), 3,
        "the statistics of ResNet50_Weights.IMAGENET1K_V2, resnet50's default weights (model.weights is a file)")


def test_a_checkpoint_declares_the_inputs_its_run_recorded(tmp_path):
    record = {"normalization": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}, "input_shape": [3, 40, 36]}
    path = save_checkpoint({"format": CHECKPOINT_FORMAT, "model": {}, "data": record}, tmp_path / "best.pt")
    assert inputs(weights=str(path)) == InputNormalization(
        (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), (40, 36), 3, f"the data record of checkpoint {path}")
    # a network that resized its images: the size it read, not the data's
    resized = save_checkpoint({"format": CHECKPOINT_FORMAT, "model": {"resize.size": torch.tensor([224, 192])},
                               "data": record}, tmp_path / "last.pt")
    assert inputs(weights=str(resized)).size == (224, 192)


# --- the build step: init and freezing --------------------------------------------------------------------------

def test_init_draws_the_new_head_and_leaves_the_loaded_weights_and_freeze_stops_the_backbone(
        compose, tmp_path, data_overrides):
    from torchvision.models import get_model

    torch.manual_seed(4)
    saved = get_model("resnet18", weights=None).state_dict()
    torch.save(saved, tmp_path / "resnet18.pth")
    cfg = compose(["model=torchvision", "model.arch=resnet18", f"model.weights={tmp_path / 'resnet18.pth'}",
                   "model.image_size=[32,32]", "model.freeze=backbone", "init=he_normal", "data=cifar10",
                   *data_overrides("cifar10"), "device=cpu"])
    exp = build_experiment(cfg, torch.device("cpu"))
    state = exp.model.state_dict()
    assert all(torch.equal(state[f"net.{key}"], value) for key, value in saved.items() if not key.startswith("fc."))
    init = {row.name: row.init for row in exp.summary_rows}
    assert init["net.conv1"] == init["net.layer4.1.bn2"] == "pretrained" and init["net.fc"].startswith("he_normal")
    trainable = [name for name, p in exp.model.named_parameters() if p.requires_grad]
    assert trainable == ["net.fc.weight", "net.fc.bias"]
    exp.model.train()
    assert not any(m.training for m in exp.model.modules() if isinstance(m, nn.BatchNorm2d))


# --- a run ---------------------------------------------------------------------------------------------------------

def test_a_run_trains_a_torchvision_network_on_an_image_folder(compose, tmp_path, data_overrides):
    cfg = compose(["model=torchvision", "model.arch=resnet18", "data=image_folder", *data_overrides("image_folder"),
                   "data.image_size=[32,32]", "data.num_workers=0", "trainer.fast_dev_run=true", "device=cpu"])
    summary = train(cfg, run_dir=tmp_path / "run")
    assert summary["status"] == "completed" and math.isfinite(summary["test"]["loss"])
    table = (tmp_path / "run" / "model_summary.txt").read_text()
    assert "resize" in table and "net.fc" in table

"""``model=sequential``: a layer list built into a named ``nn.Sequential`` ending in ``out``, its
summary, its stages for fine-tuning, its refusals; and the recurrent models' ``model.head``."""

from __future__ import annotations

import re
import shlex

import pytest
import torch
from torch import nn

from dltrain import train
from dltrain.inference.restore import load_model
from dltrain.models import MODELS
from dltrain.models.residual import ResidualBlock
from dltrain.models.transfer import parts, stage_names

from .conftest import ROOT, run_cli

FAST = ["trainer.fast_dev_run=true", "device=cpu"]


def build(layers, input_shape=(1, 8, 8), num_outputs=3, name="sequential"):
    return MODELS.build(name, input_shape=input_shape, num_outputs=num_outputs, layers=layers)


def test_the_list_is_followed_by_the_output_layer_sized_from_the_data():
    model = build(["conv:4:3", "relu", "maxpool:2", "flatten", "dense:16", "relu"])
    assert isinstance(model, nn.Sequential)
    assert list(model._modules) == ["conv1", "relu1", "pool1", "flatten1", "fc1", "relu2", "out"]
    assert (model.fc1.in_features, model.out.in_features, model.out.out_features) == (4 * 3 * 3, 16, 3)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_a_list_that_ends_on_feature_maps_is_flattened_before_the_output():
    model = build(["conv:4:3", "relu"])
    assert list(model._modules)[-2:] == ["flatten", "out"] and model.out.in_features == 4 * 6 * 6
    assert list(build([], input_shape=(5,))._modules) == ["out"]  # logistic regression on features


def test_the_summary_shows_each_layers_output_shape(compose, tmp_path):
    cfg = compose([*FAST, "model=sequential", "model.layers=[conv:4:3,relu,maxpool:2,res:8:2,globalavg,dense:6,gelu]"])
    summary = train(cfg, run_dir=tmp_path / "run")
    assert summary["status"] == "completed"
    text = (tmp_path / "run" / "model_summary.txt").read_text()
    shapes = dict(re.findall(r"^(\S+) +\S+ +(\(-1[^)]*\))", text, re.M))  # layer -> output shape
    assert shapes["conv1"] == "(-1, 4, 6, 6)" and shapes["pool1"] == "(-1, 4, 3, 3)"
    assert shapes["res1.conv1"] == "(-1, 8, 2, 2)" and shapes["res1.relu2"] == "(-1, 8, 2, 2)"
    assert shapes["pool2"] == "(-1, 8)" and shapes["fc1"] == "(-1, 6)" and shapes["out"] == "(-1, 10)"


def readme_commands() -> list[list[str]]:
    """The overrides of each ``dltrain`` command in the README's layer-list section."""
    section = (ROOT / "README.md").read_text().split("\n### Any architecture as a layer list\n", 1)[1]
    section = re.split(r"\n#+ ", section, maxsplit=1)[0]
    lines = [line for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S) for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("dltrain ")]


@pytest.mark.slow  # four runs, a deeper ResNet among them
def test_the_readmes_layer_list_commands_run(compose, tmp_path, data_overrides):
    commands = readme_commands()
    assert len(commands) == 4
    for i, overrides in enumerate(commands):
        data = next((o.split("=", 1)[1] for o in overrides if o.startswith("data=")), None)
        cfg = compose([*overrides, *FAST, *(data_overrides(data) if data else [])])
        assert train(cfg, run_dir=tmp_path / str(i))["status"] == "completed", overrides


def test_regularization_layers_do_not_apply_and_are_said_so(compose, tmp_path):
    cfg = compose([*FAST, "model=sequential", "regularization.dropout=0.3", "regularization.batch_norm=true"])
    summary = train(cfg, run_dir=tmp_path / "run")
    warnings = summary["warnings"]
    assert ("regularization.dropout=0.3 does not apply to model=sequential: put dropout:P and bn layers in "
            "model.layers where you want them") in warnings
    assert any(w.startswith("regularization.batch_norm=True does not apply") for w in warnings)
    text = (tmp_path / "run" / "model_summary.txt").read_text()
    assert "Dropout" not in text and "BatchNorm" not in text


def test_the_stages_for_freezing_end_at_each_pooling_and_residual_block():
    model = build(["conv:16:3:same", "bn", "relu", "res:16", "res:32:2", "res:64:2", "globalavg"], (3, 16, 16), 10)
    found = parts(model)
    assert found.head is model.out
    assert stage_names(found.stages) == ["conv1..res1", "res2", "res3..pool1"]
    net = build(["conv:8:3", "relu", "conv:8:3", "relu", "maxpool:2", "dropout:0.25", "flatten", "dense:16", "relu"])
    assert stage_names(parts(net).stages) == ["conv1..pool1", "dropout1..relu3"]


def test_a_layer_list_run_starts_another_of_other_classes_with_its_first_stage_frozen(compose, tmp_path,
                                                                                       data_overrides):
    """model.weights of a sequential run's checkpoint (the digits, 10 classes) on 3 classes of
    8x8 grey images: every tensor but the head loads; freeze=1 keeps the first stage's weights."""
    layers = "model.layers=[conv:4:3,bn,relu,maxpool:2,flatten,dense:8,relu]"
    pre = train(compose(["model=sequential", layers, "trainer.max_epochs=1", "device=cpu"]), run_dir=tmp_path / "pre")
    assert pre["status"] == "completed"
    start = torch.load(tmp_path / "pre" / "checkpoints" / "last.pt", weights_only=True)["model"]
    cfg = compose(["model=sequential", layers, "device=cpu", "trainer.max_epochs=1", "model.freeze=1",
                   f"model.weights={tmp_path / 'pre' / 'checkpoints' / 'last.pt'}", "data=image_folder",
                   *data_overrides("image_folder"), "data.image_size=[8,8]", "data.color=grayscale"])
    summary = train(cfg, run_dir=tmp_path / "tune")
    assert summary["status"] == "completed"
    assert any("out.weight" in warning for warning in summary["warnings"])  # 10 classes there, 3 here
    tuned = torch.load(tmp_path / "tune" / "checkpoints" / "last.pt", weights_only=True)["model"]
    torch.testing.assert_close(tuned["conv1.weight"], start["conv1.weight"])  # frozen: unchanged
    assert not torch.equal(tuned["fc1.weight"], start["fc1.weight"])  # the second stage trained


def test_a_layer_list_checkpoint_is_rebuilt_from_its_config_alone(compose, tmp_path):
    """dltrain-eval and dltrain-predict rebuild a classic preset from the checkpoint: same layers, same weights."""
    summary = train(compose([*FAST, "model=resnet_small"]), run_dir=tmp_path / "run")
    assert summary["status"] == "completed"
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    restored = load_model(last)
    saved = torch.load(last, weights_only=True)["model"]
    assert restored.cfg.model.name == "resnet_small" and isinstance(restored.model.res2, ResidualBlock)
    assert all(torch.equal(tensor, saved[key]) for key, tensor in restored.model.state_dict().items())


def test_a_layer_list_that_does_not_fit_is_one_line_from_the_command_line(tmp_path):
    proc = run_cli(["model=sequential", "model.layers=[conv:8:3,conv:8:3,conv:8:9,relu]", *FAST], cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "model.layers[2]=conv:8:9: kernel 9 is larger than its 4x4 input: use a smaller kernel or padding same "
        "(conv:8:9:same).")


# --- the recurrent models' head ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_no_head_is_the_model_it_was(kind):
    model = MODELS.build(kind, input_shape=(6, 4), num_outputs=3)
    assert model.head is None
    assert list(model.state_dict()) == [f"{kind}.weight_ih_l0", f"{kind}.weight_hh_l0", f"{kind}.bias_ih_l0",
                                        f"{kind}.bias_hh_l0", "out.weight", "out.bias"]


def test_the_head_runs_between_the_pooled_state_and_the_output():
    torch.manual_seed(0)
    model = MODELS.build("gru", input_shape=(6, 4), num_outputs=3, hidden_size=8,
                         head=["dense:5", "tanh", "dropout:0.5", "dense:4", "relu"]).eval()
    assert list(model.head._modules) == ["fc1", "tanh1", "dropout1", "fc2", "relu1"]
    assert model.out.in_features == 4
    x = torch.randn(2, 6, 4)
    _, h_n = model.gru(x)
    expected = model.out(torch.relu(model.head.fc2(torch.tanh(model.head.fc1(h_n[-1])))))
    torch.testing.assert_close(model(x), expected)


def test_the_head_from_the_config_trains(compose, tmp_path):
    cfg = compose([*FAST, "model=lstm", "model.head=[dense:16,relu,dropout:0.5,dense:8,relu,dropout:0.25]"])
    assert train(cfg, run_dir=tmp_path / "run")["status"] == "completed"
    text = (tmp_path / "run" / "model_summary.txt").read_text()
    assert "head.fc2" in text and "head.dropout2" in text

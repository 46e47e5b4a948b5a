"""Starting from trained weights, freezing and discriminative learning rates (dltrain.models.transfer),
with model=cnn on the digits: what a start-weights file loads, what ``init=`` then touches, what
freezing stops (gradients, updates, batch-norm statistics), the optimizer's groups, and the
one-line refusals."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from dltrain import train
from dltrain.build import build_experiment, stages_of
from dltrain.errors import ConfigError
from dltrain.models.cnn import build_cnn
from dltrain.models.summary import format_summary
from dltrain.models.start_weights import init_head
from dltrain.models.transfer import Freeze, TransferOptions, TransferParts, parts, split_options, stage_names
from dltrain.optim import build_optimizer
from dltrain.training.checks import check_transfer

CPU = torch.device("cpu")
# A small CNN on a fifth of the digits (6 steps an epoch): conv1..pool1, conv2..pool2, the dense block, then out.
CNN = ["data=digits", "data.val_fraction=0.3", "data.test_fraction=0.5", "model=cnn", "model.channels=[4,8]",
       "model.hidden=[16]", "regularization.batch_norm=true"]
BACKBONE = ("conv1", "bn1", "conv2", "bn2", "fc1", "fc_bn1")


def digits_cnn(num_outputs: int = 10) -> nn.Sequential:
    """The network ``CNN`` builds for the digits' (1, 8, 8) images."""
    return build_cnn((1, 8, 8), num_outputs, channels=[4, 8], hidden=[16], batch_norm=True)


def start_file(path: Path, num_outputs: int = 10) -> dict[str, torch.Tensor]:
    """A state dict of the digits CNN written to ``path``; batch-norm statistics far from a fresh
    layer's (mean 0.5, variance 2), so any update of them shows."""
    torch.manual_seed(123)
    state = digits_cnn(num_outputs).state_dict()
    for key in state:
        if key.endswith("running_mean"):
            state[key].fill_(0.5)
        elif key.endswith("running_var"):
            state[key].fill_(2.0)
    torch.save(state, path)
    return {k: v.clone() for k, v in state.items()}


def under(layers: tuple[str, ...], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.split(".")[0] in layers}


# --- the parts of a model ------------------------------------------------------------------------------------------

def test_a_cnn_has_a_stage_per_block_and_its_output_as_head():
    found = parts(digits_cnn())
    assert stage_names(found.stages) == ["conv1..pool1", "conv2..pool2", "flatten..fc_act1"]
    assert isinstance(found.head, nn.Linear) and found.head.out_features == 10


def test_without_pooling_each_conv_block_is_a_stage():
    model = build_cnn((1, 8, 8), 10, channels=[4, 8], hidden=[16], pool="none")
    assert stage_names(parts(model).stages) == ["conv1..act1", "conv2..flatten", "fc1..fc_act1"]
    layers = nn.Sequential(OrderedDict(conv1=nn.Conv2d(1, 2, 3), act1=nn.ReLU(), conv2=nn.Conv2d(2, 2, 3),
                                       pool=nn.MaxPool2d(2), flat=nn.Flatten(), out=nn.LazyLinear(3)))
    assert stage_names(parts(layers).stages) == ["conv1..flat"]  # with pooling: one block of two convs


def test_models_without_an_out_layer_have_no_parts_and_a_model_may_name_its_own():
    assert parts(nn.Sequential(nn.Linear(2, 2), nn.ReLU())) is None
    assert parts(nn.LSTM(2, 2)) is None

    class Own(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.fc = nn.Linear(2, 3), nn.Linear(3, 2)

        def transfer_parts(self) -> TransferParts:
            return TransferParts([self.body], self.fc)

    own = Own()
    assert parts(own) == TransferParts([own.body], own.fc)
    with pytest.raises(ConfigError, match=r"^model=lstm has no stages and head dltrain can tell apart, so "
                                          r"model.freeze, model.freeze_epochs and model.backbone_lr cannot apply"):
        stages_of("lstm", nn.LSTM(2, 2), TransferOptions(freeze="backbone"))


def test_frozen_batch_norm_stays_in_eval_mode_through_model_train_until_released():
    model = digits_cnn()
    freeze = Freeze(parts(model).stages[:1])
    freeze.apply()
    model.train()
    assert not model.bn1.training and model.bn2.training and model.fc_bn1.training
    assert not model.conv1.weight.requires_grad and model.conv2.weight.requires_grad
    assert freeze.release() == sum(p.numel() for name in ("conv1", "bn1") for p in getattr(model, name).parameters())
    model.train()
    assert model.bn1.training and model.conv1.weight.requires_grad


# --- start weights and init ---------------------------------------------------------------------------------------

def test_init_draws_the_head_alone_when_the_file_had_another_head(compose, tmp_path):
    saved = start_file(tmp_path / "start.pt", num_outputs=7)  # the out layer does not fit: skipped
    exp = build_experiment(compose([*CNN, f"model.weights={tmp_path / 'start.pt'}", "init=he_normal"]), CPU)
    state = exp.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items() if not k.startswith("out."))
    assert state["out.weight"].shape == (10, 16)
    assert torch.all(state["out.bias"] == 0)  # drawn by he_normal
    init = {row.name: row.init for row in exp.summary_rows}
    assert init["conv1"] == init["fc_bn1"] == "pretrained" and init["out"].startswith("he_normal")
    assert [w for w in exp.warnings if "skipped" in w] == exp.warnings and len(exp.warnings) == 1


@pytest.mark.parametrize("init", ["he_normal", "default"])
def test_init_leaves_a_head_the_file_fitted_as_loaded(compose, tmp_path, init):
    saved = start_file(tmp_path / "start.pt")  # as many outputs as the digits' classes: every tensor loads
    exp = build_experiment(compose([*CNN, f"model.weights={tmp_path / 'start.pt'}", f"init={init}"]), CPU)
    state = exp.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    assert {row.init for row in exp.summary_rows if row.params} == {"pretrained"}
    drew = [f"init={init} draws nothing: model.weights={tmp_path / 'start.pt'} fitted the head too (as many outputs "
            "as this data), so every layer keeps the loaded weights"]
    assert exp.warnings == (drew if init != "default" else [])


def test_without_start_weights_init_covers_the_whole_model(compose):
    exp = build_experiment(compose([*CNN, "init=he_normal"]), CPU)
    init = {row.name: row.init for row in exp.summary_rows}
    assert init["conv1"].startswith("he_normal") and init["out"].startswith("he_normal")


def test_a_checkpoint_of_another_task_loads_all_but_the_head(compose, tmp_path, data_files):
    train(compose([*CNN, "trainer.fast_dev_run=true"]), run_dir=tmp_path / "digits")
    ckpt = tmp_path / "digits" / "checkpoints" / "last.pt"
    pretrained = torch.load(ckpt, weights_only=True)["model"]
    # 3 shapes of 8x8 grayscale images: the same body, a head of 3 outputs
    images = [*data_files.overrides["image_folder"], "data.image_size=[8,8]", "data.color=grayscale"]
    cfg = compose([*CNN[3:], "data=image_folder", *images, f"model.weights={ckpt}", "model.freeze=backbone"])
    exp = build_experiment(cfg, CPU)
    state = exp.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in pretrained.items() if not k.startswith("out."))
    assert state["out.weight"].shape == (3, 16)
    (warning,) = [w for w in exp.warnings if "model.weights" in w]
    assert warning == (f"model.weights={ckpt}: loaded {len(state) - 2} of the model's {len(state)} tensors; "
                       "skipped (shape in the file vs "
                       "the model) out.weight (10, 16) vs (3, 16), out.bias (10,) vs (3,)")


def test_start_weights_that_fit_nothing_are_one_line(compose, tmp_path):
    torch.save({"encoder.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match=rf"^model.weights={tmp_path / 'other.pt'}: none of its 1 tensors "
                                          r"\(encoder.weight\) fits model=cnn \(conv1.weight, bn1.weight, bn1.bias and "
                                          r"\d+ more\): start from the weights of the same architecture\.$"):
        build_experiment(compose([*CNN, f"model.weights={tmp_path / 'other.pt'}"]), CPU)


@pytest.mark.parametrize(("weights", "message"), [
    ("DEFAULT", r"^model.weights=DEFAULT: no such file: give a dltrain checkpoint"),
    ("{tmp}/empty.pt", r"^model.weights=\S+empty.pt cannot be loaded: it is empty, truncated or not written by "),
    ("{tmp}/code.pt", r"^model.weights=\S+code.pt cannot be loaded: it holds Python objects other than tensors"),
])
def test_a_start_weights_file_that_cannot_be_read_is_one_line(compose, tmp_path, weights, message):
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save({"conv1.weight": torch.zeros(1), "hook": Path("x")}, tmp_path / "code.pt")
    with pytest.raises(ConfigError, match=message):
        build_experiment(compose([*CNN, f"model.weights={weights.format(tmp=tmp_path)}"]), CPU)


# --- freezing -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("freeze", "frozen"), [("1", ("conv1", "bn1")), ("2", ("conv1", "bn1", "conv2", "bn2")),
                                                ("backbone", BACKBONE), ("none", ())])
def test_freeze_stops_exactly_the_stages_it_names(compose, freeze, frozen):
    exp = build_experiment(compose([*CNN, f"model.freeze={freeze}"]), CPU)
    no_grad = {name.split(".")[0] for name, p in exp.model.named_parameters() if not p.requires_grad}
    assert no_grad == set(frozen)
    assert {row.name for row in exp.summary_rows if row.frozen} == set(frozen)


def test_freezing_more_stages_than_the_model_has_is_one_line(compose, tmp_path):
    with pytest.raises(ConfigError, match=r"^model.freeze=4, but the model has 3 stages before its head "
                                          r"\(conv1..pool1, conv2..pool2, flatten..fc_act1\): freeze at most 3, or "
                                          r"model.freeze=backbone\.$"):
        train(compose([*CNN, "model.freeze=4"]), run_dir=tmp_path / "run")


def test_frozen_layers_do_not_change_in_training_and_the_head_does(compose, tmp_path):
    saved = start_file(tmp_path / "start.pt")
    train(compose([*CNN, f"model.weights={tmp_path / 'start.pt'}", "model.freeze=backbone", "trainer.max_epochs=2",
                   "regularization.dropout=0.2", "optim=adamw"]), run_dir=tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    trained = state["model"]
    # weights, biases, batch-norm scale and shift and running statistics: as loaded
    assert all(torch.equal(trained[k], v) for k, v in under(BACKBONE, saved).items())
    assert not torch.equal(trained["out.weight"], saved["out.weight"])
    assert state["epoch"] == 2


def test_the_summary_marks_frozen_layers_and_counts_what_trains(compose):
    exp = build_experiment(compose([*CNN, "model.freeze=1", "model.freeze_epochs=2", "trainer.max_epochs=5"]), CPU)
    text = format_summary(exp.summary_rows, exp.model, exp.summary_notes)
    frozen = sum(p.numel() for name in ("conv1", "bn1") for p in getattr(exp.model, name).parameters())
    total = sum(p.numel() for p in exp.model.parameters())
    assert "conv1    Conv2d (frozen)" in text and "conv2    Conv2d " in text
    assert "(frozen)" not in text.split("conv2")[1]
    assert f"Trainable params: {total - frozen:,}\nNon-trainable params: {frozen:,}\n" in text
    assert "Frozen for epochs 1-2 (model.freeze_epochs=2): everything trains from epoch 3\n" in text


# --- learning rates per group ---------------------------------------------------------------------------------------

def group_lrs(optimizer: torch.optim.Optimizer) -> list[tuple[bool, float]]:
    return [(bool(g.get("backbone")), g["lr"]) for g in optimizer.param_groups]


@pytest.mark.parametrize("l2", [0.0, 0.01])
def test_the_backbone_trains_at_its_fraction_of_the_heads_rate(compose, l2):
    exp = build_experiment(compose([*CNN, "optim=sgd", "optim.lr=0.1", "model.backbone_lr=0.25",
                                    f"regularization.l2={l2}"]), CPU)
    groups = 2 if l2 else 1  # weights and the rest, when weight decay splits them
    assert group_lrs(exp.optimizer) == [(False, 0.1)] * groups + [(True, 0.025)] * groups
    backbone = {id(p) for g in exp.optimizer.param_groups if g.get("backbone") for p in g["params"]}
    assert backbone == {id(p) for name in BACKBONE for p in getattr(exp.model, name).parameters()}
    assert sum(len(g["params"]) for g in exp.optimizer.param_groups) == len(list(exp.model.parameters()))


@pytest.mark.parametrize(("scheduler", "factor"), [(["scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.5"],
                                                    0.5 ** 2),
                                                   (["scheduler=cosine", "scheduler.T_max=4"], 0.5)])
def test_schedules_scale_every_group_alike(compose, scheduler, factor):
    exp = build_experiment(compose([*CNN, "optim=sgd", "optim.lr=0.1", "model.backbone_lr=0.25", *scheduler,
                                    "trainer.max_epochs=4"]), CPU)
    for _ in range(2):
        exp.scheduler.step_epoch({})
    assert group_lrs(exp.optimizer) == [(False, pytest.approx(0.1 * factor)), (True, pytest.approx(0.025 * factor))]


def test_onecycle_peaks_each_group_in_proportion(compose):
    exp = build_experiment(compose([*CNN, "optim=sgd", "optim.lr=0.1", "model.backbone_lr=0.25", "scheduler=onecycle",
                                    "trainer.max_epochs=4"]), CPU)
    peaks = [(g.get("backbone", False), g["max_lr"]) for g in exp.optimizer.param_groups]
    assert peaks == [(False, 0.1), (True, 0.025)]
    for _ in range(5):
        exp.scheduler.step_batch()
        head, backbone = (g["lr"] for g in exp.optimizer.param_groups)
        assert backbone == pytest.approx(0.25 * head)


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.freeze_epochs=2"], r"^model.freeze_epochs=2 trains that many epochs frozen, but model.freeze=none "
                                r"freezes nothing: set model.freeze=backbone \(or N stages\), or "
                                r"model.freeze_epochs=0\.$"),
    (["optim=lbfgs", "model.backbone_lr=0.1"], r"^model.backbone_lr=0.1 needs a parameter group of its own, and "
                                               r"optim=lbfgs takes one: set model.backbone_lr=1 or use another"),
])
def test_transfer_keys_that_cannot_go_together_are_one_line(compose, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train(compose([*CNN, *overrides]), run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_schedule_of_several_ranks_is_refused_and_one_that_never_unfreezes_warned(compose):
    with pytest.raises(ConfigError, match=r"^model.freeze_epochs=1 unfreezes the backbone mid-run, which the 2 ranks "
                                          r"cannot follow"):
        check_transfer(TransferOptions(freeze="backbone", freeze_epochs=1), "adam", closure=False, world_size=2)
    check_transfer(TransferOptions(freeze="backbone"), "adam", closure=False, world_size=2)  # frozen throughout: fine
    exp = build_experiment(compose([*CNN, "model.freeze=backbone", "model.freeze_epochs=3", "trainer.max_epochs=3"]),
                           CPU)
    assert ("model.freeze_epochs=3 is not shorter than the 3 epochs of this run: the backbone is never unfrozen "
            "(model.freeze=backbone for the whole run)") in exp.warnings


def test_only_a_schema_with_the_transfer_keys_gives_them_to_the_build_step():
    # model=custom passes its own keys to the user's module: a freeze of its own stays its own
    own = {"freeze": "yes", "width": 8}
    assert split_options(own, takes_weights=False, has_keys=False) == (own, None)
    keys = {"weights": "none", "freeze": "1", "freeze_epochs": 0, "backbone_lr": 0.5, "channels": [4]}
    assert split_options(keys, takes_weights=False, has_keys=True) == (
        {"channels": [4]}, TransferOptions(freeze="1", backbone_lr=0.5))
    assert split_options(keys, takes_weights=True, has_keys=True)[0] == {"channels": [4], "weights": "none"}


def test_init_after_loading_needs_a_head_to_apply_to():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))  # no out layer: no parts
    with pytest.raises(ConfigError, match=r"^init=he_normal would overwrite the weights model.weights=w.pt loaded, and "
                                          r"this model has no head dltrain can tell apart to initialise alone: use "
                                          r"init=default\.$"):
        init_head(model, parts(model), "he_normal", lambda head: {}, "w.pt")
    assert init_head(model, parts(model), "default", lambda head: {}, "w.pt") == {}
    cnn = digits_cnn()
    assert init_head(cnn, parts(cnn), "zeros", lambda head: {"": "zeros"}, "w.pt") == {"out": "zeros"}


def test_the_parts_of_a_compiled_model_are_its_own_and_a_layer_named_module_is_no_wrapper():
    model = digits_cnn()
    assert parts(torch.compile(model)).head is model.out  # compiles nothing until called

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.module = digits_cnn()

    assert parts(Holder()) is None


def test_freezing_zero_stages_is_refused_by_the_schema(compose):
    with pytest.raises(ConfigError, match=r"^model.freeze=0 is not valid: expected none, backbone \(all but the "
                                          r"head\) or N >= 1 \(the first N stages\)\.$"):
        compose([*CNN, "model.freeze=0", "model.freeze_epochs=1"])


@pytest.mark.parametrize("freeze", ["backbone", "1"])
def test_freezing_a_model_with_only_a_head_is_one_line(compose, freeze):
    with pytest.raises(ConfigError, match=rf"^model.freeze={freeze}, but the model has no stages before its head "
                                          r"\(only the head has weights\), so nothing would freeze: use "
                                          r"model.freeze=none\.$"):
        build_experiment(compose(["data=digits", "model=sequential", "model.layers=[flatten]",
                                  f"model.freeze={freeze}"]), CPU)


def test_freezing_random_weights_is_warned_once(compose, tmp_path):
    start_file(tmp_path / "start.pt")
    frozen = [*CNN, "model.freeze=backbone", "trainer.max_epochs=3"]
    warned = [w for w in build_experiment(compose(frozen), CPU).warnings if "random" in w]
    assert warned == ["model.freeze=backbone with model.weights=none freezes randomly drawn weights: give "
                      "model.weights trained weights to start from, or set model.freeze=none"]
    started = build_experiment(compose([*frozen, f"model.weights={tmp_path / 'start.pt'}"]), CPU)
    assert not [w for w in started.warnings if "random" in w]


def test_a_backbone_learning_rate_for_an_optimizer_of_one_group_is_refused_to_python_callers_too():
    model = digits_cnn()
    with pytest.raises(ValueError, match=r"^optim=lbfgs takes one parameter group: it cannot give the backbone"):
        build_optimizer("lbfgs", model, backbone=parts(model).stages, backbone_lr=0.5)

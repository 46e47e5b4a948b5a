"""Facts registered with an option: the registry API, and for each fact a throwaway option,
registered for one test only, that gets the fact's behaviour with no edit anywhere else."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dltrain import train
from dltrain.build import build_experiment, build_loss
from dltrain.config.trust import check_stored_config
from dltrain.config.validation import GROUP_SCHEMAS
from dltrain.data import DATASETS
from dltrain.data.preprocessing import KINDS
from dltrain.data.registry import INPUT_KINDS
from dltrain.errors import ConfigError, UserError
from dltrain.init import INITS
from dltrain.losses import LOSSES
from dltrain.models import MODELS
from dltrain.models.recurrent import RecurrentNet
from dltrain.optim import OPTIMIZERS, build_optimizer
from dltrain.registry import Registry
from dltrain.schedulers import SCHEDULERS
from dltrain.training.device import resolve_precision

CPU = torch.device("cpu")


@dataclasses.dataclass(frozen=True)
class Facts:
    loud: bool = False
    volume: int = 3


# --- the API ----------------------------------------------------------------------------

def test_an_option_registered_without_facts_has_the_defaults():
    reg = Registry("thing", Facts)
    reg.register("quiet")(object)
    reg.register("shout", loud=True)(object)
    assert reg.facts("quiet") == Facts(loud=False, volume=3)
    assert reg.facts("shout") == Facts(loud=True, volume=3)


def test_an_unknown_fact_is_refused_at_registration():
    reg = Registry("thing", Facts)
    with pytest.raises(ValueError, match=r"thing option 'shout' is registered with unknown facts \['lowd'\]"):
        reg.register("shout", lowd=True)
    assert "shout" not in reg
    with pytest.raises(ValueError, match=r"unknown facts \['loud'\]"):
        Registry("plain").register("x", loud=True)  # a registry without facts takes none


def test_facts_of_an_unknown_option_are_the_usual_one_line_error():
    with pytest.raises(ConfigError, match=r"^optim=adamm is not a known option: .*choose one of .*adam") as err:
        OPTIMIZERS.facts("adamm")
    assert "\n" not in str(err.value)


def test_registered_takes_the_option_out_again():
    reg = Registry("thing", Facts)
    with reg.registered("shout", object, volume=11):
        assert reg.facts("shout").volume == 11 and reg.get("shout") is object
    assert "shout" not in reg
    reg.register("shout")(object)  # the name is free again
    assert reg.facts("shout") == Facts()


# --- models -----------------------------------------------------------------------------

def tiny_gru(built: list[nn.Module]):
    """A recurrent model of its own (not the gru option's builder); records what it built."""

    def build(input_shape, num_outputs, vocab_size=None, **_):
        built.append(RecurrentNet("gru", input_shape, num_outputs, hidden_size=8, vocab_size=vocab_size,
                                  embedding_dim=4))
        return built[-1]

    return build


def text_config(compose, data_overrides, name: str):
    cfg = compose(["data=text_csv", *data_overrides("text_csv"), "model=gru", "trainer.fast_dev_run=true",
                   "device=cpu"])
    cfg.model.name = name
    return cfg


def test_a_new_model_that_reads_tokens_trains_on_text(compose, data_overrides, monkeypatch, tmp_path):
    cfg = text_config(compose, data_overrides, "tinygru")
    monkeypatch.setitem(GROUP_SCHEMAS["model"], "tinygru", GROUP_SCHEMAS["model"]["gru"])
    built: list[nn.Module] = []
    with MODELS.registered("tinygru", tiny_gru(built), reads_tokens=True):
        summary = train(cfg, run_dir=tmp_path)
    model = built[0]
    assert model.embedding is not None  # it was given the vocabulary
    assert math.isfinite(summary["test"]["loss"])
    assert model.embedding.weight.grad is not None and model.embedding.weight.grad.abs().sum() > 0


def test_a_new_model_without_reads_tokens_is_refused_text(compose, data_overrides):
    cfg = text_config(compose, data_overrides, "tinygru")
    with MODELS.registered("tinygru", tiny_gru([])), pytest.raises(
            ConfigError, match=r"data=text_csv gives sequences of token ids, which model=tinygru cannot read"):
        build_experiment(cfg, CPU)


def recording_linear(calls: list[dict]):
    """A linear model that records the keyword arguments it was built with."""

    def build(input_shape, num_outputs, **kwargs):
        calls.append(kwargs)
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_outputs))

    return build


@pytest.mark.parametrize(("facts", "scheme"), [({}, "he_normal(relu)"),
                                               ({"init_activation": "tanh"}, "he_normal(tanh)")])
def test_a_new_model_names_the_activation_its_init_follows(compose, facts, scheme):
    cfg = compose(["model=gru", "init=he_normal", "device=cpu", "trainer.fast_dev_run=true"])  # no activation key
    cfg.model.name = "linear"
    with MODELS.registered("linear", recording_linear([]), **facts):
        exp = build_experiment(cfg, CPU)
    assert set(exp.init_applied.values()) == {scheme}


@pytest.mark.parametrize("own_layers", [False, True])
def test_a_new_model_with_its_own_layers_gets_no_regularization_layers(compose, own_layers):
    cfg = compose(["model=gru", "regularization.dropout=0.5", "device=cpu", "trainer.fast_dev_run=true"])
    cfg.model.name = "linear"
    calls: list[dict] = []
    facts = {"regularization_layers": False} if own_layers else {}
    with MODELS.registered("linear", recording_linear(calls), **facts):
        exp = build_experiment(cfg, CPU)
    warning = "regularization.dropout=0.5 does not apply to model=linear: add the layers to your module instead"
    assert (warning in exp.warnings) is own_layers
    passed = {key: calls[0][key] for key in ("head_dropout", "batch_norm") if key in calls[0]}
    assert passed == ({} if own_layers else {"head_dropout": 0.5, "batch_norm": False})


class Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("shapes do not fit")


@pytest.mark.parametrize("user_code", [False, True])
def test_a_new_model_of_user_code_fails_as_a_config_error(compose, user_code):
    """The user's module failing is the user's to fix (one line); a built-in one failing is a bug (a traceback)."""
    cfg = compose(["model=gru", "device=cpu", "trainer.fast_dev_run=true"])
    cfg.model.name = "theirs"
    expected = ConfigError if user_code else RuntimeError
    with MODELS.registered("theirs", lambda input_shape, num_outputs, **_: Broken(), user_code=user_code), \
            pytest.raises(expected, match=r"model=theirs failed on a batch" if user_code else "shapes do not fit"):
        build_experiment(cfg, CPU)


@pytest.mark.parametrize("user_code", [False, True])
def test_a_new_model_of_user_code_may_name_its_code_in_a_checkpoint(user_code):
    saved = {"model": {"name": "theirs", "_target_": "pkg.Net"}}
    refused = (r"trained with model=theirs model._target_=pkg.Net, which would import and run that code" if user_code
               else r"its config sets model._target_=pkg.Net, which names code to run")
    with MODELS.registered("theirs", object, user_code=user_code):
        with pytest.raises(UserError, match=refused):
            check_stored_config("x.pt", saved)
        if user_code:
            check_stored_config("x.pt", saved, trust_code=True)  # the user's opt-in lets it through


# --- optimizers -------------------------------------------------------------------------

class ClosureSGD(torch.optim.SGD):
    """Plain SGD that, like LBFGS, takes its step from a closure (and counts the calls)."""

    calls = 0

    def step(self, closure=None):
        if closure is None:
            raise RuntimeError("ClosureSGD needs a closure")
        with torch.enable_grad():
            loss = closure()
        ClosureSGD.calls += 1
        super().step()
        return loss


def closure_sgd(params, lr=1.0, **_):
    return ClosureSGD(params, lr=lr)


def test_a_new_closure_optimizer_is_stepped_with_a_closure(compose, monkeypatch, tmp_path):
    cfg = compose(["optim=lbfgs", "optim.lr=0.01", "trainer.fast_dev_run=true", "device=cpu"])
    cfg.optim.name = "closure_sgd"
    monkeypatch.setitem(GROUP_SCHEMAS["optim"], "closure_sgd", GROUP_SCHEMAS["optim"]["lbfgs"])
    monkeypatch.setattr(ClosureSGD, "calls", 0)
    with OPTIMIZERS.registered("closure_sgd", closure_sgd, closure=True):
        summary = train(cfg, run_dir=tmp_path)
    assert ClosureSGD.calls == 2  # fast_dev_run: two training batches
    assert math.isfinite(summary["test"]["loss"])


def test_a_new_closure_optimizer_gets_one_group_and_l2_as_a_loss_term(compose):
    cfg = compose(["optim=lbfgs", "regularization.l2=0.01", "trainer.fast_dev_run=true", "device=cpu"])
    cfg.optim.name = "closure_sgd"
    with OPTIMIZERS.registered("closure_sgd", closure_sgd, closure=True):
        exp = build_experiment(cfg, CPU)
    assert len(exp.optimizer.param_groups) == 1 and exp.optimizer.param_groups[0]["weight_decay"] == 0
    assert exp.penalty.l2 == 0.01


def test_a_new_closure_optimizer_is_refused_what_its_line_search_cannot_use(compose):
    cfg = compose(["optim=lbfgs", "regularization.grad_clip=1.0", "device=cpu"])
    cfg.optim.name = "closure_sgd"
    with OPTIMIZERS.registered("closure_sgd", closure_sgd, closure=True):
        with pytest.raises(ConfigError, match=r"regularization.grad_clip would hand optim=closure_sgd's line search"):
            build_experiment(cfg, CPU)
        with pytest.raises(ConfigError, match=r"scales the loss, which optim=closure_sgd's line search cannot use"):
            resolve_precision("16", torch.device("cuda"), "closure_sgd",  # refused before any CUDA call
                              closure=OPTIMIZERS.facts("closure_sgd").closure)


def small_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("kernel", [None, "_fused_adam_"])
def test_a_new_optimizer_with_a_fused_kernel_uses_it_by_default(kernel):
    if not build_optimizer("adam", small_mlp(), lr=0.01).param_groups[0]["fused"]:
        pytest.skip("this torch has no fused Adam step on the CPU")
    with OPTIMIZERS.registered("my_adam", OPTIMIZERS.get("adam"), fused_kernel=kernel):
        optimizer = build_optimizer("my_adam", small_mlp(), lr=0.01)
    assert bool(optimizer.param_groups[0]["fused"]) is (kernel is not None)


# --- schedulers, inits, losses -------------------------------------------------------------

@pytest.mark.parametrize("needs_monitor", [False, True])
def test_a_new_schedule_that_needs_a_monitor_watches_early_stopping_s(compose, needs_monitor):
    cfg = compose(["scheduler=plateau", "trainer.early_stopping.monitor=val_accuracy", "device=cpu",
                   "trainer.fast_dev_run=true"])  # scheduler.monitor=null
    cfg.scheduler.name = "my_plateau"
    with SCHEDULERS.registered("my_plateau", SCHEDULERS.get("plateau"), needs_monitor=needs_monitor):
        if not needs_monitor:  # nothing fills in the monitor: the builder has none
            with pytest.raises(ConfigError, match="needs a metric to watch"):
                build_experiment(cfg, CPU)
            return
        assert build_experiment(cfg, CPU).scheduler.monitor == "val_accuracy"


@pytest.mark.parametrize("needs_monitor", [False, True])
def test_a_new_schedule_that_needs_a_monitor_needs_it_logged(compose, needs_monitor):
    cfg = compose(["scheduler=plateau", "scheduler.monitor=val_accuracy", "data.val_fraction=0",
                   "trainer.early_stopping.monitor=train_loss", "device=cpu", "trainer.fast_dev_run=true"])
    cfg.scheduler.name = "my_plateau"
    with SCHEDULERS.registered("my_plateau", SCHEDULERS.get("plateau"), needs_monitor=needs_monitor):
        if not needs_monitor:  # nothing checks the monitor of a schedule that does not declare one
            assert build_experiment(cfg, CPU).scheduler.monitor == "val_accuracy"
            return
        with pytest.raises(ConfigError, match=r"scheduler.monitor=val_accuracy needs a validation split"):
            build_experiment(cfg, CPU)


def test_a_new_schedule_adds_its_own_warnings(compose):
    cfg = compose(["scheduler=none", "trainer.max_epochs=7", "device=cpu"])
    cfg.scheduler.name = "my_none"

    def warnings(max_epochs, **keys):
        return [f"{max_epochs} epochs with {sorted(keys)}"]

    with SCHEDULERS.registered("my_none", SCHEDULERS.get("none"), warnings=warnings):
        assert "7 epochs with ['warmup_epochs']" in build_experiment(cfg, CPU).warnings


def test_a_new_init_checks_its_keys_before_the_data_loads(compose, monkeypatch):
    cfg = compose(["init=constant", "init.value=2", "device=cpu"])
    cfg.init.name = "my_constant"

    def check(value):
        if value > 1:
            raise ConfigError(f"init.value={value} is too large for init=my_constant.")

    def no_data(*args, **kwargs):
        raise AssertionError("the data was loaded before the init's keys were checked")

    monkeypatch.setattr("dltrain.build.load_data", no_data)
    with INITS.registered("my_constant", INITS.get("constant"), check=check), \
            pytest.raises(ConfigError, match=r"init.value=2.0 is too large"):
        build_experiment(cfg, CPU)


def test_a_new_loss_that_stands_for_another_builds_the_one_it_picks(compose):
    cfg = compose(["loss=auto"])
    cfg.loss.name = "my_auto"
    data = SimpleNamespace(task="multiclass", num_outputs=3, class_counts=lambda: None)
    with LOSSES.registered("my_auto", LOSSES.get("auto"), picks=lambda task: "mae"):
        name, loss = build_loss(cfg, data)
    assert name == "mae" and loss.output_width == 3


# --- data -------------------------------------------------------------------------------

def test_a_new_dataset_with_an_unknown_kind_of_input_is_refused_at_registration():
    with pytest.raises(ValueError, match=r"^inputs='image' is not a kind of input: use one of table, text, points, "
                                         r"ink_counts, images or None$"):
        DATASETS.register("photos", inputs="image")
    assert "photos" not in DATASETS
    with DATASETS.registered("photos", object, inputs="images"):
        assert DATASETS.facts("photos").inputs == "images"


def test_the_registry_knows_every_kind_of_preprocessing():
    assert set(INPUT_KINDS) == set(KINDS)

"""Near misses get the override meant (``optimizer=sgd`` -> ``optim=sgd``, ``epochs=5`` ->
``trainer.max_epochs=5``, ``optim=SGD`` -> ``optim=sgd``), and a value of the wrong type is
told in dltrain's words: the key, the value, what the key takes.

The command line runs in this process (``tests.test_one_line.cli_error``); the Python API and
``dltrain-eval``/``dltrain-predict`` build the same lines.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import subprocess
import sys

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from dltrain import compose
from dltrain.cli.app import describe_error
from dltrain.errors import ConfigError
from dltrain.inference.evaluate import main as eval_main
from dltrain.inference.predict import main as predict_main
from dltrain.registry import Registry
from dltrain.config.schemas import GROUP_SCHEMAS
from dltrain.config.suggest import ALIASES, did_you_mean, key_paths, override_key, unknown_option
from tests.conftest import tool_error
from tests.test_one_line import cli_error

def _refused(overrides: list[str]) -> str:
    """The one line ``compose(overrides)`` is refused with."""
    with pytest.raises(ConfigError) as info:
        compose(overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def cfg():
    """The default config, composed once: suggestions are read from it."""
    return compose([], check=False)


ISSUE_NEAR_MISSES = [  # (typed, the key named unknown, the override meant)
    ("optimizer=sgd", "optimizer", "optim=sgd"),
    ("epochs=5", "epochs", "trainer.max_epochs=5"),
    ("lr=0.1", "lr", "optim.lr=0.1"),
    ("model.hiden=[3]", "model.hiden", "model.hidden=[3]"),
]


@pytest.mark.parametrize(("override", "key", "meant"), ISSUE_NEAR_MISSES)
def test_a_near_miss_key_names_the_override_meant(capsys, monkeypatch, tmp_path, override, key, meant):
    monkeypatch.chdir(tmp_path)
    line = cli_error(capsys, monkeypatch, [override])
    assert line.startswith(f"dltrain: error: {key} is not a config key: did you mean {meant}? (known keys there: ")


def test_a_near_miss_option_names_the_option_meant(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    line = cli_error(capsys, monkeypatch, ["optim=SGD"])
    options = ", ".join(sorted(GROUP_SCHEMAS["optim"]))
    assert line == f"dltrain: error: optim=SGD is not a known option: did you mean optim=sgd? (choose one of {options})."


def test_what_is_suggested_composes():
    compose([meant for _, _, meant in ISSUE_NEAR_MISSES] + ["trainer.early_stopping.patience=3"])


@pytest.mark.parametrize(("override", "meant"), [
    ("optim.lrr=0.1", "optim.lr=0.1"),
    ("trainer.max_epoch=3", "trainer.max_epochs=3"),
    ("trainer.epochs=3", "trainer.max_epochs=3"),
    ("max_epochs=3", "trainer.max_epochs=3"),  # the one key of that name
    ("max_epoch=3", "trainer.max_epochs=3"),
    ("max_steps=5", "trainer.max_steps=5"),  # a budget key of the trainer node
    ("hidden=[8]", "model.hidden=[8]"),
    ("weight_decay=1e-4", "regularization.l2=1e-4"),
    ("dropout=0.2", "regularization.dropout=0.2"),
    ("optimizer.lr=0.1", "optim.lr=0.1"),
    ("early_stopping.patience=3", "trainer.early_stopping.patience=3"),
    ("Optim.LR=0.1", "optim.lr=0.1"),
    ("seeds=1", "seed=1"),
    ("optimizer=Adam", "optim=adam"),
    ("optimizer=sgd,adam", "optim=sgd,adam"),  # a sweep's values, each an option
    ("epochs=1,2", "trainer.max_epochs=1,2"),
    ("mode=max", "trainer.early_stopping.mode=max"),  # the one key of that name, not model=
    ("modle=mlp", "model=mlp"),
])
def test_the_key_meant(cfg, override, meant):
    assert did_you_mean(override, cfg) == f"did you mean {meant}?"


@pytest.mark.parametrize(("option", "options", "meant"), [
    ("Adam", GROUP_SCHEMAS["optim"], "adam"), ("lstn", GROUP_SCHEMAS["model"], "lstm"),
    ("crossentropy", GROUP_SCHEMAS["loss"], "cross_entropy"), ("adamm", ["adam", "sgd"], "adam"),
    ("mpl", GROUP_SCHEMAS["model"], "mlp"),  # two letters swapped
])
def test_the_option_meant(option, options, meant):
    assert f"did you mean group={meant}? (choose one of " in unknown_option("group", option, sorted(options))


@pytest.mark.parametrize(("group", "option", "meant"), [("loss", "ce", "cross_entropy"), ("scheduler", "cos", "cosine")])
def test_an_option_named_as_in_other_tools(group, option, meant):
    assert f"did you mean {group}={meant}? (" in unknown_option(group, option, sorted(GROUP_SCHEMAS[group]))


@pytest.mark.parametrize("override", [
    "colour=red", "optim.zzz=1", "model.width=3", "trainer.foo.bar=1",
    # spelled a little like a key of another meaning, an alias, or a node of keys
    "steps=5", "es=1", "root=x", "lrate=0.1", "factor=0.5", "channels=3", "pretrained=true",
    "iterations=5", "modle=max",
])
def test_no_suggestion_without_a_near_key(cfg, override):
    assert did_you_mean(override, cfg) is None


@pytest.mark.parametrize(("group", "option"), [("optim", "zzz"), ("model", "nn"), ("init", "xavier")])
def test_no_suggestion_without_a_near_option(group, option):
    options = sorted(GROUP_SCHEMAS[group])
    assert unknown_option(group, option, options) == (f"{group}={option} is not a known option: "
                                                      f"choose one of {', '.join(options)}.")


def test_a_key_without_a_near_one_keeps_the_known_keys():
    message = _refused(["colour=red"])
    assert "did you mean" not in message and "(known keys there: model, data, optim" in message
    assert message.endswith("check the spelling.")


def test_a_value_that_does_not_fit_the_key_meant_is_not_filled_in(cfg):
    """``epochs=0`` is a near miss, but ``trainer.max_epochs=0`` would be refused in turn."""
    assert did_you_mean("epochs=0", cfg) == "did you mean trainer.max_epochs (an integer >= 1)?"
    assert did_you_mean("gpus=1", cfg) == "did you mean device (auto, cpu, cuda, cuda:N or mps)?"
    assert did_you_mean("lr=abc", cfg) == "did you mean optim.lr (a float >= 0)?"
    assert did_you_mean("epochs=1,0", cfg) == "did you mean trainer.max_epochs (an integer >= 1)?"
    assert did_you_mean("optimizer=zzz", cfg).startswith("did you mean optim=OPTION (one of adadelta, adagrad, ")


def test_a_key_appended_with_a_plus_gets_the_key_meant():
    message = _refused(["+optim.lrr=0.5"])
    assert message.startswith("optim.lrr is not a config key: did you mean optim.lr=0.5? (known keys there: name, lr,")
    message = _refused(["+foo=1"])
    assert "did you mean" not in message and message.endswith("remove +foo.")


def test_the_python_api_says_the_same(cfg):
    assert _refused(["optimizer=sgd"]).startswith("optimizer is not a config key: did you mean optim=sgd? (")


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_every_alias_leads_to_a_real_key(cfg, alias):
    """Its key is in the config whatever the options (a group's key in every option's schema),
    or it is a config group."""
    target = ALIASES[alias]
    group, _, name = target.partition(".")
    if group in GROUP_SCHEMAS and name:
        assert all(name in {f.name for f in dataclasses.fields(schema)} for schema in GROUP_SCHEMAS[group].values())
    else:
        assert target in GROUP_SCHEMAS or target in key_paths(cfg)
    assert did_you_mean(f"{alias}=...", cfg).startswith(f"did you mean {target}")


# --- type errors ------------------------------------------------------------------------------------------------

TYPE_ERRORS = [  # (key, the value as Hydra reads it, the start of the line)
    ("optim.lr", "abc", "optim.lr=abc is not a number: optim.lr takes a float >= 0 (e.g. optim.lr="),
    ("trainer.max_epochs", "ten", "trainer.max_epochs=ten is not a whole number: trainer.max_epochs takes an integer"),
    ("trainer.max_epochs", 2.5, "trainer.max_epochs=2.5 is not a whole number: trainer.max_epochs takes an integer"),
    ("trainer.fast_dev_run", "maybe", "trainer.fast_dev_run=maybe is not a boolean: trainer.fast_dev_run takes true "
                                      "or false."),
    ("optim.foreach", "maybe", "optim.foreach=maybe is not a boolean: optim.foreach takes true, false or null."),
    ("model.hidden", ["a"], "model.hidden[0]=a is not a whole number: model.hidden takes a list of integers (e.g. "),
    ("optim.betas", ["a", 0.9], "optim.betas[0]=a is not a number: optim.betas takes a list of numbers (e.g. "),
    ("regularization.grad_clip", "x", "regularization.grad_clip=x is not a number: regularization.grad_clip takes "
                                      "a float > 0 or null (e.g. "),
    ("trainer", 3, "trainer=3 cannot be set: trainer is a group of keys; set them one by one, e.g. trainer."),
    ("resume", [1], "resume=[1] is not a single value: resume takes a checkpoint file"),
    ("seed", "abc", "seed=abc is not a whole number: seed takes an integer >= 0"),
    ("trainer.max_epochs", 1.0, "trainer.max_epochs=1.0 is not a whole number: trainer.max_epochs takes an integer "
                                ">= 1 (write trainer.max_epochs=1)."),
]


def _type_error(cfg, key: str, value: object) -> str:
    """The line for ``key=value`` set on ``cfg`` (as Hydra sets an override)."""
    with pytest.raises(ValidationError) as info:
        OmegaConf.update(copy.deepcopy(cfg), key, value, merge=True)
    return describe_error(info.value)


@pytest.mark.parametrize(("key", "value", "says"), TYPE_ERRORS)
def test_a_value_of_the_wrong_type_is_told_in_dltrains_words(cfg, key, value, says):
    message = _type_error(cfg, key, value)
    assert message.startswith(says) and "\n" not in message
    assert "could not be converted" not in message and "Value '" not in message


def test_every_example_is_a_value_its_key_takes(cfg):
    examples = [re.search(r"e\.g\. (\S+=[^)]+?)\)?\.$", _type_error(cfg, key, value)) for key, value, _ in TYPE_ERRORS]
    compose([found.group(1).replace(" ", "") for found in examples if found])


def test_a_type_error_on_the_command_line_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    line = cli_error(capsys, monkeypatch, ["optim=sgd", "optim.lr=abc"])
    default = OmegaConf.structured(GROUP_SCHEMAS["optim"]["sgd"]).lr
    assert line == f"dltrain: error: optim.lr=abc is not a number: optim.lr takes a float >= 0 (e.g. optim.lr={default})."
    assert _refused(["trainer.max_epochs=ten"]) == _type_error(compose([], check=False), "trainer.max_epochs", "ten")


# --- sweeps, the tools, the registries ---------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "says"), [
    (["-m", "epochs=1,2"], "epochs is not a config key: did you mean trainer.max_epochs=1,2? (known keys there: "),
    (["-m", "optim.lr=abc,0.1"], "optim.lr=abc is not a number: optim.lr takes a float >= 0"),
])
def test_a_sweep_says_it_before_its_first_job(capsys, monkeypatch, tmp_path, args, says):
    monkeypatch.chdir(tmp_path)
    line = cli_error(capsys, monkeypatch, args)
    assert line.startswith(f"dltrain: error: {says}")
    assert not list(tmp_path.glob("outputs/multirun/*/*"))  # no job ran: the sweep directory is gone again


@pytest.mark.parametrize(("main", "tool"), [(eval_main, "dltrain-eval"), (predict_main, "dltrain-predict")])
def test_the_tools_name_the_key_meant(capsys, main, tool, tmp_path):
    ckpt = f"ckpt={tmp_path / 'none.pt'}"
    line = tool_error(capsys, main, tool, [ckpt, "devcie=cpu"])
    assert line.startswith(f"{tool}: error: unknown key devcie: did you mean device=cpu? {tool} takes ckpt, ")
    line = tool_error(capsys, main, tool, [ckpt, "trust_cod=maybe"])
    assert "did you mean trust_code? " in line  # maybe is not true or false: the key alone
    line = tool_error(capsys, main, tool, [ckpt, "colour=red"])
    assert "did you mean" not in line


def test_eval_names_the_data_key_meant(capsys, tmp_path):
    line = tool_error(capsys, eval_main, "dltrain-eval", [f"ckpt={tmp_path / 'none.pt'}", "data.pth=t.csv"])
    assert line.startswith("dltrain-eval: error: data.pth cannot be changed here: did you mean data.path=t.csv? ")


def test_a_registry_names_the_option_meant():
    reg = Registry("optim")
    reg.register("adam")(object)
    with pytest.raises(ConfigError, match=r"^optim=Adam is not a known option: did you mean optim=adam\? "):
        reg.get("Adam")


def test_near_misses_and_type_errors_do_not_import_torch(tmp_path):
    """The lines come before torch is loaded, so they come at once."""
    code = ("import sys\nfrom dltrain.cli.app import main\n"
            "for args in (['optimizer=sgd'], ['optim.lr=abc'], ['optim=SGD'], ['-m', 'epochs=1,2']):\n"
            "    sys.argv = ['dltrain', *args]\n"
            "    try:\n        main()\n    except SystemExit:\n        pass\n"
            "print('TORCH_IMPORTED' if {'torch', 'torchvision'} & set(sys.modules) else 'NO_TORCH')")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.stdout.strip() == "NO_TORCH", proc.stderr
    assert proc.stderr.count("did you mean") == 3 and "optim.lr=abc is not a number" in proc.stderr, proc.stderr


# --- what is suggested fits --------------------------------------------------------------------------------------

def test_a_key_of_the_optimizer_is_preferred_to_the_alias():
    """adamw has its own weight_decay: regularization.l2 as well would be refused."""
    import torch

    from dltrain.build import check_options
    from dltrain.training.distributed import Ranks

    meant = did_you_mean("weight_decay=0.05", compose(["optim=adamw"], check=False))
    assert meant == "did you mean optim.weight_decay=0.05?"
    check_options(compose(["optim=adamw", meant.removeprefix("did you mean ").removesuffix("?")]), Ranks(),
                  torch.device("cpu"))


def test_a_sweep_keeps_its_other_options(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    line = cli_error(capsys, monkeypatch, ["-m", "optim=SGD,adam"])
    assert line.startswith("dltrain: error: optim=SGD is not a known option: did you mean optim=sgd,adam? (choose ")


def test_a_whole_float_is_quoted_as_typed_with_the_integer_to_write(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    line = cli_error(capsys, monkeypatch, ["seed=1e3"])
    assert line.startswith("dltrain: error: seed=1e3 is not a whole number: seed takes an integer >= 0")
    assert line.endswith(" (write seed=1000).")
    compose(["seed=1000"])


@pytest.mark.parametrize(("main", "tool", "typed", "meant"), [
    (eval_main, "dltrain-eval", "trainer.eval_batch_sise=abc", "trainer.eval_batch_size? "),  # abc is no integer
    (eval_main, "dltrain-eval", "data.pth=a,b", "data.path? "),  # a sweep is not one path
    (eval_main, "dltrain-eval", "batch_size=8", "trainer.eval_batch_size=8? "),
    (predict_main, "dltrain-predict", "checkpoint=x.pt", "ckpt=x.pt? "),
])
def test_the_tools_fill_in_only_values_that_fit(capsys, tmp_path, main, tool, typed, meant):
    line = tool_error(capsys, main, tool, [f"ckpt={tmp_path / 'none.pt'}", typed])
    assert f": did you mean {meant}" in line


def test_override_key():
    assert [override_key(o) for o in ["+optim.lr=1", "~seed", "++a.b=c=d", "x"]] == ["optim.lr", "seed", "a.b", "x"]

"""Tests that walk the registries, so a new option is covered by registering it:

- every model receives a finite gradient in every parameter after one backward pass;
- every builder's signature matches its schema's fields, both ways, in every group;
- builders leave the schema's choices and ranges to the schema.

That every option of every group composes, builds and trains is
``tests/test_catalog.py::test_every_option_trains`` (it walks ``GROUP_SCHEMAS``, whose names
``tests/test_registry.py`` matches with the registries and presets).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest
import torch
from torch import nn

from dltrain.config.schemas import GROUP_SCHEMAS, TransferConfig
from dltrain.data import DATASETS
from dltrain.errors import ConfigError
from dltrain.init import INITS, apply_init
from dltrain.loggers import LOGGERS
from dltrain.losses import LOSSES
from dltrain.models import MODELS
from dltrain.models.transfer import split_options
from dltrain.optim import OPTIMIZERS
from dltrain.schedulers import SCHEDULERS
from dltrain.tasks import TASKS

REGISTRIES = {"model": MODELS, "data": DATASETS, "optim": OPTIMIZERS, "loss": LOSSES, "init": INITS,
              "scheduler": SCHEDULERS, "logger": LOGGERS, "task": TASKS}
OPTIONS = [(group, option) for group, registry in REGISTRIES.items() for option in registry.names()]

#: A user's model for options whose model is user code (``model._target_``): a tests.nets module.
USER_MODEL = {"_target_": "tests.nets.TinyNet", "width": 8}


def schema_fields(group: str, option: str) -> dict[str, Any]:
    """The option's config keys (without ``name``) and their schema defaults, as the build step
    passes them (a model's transfer keys are the build step's: only ``weights`` reaches a builder
    that takes it)."""
    fields = {f.name: getattr(GROUP_SCHEMAS[group][option](), f.name)
              for f in dataclasses.fields(GROUP_SCHEMAS[group][option]) if f.name != "name"}
    if group != "model":
        return fields
    takes = "weights" in inspect.signature(MODELS.get(option)).parameters
    return split_options(fields, takes_weights=takes,
                         has_keys=issubclass(GROUP_SCHEMAS[group][option], TransferConfig))[0]


def model_call_time(option: str, fields: dict[str, Any], tokens: bool = False) -> dict[str, Any]:
    """What the build step passes a model builder besides its ``model.*`` keys: the data's
    example shape and output width; ``regularization.dropout`` and ``batch_norm`` to models
    that take them (``head_dropout`` where ``model.dropout`` is the model's own); the
    vocabulary size of token data to models that embed tokens; whether to load the start
    weights to models that take ``weights`` (False when rebuilt for a checkpoint)."""
    facts = MODELS.facts(option)
    args: dict[str, Any] = {"input_shape": (3, 8, 8), "num_outputs": 3}
    if "weights" in fields and "start_weights" in inspect.signature(MODELS.get(option)).parameters:
        args["start_weights"] = True
    if facts.regularization_layers:
        args["head_dropout" if "dropout" in fields else "dropout"] = 0.1
        args["batch_norm"] = True
    if tokens:
        args["input_shape"], args["vocab_size"] = (7,), 20
    return args


#: Per group, what the build step passes each builder at call time besides its config keys.
CALL_TIME = {
    "data": {"seed": 0},  # the run's seed draws the splits
    "optim": {"params": []},  # the model's parameter groups
    # the data's task and width, regularization.label_smoothing, the training split's class counts
    "loss": {"task": "multiclass", "num_outputs": 3, "label_smoothing": 0.0, "class_counts": None},
    "init": {"model": nn.Identity(), "activation": None},  # the model, and the activation its gain follows
    "scheduler": {"optimizer": None, "max_epochs": 2, "steps_per_epoch": 3},  # lengths from trainer.* and data
    "logger": {"run_dir": "run"},  # the run directory
    "task": {},  # a task takes its own keys alone
}

#: Keywords a builder takes that are deliberately no config key: torch's internal switches.
NOT_CONFIG = {"optim": {"differentiable", "capturable"}}


# --- every model learns from every parameter -----------------------------------------

def built_model(option: str, tokens: bool = False) -> nn.Module:
    """``model=option`` with its schema defaults, as the build step calls the builder."""
    fields = schema_fields("model", option)
    if MODELS.facts(option).user_code:
        fields = USER_MODEL
    return MODELS.build(option, **fields, **model_call_time(option, fields, tokens))


def assert_every_parameter_learns(model: nn.Module, x: torch.Tensor) -> None:
    """One backward pass from ``x`` leaves a finite gradient in every parameter (timm's check)."""
    loss = model(x).square().mean()
    if hasattr(model, "generate"):  # a GAN's model: its generator's parameters learn through D's logit on its images
        loss = loss + model(model.generate(torch.randn(len(x), model.latent_size))).square().mean()
    loss.backward()
    params = dict(model.named_parameters())
    assert params, "the model has no parameters"
    no_grad = [name for name, p in params.items() if p.grad is None]
    assert not no_grad, f"parameters without a gradient: {no_grad}"
    not_finite = [name for name, p in params.items() if not torch.isfinite(p.grad).all()]
    assert not not_finite, f"parameters with a non-finite gradient: {not_finite}"
    assert sum(p.grad.abs().sum() for p in params.values()) > 0


@pytest.mark.parametrize("option", MODELS.names())
def test_every_model_gets_a_gradient_in_every_parameter(option):
    # Every built-in model reads images (an MLP flattens them, a recurrent model reads one
    # row per step, a CNN needs them), so one image batch serves each.
    torch.manual_seed(0)
    assert_every_parameter_learns(built_model(option), torch.randn(4, 3, 8, 8))


@pytest.mark.parametrize("option", [o for o in MODELS.names()
                                    if MODELS.facts(o).reads_tokens and not MODELS.facts(o).user_code])
def test_every_token_model_gets_a_gradient_in_every_parameter(option):
    torch.manual_seed(0)
    ids = torch.randint(1, 20, (4, 7))
    ids[0, 4:] = 0  # a shorter text, padded
    assert_every_parameter_learns(built_model(option, tokens=True), ids)


# --- builder signatures match the schemas ----------------------------------------------

def call_time(group: str, option: str, fields: dict[str, Any]) -> dict[str, Any]:
    """What the build step passes ``group=option``'s builder besides its config keys."""
    if group == "data" and DATASETS.facts(option).inputs == "images":
        return {**CALL_TIME[group], "model_inputs": None}  # the input the model declares, if it does
    return model_call_time(option, fields, MODELS.facts(option).reads_tokens) if group == "model" \
        else CALL_TIME[group]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_builder_takes_its_schema_fields(group, option):
    fields = schema_fields(group, option)
    signature = inspect.signature(REGISTRIES[group].get(option))
    signature.bind(**fields, **call_time(group, option, fields))  # raises TypeError naming the key


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_builder_keyword_is_a_schema_field(group, option):
    fields = schema_fields(group, option)
    known = set(fields) | set(call_time(group, option, fields)) | NOT_CONFIG.get(group, set())
    params = inspect.signature(REGISTRIES[group].get(option)).parameters.values()
    extra = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in known]
    assert not extra, f"{group}={option} takes {extra}, which no config key sets"
    if any(p.kind is p.VAR_KEYWORD for p in params):  # only a schema that takes the user's own keys
        assert getattr(GROUP_SCHEMAS[group][option], "ALLOWS_EXTRA_KEYS", False), \
            f"{group}={option} takes **kwargs: its keywords cannot be checked against the schema"


# --- the schema validates choices and ranges; a builder only what it cannot ---------------

@pytest.mark.parametrize(("override", "message"), [
    (["data=image_folder", "data.path=x", "data.color=cmyk"],
     r"^data.color=cmyk is not a known value: choose one of rgb, grayscale\.$"),
    (["init=xavier_uniform", "init.gain=0"], r"^init.gain=0.0 is out of range: it must be > 0 "),
])
def test_the_schema_refuses_what_builders_no_longer_check(compose, override, message):
    with pytest.raises(ConfigError, match=message):
        compose(override)


def test_builders_called_from_python_refuse_a_silently_wrong_value(tmp_path):
    # Outside the schema, a colour other than grayscale would decode as RGB, and a gain of 0
    # or below would scale every weight: plain ValueErrors, not config messages.
    with pytest.raises(ValueError, match="color must be 'rgb' or 'grayscale', got 'gray'"):
        DATASETS.build("image_folder", path=str(tmp_path), color="gray")
    with pytest.raises(ValueError, match="gain must be a positive finite number, got -1.0"):
        apply_init(nn.Linear(2, 2), "xavier_normal", gain=-1.0)

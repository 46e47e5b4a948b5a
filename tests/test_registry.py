"""Registries: one per config group, names equal to the option names in conf/."""

from __future__ import annotations

from pathlib import Path

import pytest

from dltrain.config.validation import ACTIVATIONS, GROUP_SCHEMAS
from dltrain.data import DATASETS
from dltrain.errors import ConfigError
from dltrain.init import INITS
from dltrain.loggers import LOGGERS
from dltrain.losses import LOSSES
from dltrain.models import MODELS
from dltrain.models.layers import ACTIVATIONS as ACTIVATION_MODULES
from dltrain.optim import OPTIMIZERS
from dltrain.registry import Registry

CONF = Path(__file__).resolve().parents[1] / "conf"
REGISTRIES = {"model": MODELS, "data": DATASETS, "optim": OPTIMIZERS, "loss": LOSSES, "init": INITS, "logger": LOGGERS}


def test_register_get_build_names():
    reg = Registry("thing")

    @reg.register("double")
    def double(x):
        return 2 * x

    reg.register("square")(lambda x: x * x)
    assert reg.get("double") is double
    assert reg.build("double", 4) == 8
    assert reg.build("square", x=3) == 9
    assert reg.names() == ["double", "square"]
    assert "square" in reg and "cube" not in reg


def test_unknown_name_lists_the_known_ones():
    reg = Registry("optim")
    reg.register("sgd")(object)
    reg.register("adam")(object)
    with pytest.raises(ConfigError, match=r"optim=rmsprop is not a known option: choose one of adam, sgd"):
        reg.get("rmsprop")


def test_a_name_registers_once():
    reg = Registry("model")
    reg.register("mlp")(object)
    with pytest.raises(ValueError, match="twice"):
        reg.register("mlp")(object)


@pytest.mark.parametrize("group", sorted(REGISTRIES))
def test_registry_names_match_presets_and_schemas(group):
    """Every option has a builder, a YAML preset and a schema, under the same name."""
    presets = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    assert REGISTRIES[group].names() == presets
    assert sorted(GROUP_SCHEMAS[group]) == presets


def test_activation_choices_match_modules():
    assert tuple(ACTIVATION_MODULES) == ACTIVATIONS

"""The YAML presets restate their schema's defaults (they are the user's map of an option's
keys): every value in ``conf/<group>/<option>.yaml`` equals the default of the option's schema,
except the deliberate differences listed here. Experiment presets (``conf/experiment``) are
``# @package _global_`` overlays, meant to differ, and are not walked."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from dltrain.config.schemas import GROUP_SCHEMAS, MANY_OPTION_GROUPS

CONF = Path(__file__).resolve().parents[1] / "conf"

#: (group, option) -> {key: value}: the values a preset sets on purpose away from its schema.
DELIBERATE = {
    # Both share torch.optim.SGD's schema, whose momentum 0 is plain SGD (optim=sgd); the option's
    # name is the point of the preset: classical momentum, and Nesterov's look-ahead on top of it.
    ("optim", "momentum"): {"momentum": 0.9},
    ("optim", "nesterov"): {"momentum": 0.9, "nesterov": True},
    # Classic networks share model=sequential's schema (model=lstm's for mnist_rnn); the network
    # is the point of each preset.
    **{("model", name): {"layers": OmegaConf.load(CONF / "model" / f"{name}.yaml").layers}
       for name in ("lenet5", "mnist_net", "notes_cnn", "resnet_small", "vgg_small")},
    ("model", "mnist_rnn"): {"head": ["bn", "dropout:0.25", "dense:32", "relu", "dropout:0.5"]},
}


def schema_node(group: str, option: str) -> Any:
    """The option's schema as the ConfigStore holds it (``name`` set to the option, in a group
    that holds one option)."""
    schema = GROUP_SCHEMAS[group][option]
    return OmegaConf.structured(schema if group in MANY_OPTION_GROUPS else schema(name=option))


def schema_defaults(group: str, option: str) -> dict[str, Any]:
    """The option's schema defaults."""
    return OmegaConf.to_container(schema_node(group, option))


def preset_values(path: Path, group: str, option: str) -> dict[str, Any]:
    """The values a preset file sets, typed by its schema as Hydra would type them (a logger's
    under its own name: logger=[tensorboard,mlflow] takes several)."""
    raw = OmegaConf.load(path)
    raw.pop("defaults", None)
    if group in MANY_OPTION_GROUPS:
        raw = raw.get(option, OmegaConf.create({}))
    typed = OmegaConf.merge(schema_node(group, option), raw)
    return {key: OmegaConf.to_container(typed)[key] for key in raw}


def differences(conf: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(group, option) -> {key: preset value} for every preset value under ``conf`` that is not
    its schema's default."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for group, options in GROUP_SCHEMAS.items():
        for option in options:
            defaults = schema_defaults(group, option)
            values = preset_values(conf / group / f"{option}.yaml", group, option)
            differ = {key: value for key, value in values.items() if value != defaults[key]}
            if differ:
                found[(group, option)] = differ
    return found


def test_every_preset_value_is_its_schema_default_or_a_listed_difference():
    assert differences(CONF) == DELIBERATE


def test_a_preset_value_that_drifts_from_its_schema_is_found(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    adam = conf / "optim" / "adam.yaml"
    adam.write_text(adam.read_text().replace("lr: 0.001 ", "lr: 0.002 "))
    assert differences(conf) == {**DELIBERATE, ("optim", "adam"): {"lr": 0.002}}


@pytest.mark.parametrize(("group", "option"), sorted(DELIBERATE))
def test_each_listed_difference_reaches_the_composed_config(compose, group, option):
    node = compose([f"{group}={option}"])[group]
    assert {key: node[key] for key in DELIBERATE[(group, option)]} == DELIBERATE[(group, option)]

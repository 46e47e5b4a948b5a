"""A checkpoint's optimizer states (the run's, and a GAN's discriminator's) are checked when a
run resumes: a crafted moment, step, per-parameter entry or group value is one line naming the
file, never a crash at the first step."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from dltrain import train
from dltrain.errors import ConfigError
from tests.test_gan import SMALL

SUPERVISED = ["model=cnn", "model.channels=[4]", "model.hidden=[8]", "trainer.batch_size=256",
              "trainer.diagnostics=false", "device=cpu"]
SHORT = ["trainer.limit_train_batches=2"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One epoch's last.pt of a GAN and of a supervised CNN (both fused CPU Adam)."""
    from dltrain import compose

    made = {}
    for name, overrides in (("gan", SMALL), ("supervised", [*SUPERVISED, "optim=adam"])):
        run = tmp_path_factory.mktemp(name)
        train(compose([*overrides, *SHORT, "trainer.max_epochs=1"]), run_dir=run)
        made[name] = run / "checkpoints" / "last.pt"
    return made


def resumed(compose, tmp_path, checkpoints, kind, damage) -> ConfigError:
    """The error of resuming ``kind``'s checkpoint after ``damage(state)``."""
    state = torch.load(checkpoints[kind], weights_only=True)
    damage(state)
    crafted = tmp_path / "crafted.pt"
    torch.save(state, crafted)
    overrides = SMALL if kind == "gan" else [*SUPERVISED, "optim=adam"]
    with pytest.raises(ConfigError) as err:
        train(compose([*overrides, *SHORT, "trainer.max_epochs=2", f"resume={crafted}"]), run_dir=tmp_path / "r")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"resume={crafted}: the checkpoint's ")
    return err.value


def generator(state):
    return state["optimizer"]


def discriminator(state):
    return state["task"]["discriminator_optimizer"]


EXP_AVG = (lambda opt: opt["state"][0].update(exp_avg=torch.zeros(3)),
           r"exp_avg of a parameter of shape \(.*\) is \(3,\)")
GENERATOR, DISCRIMINATOR = ("gan", generator, "optimizer state"), \
    ("gan", discriminator, r"discriminator's optimizer state \(task=gan's\)")
SUPERVISED_ADAM = ("supervised", generator, "optimizer state")


@pytest.mark.parametrize(("kind", "entry", "what", "damage", "problem"), [
    (*GENERATOR, *EXP_AVG),
    (*SUPERVISED_ADAM, *EXP_AVG),
    (*DISCRIMINATOR, lambda opt: opt["state"][0].update(step=torch.zeros(2)),
     r"step of a parameter is a torch.float32 tensor of shape \(2,\), not a scalar"),
    (*GENERATOR, lambda opt: opt["state"].update({0: [1]}), r"(for other parameters or damaged|a list)"),
    (*GENERATOR, lambda opt: opt["param_groups"][0].update(betas="ab"), r"betas is 'ab', not two numbers in \[0, 1\)"),
    (*DISCRIMINATOR, lambda opt: opt["param_groups"][0].update(lr=math.nan), r"lr is nan, not a finite number >= 0"),
    (*SUPERVISED_ADAM, lambda opt: opt["param_groups"][0].update(lr="0.1"), r"lr is '0.1', not a finite number >= 0"),
    (*SUPERVISED_ADAM, lambda opt: opt["param_groups"][-1].update(eps=-1.0), r"eps is -1.0, not a finite number >= 0"),
    (*DISCRIMINATOR, lambda opt: opt["param_groups"][0].update(amsgrad="yes"),
     r"amsgrad is 'yes', not true, false or None"),
])
def test_a_crafted_optimizer_state_is_one_line(compose, tmp_path, checkpoints, kind, entry, what, damage, problem):
    error = resumed(compose, tmp_path, checkpoints, kind, lambda state: damage(entry(state)))
    assert re.search(f"the checkpoint's {what} is .*{problem}", str(error)), str(error)


def test_the_saved_states_resume(compose, tmp_path, checkpoints):
    for kind, overrides in (("gan", SMALL), ("supervised", [*SUPERVISED, "optim=adam"])):
        summary = train(compose([*overrides, *SHORT, "trainer.max_epochs=2", f"resume={checkpoints[kind]}"]),
                        run_dir=tmp_path / kind)
        assert summary["status"] == "completed" and summary["epochs_run"] == 2

"""``trainer.deterministic``: torch's deterministic algorithms for the run and only for it (the
settings before it are back when it ends), cuDNN's and cuBLAS's settings on CUDA, and an
operation without a deterministic implementation stopping the run with one line naming it."""

from __future__ import annotations

import json
import logging
import math
import os

import pytest
import torch
from torch import nn

from dltrain import train
from dltrain.errors import ConfigError
from dltrain.training.determinism import CUBLAS_WORKSPACE, restored_determinism, set_deterministic

from .conftest import run_cli
from .test_bad_input import error_line

FAST = ["trainer.fast_dev_run=true", "device=cpu"]


class SpyNet(nn.Module):
    """A user's network that records whether torch's deterministic algorithms are on as it runs."""

    seen: list[bool] = []

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_outputs))

    def forward(self, x):
        SpyNet.seen.append(torch.are_deterministic_algorithms_enabled())
        return self.body(x)


class PutNet(nn.Module):
    """A user's network calling ``Tensor.put_``, which has no deterministic implementation on the
    CPU; with ``training_only`` it calls it in training steps alone (after the build's check)."""

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, training_only: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_outputs))
        self.training_only = training_only

    def forward(self, x):
        if self.training or not self.training_only:
            torch.zeros(4).put_(torch.tensor([1]), torch.tensor([1.0]))
        return self.body(x)


def test_on_for_the_run_and_restored(compose, tmp_path):
    """The model runs with deterministic algorithms on, and they are off again after the run."""
    SpyNet.seen.clear()
    assert not torch.are_deterministic_algorithms_enabled()
    train(compose([*FAST, "model=custom", "model._target_=tests.test_determinism.SpyNet",
                   "trainer.deterministic=true"]), run_dir=tmp_path / "on")
    assert SpyNet.seen and all(SpyNet.seen)
    assert not torch.are_deterministic_algorithms_enabled()

    SpyNet.seen.clear()
    train(compose([*FAST, "model=custom", "model._target_=tests.test_determinism.SpyNet"]), run_dir=tmp_path / "off")
    assert SpyNet.seen and not any(SpyNet.seen)


def test_a_callers_own_setting_is_kept(compose, tmp_path):
    """A Python caller who turned them on (warn only) gets exactly that back after a run."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        train(compose([*FAST, "trainer.deterministic=true"]), run_dir=tmp_path / "run")
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="every CPU run is the same bits, with or without the key")
def test_two_runs_are_the_same_bits(compose, tmp_path):
    """Two deterministic runs on CUDA train the same weights, bit for bit."""
    overrides = ["model=cnn", "trainer.max_epochs=2", "device=cuda", "trainer.deterministic=true"]
    for name in ("a", "b"):
        train(compose(overrides), run_dir=tmp_path / name)
    weights = [torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True)["model"] for name in "ab"]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_cuda_settings_and_their_restoration(monkeypatch):
    """On CUDA: cuDNN deterministic without its timed pick, and the cuBLAS workspace setting
    unless the user set one; as before once the run's scope ends, but for cuDNN's timed pick,
    which every run sets as it is built (trainer.cudnn_benchmark)."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    with restored_determinism():
        set_deterministic(True, torch.device("cuda"))
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert not torch.backends.cudnn.deterministic
    assert not torch.are_deterministic_algorithms_enabled()

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    with restored_determinism():
        set_deterministic(True, torch.device("cuda"))
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"  # the user's value stays


def test_cublas_set_after_cuda_started_is_warned(monkeypatch, caplog):
    """cuBLAS reads its workspace setting once: set after CUDA started, it may not count."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with caplog.at_level(logging.WARNING, logger="dltrain"), restored_determinism():
        set_deterministic(True, torch.device("cuda"))
    assert caplog.text.count("CUDA was used in this process before the run") == 1
    assert "set CUBLAS_WORKSPACE_CONFIG=:4096:8 in the environment before starting" in caplog.text

    caplog.clear()
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's own, set before
    with caplog.at_level(logging.WARNING, logger="dltrain"), restored_determinism():
        set_deterministic(True, torch.device("cuda"))
    assert "CUDA was used" not in caplog.text


def test_refused_with_cudnn_benchmark(compose, tmp_path):
    with pytest.raises(ConfigError, match=r"trainer\.deterministic=true cannot go with trainer\.cudnn_benchmark"):
        train(compose([*FAST, "trainer.deterministic=true", "trainer.cudnn_benchmark=true"]), run_dir=tmp_path)
    assert not torch.are_deterministic_algorithms_enabled()


def test_refused_with_cudnn_benchmark_before_the_run_dir(tmp_path):
    """The command line refuses the pair as it checks the config: no run directory is made."""
    proc = run_cli([*FAST, "trainer.deterministic=true", "trainer.cudnn_benchmark=true",
                    f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert error_line(proc).startswith("dltrain: error: trainer.deterministic=true cannot go with "
                                       "trainer.cudnn_benchmark=true")
    assert not (tmp_path / "run").exists()


def test_a_callers_own_setting_is_not_named_as_the_key(compose, tmp_path):
    """trainer.deterministic=false with torch's setting on from the caller: torch's error is not
    said to come from the key."""
    torch.use_deterministic_algorithms(True)
    try:
        with pytest.raises(Exception) as err:
            train(compose([*FAST, "model=custom", "model._target_=tests.test_determinism.PutNet",
                           "+model.training_only=true"]), run_dir=tmp_path)
    finally:
        torch.use_deterministic_algorithms(False)
    assert "put_ does not have a deterministic implementation" in str(err.value)
    assert not str(err.value).startswith("trainer.deterministic=true")
    assert not json.loads((tmp_path / "summary.json").read_text())["stop_reason"].startswith("trainer.deterministic")


def test_an_op_in_a_training_step_is_one_line(compose, tmp_path):
    """An op that runs in training steps alone (not in the build's check): the run fails with
    the line naming it, in summary.json too, and the settings are restored."""
    cfg = compose([*FAST, "model=custom", "model._target_=tests.test_determinism.PutNet", "+model.training_only=true",
                   "trainer.deterministic=true"])
    with pytest.raises(ConfigError) as err:
        train(cfg, run_dir=tmp_path)
    line = str(err.value)
    assert line.startswith("trainer.deterministic=true: put_ has no deterministic implementation")
    assert "set trainer.deterministic=false" in line and "\n" not in line
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["stop_reason"] == line
    assert not torch.are_deterministic_algorithms_enabled()


def test_an_op_found_by_the_builds_forward_pass(compose, tmp_path):
    """The build's forward pass finds the op: the same one line (the command line prints a
    ConfigError's line and exits with 2)."""
    cfg = compose([*FAST, "model=custom", "model._target_=tests.test_determinism.PutNet", "trainer.deterministic=true"])
    with pytest.raises(ConfigError) as err:
        train(cfg, run_dir=tmp_path / "run")
    assert str(err.value) == ("trainer.deterministic=true: put_ has no deterministic implementation in torch: "
                              "set trainer.deterministic=false, or change the model or option that uses put_.")


def test_a_resume_may_turn_it_on_even_from_a_checkpoint_without_the_key(compose, tmp_path, caplog):
    """It changes how a run computes, not what it trains: a resume may change it, also of a
    checkpoint written before the key existed."""
    from dltrain.training.checkpoint import load_checkpoint, save_checkpoint

    base = ["model.hidden=[16]", "device=cpu"]
    train(compose([*base, "trainer.max_epochs=1"]), run_dir=tmp_path / "first")
    old = load_checkpoint(tmp_path / "first" / "checkpoints" / "last.pt")
    del old["config"]["trainer"]["deterministic"]  # as an earlier dltrain wrote it
    save_checkpoint(old, tmp_path / "old" / "checkpoints" / "last.pt")
    with caplog.at_level(logging.INFO, logger="dltrain"):
        summary = train(compose([*base, "trainer.max_epochs=2", "trainer.deterministic=true",
                                 f"resume={tmp_path / 'old' / 'checkpoints' / 'last.pt'}"]), run_dir=tmp_path / "b")
    assert summary["epochs_run"] == 2 and summary["status"] == "completed"
    assert "trainer.deterministic" in caplog.text

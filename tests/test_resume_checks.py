"""What a resume checks before it trains: a checkpoint written before keys were added still
resumes, and a refusal lists the keys a resume may change."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from dltrain import train
from dltrain.errors import ConfigError
from dltrain.training.checkpoint import load_checkpoint
from dltrain.training.resume import CHANGEABLE, flatten

FAST = ["model.hidden=[16]", "trainer.batch_size=256", "trainer.diagnostics=false"]

#: Every key the composed default config has now that a checkpoint of the config before
#: the training features (accumulation, budgets, averaging, MixUp, step checkpoints), model=mlp's
#: start weights and the task= group lacks.
ADDED = (
    "regularization.augment_params.cutmix.alpha", "regularization.augment_params.cutmix.p",
    "regularization.augment_params.erasing.p", "regularization.augment_params.erasing.ratio",
    "regularization.augment_params.erasing.scale", "regularization.augment_params.erasing.value",
    "regularization.augment_params.mixup.alpha", "regularization.augment_params.mixup.p",
    "regularization.ema_decay", "regularization.ema_warmup", "regularization.evaluate_averaged",
    "regularization.swa_anneal_epochs", "regularization.swa_lr", "regularization.swa_start",
    "trainer.accumulate_grad_batches", "trainer.checkpoint.every_n_minutes", "trainer.checkpoint.every_n_steps",
    "trainer.checkpoint.save_top_k", "trainer.deterministic", "trainer.limit_train_batches",
    "trainer.limit_val_batches", "trainer.max_steps", "trainer.max_time", "trainer.overfit_batches",
    "trainer.profiler", "trainer.profiler_steps", "trainer.val_every_n_epochs",
    # model=mlp's start-weights keys (an autoencoder's encoder as its first layers) and the task= group
    "model.backbone_lr", "model.freeze", "model.freeze_epochs", "model.weights", "task.name",
)
#: The keys of that older default config.
OLDER = (
    "data.name", "data.test_fraction", "data.val_fraction", "device", "init.name", "loss.name", "model.activation",
    "model.hidden", "model.name", "optim.amsgrad", "optim.betas", "optim.decoupled_weight_decay", "optim.eps",
    "optim.foreach", "optim.fused", "optim.lr", "optim.maximize", "optim.name", "optim.weight_decay",
    "regularization.augment", "regularization.augment_params.brightness.delta",
    "regularization.augment_params.contrast.delta", "regularization.augment_params.crop.padding",
    "regularization.augment_params.hflip.p", "regularization.augment_params.rotate.degrees",
    "regularization.augment_params.shift.fraction", "regularization.augment_params.zoom.scale",
    "regularization.batch_norm", "regularization.dropout", "regularization.grad_clip",
    "regularization.grad_clip_value", "regularization.l1", "regularization.l2", "regularization.label_smoothing",
    "resume", "scheduler.name", "scheduler.warmup_epochs", "seed", "trainer.batch_size", "trainer.channels_last",
    "trainer.checkpoint.every_n_epochs", "trainer.checkpoint.keep_last", "trainer.checkpoint.save_best",
    "trainer.checkpoint.save_last", "trainer.compile", "trainer.cudnn_benchmark", "trainer.diagnostics",
    "trainer.early_stopping.baseline", "trainer.early_stopping.check_finite", "trainer.early_stopping.enabled",
    "trainer.early_stopping.min_delta", "trainer.early_stopping.mode", "trainer.early_stopping.monitor",
    "trainer.early_stopping.patience", "trainer.early_stopping.restore_best_weights",
    "trainer.early_stopping.start_from_epoch", "trainer.eval_batch_size", "trainer.fast_dev_run",
    "trainer.log_every_n_steps", "trainer.max_epochs", "trainer.precision", "trainer.repeats",
    "trainer.sync_batchnorm", "trust_code",
)


def _drop(config: dict, key: str) -> None:
    """Remove ``key``, and its node once empty: an older config had no such node (``task``)."""
    *path, leaf = key.split(".")
    parent, node = None, config
    for part in path:
        parent, node = node, node[part]
    del node[leaf]
    if parent is not None and not node:
        del parent[path[-1]]


def test_a_checkpoint_without_every_added_key_resumes(compose, tmp_path):
    """Its config lacks every key added since (nested ones too): it resumes with the defaults."""
    keys = set(flatten(OmegaConf.to_container(compose(FAST), resolve=True)))
    assert keys - set(OLDER) == set(ADDED)  # ADDED is complete
    train(compose([*FAST, "trainer.max_epochs=1"]), run_dir=tmp_path / "first")
    state = load_checkpoint(tmp_path / "first" / "checkpoints" / "last.pt")
    for key in ADDED:
        _drop(state["config"], key)
    torch.save(state, tmp_path / "old.pt")
    summary = train(compose([*FAST, "trainer.max_epochs=2", f"resume={tmp_path / 'old.pt'}"]),
                    run_dir=tmp_path / "resumed")
    assert summary["status"] == "completed" and summary["epochs_run"] == 2


def test_a_refusal_lists_every_key_a_resume_may_change(compose, tmp_path):
    train(compose([*FAST, "trainer.max_epochs=1"]), run_dir=tmp_path / "first")
    with pytest.raises(ConfigError) as err:
        train(compose([*FAST, "optim.lr=0.5", f"resume={tmp_path / 'first'}"]), run_dir=tmp_path / "again")
    message = str(err.value)
    assert "\n" not in message and "optim.lr=0.5" in message
    allowed = message.rsplit("(only ", 1)[1]
    assert "regularization.evaluate_averaged" in allowed and "trainer.profiler_steps" in allowed
    assert all(key.rstrip(".") in allowed for key in CHANGEABLE if key != "resume")


@pytest.mark.parametrize("override", ["trainer.max_epochs=3", "trainer.max_steps=20"])
def test_a_new_length_under_onecycle_is_refused_in_one_line(compose, tmp_path, override):
    """onecycle's steps were sized on the checkpoint's length: a longer run would train on at its final LR."""
    onecycle = [*FAST, "scheduler=onecycle", "trainer.max_epochs=2"]
    train(compose(onecycle), run_dir=tmp_path / "first")
    with pytest.raises(ConfigError) as err:
        train(compose([*onecycle, override, f"resume={tmp_path / 'first'}"]), run_dir=tmp_path / "again")
    key = override.split("=")[0]
    assert "\n" not in str(err.value) and f"{override} (checkpoint: " in str(err.value)
    assert "scheduler=onecycle" in str(err.value) and f"keep {key}=" in str(err.value)
    assert not (tmp_path / "again").exists()


def test_a_resume_with_its_max_time_spent_is_refused_before_anything_is_written(compose, tmp_path):
    train(compose([*FAST, "trainer.max_epochs=1"]), run_dir=tmp_path / "first")
    state = load_checkpoint(tmp_path / "first" / "checkpoints" / "last.pt")
    state["train_seconds"] = 120.0
    torch.save(state, tmp_path / "spent.pt")
    with pytest.raises(ConfigError, match=r"nothing to train: .* trained 120.0 s and trainer.max_time=60: "
                                          r"raise trainer.max_time") as err:
        train(compose([*FAST, "trainer.max_epochs=3", "trainer.max_time=60", f"resume={tmp_path / 'spent.pt'}"]),
              run_dir=tmp_path / "again")
    assert "\n" not in str(err.value) and not (tmp_path / "again").exists()


@pytest.mark.slow  # three processes: the command line is the point (trainer.max_time=null is an override there)
def test_a_spent_max_time_is_refused_and_max_time_null_on_the_command_line_trains_on(tmp_path):
    from tests.conftest import run_cli

    fast = ["model.hidden=[16]", "trainer.batch_size=256", "trainer.diagnostics=false", "trainer.max_epochs=2"]
    assert run_cli([*fast, "trainer.max_time=0", "hydra.run.dir=cut"], cwd=tmp_path).returncode == 0
    last = "resume=cut/checkpoints/last.pt"
    refused = run_cli([*fast, last, "hydra.run.dir=again"], cwd=tmp_path)
    assert refused.returncode == 2 and "nothing to train" in refused.stderr
    assert "raise trainer.max_time" in refused.stderr
    assert not (tmp_path / "again" / "checkpoints").exists()  # its summary.json records the refusal alone
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["status"] == "failed"
    resumed = run_cli([*fast, last, "trainer.max_time=null", "hydra.run.dir=on"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "on" / "summary.json").read_text())["status"] == "completed"


def test_max_time_null_given_on_resume_counts_though_it_is_the_default(compose, tmp_path):
    train(compose([*FAST, "trainer.max_epochs=1"]), run_dir=tmp_path / "first")
    state = load_checkpoint(tmp_path / "first" / "checkpoints" / "last.pt")
    state["train_seconds"], state["config"]["trainer"]["max_time"] = 120.0, 60
    torch.save(state, tmp_path / "limited.pt")
    summary = train(compose([*FAST, "trainer.max_epochs=2", "trainer.max_time=null",
                             f"resume={tmp_path / 'limited.pt'}"]), run_dir=tmp_path / "on")
    assert summary["status"] == "completed" and summary["epochs_run"] == 2


def test_a_finished_run_with_its_max_time_spent_is_still_just_finished(compose, tmp_path):
    """A spent trainer.max_time is no error for a run that completed anyway: a resume of it
    says the run is done, as it did before the key existed."""
    first = tmp_path / "first"
    train(compose([*FAST, "trainer.max_epochs=1"]), run_dir=first)
    last = first / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    state["train_seconds"] = 120.0
    torch.save(state, last)
    summary = train(compose([*FAST, "trainer.max_epochs=1", "trainer.max_time=60", f"resume={last}"]),
                    run_dir=tmp_path / "again")
    assert summary["status"] == "completed" and summary["test"]

"""Every option of every config group, and every experiment preset, composed from the real
configs and trained for a few batches: a new option is covered by registering it (one registry,
one test), a new preset by adding its file to conf/experiment. Data options that read files get
small generated ones (the ``data_files`` fixture in conftest.py)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import yaml

from dltrain import train
from dltrain.config.validation import GROUP_SCHEMAS
from dltrain.errors import ConfigError
from tests.test_transfer_offline import write_cached_weights

#: Keys an option cannot run without (besides the files of data options: ``data_overrides``).
REQUIRED = {
    ("model", "custom"): ["model._target_=tests.nets.TinyNet", "+model.width=8"],
    ("data", "csv"): ["data.target=Class", "data.missing=mean"],  # the generated table's target, with gaps
    ("data", "text_csv"): ["model=lstm"],  # token ids need a model that embeds them
    ("loss", "bce"): ["data=moons"],  # two classes: bce refuses classes that exclude each other
    ("model", "dcgan"): ["task=gan"],  # a generator and a discriminator: trained adversarially only
    ("model", "autoencoder"): ["task=autoencoder"],  # it reconstructs its input: no output predicts y
}

#: Options that cannot read the default data (8x8 digits), and the data option each trains on.
DATA_FOR = {("model", "lenet5"): "mnist",  # 5x5 convolutions after a pooling need more than 8x8 pixels
            ("model", "torchvision"): "cifar10",  # a torchvision network reads colour images
            ("model", "transformer"): "text_csv"}  # where it shows its token embedding and padding mask

OPTIONS = [(group, option) for group, options in GROUP_SCHEMAS.items() for option in options]

#: Regularization and numerics settings, each on its own.
SETTINGS = [
    ["regularization.dropout=0.3"], ["regularization.batch_norm=true"], ["regularization.l1=1e-4"],
    ["regularization.l2=1e-3"], ["regularization.l1=1e-4", "regularization.l2=1e-3"],
    ["regularization.label_smoothing=0.1"], ["regularization.grad_clip=1.0"],
    ["regularization.grad_clip_value=0.5"], ["regularization.augment=[hflip,rotate,shift,zoom,brightness,contrast]"],
    ["trainer.precision=bf16"], ["scheduler=cosine", "scheduler.warmup_epochs=2"],
    ["optim=lbfgs", "regularization.l2=1e-3"], ["model=cnn", "regularization.batch_norm=true",
                                                 "regularization.dropout=0.2"],
    ["model=gru", "model.bidirectional=true", "model.num_layers=2", "model.dropout=0.2", "model.pooling=mean"],
    ["trainer.diagnostics=false"],  # on by default: every other run here measures its layers
    ["regularization.augment=[mixup]"], ["regularization.augment=[cutmix,erasing]"],
    ["trainer.checkpoint.save_top_k=2"], ["trainer.checkpoint.every_n_steps=1"],
    ["trainer.profiler=simple"], ["trainer.profiler=pytorch"],
    ["trainer.deterministic=true"],
    ["trainer.accumulate_grad_batches=2"],
    ["trainer.max_steps=1"], ["trainer.max_time=3600"],
    ["trainer.limit_train_batches=0.5", "trainer.limit_val_batches=1"], ["trainer.overfit_batches=1"],
    ["trainer.val_every_n_epochs=2"],
    ["regularization.ema_decay=0.9"], ["regularization.swa_start=1"],
    ["regularization.ema_warmup=true", "regularization.ema_decay=0.9"],
    ["regularization.swa_lr=0.001", "regularization.swa_start=1"],
    ["regularization.evaluate_averaged=false", "regularization.ema_decay=0.9"],
    ["regularization.swa_start=1", "regularization.swa_lr=0.001", "regularization.swa_anneal_epochs=2"],
    ["regularization.augment=[mixup,cutmix,erasing]", "regularization.augment_params.mixup.alpha=0.4",
     "regularization.augment_params.cutmix.p=0.5", "regularization.augment_params.erasing.value=random",
     "regularization.augment_params.erasing.scale=[0.1,0.2]"],
    ["trainer.checkpoint.every_n_minutes=0.001"], ["trainer.profiler=pytorch", "trainer.profiler_steps=1"],
    ["trainer.max_time=00:01:00:00"],
    ["model=transformer", "model.d_model=32", "model.num_heads=2", "model.num_layers=1", "model.ff_dim=64",
     "model.dropout=0.0", "model.activation=relu", "model.positional=learned", "model.max_length=16",
     "model.pooling=mean", "model.norm_first=false", "model.head=[dense:16,relu]"],
    ["model=transformer", "model.patch_size=4", "regularization.batch_norm=true", "regularization.dropout=0.2"],
    ["task=gan", "task.label_smoothing=0.1", "task.num_samples=16", "task.generator.lr=1e-3",
     "task.generator.betas=[0.5,0.99]", "task.discriminator.lr=1e-4", "task.discriminator.betas=[0.5,0.99]"],
    ["task=gan", "model.latent_size=16", "model.generator.channels=[32]", "model.generator.batch_norm=false",
     "model.discriminator.channels=[16,32]", "model.discriminator.batch_norm=false",
     "model.discriminator.negative_slope=0.1", "regularization.grad_clip=1.0", "regularization.grad_clip_value=0.5",
     "regularization.augment=[hflip]", "trainer.precision=bf16"],
    ["task=autoencoder", "task.loss=bce", "task.denoise=masking", "task.noise=0.3", "model.encoder=conv",
     "model.channels=[4,8]", "model.kernel_size=4", "model.bottleneck=6", "model.activation=tanh",
     "regularization.batch_norm=true"],
    ["task=autoencoder", "task.loss=l1", "task.denoise=gaussian", "model.hidden=[32,16]", "model.bottleneck=4",
     "regularization.dropout=0.2", "trainer.accumulate_grad_batches=2", "trainer.precision=bf16"],
    ["model=mlp", "model.freeze=1", "model.freeze_epochs=1", "model.backbone_lr=0.5"],  # model.weights: its own test
]


EXPERIMENT_DIR = Path(__file__).resolve().parents[1] / "conf" / "experiment"
#: The experiment presets: every conf/experiment/*.yaml.
EXPERIMENTS = sorted(path.stem for path in EXPERIMENT_DIR.glob("*.yaml"))


def preset_choices(name: str) -> dict[str, str]:
    """The options an experiment preset picks, from its ``- override /GROUP: OPTION`` defaults."""
    defaults = yaml.safe_load((EXPERIMENT_DIR / f"{name}.yaml").read_text())["defaults"]
    return {key.removeprefix("override /"): value for entry in defaults if isinstance(entry, dict)
            for key, value in entry.items() if key.startswith("override /")}


def fast_run(compose, tmp_path, overrides):
    """Compose ``overrides`` for a fast CPU run, train, and check what the run leaves behind;
    returns the config and the summary."""
    cfg = compose(["trainer.fast_dev_run=true", "device=cpu", *overrides])
    run = tmp_path / "run"
    summary = train(cfg, run_dir=run)
    assert summary["status"] == "completed"
    assert math.isfinite(summary["test"]["loss"])
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    data = json.loads((run / "data.json").read_text())
    assert data["task"] == summary["task"] and data["dataset"] == cfg.data.name
    if cfg.task.name == "supervised":  # another task's outputs are no predictions of y: it writes its own files
        lines = (run / "predictions.csv").read_text().splitlines()
        assert lines[0].startswith("row,target,prediction") and len(lines) > 1
    return cfg, summary


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_trains(compose, tmp_path, data_overrides, monkeypatch, group, option):
    monkeypatch.chdir(tmp_path)  # where a tracking logger's local store goes (logger=mlflow: ./mlruns)
    data = DATA_FOR.get((group, option))
    files = data_overrides(option) if group == "data" else [f"data={data}", *data_overrides(data)] if data else []
    _, summary = fast_run(compose, tmp_path, [f"{group}={option}", *REQUIRED.get((group, option), []), *files])
    text = (tmp_path / "run" / "model_summary.txt").read_text()
    if group == "init":
        assert option in text  # the init column names the scheme applied
    if group == "loss" and option != "auto":
        assert summary["loss"] == option


@pytest.mark.parametrize("overrides", SETTINGS, ids=[" ".join(s) for s in SETTINGS])
def test_every_setting_trains(compose, tmp_path, overrides):
    fast_run(compose, tmp_path, overrides)


def test_every_data_option_that_reads_files_gets_them(data_files):
    readers = {option for option, schema in GROUP_SCHEMAS["data"].items()
               if {"path", "root"} & {field.name for field in dataclasses.fields(schema)}}
    assert readers == set(data_files.overrides)
    assert {"csv", "text_csv", "image_folder", "mnist", "fashion_mnist", "cifar10"} <= readers


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_trains(compose, tmp_path, data_overrides, monkeypatch, name):
    choices = preset_choices(name)
    assert {"data", "model"} <= choices.keys(), f"experiment={name} names no data or no model"
    overrides = [f"experiment={name}", *data_overrides(choices["data"])]
    if choices["model"] == "torchvision":  # its named weights come from a torch cache written here, never the network
        preset = compose(overrides).model
        write_cached_weights(tmp_path / "torch_home", preset.arch, preset.weights)
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    # torch.compile takes the better part of a minute on a CPU; the slow tests cover it
    cfg, summary = fast_run(compose, tmp_path, [*overrides, "trainer.compile=false"])
    for group, option in choices.items():
        assert cfg[group].name == option, f"experiment={name}: {group}={cfg[group].name}, the preset names {option}"
    assert summary["epochs_run"] == 1


def test_text_csv_with_mlp_is_a_config_error(compose, tmp_path, data_overrides):
    cfg = compose(["trainer.fast_dev_run=true", "device=cpu", "data=text_csv", "model=mlp",
                   *data_overrides("text_csv")])
    run = tmp_path / "run"
    run.mkdir()  # as Hydra makes it: the failure is recorded there
    with pytest.raises(ConfigError) as info:
        train(cfg, run_dir=run)
    message = str(info.value)
    assert "\n" not in message and "model=lstm" in message and "data=text_csv" in message and "model=mlp" in message
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"


def test_a_gan_with_a_scorer_trains(compose, tmp_path):
    """task.scorer, task.confidence and task.score_samples: a classifier of the same digits
    (trained here) scores the samples, and the run watches the score."""
    train(compose(["data=digits", "model=cnn", "trainer.fast_dev_run=true", "device=cpu"]), run_dir=tmp_path / "clf")
    scorer = tmp_path / "clf" / "checkpoints" / "last.pt"
    _, summary = fast_run(compose, tmp_path, ["task=gan", f"task.scorer={scorer}", "task.confidence=0.5",
                                              "task.score_samples=20"])
    assert summary["monitor"] == "val_sample_score" and 1 <= summary["test"]["sample_score"] <= 10


@pytest.mark.parametrize("workers", [0, 2])
def test_image_folder_read_from_disk_trains(compose, tmp_path, data_overrides, workers):
    """data.in_memory=false: batches come through a DataLoader (with worker processes or
    without), and predictions.csv names each test image by its path."""
    _, summary = fast_run(compose, tmp_path, ["data=image_folder", *data_overrides("image_folder"),
                                              "data.in_memory=false", f"data.num_workers={workers}"])
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["in_memory"] is False and summary["data"]["num_test"] > 0
    rows = (tmp_path / "run" / "predictions.csv").read_text().splitlines()[1:]
    assert rows and all(row.split(",")[0].endswith((".png", ".jpg")) for row in rows)


def test_cifar10_fast_preset_and_its_cpu_smoke_run(compose, tmp_path, data_overrides):
    """experiment=cifar10_fast holds the GPU settings its header describes, and the CPU smoke
    check it documents runs on CIFAR-10-shaped files: three-channel images and the convolutions'
    weights channels_last, crop and flip, nothing reported as ignored."""
    import torch

    from dltrain.build import build_experiment

    cfg = compose(["experiment=cifar10_fast"])
    assert cfg.device == "cuda" and cfg.trainer.precision == "bf16" and cfg.trainer.compile
    assert cfg.trainer.channels_last and cfg.trainer.cudnn_benchmark and not cfg.trainer.early_stopping.enabled
    assert list(cfg.regularization.augment) == ["crop", "hflip"] and cfg.regularization.augment_params.crop.padding == 2
    assert (cfg.trainer.batch_size, cfg.trainer.eval_batch_size, cfg.trainer.max_epochs) == (1024, 2048, 10)
    assert cfg.optim.nesterov and cfg.model.activation == "gelu" and cfg.regularization.batch_norm

    smoke = ["experiment=cifar10_fast", "trainer.precision=32", "trainer.compile=false", *data_overrides("cifar10")]
    _, summary = fast_run(compose, tmp_path, smoke)
    assert summary["device"] == "cpu" and not summary["warnings"]
    exp = build_experiment(compose([*smoke, "device=cpu"]), torch.device("cpu"))
    for tensor in (exp.data.x_train, exp.data.x_test, exp.model.conv2.weight):
        assert tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()
    assert tuple(exp.data.input_shape) == (3, 32, 32) and repr(exp.augment) == "Augment(crop(padding=2), hflip(p=0.5))"

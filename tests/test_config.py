"""The config contract: defaults, schema checks, and one-line errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dltrain.cli.app import describe_error
from dltrain.config.validation import validate
from dltrain.errors import ConfigError

from .conftest import run_cli


def test_default_config(compose):
    cfg = compose()
    assert cfg.model.name == "mlp" and list(cfg.model.hidden) == [128, 64]
    assert cfg.data.name == "digits"
    assert cfg.optim.name == "adam"
    assert cfg.loss.name == "auto"
    assert cfg.init.name == "default"
    assert cfg.seed == 0 and cfg.device == "auto" and cfg.resume is None
    assert cfg.regularization.dropout == 0.0 and cfg.regularization.batch_norm is False
    assert set(cfg.trainer) >= {"max_epochs", "batch_size", "eval_batch_size", "fast_dev_run",
                                "log_every_n_steps", "early_stopping", "checkpoint"}
    assert set(cfg.trainer.early_stopping) == {"enabled", "monitor", "mode", "min_delta", "patience", "baseline",
                                               "restore_best_weights", "start_from_epoch", "check_finite"}
    assert cfg.trainer.early_stopping.restore_best_weights is True and cfg.trainer.early_stopping.baseline is None
    assert set(cfg.trainer.checkpoint) == {"save_best", "save_last", "every_n_epochs", "keep_last", "save_top_k",
                                           "every_n_steps", "every_n_minutes"}


def test_overrides_compose(compose):
    cfg = compose(["optim=sgd", "optim.lr=0.1", "model.hidden=[256]", "trainer.max_epochs=20",
                   "loss=cross_entropy", "device=cpu", "model.hidden=[]"])
    assert cfg.optim.name == "sgd" and cfg.optim.lr == 0.1 and cfg.optim.momentum == 0.0
    assert list(cfg.model.hidden) == [] and cfg.trainer.max_epochs == 20
    assert cfg.loss.name == "cross_entropy" and cfg.device == "cpu"


def test_types_are_converted(compose):
    cfg = compose(["trainer.max_epochs=7", "optim.lr=1e-2"])
    assert cfg.trainer.max_epochs == 7 and isinstance(cfg.optim.lr, float)


# (override, text the one-line message must contain)
BAD = [
    ("optim.lrr=0.1", "optim.lrr is not a config key"),
    ("trainer.max_epochs=abc", "trainer.max_epochs"),
    ("model=nosuch", "model=nosuch is not a known option: choose one of autoencoder, cnn, custom, dcgan, gru, "
     "lenet5, lstm, mlp, mnist_net, mnist_rnn, notes_cnn, resnet_small, rnn, sequential, torchvision, transformer"),
    ("optim.lr=-1", "optim.lr=-1.0 is out of range: it must be >= 0"),
    ("trainer.batch_size=0", "trainer.batch_size=0 is out of range: it must be >= 1"),
    ("regularization.dropout=1.5", "regularization.dropout=1.5 is out of range: it must be < 1"),
    ("model.activation=swish", "model.activation=swish is not a known value"),
    ("model.hidden=[64,0]", "model.hidden[1]=0 is out of range"),
    ("device=gpu", "device=gpu is not valid"),
    ("trainer.early_stopping.mode=up", "trainer.early_stopping.mode=up is not a known value"),
    ("optim.lr=inf", "optim.lr=inf is not valid: expected a finite number"),
    ("optim.eps=nan", "optim.eps=nan is not valid: expected a finite number"),
    ("optim.betas=[0.9]", "optim.betas=[0.9] is not valid: expected a list of 2 values"),
    ("model.hidden=[[1]]", "model.hidden[0]=[1] is not valid: expected a number"),
    ("model.hidden=${trainer.batch_size}", "model.hidden=64 is not valid: expected a list"),
    ("seed=4294967296", "seed=4294967296 is out of range: it must be <= 4294967295"),
    ("~seed", "seed has no value"),
    ("seed=${nosuch}", "seed: Interpolation key 'nosuch' not found"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 is out of range: it must be >= 1"),
    ("init.value=inf", "init.value is not a config key"),
    ("regularization.augment=rotate", "regularization.augment=rotate is not a list: write it in brackets, "
                                      "e.g. regularization.augment=[rotate]"),
    ("model.dropout=0.5", "only model=rnn, lstm, gru, mnist_rnn, transformer have it; for this model set "
     "regularization.dropout"),
    ("loss.class_weights=[1,2]", "only loss=cross_entropy, nll have it"),
    ("optim.lr=nan", "optim.lr=nan is not valid: expected a finite number"),
    ("~optim.lr", "optim.lr cannot be removed: dltrain needs it, so set it (optim.lr=...) instead"),
    ("data.function=sin(3*x)", "data.function=sin(3*x) cannot be read as written (Error parsing override "
                               "'data.function=sin(3*x)'): quote the value, e.g. 'data.function=\"sin(3*x)\"'."),
    ("data.function=sin(x) + 1", "quote the value, e.g. 'data.function=\"sin(x) + 1\"'."),
    ("experiment=nosuch", "experiment=nosuch is not a known option: choose one of chirp_rnn, cifar10_cnn"),
]


@pytest.mark.parametrize("override,expected", BAD)
def test_bad_override_is_described_in_one_line(compose, override, expected):
    with pytest.raises(Exception) as info:
        compose([override])
    message = describe_error(info.value)
    assert message is not None and "\n" not in message
    assert expected in message


@pytest.mark.slow  # the real console script, 3-5 s a case; test_corpus.py runs these in-process by default
@pytest.mark.parametrize("override,expected", BAD[:6] + BAD[-3:])
def test_cli_bad_override_exits_with_one_line(tmp_path, override, expected):
    proc = run_cli([override, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dltrain: error: ") and expected in lines[0]
    assert not (tmp_path / "run").exists()  # stopped before Hydra made the run directory


def test_full_traceback_on_request(tmp_path):
    proc = run_cli(["optim.lr=-1", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path,
                   env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_validate_walks_nested_nodes(compose):
    cfg = compose()
    cfg.trainer.early_stopping.patience = -1
    with pytest.raises(ConfigError, match=r"trainer.early_stopping.patience=-1 is out of range"):
        validate(cfg)


def test_validate_rejects_missing_values(compose):
    cfg = compose()
    OmegaConf.update(cfg, "seed", "???")
    with pytest.raises(ConfigError, match="seed has no value"):
        validate(cfg)


@pytest.mark.parametrize("override,expected", [
    ("+optim.foo=1", "optim.foo is not a config key"),
    ("+foo=1", "foo is not a config key"),
    ("+trainer.early_stopping.patiense=3", "trainer.early_stopping.patiense is not a config key"),
    ("optim.name=sgd", "optim.name=sgd does not match the optim config loaded: choose the option with optim=sgd"),
    ("model.name=cnn", "model.name=cnn does not match the model config loaded: choose the option with model=cnn"),
    ("model.name=vgg", "model.name=vgg is not a known option"),
    ("+model.width=3", "model.width is not a config key"),
])
def test_keys_nothing_would_read_are_refused(compose, override, expected):
    with pytest.raises(ConfigError) as info:
        compose([override])
    assert expected in str(info.value)


def test_sgd_ranges(compose):
    with pytest.raises(ConfigError, match=r"optim.momentum=5.0 is out of range: it must be <= 1"):
        compose(["optim=sgd", "optim.momentum=5"])


def test_config_dir_falls_back_to_the_source_tree(monkeypatch):
    """``python -m dltrain`` in a checkout whose ``dltrain/`` shadows the install: the
    package ``dltrain.conf`` is not importable there, and ``conf/`` beside it is used."""
    import importlib.util

    from dltrain.config import compose as composing
    from dltrain.config.search_path import config_dir

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == composing.CONFIG_MODULE else real_find_spec(name, *a))
    where = config_dir()
    assert not where.startswith("pkg://") and (Path(where) / "train.yaml").is_file()
    assert composing.compose(["optim=sgd"]).optim.name == "sgd"


def test_custom_model_keys_need_a_plus(compose):
    with pytest.raises(Exception) as info:
        compose(["model=custom", "model._target_=tests.nets.TinyNet", "model.width=3"])
    assert describe_error(info.value) == ("model.width is not a key of model=custom: add your module's keys "
                                          "with a plus, +model.width=VALUE.")


def test_custom_model_keys_are_the_modules_to_check(compose):
    cfg = compose(["model=custom", "model._target_=tests.nets.TinyNet", "+model.scale=inf", "+model.opts={a: nan}"])
    assert cfg.model.scale == float("inf")

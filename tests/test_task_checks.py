"""A checkpoint whose model its task could not have trained (a relabelled config) is one line
from every tool that rebuilds a model from it, as it is from training and dltrain-eval."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dltrain import compose, train
from tests.conftest import tool_error


@pytest.fixture(scope="module")
def mlp_ckpt(tmp_path_factory) -> Path:
    """A supervised MLP's best.pt (one batch of digits)."""
    run_dir = tmp_path_factory.mktemp("clf") / "run"
    train(compose(["trainer.fast_dev_run=true", "device=cpu", "trainer.diagnostics=false"]), run_dir=run_dir)
    return run_dir / "checkpoints" / "best.pt"


def relabelled(ckpt: Path, folder: Path, task: str) -> Path:
    """A copy of ``ckpt`` whose config says ``task=task``."""
    state = torch.load(ckpt, weights_only=True)
    state["config"]["task"] = {"name": task}
    path = folder / f"{task}.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("task", ["autoencoder", "gan"])
def test_predict_and_export_refuse_a_model_its_task_cannot_train(mlp_ckpt, tmp_path, capsys, task):
    from dltrain.export.cli import main as export_main
    from dltrain.inference.predict import main as predict_main

    ckpt = relabelled(mlp_ckpt, tmp_path, task)
    csv = tmp_path / "in.csv"
    csv.write_text("x\n1\n")
    err = tool_error(capsys, predict_main, "dltrain-predict",
                     [f"ckpt={ckpt}", f"input={csv}", f"output={tmp_path / 'o.csv'}"])
    assert str(ckpt) in err and f"model=mlp cannot be trained by its task={task}" in err
    err = tool_error(capsys, export_main, "dltrain-export",
                     [f"ckpt={ckpt}", "format=torchscript", f"output={tmp_path / 'export'}"])
    assert str(ckpt) in err and f"model=mlp cannot be trained by its task={task}" in err
    assert not (tmp_path / "export").exists()


def test_dropout_with_the_conv_encoder_is_refused_as_the_config_is_checked():
    from dltrain.config.conflicts import check_conflicts
    from dltrain.errors import ConfigError

    cfg = compose(["task=autoencoder", "model.encoder=conv", "regularization.dropout=0.2"])
    with pytest.raises(ConfigError, match=r"regularization.dropout=0.2 does not apply to model.encoder=conv"):
        check_conflicts(cfg)
    check_conflicts(compose(["task=autoencoder", "model.encoder=mlp", "regularization.dropout=0.2"]))


def test_dltrain_eval_s_help_says_which_checkpoints_get_no_report_folder(capsys):
    from dltrain.inference.evaluate import main as eval_main

    with pytest.raises(SystemExit):
        eval_main(["--help"])
    assert "an autoencoder's or a GAN's checkpoint gets eval.json alone" in capsys.readouterr().out


@pytest.mark.parametrize("task", [["x"], {"name": "x"}])
def test_resume_from_a_checkpoint_whose_task_is_no_option_names_the_file(mlp_ckpt, tmp_path, task):
    from dltrain.errors import ConfigError

    state = torch.load(mlp_ckpt.with_name("last.pt"), weights_only=True)
    state["config"]["task"] = task
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    cfg = compose([f"resume={path}", "device=cpu", "trainer.diagnostics=false"])
    with pytest.raises(ConfigError, match=rf"^resume={path}: its config's task .* is not an option"):
        train(cfg, run_dir=tmp_path / "run")

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


def test_the_config_checks_facts_are_the_registries():
    from dltrain.config.task_conflicts import DATA_INPUTS, MODEL_TASKS, TASK_INPUTS, TASK_MODELS
    from dltrain.data import DATASETS
    from dltrain.models import MODELS
    from dltrain.tasks import TASKS

    assert MODEL_TASKS == {n: MODELS.facts(n).tasks for n in MODELS.names()}
    assert DATA_INPUTS == {n: DATASETS.facts(n).inputs for n in DATASETS.names()}
    assert {n: TASK_MODELS.get(n) for n in TASKS.names()} == {n: TASKS.facts(n).default_model for n in TASKS.names()}
    assert {n: TASK_INPUTS.get(n) for n in TASKS.names()} == {n: TASKS.facts(n).inputs for n in TASKS.names()}


@pytest.mark.parametrize(("args", "line"), [
    (["model=transformer", "model.num_heads=3", "model.d_model=64"],
     "dltrain: error: model.num_heads=3 does not divide model.d_model=64 (each head reads d_model / num_heads "
     "features): set model.num_heads to one of 1, 2, 4, 8, 16, 32, 64 or model.d_model to a multiple of it."),
    (["model=autoencoder"], "dltrain: error: model=autoencoder cannot be trained by task=supervised (it serves "
     "task=autoencoder): use task=autoencoder."),
    (["task=gan", "data=moons"], "dltrain: error: task=gan trains on images or ink_counts, and data=moons gives "
     "points: use data=cifar10, digits, fashion_mnist, image_folder, mnist or svhn, or another task=."),
])
def test_config_errors_of_task_model_and_data_leave_no_run_directory(tmp_path, args, line):
    from tests.conftest import run_cli

    result = run_cli([*args, "hydra.run.dir=run"], cwd=tmp_path)
    assert result.returncode != 0
    assert result.stdout + result.stderr == line + "\n"
    assert not (tmp_path / "run").exists()


def test_the_config_checks_import_no_torch():
    import subprocess
    import sys

    code = ("import sys; from dltrain import compose; from dltrain.config.conflicts import check_conflicts\n"
            "try:\n check_conflicts(compose(['task=gan', 'data=moons']))\nexcept Exception as e: print(e)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [out.splitlines()[0], "False"] and "task=gan trains on" in out


@pytest.mark.parametrize(("data", "gives"), [("data=csv", "table rows"), ("data=text_csv", "texts"),
                                             ("data=chirp", "sequences")])
def test_a_gan_on_tables_texts_or_sequences_says_what_the_data_gives(data, gives):
    from dltrain.config.conflicts import check_conflicts
    from dltrain.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"^task=gan trains on images or ink_counts, and {data} gives {gives}: "):
        check_conflicts(compose(["task=gan", data, "data.path=rows.csv"] if "csv" in data else ["task=gan", data]))

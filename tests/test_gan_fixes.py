"""``task=gan``: evaluations draw their latents from a private generator (training's numbers do
not depend on validation, and ``dltrain-eval`` repeats the run's test)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dltrain import train
from dltrain.inference.evaluate import evaluate_checkpoint
from tests.test_gan import SMALL
from tests.test_resume import rows

TWO_EPOCHS = [*SMALL, "trainer.max_epochs=2", "trainer.limit_train_batches=2", "trainer.early_stopping.enabled=false"]


def train_columns(run_dir) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k.startswith("train_")} for row in rows(run_dir)]


def test_validation_draws_nothing_from_the_runs_random_stream(compose, tmp_path):
    every = tmp_path / "every"
    train(compose([*TWO_EPOCHS, "trainer.val_every_n_epochs=1"]), run_dir=every)
    second = tmp_path / "second"
    train(compose([*TWO_EPOCHS, "trainer.val_every_n_epochs=2"]), run_dir=second)
    validated = [not math.isnan(float(rows(run)[0]["val_loss"])) for run in (every, second)]
    assert validated == [True, False]  # epoch 1 validated in one run only
    assert train_columns(every) == train_columns(second)


def test_eval_repeats_the_runs_test(compose, tmp_path):
    summary = train(compose(TWO_EPOCHS), run_dir=tmp_path)
    result = evaluate_checkpoint(tmp_path / "checkpoints" / "last.pt", device="cpu")
    tested = json.loads((tmp_path / "summary.json").read_text())["test"]
    assert summary["status"] == "completed"
    for name in ("loss", "d_loss", "g_loss", "d_real", "d_fake"):
        assert result["metrics"][name] == tested[name], name  # the same latents, the same numbers


def test_a_gans_checkpoint_without_its_task_entry_is_one_line(compose, tmp_path):
    import torch

    from dltrain.errors import ConfigError

    train(compose([*SMALL, "trainer.max_epochs=1", "trainer.limit_train_batches=2"]), run_dir=tmp_path / "first")
    state = torch.load(tmp_path / "first" / "checkpoints" / "last.pt", weights_only=True)
    del state["task"]
    crafted = tmp_path / "crafted.pt"
    torch.save(state, crafted)
    with pytest.raises(ConfigError, match=rf"^resume={crafted}: the checkpoint's task entry is missing \(task=gan "
                                          r"saves the discriminator's optimizer and the fixed latent batch there\)"):
        train(compose([*TWO_EPOCHS, f"resume={crafted}"]), run_dir=tmp_path / "resumed")


def test_the_sample_score_is_followed_without_a_validation_split(compose, tmp_path):
    scorer = tmp_path / "scorer"
    train(compose(["data=digits", "model=cnn", "trainer.max_epochs=1", "trainer.batch_size=64",
                   "trainer.limit_train_batches=3", "trainer.diagnostics=false", "device=cpu"]), run_dir=scorer)
    summary = train(compose([*TWO_EPOCHS, "data.val_fraction=0", "task.score_samples=100",
                             f"task.scorer={scorer / 'checkpoints' / 'best.pt'}"]), run_dir=tmp_path / "gan")
    assert summary["monitor"] == "val_sample_score" and summary["best_epoch"] in (1, 2)
    assert (tmp_path / "gan" / "checkpoints" / "best.pt").is_file()
    assert not any("early stopping is off" in w for w in summary["warnings"])


def test_dltrain_export_refuses_a_gans_checkpoint_in_one_line(compose, tmp_path, capsys):
    from dltrain.export.cli import main
    from dltrain.tasks import TASKS
    from tests.conftest import tool_error

    assert TASKS.facts("gan").refuses_serving and TASKS.facts("supervised").refuses_serving is None
    train(compose([*SMALL, "trainer.fast_dev_run=true"]), run_dir=tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    err = tool_error(capsys, main, "dltrain-export",
                     [f"ckpt={ckpt}", "format=torchscript", f"output={tmp_path / 'out'}"])
    assert f"{ckpt} is a checkpoint of task=gan: its discriminator predicts no labels" in err
    assert not (tmp_path / "out").exists()


def test_the_scorer_is_stored_absolute_and_eval_goes_on_without_it(compose, tmp_path, monkeypatch, capsys):
    import os

    scorer_run = tmp_path / "start" / "scorer"
    train(compose(["data=digits", "model=cnn", "trainer.max_epochs=1", "trainer.batch_size=64",
                   "trainer.limit_train_batches=2", "trainer.diagnostics=false", "device=cpu"]), run_dir=scorer_run)
    monkeypatch.chdir(tmp_path / "start")
    relative = os.path.join("scorer", "checkpoints", "best.pt")
    train(compose([*SMALL, "trainer.fast_dev_run=true", "task.score_samples=50", f"task.scorer={relative}"]),
          run_dir=tmp_path / "gan")
    ckpt = tmp_path / "gan" / "checkpoints" / "last.pt"
    stored = torch.load(ckpt, weights_only=True)["config"]["task"]["scorer"]
    assert stored == str(scorer_run / "checkpoints" / "best.pt")
    monkeypatch.chdir(tmp_path)  # elsewhere: the stored path still finds it
    assert "sample_score" in evaluate_checkpoint(ckpt, device="cpu")["metrics"]
    (scorer_run / "checkpoints" / "best.pt").unlink()
    capsys.readouterr()
    metrics = evaluate_checkpoint(ckpt, device="cpu")["metrics"]
    assert "sample_score" not in metrics and math.isfinite(metrics["d_loss"])
    assert f"dltrain-eval: warning: task.scorer={stored} does not exist" in capsys.readouterr().err

"""A schedule's monitor without a validation split, a GAN resumed with a relative ``task.scorer``,
and a model registered from Python under a task it serves."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from dltrain import compose, train
from dltrain.errors import ConfigError
from dltrain.models import MODELS

#: A small DCGAN on data=digits (8x8) with its sample score.
GAN = ["task=gan", "data=digits", "device=cpu", "trainer.batch_size=32", "trainer.limit_train_batches=2",
       "trainer.limit_val_batches=1", "trainer.diagnostics=false", "task.num_samples=10", "task.score_samples=100",
       "model.latent_size=16", "model.generator.channels=[16,8]", "model.discriminator.channels=[8,16]"]


def test_a_plateau_monitor_needs_a_validation_split_whatever_early_stopping_watches(tmp_path: Path) -> None:
    cfg = compose(["data.val_fraction=0", "trainer.early_stopping.monitor=train_loss", "scheduler=plateau",
                   "scheduler.monitor=val_loss", "trainer.fast_dev_run=true", "device=cpu",
                   "trainer.diagnostics=false"])
    with pytest.raises(ConfigError, match=r"^scheduler.monitor=val_loss needs a validation split, but "
                                          r"data.val_fraction=0 leaves none"):
        train(cfg, run_dir=tmp_path / "run")


def test_a_gan_s_scheduler_monitor_is_not_excused_by_its_sample_score(tmp_path: Path) -> None:
    """Only early stopping's watched sample score needs no validation split; the schedule's val_loss does."""
    from dltrain.training.checks import check_top_k, validation_warnings

    assert validation_warnings(False, "val_loss", None, watched_without_validation=True) == []
    check_top_k(1, False, "val_loss", watched_without_validation=True)
    with pytest.raises(ConfigError, match=r"^scheduler.monitor=val_loss needs a validation split"):
        validation_warnings(False, "val_loss", "val_loss", watched_without_validation=True)


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``scorer/`` (a digits classifier, a few batches) and ``outputs/first/``,
    one epoch of a GAN given ``task.scorer`` relative to that folder."""
    folder = tmp_path_factory.mktemp("relative")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        train(compose(["data=digits", "model=cnn", "trainer.max_epochs=1", "trainer.batch_size=64",
                       "trainer.limit_train_batches=3", "trainer.diagnostics=false", "device=cpu"]),
              run_dir=folder / "scorer")
        train(compose([*GAN, "task.scorer=scorer/checkpoints/best.pt", "trainer.max_epochs=1"]),
              run_dir=folder / "outputs" / "first")
    return folder


@pytest.mark.parametrize("resume", ["outputs/first/checkpoints/last.pt", "auto"])
def test_a_gan_given_a_relative_scorer_resumes_with_the_same_command(started: Path, resume: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(started)
    summary = train(compose([*GAN, "task.scorer=scorer/checkpoints/best.pt", "trainer.max_epochs=2",
                             f"resume={resume}"]), run_dir=started / "resumed" / resume.replace("/", "_"))
    assert summary["resumed_from"] is not None and Path(summary["resumed_from"]).resolve() == (
        started / "outputs" / "first" / "checkpoints" / "last.pt").resolve()
    assert summary["epochs_run"] == 2 and summary["status"] == "completed"


def test_a_model_registered_from_python_is_checked_by_its_registration() -> None:
    from dltrain.config.conflicts import check_conflicts
    from dltrain.config.schemas import GROUP_SCHEMAS

    def linear(input_shape, num_outputs, **_):
        return nn.Linear(1, 1)

    with pytest.MonkeyPatch.context() as patch, MODELS.registered("myae", linear, tasks=("autoencoder",)):
        patch.setitem(GROUP_SCHEMAS["model"], "myae", GROUP_SCHEMAS["model"]["autoencoder"])
        cfg = compose(["task=autoencoder"])
        cfg.model.name = "myae"
        check_conflicts(cfg)  # the config-time check knows the presets only
        cfg = compose(["model=mlp"])
        cfg.model.name = "myae"
        check_conflicts(cfg)
        from dltrain.build import build_task

        with pytest.raises(ConfigError, match=r"^model=myae cannot be trained by task=supervised \(it serves "
                                              r"task=autoencoder\)"):
            build_task(cfg)  # the build step reads the registration's facts
    with pytest.raises(ConfigError, match=r"^model=autoencoder cannot be trained by task=supervised"):
        check_conflicts(compose(["model=autoencoder"]))

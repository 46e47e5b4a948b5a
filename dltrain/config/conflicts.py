"""Keys that are each valid but cannot go together and need no torch to tell: checked as the
config is checked, before a run directory is made (``RunStartChecks``), and again as a run is
built (``train()`` from Python)."""

from __future__ import annotations

from omegaconf import DictConfig

from dltrain.config.autoencoder_conflicts import check_autoencoder_options
from dltrain.config.gan_conflicts import check_gan_options
from dltrain.config.task_conflicts import check_task_options
from dltrain.errors import ConfigError


def check_deterministic(deterministic: bool, cudnn_benchmark: bool) -> None:
    """Refuse ``trainer.deterministic=true`` with ``trainer.cudnn_benchmark=true``: cuDNN's
    timed pick of algorithms can differ from run to run.

    Raises:
        ConfigError: both are true.
    """
    if deterministic and cudnn_benchmark:
        raise ConfigError("trainer.deterministic=true cannot go with trainer.cudnn_benchmark=true (cuDNN's timed "
                          "pick of algorithms can differ by run): set one of them to false.")


def check_conflicts(cfg: DictConfig) -> None:
    """The checks of this module on a whole config (one without a ``trainer`` node has none).

    Raises:
        ConfigError: naming the keys that cannot go together.
    """
    trainer = cfg.get("trainer")
    if trainer is not None and "deterministic" in trainer and "cudnn_benchmark" in trainer:
        check_deterministic(bool(trainer.deterministic), bool(trainer.cudnn_benchmark))
    check_task_options(cfg)  # the model, the data and the task go together
    task = cfg.get("task")
    if task is not None and task.get("name") == "gan" and trainer is not None:
        check_gan_options(cfg)
    if task is not None and task.get("name") == "autoencoder" and trainer is not None:
        check_autoencoder_options(cfg)

"""The keys of supervised training that do not apply to ``task=gan`` (two networks trained in
turn, each with its own Adam): told without torch, as the config is checked, one line each."""

from __future__ import annotations

import dataclasses

from omegaconf import DictConfig, OmegaConf

from dltrain.config.schemas.optim import AdamConfig
from dltrain.errors import ConfigError

EACH_ADAM = "each network has its own Adam: set task.generator.* and task.discriminator.* (lr, betas)"


def _changed_optim_key(optim: DictConfig) -> str | None:
    """The first ``optim.*`` key set away from ``optim=adam``'s default, or None."""
    defaults = dataclasses.asdict(AdamConfig())
    given = OmegaConf.to_container(optim, resolve=True)
    return next((key for key, value in given.items() if key in defaults and value != defaults[key]), None)


def check_gan_options(cfg: DictConfig) -> None:
    """Refuse, for ``task=gan``, the first key that does not apply to it.

    Raises:
        ConfigError: naming the key and what to do.
    """
    reg, tcfg = cfg.regularization, cfg.trainer
    mixes = [name for name in reg.augment if name in ("mixup", "cutmix")]
    optim_key = _changed_optim_key(cfg.optim) if cfg.optim.name == "adam" else None
    refusals = [
        (cfg.optim.name != "adam", f"optim={cfg.optim.name}", EACH_ADAM),
        (optim_key is not None, f"optim.{optim_key}", EACH_ADAM),
        (cfg.loss.name != "auto", f"loss={cfg.loss.name}", "a GAN trains with the adversarial BCE: drop loss="),
        (cfg.scheduler.name != "none", f"scheduler={cfg.scheduler.name}", "use scheduler=none"),
        (tcfg.accumulate_grad_batches != 1, f"trainer.accumulate_grad_batches={tcfg.accumulate_grad_batches}",
         "use a larger trainer.batch_size"),
        (reg.ema_decay is not None, f"regularization.ema_decay={reg.ema_decay}", "set it to null"),
        (reg.swa_start is not None, f"regularization.swa_start={reg.swa_start}", "set it to null"),
        (bool(mixes), f"regularization.augment={'+'.join(mixes)}", "drop mixup and cutmix from it"),
        (reg.l1 != 0 or reg.l2 != 0, "regularization.l1/l2", "set them to 0"),
        (reg.label_smoothing != 0, f"regularization.label_smoothing={reg.label_smoothing}",
         "use task.label_smoothing (one-sided, on the real images)"),
        (str(tcfg.precision) == "16", "trainer.precision=16", "use trainer.precision=bf16 or 32"),
        (bool(tcfg.compile), "trainer.compile=true", "set it to false"),
    ]
    for refused, key, fix in refusals:
        if refused:
            raise ConfigError(f"{key} does not apply to task=gan: {fix}.")

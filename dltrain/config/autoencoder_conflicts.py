"""The keys of supervised training that do not apply to ``task=autoencoder`` (its loss compares
the reconstruction with the input; there are no class targets): told without torch, as the config
is checked, one line each."""

from __future__ import annotations

from omegaconf import DictConfig

from dltrain.errors import ConfigError


def check_autoencoder_options(cfg: DictConfig) -> None:
    """Refuse, for ``task=autoencoder``, the first key that would be silently ignored or misread.

    Raises:
        ConfigError: naming the key and what to do.
    """
    reg = cfg.regularization
    mixes = [name for name in reg.augment if name in ("mixup", "cutmix")]
    refusals = [
        (cfg.loss.name != "auto", f"loss={cfg.loss.name}",
         "its loss compares the reconstruction with the input: drop loss= and set task.loss=mse, l1 or bce"),
        (bool(mixes), f"regularization.augment=[{','.join(reg.augment)}]",
         f"{' and '.join(mixes)} {'mix' if len(mixes) > 1 else 'mixes'} class targets, which it has none of: "
         f"remove {' and '.join(mixes)}"),
        (reg.label_smoothing != 0, f"regularization.label_smoothing={reg.label_smoothing}",
         "it has no class targets to smooth: set it to 0"),
    ]
    for refused, key, what in refusals:
        if refused:
            raise ConfigError(f"{key} does not apply to task=autoencoder: {what}.")
    model = cfg.get("model")
    if model is not None and model.get("name") == "autoencoder" and model.get("encoder") == "conv" \
            and reg.dropout != 0:
        raise ConfigError(f"regularization.dropout={reg.dropout} does not apply to model.encoder=conv (dropout "
                          "follows the mlp encoder's dense layers): set it to 0, or use model.encoder=mlp.")

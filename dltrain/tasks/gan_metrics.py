"""The ``gan`` kind of metrics (``metrics.csv``'s ``train_d_loss``, ``train_g_loss``,
``train_d_real``, ``train_d_fake``, and ``val_*`` of the same), from the step's ``(B, 4)``
outputs (:mod:`dltrain.tasks.gan_step`): summed on the device per batch, read once per epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

#: The columns besides ``loss`` (D's loss plus G's), in metrics.csv's order.
GAN_METRICS = ("d_loss", "g_loss", "d_real", "d_fake")
#: The generated images' scores with ``task.scorer`` (:mod:`dltrain.tasks.sample_score`), as
#: ``val_*`` columns only: they score the generator, not a split.
SAMPLE_METRICS = ("sample_score", "sample_confident", "sample_classes")


def add_gan_sums(add: Callable[[str, torch.Tensor], None], output: torch.Tensor) -> None:
    """Add one batch's sums: D's loss per example, G's loss ``-log D(G(z))`` per example, and
    D's probabilities that the real images (``d_real``) and the generated ones of D's update
    (``d_fake``) are real."""
    out = output.detach().float()  # (B, 4)
    add("sum_d_loss", out[:, 3].sum())
    add("sum_g_loss", F.softplus(-out[:, 2]).sum())  # BCE against 1: -log(sigmoid(logit))
    add("sum_d_real", torch.sigmoid(out[:, 0]).sum())
    add("sum_d_fake", torch.sigmoid(out[:, 1]).sum())


def gan_metrics(sums: Mapping[str, torch.Tensor], count: int) -> dict[str, float]:
    """The means over ``count`` examples of :func:`add_gan_sums`'s sums."""
    return {name: float(sums[f"sum_{name}"]) / count for name in GAN_METRICS}

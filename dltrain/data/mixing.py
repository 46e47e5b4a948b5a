"""MixUp and CutMix (``regularization.augment=[mixup]``, ``[cutmix]``): each training batch is
mixed with a permutation of itself, and its class labels the same way, into soft targets.

MixUp (Zhang et al., 2018) blends whole examples, ``lam * x + (1 - lam) * x[perm]`` with
``lam ~ Beta(alpha, alpha)``. CutMix (Yun et al., 2019) pastes one box of ``x[perm]`` into
every image of the batch; ``lam`` is the area the box leaves, counted after the box is clipped
to the image. Either way the loss gets the targets ``lam * onehot(y) + (1 - lam) *
onehot(y[perm])``: rows of class probabilities that sum to 1. With both listed, each batch
takes one of them, 50/50 (timm's ``switch_prob=0.5``); the chosen one's ``p`` then decides
whether the batch is mixed at all.

Both are one formula, ``x * w + x[perm] * (1 - w)``, with ``w = lam`` for MixUp and ``w`` the
mask of pixels outside the box for CutMix, so choosing between them is a ``torch.where``.
Every draw (lam, the box, the permutation, the choice) is made by torch on the batch's device
from the global generators: a step never waits for the device, and exact resume, which saves
every generator, repeats the draws.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from dltrain.config.schemas.spec import MIXES
from dltrain.data.augment import with_defaults
from dltrain.errors import ConfigError

if TYPE_CHECKING:
    from dltrain.data.splits import DataSplits
    from dltrain.losses import Loss


class Mix:
    """MixUp and/or CutMix of a batch ``(x, y)`` of class indices ``y`` ``(B,)``.

    Args:
        num_classes: the width of the soft targets (the loss's output width).
        mixup: MixUp's ``alpha`` and ``p``, or None.
        cutmix: CutMix's ``alpha`` and ``p``, or None; needs images ``(B, C, H, W)``.
    """

    def __init__(self, num_classes: int, mixup: Mapping[str, float] | None = None,
                 cutmix: Mapping[str, float] | None = None) -> None:
        if mixup is None and cutmix is None:
            raise ValueError("Mix needs mixup or cutmix.")
        self.num_classes = num_classes
        self.mixup = dict(mixup) if mixup is not None else None
        self.cutmix = dict(cutmix) if cutmix is not None else None
        self.names = tuple(name for name in MIXES if getattr(self, name) is not None)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixed inputs and their soft targets ``(B, num_classes)``, float32."""
        perm = torch.randperm(x.shape[0], device=x.device)  # (B,): each example's partner
        weight, lam = self.weights(x)  # weight broadcasts to x: a scalar (MixUp) or (H, W) (CutMix)
        weight = weight.to(x.dtype)
        mixed = x * weight + x[perm] * (1 - weight)
        return mixed, lam * self.one_hot(y) + (1 - lam) * self.one_hot(y[perm])

    def weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The share ``w`` of each input value kept from ``x``, and ``lam``, the share of its
        target (the mean of ``w`` over the pixels), as device tensors."""
        if self.cutmix is None:
            lam = self._lam(self.mixup, x.device)
            return lam, lam
        keep = self._box_complement(x, self._lam(self.cutmix, x.device))  # (H, W): 1 outside the box
        cut_lam = keep.mean()  # the kept area's exact fraction, after clipping
        if self.mixup is None:
            return keep, cut_lam
        lam = self._lam(self.mixup, x.device)
        use_cutmix = torch.rand((), device=x.device) < 0.5
        return torch.where(use_cutmix, keep, lam), torch.where(use_cutmix, cut_lam, lam)

    @staticmethod
    def _lam(params: Mapping[str, float], device: torch.device) -> torch.Tensor:
        """``lam ~ Beta(alpha, alpha)``, or 1 (no mixing) with probability ``1 - p``; a 0-d tensor."""
        # Beta(a, a) as the first share of a Dirichlet(a, a) draw (two gamma draws, normalized):
        # the very numbers torch.distributions.Beta samples, without building a distribution
        # each step, and nothing read back from the device.
        lam = torch._sample_dirichlet(torch.full((2,), params["alpha"], device=device))[0]
        mixed = torch.rand((), device=device) < params["p"]
        return torch.where(mixed, lam, torch.ones((), device=device))

    @staticmethod
    def _box_complement(x: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """A float mask ``(H, W)``: 0 inside a random box of area about ``(1 - lam) * H * W``
        (its sides ``sqrt(1 - lam)`` of the image's, its centre uniform, clipped to the image), 1
        outside. The box is found by comparing coordinate grids with device tensors."""
        h, w = x.shape[-2:]
        side = (1 - lam).clamp(0, 1).sqrt()
        cut_h, cut_w = (side * h).long(), (side * w).long()  # truncated, as timm's int(H * cut_rat)
        centre_y = torch.randint(0, h, (), device=x.device)
        centre_x = torch.randint(0, w, (), device=x.device)
        top, left = centre_y - cut_h // 2, centre_x - cut_w // 2
        rows = torch.arange(h, device=x.device)[:, None]  # (H, 1)
        cols = torch.arange(w, device=x.device)[None, :]  # (1, W)
        box = (rows >= top) & (rows < top + cut_h) & (cols >= left) & (cols < left + cut_w)  # (H, W); clipped
        return (~box).float()

    def one_hot(self, y: torch.Tensor) -> torch.Tensor:
        """Class indices ``(B,)`` as one-hot rows ``(B, num_classes)``, float32. Compared with a
        class grid rather than ``F.one_hot``, which reads the labels' range from the device on CPU."""
        return (y[:, None] == torch.arange(self.num_classes, device=y.device)).float()

    def __repr__(self) -> str:
        parts = [f"{name}({', '.join(f'{k}={v:g}' for k, v in getattr(self, name).items())})" for name in self.names]
        return f"Mix({', '.join(parts)})"


def build_mix(names: Sequence[str], params: Mapping[str, Mapping[str, float]], data: DataSplits, loss_name: str,
              loss: Loss, class_weights: object = None) -> Mix | None:
    """The MixUp/CutMix ``regularization.augment`` asks for, checked against the data and loss.

    Args:
        names: ``regularization.augment``; names other than mixup and cutmix are ignored.
        params: ``regularization.augment_params`` as a plain dict; missing keys take the schema's defaults.
        data: the run's data: single-label classes to mix, inputs that can be blended (not
            token ids), images for CutMix.
        loss_name, loss: the loss; it must take class probabilities as targets, as wide as its output.
        class_weights: ``loss.class_weights``; refused, as they do not say how to weigh a mix.

    Returns:
        A :class:`Mix`, or None when neither is listed.

    Raises:
        ConfigError: one line naming the keys, for data or a loss the mix cannot work with.
    """
    chosen = [name for name in MIXES if name in names]
    if not chosen:
        return None
    key = f"regularization.augment=[{','.join(chosen)}]"
    if "cutmix" in chosen and len(data.input_shape) != 3:
        raise ConfigError(f"regularization.augment=[cutmix] pastes a box of one image into another, but this data's "
                          f"examples have shape {tuple(data.input_shape)}: use mixup, or remove cutmix.")
    if data.vocab_size is not None:  # token ids
        raise ConfigError(f"{key} blends inputs, but this data's inputs are token ids, which cannot be blended: "
                          f"remove {' and '.join(chosen)} from regularization.augment.")
    if data.task not in ("binary", "multiclass"):
        what = "its target is continuous" if data.task == "regression" else f"its targets are {data.task}"
        raise ConfigError(f"{key} mixes class labels, but this data has none to mix ({what}): "
                          f"remove {' and '.join(chosen)} from regularization.augment.")
    if not loss.soft_targets:
        raise ConfigError(f"{key} trains on mixed class targets, which loss={loss_name} does not take: use "
                          f"loss=cross_entropy (or nll), or remove {' and '.join(chosen)}.")
    if class_weights is not None:
        raise ConfigError(f"loss.class_weights does not say how to weigh the mixed targets of {key}: "
                          f"remove loss.class_weights or {' and '.join(chosen)}.")
    return Mix(loss.output_width, **{name: with_defaults(name, params.get(name)) for name in chosen})

"""Batched, on-device image augmentation for the training split (``regularization.augment``).

Like the fastest CIFAR-10 trainers, a whole batch is augmented at once on the device it
already lives on: one random draw per example and per augmentation, no per-sample Python
and no PIL. Rotation, shift and zoom share one ``affine_grid`` + ``grid_sample`` call; a
random crop is one pad and one gather. Random erasing (:mod:`dltrain.data.erasing`) comes
last; MixUp and CutMix, which mix the targets too, are :mod:`dltrain.data.mixing`'s and run after.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F

from dltrain.config.schemas import AUGMENTATIONS, AugmentParamsConfig
from dltrain.config.schemas.spec import MIXES
from dltrain.data.erasing import erase
from dltrain.errors import ConfigError

#: Augmentations that move pixels; they are combined into one affine resampling.
GEOMETRIC = ("rotate", "shift", "zoom")


class Augment:
    """Random augmentations applied to a batch of images ``(B, C, H, W)``.

    Order: crop, hflip, then one affine warp (rotate, shift, zoom), then brightness and
    contrast, then erasing (on the finished image, as torchvision's ``RandomErasing`` after
    normalisation). Brightness and contrast commute (contrast scales around the mean, which a
    brightness offset moves along with every pixel), so their order does not matter.

    Args:
        params: augmentation name -> its keys, e.g. ``{"hflip": {"p": 0.5}}``; only the
            names to apply, in any order. Erasing's ``scale`` and ``ratio`` are pairs, its
            ``value`` a number or None (noise).
    """

    def __init__(self, params: Mapping[str, Mapping[str, Any]]) -> None:
        self.params = {name: dict(params[name]) for name in AUGMENTATIONS if name in params}
        self._geometric = any(name in self.params for name in GEOMETRIC)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """A new, augmented batch; ``x`` is left as it is.

        Random numbers come from torch's default generator of ``x``'s device, so a run
        under ``torch.manual_seed`` repeats exactly.
        """
        if x.dim() != 4:
            raise ValueError(f"Augment expects a batch of images (B, C, H, W), got shape {tuple(x.shape)}.")
        if "crop" in self.params:
            x = self._crop(x)
        if "hflip" in self.params:
            flip = torch.rand(x.shape[0], device=x.device) < self.params["hflip"]["p"]  # (B,)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self._geometric:
            x = self._affine(x)
        if "brightness" in self.params:
            delta = self.params["brightness"]["delta"]
            offset = _uniform(x.shape[0], -delta, delta, x)  # (B,)
            x = x + offset[:, None, None, None]
        if "contrast" in self.params:
            delta = self.params["contrast"]["delta"]
            factor = _uniform(x.shape[0], 1 - delta, 1 + delta, x)[:, None, None, None]  # (B, 1, 1, 1)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1): over the example's pixels
            x = mean + (x - mean) * factor
        if "erasing" in self.params:
            x = erase(x, **self.params["erasing"])
        # Every branch above builds a new tensor; only with nothing to do would x itself come back.
        return x if self.params else x.clone()

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        """Translate every example by its own random offset of up to ``padding`` pixels on
        each axis: pad each side, then take an H x W window whose corner is drawn from
        [0, 2 * padding] per example and axis. One pad and one gather for the whole batch."""
        b, c, h, w = x.shape
        pad = int(self.params["crop"]["padding"])
        # The uncovered border is filled by reflection. Inputs are standardised, so zeros
        # would paint the dataset's mean into it; a mirrored border keeps the image's own
        # statistics. F.pad's "reflect" needs pad < H and W (build_augment checks it).
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # (B, C, H + 2p, W + 2p)
        corner = torch.randint(0, 2 * pad + 1, (2, b), device=x.device)  # (2, B): each window's top row, left column
        batch = torch.arange(b, device=x.device)[:, None, None]  # (B, 1, 1)
        rows = (corner[0, :, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
        cols = (corner[1, :, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # Gather whole pixels (C values each) from the (B, H', W', C) view, so the batch
            # stays channels_last (trainer.channels_last) without a second copy.
            return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        channel = torch.arange(c, device=x.device)[:, None, None]  # (C, 1, 1)
        return padded[batch[..., None], channel, rows[:, None], cols[:, None]]  # indices broadcast to (B, C, H, W)

    def _affine(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate, shift and zoom every example by its own random amounts, in one resampling."""
        b, _, h, w = x.shape
        degrees = self.params.get("rotate", {}).get("degrees", 0.0)
        fraction = self.params.get("shift", {}).get("fraction", 0.0)
        scale = self.params.get("zoom", {}).get("scale", 0.0)
        # Disabled ones draw too (over a range of width 0): one resampling serves them all anyway.
        angle = _uniform(b, -degrees, degrees, x) * (math.pi / 180)  # (B,) radians
        zoom = _uniform(b, 1 - scale, 1 + scale, x)  # (B,) > 1 magnifies
        shift = _uniform(2 * b, -fraction, fraction, x).view(b, 2)  # (B, 2) fractions of (W, H)

        # affine_grid maps each output pixel's normalised coordinates (x, y in [-1, 1]) to
        # the input point it samples: input = A @ output + t. A rotation in pixel space
        # becomes D^-1 R D in normalised space, D = diag(W, H) / 2, so non-square images
        # rotate without shearing. Dividing by zoom samples a smaller area: zoom > 1 magnifies.
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([
            torch.stack([cos, -sin * (h / w), 2 * shift[:, 0]], dim=1),
            torch.stack([sin * (w / h), cos, 2 * shift[:, 1]], dim=1),
        ], dim=1)  # (B, 2, 3); a shift of the whole size is 2 in normalised units
        grid = F.affine_grid(theta, [b, x.shape[1], h, w], align_corners=False)  # (B, H, W, 2)
        # Pixels that come from outside the image need a value. Inputs are standardised, so
        # "zeros" would paint the dataset's mean (mid-grey), which real backgrounds rarely
        # are; "border" repeats the edge pixels, which are almost always background, so the
        # filled area looks like the rest of the background whatever the normalisation.
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def __repr__(self) -> str:
        parts = [f"{name}({', '.join(f'{k}={_show(v)}' for k, v in keys.items())})"
                 for name, keys in self.params.items()]
        return f"Augment({', '.join(parts)})"


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return f"({', '.join(f'{v:g}' for v in value)})"
    return "random" if value is None else f"{value:g}"


def _uniform(n: int, low: float, high: float, like: torch.Tensor) -> torch.Tensor:
    """``n`` draws from U[low, high] on ``like``'s device, in its dtype."""
    u = torch.rand(n, device=like.device)  # float32 draws: the same stream for every input dtype
    return (low + (high - low) * u).to(like.dtype)


def build_augment(names: Sequence[str], params: Mapping[str, Mapping[str, float]],
                  input_shape: tuple[int, ...]) -> Augment | None:
    """The training-set augmentation ``regularization.augment`` asks for.

    Args:
        names: augmentations to apply (``regularization.augment``), each at most once.
        params: ``regularization.augment_params`` as a plain dict; missing names or keys
            take the schema's defaults.
        input_shape: shape of one example, without the batch dimension.

    Returns:
        An :class:`Augment`, or None when ``names`` lists none of them (mixup and cutmix
        are :func:`~dltrain.data.mixing.build_mix`'s).

    Raises:
        ConfigError: for a repeated name, examples that are not images ``(C, H, W)``, a
            crop padding the images are too small for, or an erasing range low > high.
        ValueError: for a key an augmentation does not have, which would be ignored (the
            schema refuses it first on the config path, as it refuses an unknown name).
    """
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"regularization.augment lists {name} twice: list each augmentation once.")
        seen.add(name)
    images = [name for name in names if name not in MIXES]
    if not images:
        return None
    if len(input_shape) != 3:
        what = "regularization.augment" if images == list(names) else f"{', '.join(images)} from regularization.augment"
        raise ConfigError(f"regularization.augment needs images (channels, height, width), but this data's "
                          f"examples have shape {tuple(input_shape)}: remove {what}.")
    chosen = {name: with_defaults(name, params.get(name)) for name in images}
    if "erasing" in chosen:
        chosen["erasing"] = erasing_params(chosen["erasing"])
    if "crop" in chosen:
        padding, (h, w) = chosen["crop"]["padding"], input_shape[1:]
        if padding < 1 or padding != int(padding) or padding >= min(h, w):
            raise ConfigError(f"regularization.augment_params.crop.padding={padding:g} does not fit these {h}x{w} "
                              f"images: the border is filled by reflecting the image, which needs a whole number of "
                              f"pixels from 1 to {min(h, w) - 1} (below the height and the width).")
    return Augment(chosen)


def with_defaults(name: str, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """``regularization.augment_params.<name>`` with the schema's defaults for missing keys;
    numbers as floats.

    Raises:
        ValueError: for a key the augmentation does not have.
    """
    defaults = asdict(AugmentParamsConfig())[name]
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"{name} has no key {unknown[0]}: use {', '.join(defaults)}")
    return {key: value if isinstance(value, (str, list, tuple)) else float(value)
            for key, value in {**defaults, **given}.items()}


def erasing_params(keys: Mapping[str, Any]) -> dict[str, Any]:
    """Erasing's keys as :func:`~dltrain.data.erasing.erase` takes them: ranges as pairs, the
    value a number or None (``random``: noise)."""
    out: dict[str, Any] = {"p": float(keys["p"])}
    for key in ("scale", "ratio"):
        low, high = (float(v) for v in keys[key])
        if not 0 < low <= high:
            raise ConfigError(f"regularization.augment_params.erasing.{key}=[{low:g}, {high:g}] is not a range: give "
                              f"[low, high] with 0 < low <= high.")
        out[key] = (low, high)
    value = str(keys["value"])
    out["value"] = None if value == "random" else float(value)
    return out

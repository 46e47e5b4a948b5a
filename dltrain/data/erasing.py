"""Random erasing (Zhong et al., 2020; torchvision's ``RandomErasing``) of a whole batch at once,
on its device (``regularization.augment=[erasing]``).

Each image, with probability ``p``, gets one rectangle filled with a constant or with noise. Its
area is drawn from ``scale`` (a fraction of the image's) and its height/width ratio
log-uniformly from ``ratio``; a draw that does not fit in the image is drawn again, up to ten
times, as torchvision does (an image none of whose draws fits is left as it is). The ten draws
are made for every image at once and the first that fits is taken, so nothing is read back from
the device: the rectangles become one mask by comparing coordinate grids with device tensors.
"""

from __future__ import annotations

import math

import torch

#: Draws of a rectangle per image, the first that fits taken (torchvision's ten).
ATTEMPTS = 10


def erase(x: torch.Tensor, p: float, scale: tuple[float, float], ratio: tuple[float, float],
          value: float | None) -> torch.Tensor:
    """A copy of the images ``x`` ``(B, C, H, W)`` with one random rectangle erased in each of
    about ``p * B`` of them, in every channel.

    Args:
        p: probability of erasing an image.
        scale: the range of the rectangle's area, a fraction of the image's.
        ratio: the range of its height / width, drawn log-uniformly.
        value: what fills it, in input units (0 is the mean of standardised inputs); None
            fills it with standard normal noise.
    """
    mask = erasing_mask(x.shape[0], *x.shape[-2:], p, scale, ratio, x.device)  # (B, 1, H, W)
    fill = torch.randn_like(x) if value is None else torch.full((), value, dtype=x.dtype, device=x.device)
    return torch.where(mask, fill, x)


def erasing_mask(b: int, h: int, w: int, p: float, scale: tuple[float, float], ratio: tuple[float, float],
                 device: torch.device) -> torch.Tensor:
    """Where to erase: a bool mask ``(B, 1, H, W)``, one rectangle or none per image."""
    area = _uniform((b, ATTEMPTS), *scale, device) * (h * w)  # (B, A) pixels
    aspect = torch.exp(_uniform((b, ATTEMPTS), math.log(ratio[0]), math.log(ratio[1]), device))  # (B, A)
    heights, widths = (area * aspect).sqrt().round(), (area / aspect).sqrt().round()  # (B, A)
    fits = (heights < h) & (widths < w)  # torchvision's test
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # (B, 1): the first draw that fits (0 if none)
    height, width = heights.gather(1, first), widths.gather(1, first)  # (B, 1)
    erased = (torch.rand(b, 1, device=device) < p) & fits.any(dim=1, keepdim=True)  # (B, 1)
    # The corner uniform over the positions where the rectangle fits, as torch.randint would draw it.
    top = (torch.rand(b, 1, device=device) * (h - height + 1)).floor()  # (B, 1)
    left = (torch.rand(b, 1, device=device) * (w - width + 1)).floor()
    rows = torch.arange(h, device=device)  # (H,)
    cols = torch.arange(w, device=device)
    in_rows = (rows >= top) & (rows < top + height) & erased  # (B, H)
    in_cols = (cols >= left) & (cols < left + width)  # (B, W)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # (B, 1, H, W)


def _uniform(shape: tuple[int, ...], low: float, high: float, device: torch.device) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, device=device)

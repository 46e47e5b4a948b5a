"""A GAN's ``samples/epoch-NNN.png``: the generator's images from the fixed latent batch, laid out
in a plain grid of pixels (no axes, no captions), as DCGAN's papers show them.

The grid is made with numpy and written by Pillow through a temp file and a rename: a reader sees
the previous epoch's file or this one, never half of one. Drawing it needs no matplotlib.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from dltrain.files import atomic_write

#: Images per row of the grid (8 x 8 for the default 64 samples).
GRID_COLUMNS = 8
#: White pixels between images and around the grid.
PADDING = 2
#: The folder of a run directory the grids go in.
SAMPLES_DIR = "samples"


def epoch_file(run_dir: Path, epoch: int) -> Path:
    """``samples/epoch-NNN.png`` of ``epoch`` (three digits at least, so they sort in order)."""
    return run_dir / SAMPLES_DIR / f"epoch-{epoch:03d}.png"


def to_pixels(generated: torch.Tensor) -> torch.Tensor:
    """A generator's Tanh outputs in [-1, 1] -> pixels in [0, 1] (clipped), float32 on the CPU."""
    return ((generated.detach().float().cpu() + 1) / 2).clamp(0, 1)


def grid(pixels: torch.Tensor, columns: int = GRID_COLUMNS, padding: int = PADDING) -> np.ndarray:
    """Images ``(N, C, H, W)`` in [0, 1] as one uint8 mosaic ``(rows, cols)`` (one channel) or
    ``(rows, cols, 3)``, ``min(N, columns)`` images a row, ``padding`` white pixels between and
    around them: ``rows * (H + padding) + padding`` pixels high.

    Raises:
        ValueError: not a non-empty batch of 1- or 3-channel images.
    """
    if pixels.dim() != 4 or len(pixels) == 0 or pixels.shape[1] not in (1, 3):
        raise ValueError(f"expected a batch of 1- or 3-channel images (N, C, H, W), got {tuple(pixels.shape)}")
    n, c, h, w = pixels.shape
    across = min(columns, n)
    down = math.ceil(n / across)
    values = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    mosaic = np.full((down * (h + padding) + padding, across * (w + padding) + padding, c), 255, dtype=np.uint8)
    for i, image in enumerate(values):
        top, left = padding + (i // across) * (h + padding), padding + (i % across) * (w + padding)
        mosaic[top:top + h, left:left + w] = image
    return mosaic[..., 0] if c == 1 else mosaic


def write_grid(path: Path, pixels: torch.Tensor) -> Path:
    """Write :func:`grid` of ``pixels`` as a PNG at ``path`` (its folder made), atomically."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        Image.fromarray(grid(pixels)).save(f, format="png")
    return path

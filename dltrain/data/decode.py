"""One image file as uint8 pixels, decoded with Pillow the one way dltrain reads images:
for training (``data=image_folder``) and for ``dltrain-predict``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from dltrain.data.pixel_depth import to_8bit

if TYPE_CHECKING:  # decoding itself imports no torch: an exported model reads images without it
    import torch

#: File endings read as images (those of torchvision's ImageFolder), compared in lower case.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# What Pillow raises for a file that is not a decodable image: unknown format, corrupt, truncated, too large.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def decode_image(path: str | Path, image_size: Sequence[int], color: str) -> torch.Tensor:
    """One image file as uint8 ``(C, H, W)``: RGB (C=3) or grayscale (C=1), resized bilinearly
    to ``image_size`` (height, width).

    Raises:
        One of ``DECODE_ERRORS`` when Pillow cannot read the file.
    """
    return decode_with_depth(path, image_size, color)[0]


def decode_with_depth(path: str | Path, image_size: Sequence[int],
                      color: str) -> tuple[torch.Tensor, int, int, tuple[int, int]]:
    """:func:`decode_image`, with the largest integer value of the file and of its bit depth
    (both 0 unless the file holds integers deeper than 8 bits) and the file's own
    ``(height, width)``."""
    import torch

    pixels, peak, top, native = decode_pixels(path, image_size, color)
    return torch.from_numpy(pixels), peak, top, native


def decode_pixels(path: str | Path, image_size: Sequence[int],
                  color: str) -> tuple[np.ndarray, int, int, tuple[int, int]]:
    """:func:`decode_with_depth` as a numpy uint8 array ``(C, H, W)``."""
    mode = "L" if color == "grayscale" else "RGB"
    size = (image_size[1], image_size[0])  # Pillow wants (width, height)
    with Image.open(path) as img:
        native = (img.height, img.width)  # before draft(), which may shrink a JPEG as it decodes
        img.draft(mode, size)  # JPEG only: decode at a reduced scale that is still at least `size`
        img, peak, top = to_8bit(img)
        img = img.convert(mode).resize(size, Image.BILINEAR)
    pixels = np.array(img, dtype=np.uint8)  # (H, W) or (H, W, 3)
    image = pixels[None] if pixels.ndim == 2 else np.ascontiguousarray(pixels.transpose(2, 0, 1))
    return image, peak, top, native

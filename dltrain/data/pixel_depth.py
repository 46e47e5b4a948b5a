"""Pixels deeper than 8 bits scaled to 8 bits by their bit depth, and what decoding noticed
about a folder of images: files skipped and why, and deep images that use little of their range.

The bit depth of an image is the file's own (16 for a 16-bit PNG, PGM or TIFF, a TIFF's
``BitsPerSample`` below 32), except for 32-bit integers (Pillow's mode ``I``): that is
Pillow's container for every integer image, and ``Image.convert("I")`` of an 8- or 16-bit
image keeps its values, so the depth is the smallest of 8, 16 and 32 bits that holds the
image's largest value.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from PIL import Image

FLOAT_RANGE = "float pixel values are not all in [0, 1]"
NEGATIVE = "integer pixel values are negative"
TOO_LARGE = "too many pixels for Pillow (its decompression-bomb limit)"
NOT_AN_IMAGE = "not an image Pillow can read"
LOW_RANGE = 16  # deep images whose values all stay under 1/LOW_RANGE of their range are named
MAX_NAMED = 5  # skipped files named in a warning
DEPTHS = (2**8 - 1, 2**16 - 1, 2**31 - 1)  # the largest value of 8, 16 and 32 bits (mode I is signed)


class PixelRangeError(ValueError):
    """Pixel values outside the range of the file's bit depth, whose scale is unknown.

    Attributes:
        reason: the same text for every file of the kind, so skipped files are counted by it.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason} ({detail})" if detail else reason)
        self.reason = reason


def to_8bit(img: Image.Image) -> tuple[Image.Image, int, int]:
    """``img`` as 8-bit grayscale (``L``) when its pixels are integers deeper than 8 bits or
    floats; any other mode unchanged (``convert`` reads those right).

    ``convert`` would clip such values at 255, turning a 16-bit image nearly white. They are
    scaled by their bit depth instead, ``round(v * 255 / 65535)`` for 16 bits, so a 16-bit image
    made from an 8-bit one (``v * 257``) decodes to that 8-bit image exactly. Floats are read
    as values in [0, 1].

    Returns:
        The image, its largest integer value and the largest value of its bit depth (both 0
        unless integers were scaled).

    Raises:
        PixelRangeError: negative integers, or floats outside [0, 1] or not finite.
    """
    if img.mode == "I" or img.mode.startswith("I;"):
        values = np.asarray(img).astype(np.int64)  # (H, W); v * 255 fits
        if values.size and values.min() < 0:
            raise PixelRangeError(NEGATIVE, f"{img.mode} values {values.min()}..{values.max()}")
        peak = int(values.max()) if values.size else 0
        top = integer_max(img, peak)
        if peak > top:
            raise PixelRangeError(f"integer pixel values exceed {top}", f"{img.mode} values up to {peak}")
        if top == DEPTHS[0]:
            return Image.fromarray(values.astype(np.uint8)), 0, 0
        pixels = (values * 255 + top // 2) // top  # rounded to the nearest 8-bit value, in exact integers
        return Image.fromarray(pixels.astype(np.uint8)), peak, top
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float32)  # (H, W)
        if values.size and not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1):
            raise PixelRangeError(FLOAT_RANGE)
        return Image.fromarray(np.rint(values * 255).astype(np.uint8)), 0, 0
    return img, 0, 0


def integer_max(img: Image.Image, peak: int) -> int:
    """The largest value of an integer image's bit depth, whose largest value is ``peak``.

    Pillow reads 16-bit PNG and PGM files as mode ``I;16`` (``I`` in some versions); a TIFF
    says its depth, and a 32-bit one (mode ``I``) gets the smallest usual depth holding ``peak``.
    """
    if img.mode.startswith("I;16") or img.format in ("PNG", "PPM"):
        return DEPTHS[1]
    bits = getattr(img, "tag_v2", {}).get(258, 32)  # TIFF BitsPerSample, one value or one per channel
    bits = bits[0] if isinstance(bits, tuple) else bits
    if bits < 32:
        return 2**bits - 1
    return next((top for top in DEPTHS if peak <= top), DEPTHS[-1])


def skip_reason(err: Exception) -> str:
    """Why a file could not be decoded, in words shared by every file of the kind."""
    if isinstance(err, PixelRangeError):
        return err.reason
    if isinstance(err, Image.DecompressionBombError):
        return TOO_LARGE
    return NOT_AN_IMAGE


def describe_skipped(names: list[str], reasons: list[str]) -> str:
    """The skipped files (at most ``MAX_NAMED``, then how many more), then each reason with its
    count and first file, the most common first: ``a.tif and 3 more (float pixel values are not
    all in [0, 1]: 4, the first a.tif)``."""
    named = ", ".join(names[:MAX_NAMED]) + (f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else "")
    first = {}
    for name, reason in zip(names, reasons, strict=True):
        first.setdefault(reason, name)
    why = "; ".join(f"{reason}: {count}, the first {first[reason]}"
                    for reason, count in Counter(reasons).most_common())
    return f"{named} ({why})"


def low_range_warning(peaks: np.ndarray, tops: np.ndarray) -> str | None:
    """A warning when the images deeper than 8 bits all use under ``1/LOW_RANGE`` of their
    range (12-bit values in 16-bit files): they decode dark, in few grey levels. None otherwise.

    Args:
        peaks, tops: per image, the largest value and its depth's largest value, as
            :func:`to_8bit` returns them (0 for images not deeper than 8 bits).
    """
    deep = tops > DEPTHS[0]
    if not deep.any() or (peaks[deep] * LOW_RANGE >= tops[deep] + 1).any():
        return None
    i = np.flatnonzero(deep)[np.argmax(peaks[deep] / tops[deep])]  # the image using the most of its range
    peak, top = int(peaks[i]), int(tops[i])
    bits, used = top.bit_length(), max(peak.bit_length(), 1)  # 31 value bits for signed 32-bit integers
    return (f"its {int(deep.sum())} images deeper than 8 bits use only values up to {peak} of their range "
            f"0..{top} (under 1/{LOW_RANGE}), so they decode dark, in few grey levels: dltrain scales pixels by "
            f"the file's bit depth; if they hold {used}-bit values, scale the files to the full range "
            f"(multiply by {2 ** (bits - used)})")

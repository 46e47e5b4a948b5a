"""Whether the inputs given to ``dltrain-predict`` look like the training data.

A model answers any input, with full confidence too; these checks say which inputs it was
not trained on, from what the checkpoint recorded about its training split:

* ``resized WxH->WxH``: an image whose size (width x height) lies outside the range of the
  training images' own sizes, resized to the model's input size.
* ``inverted``: an image of the other polarity. With ``m`` the training images' mean
  brightness and ``b`` the input's (pixel values in 0..1, averaged over pixels and
  channels), the input is flagged when the training images are mostly dark or mostly light
  (``|m - 0.5| >= 1/6``) and ``b`` is closer to ``1 - m`` than to ``m`` by more than
  :data:`INVERTED_MARGIN`. For dark training images (``m <= 1/3``, digits on black) this is
  ``b > 0.575``; for light ones (``m >= 2/3``) ``b < 0.425``; for images of middling
  brightness (photos) polarity means nothing and the flag never fires.
* ``out_of_range: A, B``: a row whose numeric feature lies beyond the training range
  ``[min, max]`` by more than the range's width (below ``2 min - max`` or above
  ``2 max - min``), naming the columns.
* ``unknown_words``: a text of which more than half the tokens are not in the vocabulary.

Each input gets its flags joined by ``; `` in the output's :data:`COLUMN` (empty when it
looks fine), and :func:`summary` gives one warning line for them all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

#: The output column that holds each input's flags.
COLUMN = "input_warnings"
#: The flags, as each starts.
FLAGS = ("resized", "inverted", "out_of_range", "unknown_words")
#: How much closer to ``1 - m`` than to ``m`` an image's brightness must be to be called inverted.
INVERTED_MARGIN = 0.15
#: How far from 0.5 the training brightness must be for the images to have a polarity.
POLARITY = 1 / 6
#: The share of unknown tokens above which a text is flagged.
UNKNOWN_SHARE = 0.5


def training_brightness(data: dict[str, Any]) -> float | None:
    """The training images' mean pixel value in 0..1, from the recorded normalisation (the
    per-channel mean of the training split scaled to [0, 1]; ``brightness`` where the
    normalisation is the model's own), or for ``data=digits`` the per-pixel mean ink count
    over ``pixel_max``; None for other data."""
    if "brightness" in data:
        return float(data["brightness"])
    if "pixel_scaling" in data and "pixel_max" in data:
        return float(np.mean(data["pixel_scaling"]["mean"])) / data["pixel_max"]
    if "normalization" in data:
        return float(np.mean(data["normalization"]["mean"]))
    return None


def image_flags(native: tuple[int, int], image: np.ndarray, data: dict[str, Any],
                brightness: float | None) -> str:
    """The flags of one image.

    Args:
        native: the file's own ``(height, width)``.
        image: the decoded uint8 image ``(C, H, W)`` at the model's input size.
        data: the checkpoint's data record (``native_sizes``, when recorded, bounds the sizes).
        brightness: :func:`training_brightness`.
    """
    flags = []
    sizes = data.get("native_sizes")
    if sizes and not all(lo <= n <= hi for n, lo, hi in zip(native, sizes["min"], sizes["max"], strict=True)):
        flags.append(f"resized {native[1]}x{native[0]}->{image.shape[2]}x{image.shape[1]}")
    if brightness is not None and is_inverted(float(image.mean()) / 255, brightness):
        flags.append("inverted")
    return "; ".join(flags)


def is_inverted(b: float, m: float) -> bool:
    """Whether brightness ``b`` is that of an image of the other polarity than training
    images of mean brightness ``m`` (both in 0..1; see the module's rule)."""
    return abs(m - 0.5) >= POLARITY and abs(b - m) - abs(b - (1 - m)) > INVERTED_MARGIN


def range_flags(columns: dict[str, np.ndarray], ranges: dict[str, Sequence[float]] | None, rows: int) -> list[str]:
    """The ``out_of_range`` flag of each of ``rows`` rows: the numeric columns (``name ->
    float64 values``, one per row) whose value lies beyond the recorded training range by more
    than its width; empty for every row without ``ranges`` (a checkpoint that records none) or
    numeric columns."""
    beyond: list[list[str]] = [[] for _ in range(rows)]
    for name, values in columns.items():
        if name not in (ranges or {}):
            continue
        lo, hi = ranges[name]
        width = hi - lo
        for row in np.flatnonzero((values < lo - width) | (values > hi + width)):
            beyond[row].append(name)
    return [f"out_of_range: {', '.join(names)}" if names else "" for names in beyond]


def text_flags(known: Sequence[int], total: Sequence[int]) -> list[str]:
    """``unknown_words`` for each text with more than half its ``total`` tokens unknown
    (``known`` of them in the vocabulary)."""
    return ["unknown_words" if n and (n - k) / n > UNKNOWN_SHARE else "" for k, n in zip(known, total, strict=True)]


def summary(flags: Sequence[str]) -> str | None:
    """One warning for all inputs (``37 of 40 inputs do not look like the training data
    (36 inverted, 1 resized): ...``), or None when none is flagged."""
    flagged = [f for f in flags if f]
    if not flagged:
        return None
    kinds = Counter(part.split(" ")[0].rstrip(":") for f in flagged for part in f.split("; "))
    counts = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
    return (f"{len(flagged)} of {len(flags)} inputs do not look like the training data ({counts}): see the "
            f"{COLUMN} column; predictions on them may be unreliable")


def is_flag_cell(cell: str) -> bool:
    """Whether ``cell`` is empty or flags as :func:`image_flags`, :func:`range_flags` and
    :func:`text_flags` write them (how an earlier output is recognised)."""
    return not cell or all(part.split(" ")[0].rstrip(":") in FLAGS for part in cell.split("; "))

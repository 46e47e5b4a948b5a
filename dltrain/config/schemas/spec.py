"""The field every schema key is made with (:func:`spec`), and the limits several schemas share."""

from dataclasses import field
from typing import Any

from omegaconf import MISSING

#: Activation names accepted by the built-in models (see ``dltrain.models.layers``).
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "gelu", "elu", "identity")
#: Batched augmentations (see ``dltrain.data.augment``), in the order they run: the image ones,
#: then random erasing, then the two that mix a batch with itself and its targets.
AUGMENTATIONS = ("crop", "hflip", "rotate", "shift", "zoom", "brightness", "contrast", "erasing", "mixup", "cutmix")
#: The augmentations that mix a batch and its targets (see ``dltrain.data.mixing``).
MIXES = ("mixup", "cutmix")
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"
PRECISIONS = ("32", "bf16", "16")
#: Largest height or width ``data.image_size`` takes.
MAX_IMAGE_SIDE = 4096
#: Points a generated dataset may have (xor, sine, moons, spirals, chirp): far more than any of
#: them needs, and few enough to fit in memory, whether set on the command line or read from a
#: checkpoint's config.
MAX_POINTS = 10_000_000
IMAGE_SIDE_HELP = (f"pixels a side, 1 to {MAX_IMAGE_SIDE}: one {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} RGB image "
                   "already takes 200 MB as float32")


def spec(
    default: Any = MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[str, ...] | None = None,
    pattern: str | None = None,
    items: dict[str, Any] | None = None,
    length: int | None = None,
    help: str = "",
) -> Any:
    """A dataclass field whose metadata carries the checks ``validate`` applies.

    Args:
        default: default value; lists and dicts are copied per instance.
        ge, gt, le, lt: numeric bounds (``>=``, ``>``, ``<=``, ``<``).
        choices: the allowed strings.
        pattern: a regular expression the whole string must match.
        items: checks applied to every element of a list (same keys as here).
        length: the exact number of elements a list must have.
        help: one line shown in error messages.
    """
    meta = {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt, choices=choices, pattern=pattern,
                                  items=items, length=length, help=help).items()
            if v is not None and v != ""}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


"""``regularization``: dropout, batch norm, weight penalties, label smoothing, clipping
and augmentation."""

from dataclasses import dataclass, field

from dltrain.config.schemas.spec import AUGMENTATIONS, spec


@dataclass
class CropConfig:
    padding: int = spec(4, ge=1, help="pixels added on each side by reflection; the window moves by up to this many")


@dataclass
class HFlipConfig:
    p: float = spec(0.5, ge=0, le=1, help="probability of mirroring an image left-right")


@dataclass
class RotateConfig:
    degrees: float = spec(15.0, ge=0, le=180, help="rotation drawn from [-degrees, degrees]")


@dataclass
class ShiftConfig:
    fraction: float = spec(0.1, ge=0, lt=1, help="shift drawn from [-fraction, fraction] of the width and height")


@dataclass
class ZoomConfig:
    scale: float = spec(0.1, ge=0, lt=1, help="zoom factor drawn from [1 - scale, 1 + scale]")


@dataclass
class BrightnessConfig:
    delta: float = spec(0.2, ge=0, help="offset drawn from [-delta, delta], in input units")


@dataclass
class ContrastConfig:
    delta: float = spec(0.2, ge=0, lt=1, help="contrast factor drawn from [1 - delta, 1 + delta]")


@dataclass
class AugmentParamsConfig:
    crop: CropConfig = field(default_factory=CropConfig)
    hflip: HFlipConfig = field(default_factory=HFlipConfig)
    rotate: RotateConfig = field(default_factory=RotateConfig)
    shift: ShiftConfig = field(default_factory=ShiftConfig)
    zoom: ZoomConfig = field(default_factory=ZoomConfig)
    brightness: BrightnessConfig = field(default_factory=BrightnessConfig)
    contrast: ContrastConfig = field(default_factory=ContrastConfig)


@dataclass
class RegularizationConfig:
    dropout: float = spec(0.0, ge=0, lt=1, help="probability of zeroing a hidden unit")
    batch_norm: bool = False
    l1: float = spec(0.0, ge=0, help="adds l1 * sum(|w|) over the weights to the loss")
    l2: float = spec(0.0, ge=0, help="weight decay on the weights (never biases or norm parameters)")
    label_smoothing: float = spec(0.0, ge=0, lt=1)
    grad_clip: float | None = spec(None, gt=0, help="clip the gradient norm to this value")
    grad_clip_value: float | None = spec(None, gt=0, help="clip every gradient element to [-value, value]")
    augment: list[str] = spec([], items={"choices": AUGMENTATIONS}, help="image augmentations for training")
    augment_params: AugmentParamsConfig = field(default_factory=AugmentParamsConfig)

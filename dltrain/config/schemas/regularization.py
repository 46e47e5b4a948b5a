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
class ErasingConfig:
    p: float = spec(0.25, ge=0, le=1, help="probability of erasing a rectangle of an image")
    scale: list[float] = spec([0.02, 0.33], length=2, items={"gt": 0, "le": 1},
                              help="the rectangle's area, a fraction of the image's, drawn from [low, high]")
    ratio: list[float] = spec([0.3, 3.3], length=2, items={"gt": 0},
                              help="the rectangle's height / width, drawn log-uniformly from [low, high]")
    value: str = spec("0", pattern=r"random|[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?",
                      help="what fills it: a number in standardised units (0 = the mean) or random (normal noise)")


@dataclass
class MixUpConfig:
    alpha: float = spec(0.2, gt=0, help="the mixing weight is drawn from Beta(alpha, alpha) for each batch")
    p: float = spec(1.0, ge=0, le=1, help="probability that a batch is mixed")


@dataclass
class CutMixConfig:
    alpha: float = spec(1.0, gt=0, help="the kept area's fraction is drawn from Beta(alpha, alpha) for each batch")
    p: float = spec(1.0, ge=0, le=1, help="probability that a batch gets a pasted box")


@dataclass
class AugmentParamsConfig:
    crop: CropConfig = field(default_factory=CropConfig)
    hflip: HFlipConfig = field(default_factory=HFlipConfig)
    rotate: RotateConfig = field(default_factory=RotateConfig)
    shift: ShiftConfig = field(default_factory=ShiftConfig)
    zoom: ZoomConfig = field(default_factory=ZoomConfig)
    brightness: BrightnessConfig = field(default_factory=BrightnessConfig)
    contrast: ContrastConfig = field(default_factory=ContrastConfig)
    erasing: ErasingConfig = field(default_factory=ErasingConfig)
    mixup: MixUpConfig = field(default_factory=MixUpConfig)
    cutmix: CutMixConfig = field(default_factory=CutMixConfig)


@dataclass
class RegularizationConfig:
    dropout: float = spec(0.0, ge=0, lt=1, help="probability of zeroing a hidden unit")
    batch_norm: bool = False
    l1: float = spec(0.0, ge=0, help="adds l1 * sum(|w|) over the weights to the loss")
    l2: float = spec(0.0, ge=0, help="weight decay on the weights (never biases or norm parameters)")
    label_smoothing: float = spec(0.0, ge=0, lt=1)
    grad_clip: float | None = spec(None, gt=0, help="clip the gradient norm to this value")
    grad_clip_value: float | None = spec(None, gt=0, help="clip every gradient element to [-value, value]")
    ema_decay: float | None = spec(None, gt=0, lt=1, help="an EMA of the weights after every optimizer step: "
                                   "ema = decay * ema + (1 - decay) * w; null = none")
    ema_warmup: bool = spec(False, help="the decay of update t is min(ema_decay, (1 + t) / (10 + t))")
    swa_start: int | None = spec(None, ge=1, help="SWA: average the weights at the end of every epoch from this "
                                 "one; null = none")
    swa_lr: float | None = spec(None, gt=0, help="from swa_start the LR anneals to this value (SWALR); "
                                "null = the configured schedule")
    swa_anneal_epochs: int = spec(1, ge=0, help="epochs over which the LR anneals to swa_lr (cosine)")
    evaluate_averaged: bool = spec(True, help="validate, test, save as best and use the averaged weights; false: "
                                   "the raw ones, the averaged beside them (val_avg_*, test_averaged)")
    augment: list[str] = spec([], items={"choices": AUGMENTATIONS}, help="batch augmentations for training")
    augment_params: AugmentParamsConfig = field(default_factory=AugmentParamsConfig)

"""``model=dcgan`` and ``task=gan``: each network's keys under its own name
(``model.generator.*``, ``task.discriminator.*``)."""

from dataclasses import dataclass, field

from dltrain.config.schemas.spec import spec


@dataclass
class GeneratorConfig:
    """``model.generator``: latent vector -> image, one doubling of the map per entry of ``channels``."""

    channels: list[int] = spec([128, 64], items={"ge": 1},
                               help="channels of the start map, then of each upsampling block (one doubling each)")
    batch_norm: bool = spec(True, help="batch norm after every layer but the output one (DCGAN's guideline)")


@dataclass
class DiscriminatorConfig:
    """``model.discriminator``: image -> one logit, one halving of the map per entry of ``channels``."""

    channels: list[int] = spec([64, 128], items={"ge": 1}, help="channels of each stride-2 convolution")
    batch_norm: bool = spec(True, help="batch norm after every convolution but the input one (DCGAN's guideline)")
    negative_slope: float = spec(0.2, ge=0, lt=1, help="LeakyReLU's slope for negative inputs")


@dataclass
class DCGANConfig:
    """``model=dcgan``: a generator and a discriminator sized from the images (``task=gan`` trains it)."""

    name: str = "dcgan"
    latent_size: int = spec(100, ge=1, help="length of the generator's input vectors z")
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)


@dataclass
class AdamNetworkConfig:
    """One network's Adam (``task.generator``, ``task.discriminator``); the paper's values by default."""

    lr: float = spec(2e-4, gt=0)
    betas: list[float] = spec([0.5, 0.999], items={"ge": 0, "lt": 1}, length=2,
                              help="Adam's (beta1, beta2); beta1 0.5 as DCGAN's paper")


@dataclass
class GanTaskConfig:
    """``task=gan``: a discriminator learns real images from generated ones, and a generator
    learns to fool it (the non-saturating loss), each with its own Adam."""

    name: str = "gan"
    label_smoothing: float = spec(0.0, ge=0, lt=1, help="one-sided: the real images' target is 1 - this value")
    num_samples: int = spec(64, ge=1, help="size of the fixed latent batch drawn once from the run's seed")
    scorer: str | None = spec(None, help="a dltrain classifier's checkpoint (best.pt) trained on the real images: "
                              "it scores the samples each epoch (val_sample_score), which early stopping follows")
    confidence: float = spec(0.9, gt=0, le=1, help="the scorer's probability at which a sample counts as confident")
    score_samples: int = spec(1000, ge=1, help="generated images scored each epoch, from a fixed private seed")
    generator: AdamNetworkConfig = field(default_factory=AdamNetworkConfig)
    discriminator: AdamNetworkConfig = field(default_factory=AdamNetworkConfig)

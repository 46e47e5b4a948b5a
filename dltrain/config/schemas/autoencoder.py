"""``model=autoencoder`` and ``task=autoencoder``: the network's shape, and what it learns to reconstruct."""

from dataclasses import dataclass

from dltrain.config.schemas.spec import ACTIVATIONS, spec


@dataclass
class AutoencoderConfig:
    """``model=autoencoder``: an encoder down to ``bottleneck`` codes and a mirrored decoder back
    to the input's shape (``task=autoencoder`` trains it)."""

    name: str = "autoencoder"
    encoder: str = spec("mlp", choices=("mlp", "conv"),
                        help="mlp: dense layers (any data); conv: stride-2 convolutions (images), mirrored by "
                             "transposed convolutions")
    hidden: list[int] = spec([128], items={"ge": 1}, help="encoder=mlp: widths of the dense layers down to the "
                                                         "bottleneck (the decoder mirrors them)")
    channels: list[int] = spec([16, 32], items={"ge": 1},
                               help="encoder=conv: channels of each stride-2 convolution (each halves the map)")
    kernel_size: int = spec(3, ge=2, help="encoder=conv: the convolutions' kernel size")
    bottleneck: int = spec(16, ge=1, help="size of the latent code, below the input's size")
    activation: str = spec("relu", choices=ACTIVATIONS)


@dataclass
class AutoencoderTaskConfig:
    """``task=autoencoder``: the model reconstructs its (clean) input; labels only label the plots."""

    name: str = "autoencoder"
    loss: str = spec("mse", choices=("mse", "l1", "bce"),
                     help="mse or l1 on the standardised inputs; bce on the pixels in [0, 1] (images, digits)")
    denoise: str = spec("none", choices=("none", "gaussian", "masking"),
                        help="noise added to the training inputs only: gaussian, or masking (inputs set to 0)")
    noise: float = spec(0.2, ge=0, le=10,
                        help="denoise=gaussian: the noise's std (standardised units); masking: the masked fraction")

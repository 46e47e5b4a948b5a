"""``model=``: the architectures' keys."""

from dataclasses import dataclass
from typing import ClassVar

from omegaconf import MISSING

from dltrain.config.schemas.spec import ACTIVATIONS, IMAGE_SIDE_HELP, MAX_IMAGE_SIDE, spec


@dataclass
class TransferConfig:
    """The keys of a model that can start from trained weights and fine-tune them (see
    :mod:`dltrain.models.transfer`); a model's schema that takes them subclasses this one."""

    weights: str = spec("none", help="none, a torchvision weights name (model=torchvision), or a file: "
                        "a dltrain checkpoint or a state dict of this model")
    freeze: str = spec("none", pattern=r"none|backbone|[1-9]\d*",
                       help="none, backbone (all but the head) or N >= 1 (the first N stages)")
    freeze_epochs: int = spec(0, ge=0, help="epochs trained frozen before everything is unfrozen; "
                              "0 keeps model.freeze for the whole run")
    backbone_lr: float = spec(1.0, gt=0, le=1, help="the backbone's learning rate as a fraction of the head's")


@dataclass
class MLPConfig(TransferConfig):
    """``model=mlp``: a multilayer perceptron; input and output sizes come from the data. It can
    start from another run's weights (an autoencoder's encoder among them) and fine-tune them
    (:class:`TransferConfig`)."""

    name: str = "mlp"
    hidden: list[int] = spec([128, 64], items={"ge": 1}, help="widths of the hidden layers; [] is a linear model")
    activation: str = spec("relu", choices=ACTIVATIONS)


@dataclass
class CNNConfig(TransferConfig):
    """``model=cnn``: conv blocks (conv -> [BN] -> activation -> pool), then dense layers; it can
    start from another run's weights and fine-tune them (:class:`TransferConfig`)."""

    name: str = "cnn"
    channels: list[int] = spec([32, 64], items={"ge": 1}, help="output channels of each conv block")
    kernel_size: int = spec(3, ge=1)
    stride: int = spec(1, ge=1)
    padding: str = spec("same", pattern=r"same|valid|\d+", help="same, valid or a number of pixels")
    pool: str = spec("max", choices=("max", "avg", "none"))
    pool_size: int = spec(2, ge=1)
    hidden: list[int] = spec([128], items={"ge": 1}, help="widths of the dense layers after the conv blocks")
    activation: str = spec("relu", choices=ACTIVATIONS)


@dataclass
class RecurrentConfig:
    """``model=lstm|gru``: a recurrent network over ``(batch, time, features)``."""

    name: str = "lstm"
    hidden_size: int = spec(64, ge=1)
    num_layers: int = spec(1, ge=1)
    bidirectional: bool = False
    dropout: float = spec(0.0, ge=0, lt=1, help="dropout between stacked recurrent layers (num_layers > 1)")
    pooling: str = spec("last", choices=("last", "mean", "max"), help="what the head reads from the sequence")
    embedding_dim: int = spec(64, ge=1, help="size of the token embeddings, for text data (data=text_csv)")
    head: list[str] = spec([], help="layers between the pooled state and the output: dense:N, dropout:P, bn and "
                           "activations (conf/model/sequential.yaml has the syntax)")


@dataclass
class RNNConfig(RecurrentConfig):
    """``model=rnn``: an Elman RNN."""

    name: str = "rnn"
    nonlinearity: str = spec("tanh", choices=("tanh", "relu"))


@dataclass
class SequentialConfig(TransferConfig):
    """``model=sequential``: any feed-forward network as a list of layers, shapes inferred from the
    data; the classic networks (``model=mnist_net``, ``lenet5``, ...) are presets of it. It can
    start from another run's weights and fine-tune them (:class:`TransferConfig`)."""

    name: str = "sequential"
    layers: list[str] = spec(["flatten", "dense:128", "relu"],
                             help="layer specs such as conv:32:3, relu, maxpool:2, flatten, dense:128 "
                             "(conf/model/sequential.yaml has the syntax)")


@dataclass
class CustomModelConfig:
    """``model=custom``: any importable ``nn.Module`` class or factory, with its own keys
    added as ``+model.KEY=VALUE``."""

    ALLOWS_EXTRA_KEYS: ClassVar[bool] = True

    name: str = "custom"
    _target_: str = spec(MISSING, pattern=r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+",
                         help="a dotted import path such as my_pkg.MyNet")


@dataclass
class TorchvisionModelConfig(TransferConfig):
    """``model=torchvision``: a classification network torchvision ships, its head sized from
    the data, from random weights, torchvision's trained ones or a file (``model.weights``)."""

    name: str = "torchvision"
    # No pattern: the model option checks the name before any data is read, naming the close ones.
    arch: str = spec("resnet18", help="a torchvision classification model: resnet18, vgg16, efficientnet_b0, "
                                      "vit_b_16, ...")
    download: bool = spec(True, help="fetch named weights missing from torch's cache (TORCH_HOME); false: never")
    image_size: list[int] | None = spec(None, items={"ge": 1, "le": MAX_IMAGE_SIDE, "help": IMAGE_SIDE_HELP},
                                        length=2, help="height and width the network reads; null: the weights' "
                                        "size (with model.weights=none: the data's)")


@dataclass
class TransformerConfig:
    """``model=transformer``: a transformer encoder over a sequence (tokens, feature steps, image
    rows or patches), pooled into a dense head."""

    name: str = "transformer"
    d_model: int = spec(64, ge=1, help="width of every step's vector")
    num_heads: int = spec(4, ge=1, help="attention heads per layer; must divide model.d_model")
    num_layers: int = spec(2, ge=1, help="stacked encoder layers")
    ff_dim: int = spec(128, ge=1, help="width of each layer's feed-forward block")
    dropout: float = spec(0.1, ge=0, lt=1, help="dropout in attention, feed-forward and on the embedded inputs")
    activation: str = spec("gelu", choices=("relu", "gelu"), help="the feed-forward block's activation")
    positional: str = spec("sinusoidal", choices=("sinusoidal", "learned"), help="fixed or learned positions")
    max_length: int = spec(512, ge=1, help="positions learned (model.positional=learned): the longest sequence")
    pooling: str = spec("cls", choices=("cls", "mean"),
                        help="what the head reads: a class token's state or the mean over non-padding steps")
    norm_first: bool = spec(True, help="layer norm before attention and feed-forward (pre-norm); false: after")
    patch_size: int | None = spec(None, ge=1, help="read images as square patches of this side; null: row by row")
    head: list[str] = spec([], help="layers between the pooled state and the output: dense:N, dropout:P, bn and "
                           "activations (conf/model/sequential.yaml has the syntax)")

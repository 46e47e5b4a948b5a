"""``model=torchvision``: a classification network torchvision ships (``model.arch``), its
classifier head replaced by one sized from the data, starting from random weights,
torchvision's trained weights (read from torch's cache, downloaded only where allowed) or a
state dict file of that network.

Where the weights come from, and the input they expect, is in :mod:`dltrain.models.pretrained`;
this module builds the network and says how it divides into stages for fine-tuning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from dltrain.errors import ConfigError, first_line
from dltrain.models.pretrained import (
    arch_weights,
    backbone_inputs,
    check_arch,
    load_trained,
    read_size,
    reads_transformed_input,
    resolve_weights,
    size_keyword,
)
from dltrain.models.registry import MODELS
from dltrain.models.transfer import TransferParts, sequential_stages

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

#: Containers of the body whose children are the stages (resnet's layer1..4 are children of
#: the network itself): vgg/efficientnet/mobilenet/convnext/densenet/swin ``features``,
#: regnet ``trunk_output``, mnasnet ``layers``, maxvit ``blocks``, vit ``encoder.layers``.
BODY_CONTAINERS = ("features", "trunk_output", "layers", "blocks", "encoder", "encoder.layers")
#: Side branches of inception and googlenet that only train with their own losses: left out.
AUX_HEADS = ("AuxLogits", "aux1", "aux2")


class Resize(nn.Module):
    """Resizes images to the size the network reads (bilinear, as torchvision's transforms),
    when they come at another; ``(0, 0)``: left as they are.

    The size is a buffer, so it travels with the weights: a model restored from a checkpoint
    (built without its start weights) resizes exactly as it did in training.
    """

    def __init__(self, size: Sequence[int] | None) -> None:
        super().__init__()
        self.register_buffer("size", torch.tensor(tuple(size) if size else (0, 0), dtype=torch.int64))
        self._target = tuple(size) if size else None  # read without a device sync in forward
        self.register_load_state_dict_post_hook(_refresh_target)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, *size)
        if self._target is None or tuple(x.shape[-2:]) == self._target:
            return x
        return F.interpolate(x, size=self._target, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"size={self._target}"


def _refresh_target(module: Resize, _incompatible: object) -> None:
    size = tuple(int(s) for s in module.size.tolist())
    module._target = size if all(size) else None


class Backbone(nn.Module):
    """A torchvision network behind a resize step; its weights are ``net.*`` as torchvision
    names them (``net.fc.weight``), so a state dict of the network maps onto them."""

    def __init__(self, net: nn.Module, head: str, size: Sequence[int] | None) -> None:
        super().__init__()
        self.resize = Resize(size)
        self.net = net
        self.head_name = head  # the head's dotted name in ``net`` (resnet ``fc``)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, num_outputs)
        return self.net(self.resize(x))

    def transfer_parts(self) -> TransferParts:
        """The network's stages in input order, and its new head.

        The body's units are the network's children, with the containers of
        :data:`BODY_CONTAINERS` and the head's parents opened into their children; they are
        grouped as a Sequential's layers are (:func:`~dltrain.models.transfer.sequential_stages`:
        a stage ends after a pooling layer or a block, a dense layer starts one). Parameters
        held directly by a network or a container (vit's class token and position embedding)
        belong to the first stage: they are the input's side.
        """
        units, loose = _body_units(self.net, self.head_name)
        stages = sequential_stages(units)
        for name, param in loose:
            stages[0].register_parameter(name.replace(".", "_"), param)
        return TransferParts(stages=stages, head=self.net.get_submodule(self.head_name))


def _body_units(net: nn.Module, head: str) -> tuple[list[tuple[str, nn.Module]], list[tuple[str, nn.Parameter]]]:
    """The network's layers and blocks in order, without the head, named by their path
    (a child of a container by its own name unless that is a number: ``layer1``,
    ``features_0``); and the parameters held directly by the network or an opened container."""
    parents = {head.rsplit(".", i)[0] for i in range(1, head.count(".") + 1)}
    units: list[tuple[str, nn.Module]] = []
    loose: list[tuple[str, nn.Parameter]] = []
    taken: set[str] = set()

    def walk(module: nn.Module, prefix: str) -> None:
        loose.extend((f"{prefix}{name}", p) for name, p in module.named_parameters(recurse=False))
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if path == head or child is None:
                continue
            if path in parents or path in BODY_CONTAINERS:
                walk(child, f"{path}.")
            else:  # its own name where that says what it is (layer1, encoder_layer_0), else its path (features_0)
                named = path.replace(".", "_") if name.isdigit() or name in taken else name
                taken.add(named)
                units.append((named, child))

    walk(net, "")
    return units, loose


def find_head(net: nn.Module) -> str:
    """The dotted name of the network's classifier: its last Linear or Conv2d
    (resnet ``fc``, vgg ``classifier.6``, squeezenet ``classifier.1``, vit ``heads.head``).

    Raises:
        ValueError: the network has neither (no classification network of torchvision).
    """
    found = [name for name, m in net.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not found:
        raise ValueError(f"{type(net).__name__} has no Linear or Conv2d layer to replace")
    return found[-1]


def replace_head(net: nn.Module, head: str, num_outputs: int) -> None:
    """Put a new layer of ``num_outputs`` in place of ``head``, shaped like it otherwise."""
    parent, _, child = head.rpartition(".")
    old = net.get_submodule(head)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_outputs, bias=old.bias is not None)
    else:  # squeezenet classifies with a 1x1 convolution, then pools
        new = nn.Conv2d(old.in_channels, num_outputs, old.kernel_size, stride=old.stride, padding=old.padding,
                        bias=old.bias is not None)
    setattr(net.get_submodule(parent) if parent else net, child, new)


def _size_keywords(arch: str, size: Sequence[int] | None) -> dict[str, object]:
    """The keyword a fixed-size family (vit, maxvit) is built with for ``size``.

    Raises:
        ConfigError: vit with images that are not square.
    """
    keyword = size_keyword(arch)
    if keyword is None or size is None:
        return {}
    if keyword == "image_size":
        if size[0] != size[1]:
            raise ConfigError(f"model.arch={arch} reads square images, but they are {size[0]}x{size[1]}: "
                              f"set model.image_size=[{size[0]},{size[0]}].")
        return {keyword: int(size[0])}
    return {keyword: tuple(int(s) for s in size)}


def _aux_keywords(arch: str, trained: bool) -> dict[str, object]:
    """inception_v3's and googlenet's switches: their side branches exist in trained weights
    (and are dropped after loading). ``transform_input`` stays off: the input it would make is
    declared as the weights' statistics (:data:`~dltrain.models.pretrained.TRANSFORMED_INPUT`)."""
    if not reads_transformed_input(arch):
        return {}
    if trained:
        return {"aux_logits": True, "init_weights": False, "transform_input": False}
    return {"aux_logits": False, "init_weights": True, "transform_input": False}


def _drop_aux(net: nn.Module) -> None:
    if getattr(net, "aux_logits", False):
        net.aux_logits = False
        for name in AUX_HEADS:
            if hasattr(net, name):
                setattr(net, name, None)


def _random_net(arch: str, num_outputs: int, size: Sequence[int]) -> nn.Module:
    """``arch`` with random weights and a head of ``num_outputs``, for images of ``size``.

    Raises:
        ConfigError: the family cannot be built for images of ``size`` (maxvit's windows).
    """
    from torchvision.models import get_model

    keywords = {**_aux_keywords(arch, trained=False), **_size_keywords(arch, size)}
    try:
        return get_model(arch, weights=None, num_classes=num_outputs, **keywords)
    except ValueError as err:
        raise ConfigError(f"model.arch={arch} cannot read {size[0]}x{size[1]} images ({first_line(err).rstrip('.')}): "
                          "set model.image_size, e.g. [224,224].") from err


def _trained_net(arch: str, weights: str, source: WeightsEnum | Path, download: bool, size: Sequence[int]) -> nn.Module:
    """``arch`` as its trained weights ``source`` were saved (their head, inception's side
    branches), those weights loaded, the side branches then dropped."""
    from torchvision.models import get_model

    keywords = {**_aux_keywords(arch, trained=True), **_size_keywords(arch, size)}
    net = get_model(arch, weights=None, num_classes=len(arch_weights(arch, source).meta["categories"]), **keywords)
    load_trained(net, arch, weights, source, download)
    _drop_aux(net)
    return net


def _image_data() -> str:
    """``data=a, b or c``: the datasets that give images (their registered input kind)."""
    from dltrain.data import DATASETS

    images = [name for name in DATASETS.names() if DATASETS.facts(name).inputs == "images"]
    return f"data={', '.join(images[:-1])} or {images[-1]}"


def _own_init(options: Mapping[str, Any]) -> str:
    """The summary's footnote for the layers ``init=`` leaves as torchvision drew them."""
    return (f"torchvision's own initialisation of {options.get('arch', 'resnet18')} (the schemes its "
            "code draws, e.g. kaiming_normal for resnet's convolutions; not PyTorch's layer defaults)")


@MODELS.register("torchvision", input_normalization=backbone_inputs, regularization_layers=False,
                 regularization_hint="torchvision's networks keep their own dropout and batch norm",
                 own_init=_own_init)
def build_torchvision(
    input_shape: tuple[int, ...],
    num_outputs: int,
    arch: str = "resnet18",
    weights: str = "none",
    download: bool = True,
    image_size: Sequence[int] | None = None,
    start_weights: bool = True,
) -> Backbone:
    """A torchvision classification network with a head of ``num_outputs``.

    Args:
        input_shape: one example's shape ``(3, H, W)``.
        num_outputs: width of the new head.
        arch: the network's name in ``torchvision.models`` (``resnet18``, ``vit_b_16``, ...).
        weights: ``none`` (random init), a weights name of ``arch`` (``DEFAULT``,
            ``IMAGENET1K_V1``) or a state dict file of ``arch`` with its original head; a
            dltrain checkpoint is loaded by the build step after this, so it builds from random init.
        download: fetch named weights missing from torch's cache (``TORCH_HOME``); False never does.
        image_size: ``(H, W)`` the network reads; None: the weights' size, or with random
            weights the data's own (no resize), except for a network that reads one size
            only (vit, maxvit): its default weights' size, the size it is rebuilt at to
            receive its checkpoint's weights unless it started from other named weights.
        start_weights: False: built to receive a checkpoint's weights (eval, predict, resume):
            ``weights`` only decides the network's shape (a name's size), no file is read and
            nothing downloaded.

    Returns:
        A :class:`Backbone` mapping ``(B, 3, H, W)`` to ``(B, num_outputs)`` logits.

    Raises:
        ConfigError: an unknown ``arch``, weights that do not belong to it or cannot be had,
            or data that is not 3-channel images.
    """
    check_arch(arch)
    if len(input_shape) != 3 or input_shape[0] != 3:
        raise ConfigError(f"model=torchvision reads images of 3 channels, but this data's examples have shape "
                          f"{tuple(input_shape)}: use {_image_data()}.")
    source = resolve_weights(arch, weights, read=start_weights)
    size = read_size(arch, source, image_size)
    reads = size or tuple(input_shape[1:])
    if source is None or not start_weights:
        net = _random_net(arch, num_outputs, reads)
        return Backbone(net, find_head(net), size)
    net = _trained_net(arch, weights, source, download, reads)
    head = find_head(net)
    replace_head(net, head, num_outputs)
    return Backbone(net, head, size)

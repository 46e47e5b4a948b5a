"""torchvision's classification networks and their trained weights, for ``model=torchvision``:
which names exist, which weights ``model.weights`` means, where their file is (torch's cache,
``TORCH_HOME``), whether it may be downloaded (``model.download``), and the input the
weights expect (:func:`backbone_inputs`).

Nothing here downloads unless ``model.download`` allows it and the file is missing; every
file is read with ``weights_only`` (tensors and plain data, never code). torchvision is
imported inside the functions: importing dltrain's models stays cheap.
"""

from __future__ import annotations

import difflib
import functools
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch
from torch import nn

from dltrain.errors import ConfigError, first_line
from dltrain.models.registry import InputNormalization
from dltrain.models.start_weights import differences, few, is_checkpoint_file, read_weights

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

log = logging.getLogger("dltrain")

#: Networks that read one input size only (the others pool any size), and the keyword
#: torchvision builds them with for it.
SIZE_KEYWORDS = {"vit_": "image_size", "maxvit_": "input_size"}
#: A weights name as torchvision writes it: ``IMAGENET1K_V1``, or ``ResNet18_Weights.IMAGENET1K_V1``.
WEIGHTS_NAME = re.compile(r"(\w+_Weights\.)?(\w+)")
#: densenet's old weight names (``denselayer1.norm.1.weight``), renamed as torchvision does on loading.
DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
#: googlenet's and inception_v3's trained weights read ``(x - 0.5) / 0.5`` (their ``transform_input``
#: turns ImageNet-normalised images into it). Declared as the statistics instead, with the
#: network built with ``transform_input=False``: a plain attribute, not among the weights, so a
#: network rebuilt without start weights to receive its checkpoint computes the same function.
TRANSFORMED_INPUT = (0.5, 0.5, 0.5)


@functools.cache
def classification_models() -> tuple[str, ...]:
    """The names of torchvision's classification networks (not its detection, segmentation,
    video or optical-flow ones, which live in submodules)."""
    import torchvision.models

    return tuple(torchvision.models.list_models(module=torchvision.models))


def check_arch(arch: str) -> None:
    """Raises:
    ConfigError: ``arch`` is no torchvision classification network, naming the closest ones."""
    names = classification_models()
    if arch in names:
        return
    close = difflib.get_close_matches(arch.lower(), names, n=4, cutoff=0.6)
    hint = f"the closest are {', '.join(close)}." if close else f"choose one of {', '.join(names)}."
    raise ConfigError(f"model.arch={arch} is not a torchvision classification model: {hint}")


def reads_transformed_input(arch: str) -> bool:
    """Whether ``arch`` is googlenet or inception_v3 (their ``transform_input``, side branches)."""
    from torchvision.models import get_model_builder

    return get_model_builder(arch).__name__ in ("inception_v3", "googlenet")


def resolve_weights(arch: str, weights: str, *, read: bool = True) -> WeightsEnum | Path | None:
    """What ``model.weights`` names for ``arch``: None for random init (``none``, or a dltrain
    checkpoint, which the build step loads after building), the file of a state dict, or
    torchvision's weights of that name (``DEFAULT`` is the best ones it has).

    Without ``read`` (a network rebuilt to receive its checkpoint's weights), no file is looked
    at: a weights name still gives its weights (their size decides a vit's shape), anything
    else None (a file's network was built at the default weights' size, as with None).

    Raises:
        ConfigError: neither a file nor a name of ``arch``'s weights, listing those names.
    """
    if weights == "none":
        return None
    if not read:
        return _named(arch, weights)
    path = Path(weights).expanduser()
    if path.is_file():
        return None if is_checkpoint_file(path) else path
    if WEIGHTS_NAME.fullmatch(weights) is None:
        raise ConfigError(f"model.weights={weights}: no such file: give a state dict of torchvision's {arch}, a "
                          f"dltrain checkpoint, a weights name ({', '.join(weights_names(arch))}) or none.")
    member = _named(arch, weights)
    if member is None:
        raise ConfigError(f"model.weights={weights} is neither a file nor a weights name of model.arch={arch}: "
                          f"choose one of {', '.join(weights_names(arch))}, a file, or none.")
    return member


def _named(arch: str, weights: str) -> WeightsEnum | None:
    """``arch``'s weights called ``weights`` (any case, with or without their enum's name), or None."""
    from torchvision.models import get_model_weights

    found = WEIGHTS_NAME.fullmatch(weights)
    if found is None:
        return None
    enum = get_model_weights(arch)
    by_name = {member.name.lower(): member for member in enum}
    member = enum.DEFAULT if found[2].upper() == "DEFAULT" else by_name.get(found[2].lower())
    return None if found[1] and found[1][:-1] != enum.__name__ else member


def weights_names(arch: str) -> list[str]:
    """``DEFAULT`` and the names of ``arch``'s weights (``IMAGENET1K_V1``, ...)."""
    from torchvision.models import get_model_weights

    return ["DEFAULT", *(member.name for member in get_model_weights(arch))]


def arch_weights(arch: str, source: WeightsEnum | Path) -> WeightsEnum:
    """The torchvision weights whose description applies: the ones named, or for a state
    dict file, ``arch``'s default ones (a file of the same network was trained alike)."""
    if isinstance(source, Path):
        from torchvision.models import get_model_weights

        return get_model_weights(arch).DEFAULT
    return source


def weights_size(arch: str, source: WeightsEnum | Path) -> tuple[int, int]:
    """The ``(height, width)`` the weights were evaluated at (their transforms' crop)."""
    crop = arch_weights(arch, source).transforms().crop_size
    return (crop[0], crop[-1])


def size_keyword(arch: str) -> str | None:
    """The keyword that sets the one input size ``arch`` reads (vit's ``image_size``), or None."""
    return next((keyword for prefix, keyword in SIZE_KEYWORDS.items() if arch.startswith(prefix)), None)


def read_size(arch: str, source: WeightsEnum | Path | None, image_size: Sequence[int] | None) -> tuple[int, int] | None:
    """The ``(height, width)`` the network reads: ``image_size``, else the weights' size; with
    random weights the data's own (None), except for a network that reads one size only: its
    default weights' size. A model rebuilt to receive its checkpoint's weights gets no start
    weights (:func:`~dltrain.build.build_model`), so that size is also the one its
    checkpoint's position embedding was made for whenever it started from default weights.

    Raises:
        ConfigError: ``image_size`` is not the size trained weights of a one-size network read.
    """
    if image_size:
        size = (int(image_size[0]), int(image_size[1]))
        if source is not None and size_keyword(arch) and size != weights_size(arch, source):
            height, width = weights_size(arch, source)
            raise ConfigError(f"model.arch={arch} with {_weights_label(arch, source)} reads {height}x{width} images, "
                              f"not {size[0]}x{size[1]}: leave model.image_size null (the images are resized).")
        return size
    if source is None and size_keyword(arch) is None:
        return None
    if source is None:
        from torchvision.models import get_model_weights

        source = get_model_weights(arch).DEFAULT
    return weights_size(arch, source)


def _weights_label(arch: str, source: WeightsEnum | Path) -> str:
    """``IMAGENET1K_V1``, or for a state dict file ``its default weights' DEFAULT name``."""
    described = arch_weights(arch, source)
    return f"a state dict file (as {described.name})" if isinstance(source, Path) else described.name


def cache_file(weights: WeightsEnum) -> Path:
    """Where torch's cache keeps the file of ``weights`` (``$TORCH_HOME/hub/checkpoints/...``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def load_trained(net: nn.Module, arch: str, weights: str, source: WeightsEnum | Path, download: bool) -> None:
    """Load the trained weights ``source`` into ``net`` (built with their original head), strictly.

    Raises:
        ConfigError: the file is missing and may not be downloaded, cannot be downloaded or
            read, or does not fit ``net``; one line naming the file and what to do.
    """
    if isinstance(source, Path):
        state = read_weights(source)
    else:
        state = _named_state_dict(source, weights, download)
    state = {DENSENET_OLD_KEY.sub(r"\1\2", key): value for key, value in state.items()}
    problem = _mismatch(net.state_dict(), state)
    if problem:
        where = str(source) if isinstance(source, Path) else str(cache_file(source))
        classes = len(arch_weights(arch, source).meta["categories"])
        raise ConfigError(f"model.weights={weights}: {where} does not fit torchvision's {arch} ({problem}): give "
                          f"a state dict of {arch} with its original {classes}-class head, or a dltrain checkpoint.")
    net.load_state_dict(state)


def _named_state_dict(source: WeightsEnum, weights: str, download: bool) -> dict[str, torch.Tensor]:
    """torchvision's weights ``source`` from torch's cache, downloaded there first when missing and allowed."""
    file = cache_file(source)
    if not file.is_file():
        check_obtainable(source, weights, download)
        return _download(source, file, weights)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure here is the file's
        raise ConfigError(f"model.weights={weights}: torch's cache file {file} cannot be read "
                          f"({first_line(err).rstrip('.')}): delete it (it is downloaded again) or put an intact "
                          f"copy from {source.url} there.") from err
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ConfigError(f"model.weights={weights}: torch's cache file {file} is not a state dict of tensors: "
                          f"delete it (it is downloaded again) or put the file from {source.url} there.")
    return state


def check_obtainable(source: WeightsEnum, weights: str, download: bool) -> None:
    """Raises:
    ConfigError: the file of ``source`` is not in torch's cache and ``model.download=false``,
        naming the file, the folder to put it in and where it comes from."""
    file = cache_file(source)
    if not download and not file.is_file():
        raise ConfigError(f"model.weights={weights}: {file.name} ({type(source).__name__}.{source.name}) is not in "
                          f"torch's cache {file.parent} and model.download=false: put the file there (from "
                          f"{source.url}), set TORCH_HOME to the folder above hub/ that holds it, or allow "
                          "model.download=true.")


def _download(source: WeightsEnum, file: Path, weights: str) -> dict[str, torch.Tensor]:
    """Download the weights into torch's cache (its hash checked) and read them with ``weights_only``."""
    log.info("downloading %s into %s", source.url, file.parent)
    try:
        return torch.hub.load_state_dict_from_url(source.url, model_dir=str(file.parent), map_location="cpu",
                                                  progress=False, check_hash=True, weights_only=True)
    except Exception as err:  # noqa: BLE001 - no network, a proxy, a full disk, a bad hash: all said in one line
        raise ConfigError(f"model.weights={weights}: {file.name} could not be downloaded from {source.url} "
                          f"({first_line(err).rstrip('.')}): put it in {file.parent} by hand (TORCH_HOME sets the "
                          "folder), or use model.weights=none.") from err


def _mismatch(own: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> str:
    """The first keys where a state dict does not fit a network's: missing, extra, or of another shape."""
    return differences(own, given).describe(missing="missing", extra="unexpected",
                                            shapes="other shape (file vs network)")


def backbone_inputs(options: Mapping[str, Any]) -> InputNormalization:
    """The input ``model=torchvision`` with these options reads (its ``input_normalization``
    fact): the statistics and size of the weights named; of ``arch``'s default weights for a
    state dict file; of a dltrain checkpoint's data record; fitted on the training split for
    random init. Always 3 channels. Downloads nothing and builds no network; the weights' file,
    where it is there, is read once, so a damaged one stops the run here.

    The build step asks before any data is read, so what cannot work stops the run first.

    Raises:
        ConfigError: an unknown ``arch``, weights that are neither a file nor its name, named
            weights missing from torch's cache with ``model.download=false``, or a weights file
            that cannot be read.
    """
    arch, weights = str(options.get("arch", "resnet18")), str(options.get("weights", "none"))
    check_arch(arch)
    source = resolve_weights(arch, weights)
    size = read_size(arch, source, options.get("image_size"))
    if source is None:
        if weights != "none":  # a dltrain checkpoint: the inputs its weights were trained on
            return _checkpoint_inputs(Path(weights).expanduser(), size)
        return InputNormalization(size=size, channels=3, source="fitted")
    _check_readable(source, weights, bool(options.get("download", True)))
    described = arch_weights(arch, source)
    transforms = described.transforms()
    name = f"{type(described).__name__}.{described.name}"
    mean, std = tuple(transforms.mean), tuple(transforms.std)
    if reads_transformed_input(arch):
        mean = std = TRANSFORMED_INPUT
    return InputNormalization(
        mean=mean, std=std, size=size, channels=3,
        source=name if not isinstance(source, Path) else f"the statistics of {name}, {arch}'s default weights "
                                                            f"(model.weights is a file)")


def _check_readable(source: WeightsEnum | Path, weights: str, download: bool) -> None:
    """Read the weights' file as the build will (named ones: when in torch's cache), to refuse
    a missing or damaged one before any data is read.

    Raises:
        ConfigError: as :func:`load_trained` would, naming the file and what to do.
    """
    if isinstance(source, Path):
        read_weights(source)
    elif cache_file(source).is_file():
        _named_state_dict(source, weights, download)
    else:
        check_obtainable(source, weights, download)


def _checkpoint_inputs(path: Path, size: tuple[int, int] | None) -> InputNormalization:
    """The normalisation a dltrain checkpoint's data record holds, and the size its network
    read: the size its resize step resized to (``resize.size`` among its weights), else its
    data's (a network that resized nothing).

    Raises:
        UserError: the data record is not what dltrain writes (the file was edited).
    """
    from dltrain.config.trust import check_data_record
    from dltrain.training.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    record = state.get("data") or {}
    check_data_record(path, record)  # an edited record is refused in one line, not read
    scaling = record.get("normalization") or {}
    shape = record.get("input_shape") or []
    resized = state["model"].get("resize.size")
    if size is None and resized is not None and bool(resized.all()):
        size = (int(resized[0]), int(resized[1]))
    mean, std = scaling.get("mean"), scaling.get("std")
    fits = mean is not None and len(mean) in (1, 3)
    return InputNormalization(
        mean=tuple(mean) * (3 // len(mean)) if fits else None,
        std=tuple(std) * (3 // len(std)) if fits else None,
        size=size or (tuple(shape[1:3]) if len(shape) == 3 else None), channels=3,
        source=f"the data record of checkpoint {path}" if fits else "fitted")

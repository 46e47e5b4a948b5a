"""Starting a model from trained weights (``model.weights``): reading a dltrain checkpoint's or a
state dict's tensors safely, loading those that fit, and ``init=`` where nothing was loaded (the
head), with the summary's Init labels. What freezes and how a model divides into stages is
:mod:`dltrain.models.transfer`'s.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from dltrain.errors import ConfigError, first_line
from dltrain.models.encoder_weights import EncoderStart, encoder_start, is_autoencoder
from dltrain.models.transfer import TransferParts, parts
from dltrain.training.checkpoint import CHECKPOINT_FORMAT, verify_checksums


class Differences(NamedTuple):
    """Where a state dict does not fit a model's, key by key (see :func:`differences`).

    Attributes:
        missing: the model's keys the state dict lacks.
        extra: the state dict's keys the model lacks.
        shapes: ``"key (given shape) vs (model's shape)"`` of the tensors of another shape.
    """

    missing: list[str]
    extra: list[str]
    shapes: list[str]

    def describe(self, **labels: str) -> str:
        """``"label keys; ..."`` for each non-empty list named in ``labels`` (``missing=``,
        ``extra=``, ``shapes=``), in the order given; "" when none differs."""
        return "; ".join(f"{label} {few(getattr(self, name))}" for name, label in labels.items()
                         if getattr(self, name))


def differences(own: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> Differences:
    """How the state dict ``given`` differs from a model's ``own``; every caller words it for its file."""
    return Differences([k for k in own if k not in given], [k for k in given if k not in own],
                       [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in given.items()
                        if k in own and v.shape != own[k].shape])


def few(items: Sequence[str], limit: int = 3) -> str:
    """The first ``limit`` of ``items``, and how many more: keys in a one-line message."""
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


class StartWeights(NamedTuple):
    """What :func:`load_start_weights` did.

    Attributes:
        loaded: the names of the model's tensors that came from the file.
        warning: one line listing the tensors skipped (another shape), the file's tensors the
            model has not and the model's the file has not; None when every tensor matched.
    """

    loaded: list[str]
    warning: str | None
    sources: dict[str, str] | None = None  # a layer -> the autoencoder's encoder layer it came from


def is_checkpoint_file(path: str | Path) -> bool:
    """Whether ``path`` is a file holding a dltrain checkpoint (memory-mapped: cheap to ask)."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - unreadable: whoever loads it says why
        return False
    return isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT


def read_weights(path: str | Path, key: str = "model.weights") -> dict[str, torch.Tensor]:
    """The tensors of a dltrain checkpoint's model, or of a plain state dict, read with
    ``weights_only`` (never unpickling code) after checking the file's checksums.

    Raises:
        ConfigError: naming ``key`` and the file: missing, damaged, holding code, or neither.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}={path}: no such file: give a dltrain checkpoint (a best.pt or last.pt) or a "
                          "state dict saved with torch.save(model.state_dict(), path), or none.")
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"{key}={path} cannot be loaded: it is empty, truncated or not written by torch.save.")
    try:
        verify_checksums(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure here is the file's
        reason = first_line(err)
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            reason = "it holds Python objects other than tensors and plain data, so it is refused"
        raise ConfigError(f"{key}={path} cannot be loaded: {reason.rstrip('.')}.") from err
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        state = state.get("model")
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise ConfigError(f"{key}={path} is neither a dltrain checkpoint nor a state dict of tensors: give a "
                          "best.pt or last.pt dltrain wrote, or torch.save(model.state_dict(), path).")
    return state


def load_start_weights(model: nn.Module, path: str | Path, key: str = "model.weights",
                       model_name: str = "this model") -> StartWeights:
    """Load the tensors of ``path`` (:func:`read_weights`) that fit ``model``: same name and
    shape. A head sized for another number of outputs is skipped, and listed in the warning.

    Raises:
        ConfigError: the file cannot be read, or not one of its tensors fits the model.
    """
    weights = read_weights(path, key)
    own = model.state_dict()
    if is_autoencoder(weights) and not is_autoencoder(own):  # its encoder starts the model's first layers
        return _load_encoder(model, encoder_start(model, weights, f"{key}={path}", model_name), f"{key}={path}")
    fits = {k: v for k, v in weights.items() if k in own and v.shape == own[k].shape}
    if not fits:
        raise ConfigError(f"{key}={path}: none of its {len(weights)} tensors ({few(list(weights))}) fits "
                          f"model={model_name} ({few(list(own))}): start from the weights of the same architecture.")
    _check_kinds(fits, own, f"{key}={path}")
    model.load_state_dict(fits, strict=False)
    problems = differences(own, weights).describe(shapes="skipped (shape in the file vs the model)",
                                                  extra="not in the model", missing="not in the file, kept as built")
    warning = (f"{key}={path}: loaded {len(fits)} of the model's {len(own)} tensors; {problems}"
               if problems else None)
    return StartWeights(list(fits), warning)


def _check_kinds(loading: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], where: str) -> None:
    """Refuse tensors of another kind than the model's (integer or complex weights): loading
    would cast them silently into numbers nothing trained.

    Raises:
        ConfigError: naming the file and a few such tensors.
    """
    wrong = [f"{k} ({str(v.dtype).removeprefix('torch.')})" for k, v in loading.items()
             if v.is_complex() or v.is_floating_point() != own[k].is_floating_point()]
    if wrong:
        raise ConfigError(f"{where}: its tensors {few(wrong)} are not of the model's kind (floating-point "
                          "weights, integer counters): the file was not written by training; give one that was.")


def _load_encoder(model: nn.Module, start: EncoderStart, where: str) -> StartWeights:
    """Load an autoencoder's encoder (:func:`~dltrain.models.encoder_weights.encoder_start`) into
    ``model``; the warning names the encoder's layers the model had no room for."""
    _check_kinds(start.weights, model.state_dict(), where)
    model.load_state_dict(start.weights, strict=False)
    taken = len(start.sources)
    warning = (f"{where}: the model's {taken} layer(s) before its head took the encoder's first {taken}; its other "
               f"layers ({few(start.unused)}) were not loaded" if start.unused else None)
    return StartWeights(list(start.weights), warning, start.sources)


def init_head(model: nn.Module, found: TransferParts | None, init: str,
              apply: Callable[[nn.Module], dict[str, str]], weights: str) -> dict[str, str]:
    """``init=`` on the head alone, once the rest of ``model`` holds the weights ``weights`` named:
    ``apply`` initialises a module and returns its labels (``dltrain.init.apply_init``); they
    come back under the model's module names (the summary's Init column).

    Raises:
        ConfigError: a scheme other than ``default`` for a model whose head dltrain cannot tell
            apart: it would overwrite the weights just loaded.
    """
    if found is None:
        if init != "default":
            raise ConfigError(f"init={init} would overwrite the weights model.weights={weights} loaded, and this "
                              "model has no head dltrain can tell apart to initialise alone: use init=default.")
        return {}
    prefix = next(name for name, module in model.named_modules() if module is found.head)
    return {".".join(n for n in (prefix, name) if n): label for name, label in apply(found.head).items()}


def pretrained_labels(model: nn.Module, found: TransferParts | None, loaded: list[str] | None) -> dict[str, str]:
    """``pretrained`` for each module whose tensors all came from the start weights: those
    named in ``loaded`` (a head among them when the file's fitted it), or, for ``loaded`` None,
    every module outside the head (loaded by the model's builder, which makes a new head)."""
    head = {id(m) for m in found.head.modules()} if found is not None and loaded is None else set()
    labels = {}
    for name, module in model.named_modules():
        tensors = [f"{name}.{key}" if name else key for key, _ in module.named_parameters(recurse=False)]
        if not tensors or id(module) in head:
            continue
        if loaded is None or all(t in loaded for t in tensors):
            labels[name] = "pretrained"
    return labels


def head_loaded(model: nn.Module, found: TransferParts | None, loaded: list[str] | None) -> bool:
    """Whether every tensor of the head came from the start weights (a file with as many outputs
    as this data): ``init=`` then has nothing of its own to draw."""
    if found is None or loaded is None:
        return False
    prefix = next(name for name, module in model.named_modules() if module is found.head)
    names = [".".join(n for n in (prefix, key) if n) for key in found.head.state_dict()]
    return bool(names) and all(name in loaded for name in names)


def start_model(model: nn.Module, weights: str, *, read_here: bool, init: str,
                apply: Callable[[nn.Module], dict[str, str]], model_name: str,
                warnings: list[str]) -> dict[str, str]:
    """Start ``model`` from ``weights``, then ``init=init`` where nothing was loaded: the head
    alone, and not even the head when the file fitted it too (a warning says so for a scheme
    other than ``default``: ``init=`` never overwrites loaded weights).

    Args:
        read_here: whether the tensors of ``weights`` are loaded here (:func:`load_start_weights`);
            False: the model's builder loaded them into every layer but its new head.
        apply: initialises a module with ``init`` and returns its labels (``dltrain.init.apply_init``).
        warnings: the run's warnings, to which the tensors skipped and the init not drawn are added.

    Returns:
        The summary's Init labels: ``pretrained`` for the loaded layers, the scheme for the rest.
    """
    loaded = None  # loaded by the model's builder: every layer but the head
    if read_here:
        start = load_start_weights(model, weights, model_name=model_name)
        loaded = start.loaded
        if start.warning:
            warnings.append(start.warning)
    found = parts(model)
    labels = pretrained_labels(model, found, loaded)
    if read_here and start.sources:  # which layer of the autoencoder's encoder each one holds
        labels |= {name: f"pretrained ({source})" for name, source in start.sources.items() if name in labels}
    if head_loaded(model, found, loaded):  # nothing left to draw
        if init != "default":
            warnings.append(f"init={init} draws nothing: model.weights={weights} fitted the head too (as many "
                            "outputs as this data), so every layer keeps the loaded weights")
        return labels
    return labels | init_head(model, found, init, apply, weights)


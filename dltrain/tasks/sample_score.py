"""A GAN's sample score (``task.scorer``): a classifier that dltrain trained on the real images
judges the generated ones, without downloading anything (no Inception network).

For the classifier's probabilities ``p(y|x)`` of ``N`` generated images over ``K`` classes:

* ``sample_confident``: the share of images whose most likely class has probability at least
  ``task.confidence`` (does each image look like *some* class?);
* ``sample_classes``: the normalised entropy of the histogram of predicted classes,
  ``H(counts / N) / log K``: 1 when every class is predicted equally often, 0 when all images
  are one class (does the generator make *every* class, or collapse onto a few?);
* ``sample_score``: the classifier-based Inception Score ``exp(mean_x KL(p(y|x) || p(y)))``,
  with ``p(y)`` the mean of ``p(y|x)`` over the images: high when each image is confidently one
  class *and* the classes are spread; it lies between 1 and ``K``.

The classifier is a ``best.pt``/``last.pt`` of a dltrain run, rebuilt through the project's
safe loader (:func:`~dltrain.inference.restore.load_model`: weights only, no code from the file),
and the generated images go through the preprocessing its checkpoint recorded, as the images
of a PNG would in ``dltrain-predict``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dltrain.errors import ConfigError, UserError


def score_probabilities(probs: torch.Tensor, confidence: float) -> dict[str, float]:
    """The three numbers of the module's docstring for class probabilities ``probs`` ``(N, K)``.

    Args:
        probs: each row a probability distribution over ``K >= 2`` classes.
        confidence: the probability at or above which an image counts as confidently classified.
    """
    # In the probabilities' own precision: a float32 0.9 counts as 0.9, not as 0.8999999762
    confident = (probs.detach().max(dim=1).values >= confidence).double().mean()
    p = probs.detach().double()  # (N, K)
    n, k = p.shape
    share = torch.bincount(p.argmax(dim=1), minlength=k).double() / n  # (K,)
    spread = -torch.xlogy(share, share).sum() / math.log(k) + 0.0  # + 0.0: one class is 0, not -0
    marginal = p.mean(dim=0, keepdim=True)  # (1, K): p(y)
    kl = (torch.xlogy(p, p) - torch.xlogy(p, marginal)).sum(dim=1)  # (N,): 0 log 0 counts as 0
    return {"sample_score": float(kl.mean().exp()), "sample_confident": float(confident),
            "sample_classes": float(spread)}


@dataclass
class Scorer:
    """A dltrain classifier that scores generated images (see the module's docstring).

    Attributes:
        model: the classifier, in eval mode, on the run's device.
        prepare: uint8 images ``(N, C, H, W)`` -> the classifier's inputs (its recorded preprocessing).
        record: its checkpoint's data record (task, classes, input shape).
        confidence: ``task.confidence``.
        path: its checkpoint file.
    """

    model: nn.Module
    prepare: Any
    record: dict[str, Any]
    confidence: float
    path: Path

    @torch.no_grad()
    def probabilities(self, generated: torch.Tensor) -> torch.Tensor:
        """Generated images ``(N, C, H, W)`` in [-1, 1] -> the classifier's ``p(y|x)`` ``(N, K)``
        on the CPU. The images are quantised to bytes first, as a PNG of them holds them."""
        from dltrain.inference.predict import model_result

        device = next(self.model.parameters()).device
        raw = ((generated.detach().float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        x = self.prepare(raw.cpu()).to(device)
        return model_result(self.model(x).float().cpu(), self.record)

    def score(self, generated: torch.Tensor) -> dict[str, float]:
        """:func:`score_probabilities` of the generated images ``(N, C, H, W)`` in [-1, 1]."""
        return score_probabilities(self.probabilities(generated), self.confidence)


def load_scorer(path: str | Path, image_shape: tuple[int, ...], num_classes: int | None, *,
                device: torch.device, confidence: float = 0.9, target: str | None = None,
                trust_code: bool = False) -> Scorer:
    """The classifier of ``task.scorer``, checked against the images the GAN makes.

    Args:
        path: a dltrain classifier's checkpoint (``best.pt`` or ``last.pt``).
        image_shape: the GAN's images ``(C, H, W)``.
        num_classes: the classes of the GAN's data, when it has some (None: not checked).
        device: where the classifier runs (the run's device).
        confidence: ``task.confidence``.
        target, trust_code: what a ``model=custom`` checkpoint may import (refused by default).

    Raises:
        ConfigError: one line naming ``task.scorer``: the file cannot be read or rebuilt, is not
            a classifier of images, or reads images of another shape or another number of classes.
    """
    from dltrain.data import preprocessing
    from dltrain.inference.restore import load_model

    try:
        # Rebuilding it initialises its layers before its weights are loaded: from a fork of the CPU
        # generator, so the run's own random numbers (its model's initialisation, next) are untouched.
        with torch.random.fork_rng(devices=[]):
            restored = load_model(path, "cpu", target=target, trust_code=trust_code)
        restored.model.to(device)
        prep = preprocessing.from_record(restored.data, restored.cfg.data, restored.path)
    except UserError as err:
        if _names_code(path):  # the tools' ways to allow it (model._target_=, trust_code=) are no keys of a run's
            raise ConfigError(f"task.scorer={path} is a model=custom classifier, whose code dltrain never runs from "
                              "a file it is given: give task.scorer a classifier of a registered model (model=cnn, "
                              "mlp, ...).") from None
        raise ConfigError(f"task.scorer={path}: {err}") from None
    record = restored.data
    kind = preprocessing.kind_of(record)
    fix = "give task.scorer a classifier dltrain trained on the GAN's data"
    if kind not in ("images", "ink_counts") or record.get("task") not in ("binary", "multiclass"):
        raise ConfigError(f"task.scorer={path} is not a classifier of images (data={record.get('dataset')}, "
                          f"task {record.get('task')}): {fix}, or leave task.scorer unset.")
    reads = (1 if prep.color == "grayscale" else 3, *prep.image_size)
    if tuple(reads) != tuple(image_shape):
        raise ConfigError(f"task.scorer={path} reads {_shape(reads)} images and the GAN makes {_shape(image_shape)} "
                          f"ones: {fix} (same image size and colour).")
    classes = _num_classes(record)
    if num_classes is not None and classes != num_classes:
        raise ConfigError(f"task.scorer={path} tells {classes} classes apart and the GAN's data has {num_classes}: "
                          f"{fix}.")
    prepare = prep.apply if kind == "images" else (lambda raw: prep.apply(prep.counts(raw)))  # ink counts (digits)
    return Scorer(restored.model, prepare, dict(record), confidence, Path(path))


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of the file's bytes, hex: what identifies a run's ``task.scorer`` (read in
    blocks, once per run start or evaluation).

    Raises:
        ConfigError: the file cannot be read, naming ``task.scorer``.
    """
    digest = hashlib.sha256()
    try:
        with Path(path).open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise ConfigError(f"task.scorer={path} cannot be read ({err.strerror or err}): give task.scorer a "
                          "readable dltrain classifier's checkpoint.") from None
    return digest.hexdigest()


def _names_code(path: str | Path) -> bool:
    """Whether ``path`` is a readable checkpoint of a model whose code its config names (``model=custom``)."""
    from dltrain.models.registry import MODELS
    from dltrain.training.checkpoint import load_checkpoint

    try:
        config = load_checkpoint(path, map_location="cpu").get("config")
    except UserError:
        return False
    name = config.get("model", {}).get("name") if isinstance(config, dict) and isinstance(config.get("model"), dict) \
        else None
    return isinstance(name, str) and name in MODELS and MODELS.facts(name).user_code


def _num_classes(record: dict[str, Any]) -> int:
    """The classes a classifier's data record holds (a binary one with one logit has two)."""
    names = record.get("class_names")
    return len(names) if names else max(2, int(record.get("num_outputs") or 2))


def _shape(shape: tuple[int, ...]) -> str:
    c, h, w = shape
    return f"{h}x{w} {'grayscale' if c == 1 else f'{c}-channel'}"

"""What a GAN run does with its generator at the end of each epoch: ``samples/epoch-NNN.png``
from the fixed latent batch and, with ``task.scorer``, the sample score in the epoch's row
(``val_sample_score``, ``val_sample_confident``, ``val_sample_classes``; see
:mod:`dltrain.tasks.sample_score`), which early stopping and ``best.pt`` can follow.

Neither changes the training: the generator runs in eval mode (batch norm's running
statistics, no update of them) without gradients, the scored latent vectors come from a
private generator of random numbers, and no random number the run draws is touched, so a run
with samples and a score trains the same weights as one without, and resumes exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dltrain.errors import ConfigError
from dltrain.files import copy_atomically
from dltrain.report.gan_samples import SAMPLES_DIR, epoch_file, to_pixels, write_grid
from dltrain.tasks.gan_metrics import SAMPLE_METRICS
from dltrain.tasks.sample_score import Scorer, file_sha256, load_scorer

if TYPE_CHECKING:
    from dltrain.data import DataSplits

#: The seed of the latent vectors scored: the same vectors every epoch and in every run (of a
#: latent size), so that scores compare across epochs and runs.
SCORE_SEED = 0
#: Latent vectors generated and scored at once.
CHUNK = 500

#: Said once (log and summary.json's warnings) by a GAN run that has no scorer.
NO_SCORER = ("task=gan without task.scorer: no sample score to follow, so no early stopping and no best.pt; the "
             "last epoch's weights are tested (give task.scorer=<a dltrain classifier's best.pt trained on the real "
             "images> to follow the score)")


def watched(scores: bool, monitor: str, mode: str) -> tuple[str | None, str, str | None]:
    """What a GAN's early stopping and ``best.pt`` follow (see :meth:`~dltrain.tasks.base.Task.watched`).

    The default monitor, ``val_loss`` (D's plus G's losses), says little of the samples'
    quality: with a scorer the run watches ``val_sample_score`` (the higher the better) in its
    place; without one, nothing (no early stopping; the last epoch is tested), said once. Any
    other monitor is as configured, a ``val_sample_*`` one ``max`` for ``mode=auto``.

    Args:
        scores: whether the run has ``task.scorer``.
        monitor, mode: ``trainer.early_stopping.monitor`` and ``.mode``.

    Raises:
        ConfigError: a ``val_sample_*`` monitor without ``task.scorer``.
    """
    sample = monitor.removeprefix("val_") in SAMPLE_METRICS
    if sample and not scores:
        raise ConfigError(f"trainer.early_stopping.monitor={monitor} needs task.scorer (a dltrain classifier of the "
                          "real images scores the samples): give task.scorer=<its checkpoints/best.pt>, or monitor "
                          "another metric.")
    if monitor == "val_loss":
        return ("val_sample_score", "max", None) if scores else (None, mode, NO_SCORER)
    return monitor, "max" if sample and mode == "auto" else mode, None


def carry_samples(source: Path, target: Path | None, epoch: int) -> None:
    """A run resumed into another directory: copy the grids of epochs ``1..epoch`` that the run it
    continues (``source``) wrote into ``target`` (None, or the same directory: nothing to do)."""
    if target is None or not (source / SAMPLES_DIR).is_dir() or source.resolve() == target.resolve():
        return
    for old in sorted((source / SAMPLES_DIR).glob("epoch-*.png")):
        number = old.stem.removeprefix("epoch-")
        if number.isdigit() and int(number) <= epoch and old.is_file():  # later ones: epochs trained again now
            copy_atomically(old, epoch_file(target, int(number)))


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode without gradients, its own mode restored afterwards."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was_training)


class SampleWatch:
    """The GAN's per-epoch samples and score.

    Args:
        scorer: ``task.scorer``, a dltrain classifier's checkpoint; None scores nothing.
        confidence: ``task.confidence``: the probability at which an image counts as confidently classified.
        score_samples: ``task.score_samples``: how many generated images are scored.
    """

    def __init__(self, scorer: str | None = None, confidence: float = 0.9, score_samples: int = 1000) -> None:
        self.scorer_path, self.confidence, self.score_samples = scorer, confidence, score_samples
        self.scorer: Scorer | None = None
        self._latents: torch.Tensor | None = None
        self._sha256: str | None = None

    @property
    def scores(self) -> bool:
        """Whether the run has a scorer (``task.scorer`` given)."""
        return self.scorer_path is not None

    def check(self, data: DataSplits) -> None:
        """Load the scorer (on the CPU; it follows the generator to its device) and check it
        against the GAN's images and classes.

        Raises:
            ConfigError: one line naming ``task.scorer``.
        """
        if self.scorer_path is None:
            return
        classes = len(data.class_names) if data.task == "multiclass" and data.class_names else None
        self.scorer = load_scorer(self.scorer_path, tuple(data.input_shape), classes, device=torch.device("cpu"),
                                  confidence=self.confidence)
        self.identity()  # what a checkpoint records of the file, read once it loaded (a missing one: said above)

    def identity(self) -> str | None:
        """The scorer file's SHA-256 (hex), read once (at the run's start, or dltrain-eval's);
        None without a scorer. A checkpoint records it, so that a resume or dltrain-eval can tell
        a replaced file from the one the run scored with.

        Raises:
            ConfigError: the file cannot be read.
        """
        if self.scorer_path is not None and self._sha256 is None:
            self._sha256 = file_sha256(self.scorer_path)
        return self._sha256 if self.scorer_path is not None else None

    def changed(self, recorded: str | None) -> str | None:
        """How the scorer file differs from the one a run recorded (``recorded``: its SHA-256),
        in words after ``task.scorer=<file>``; None when it is the same, when nothing was recorded
        (a checkpoint from before it was, or a run without a scorer), or when there is no file to
        compare (:meth:`check` says so)."""
        if recorded is None or self.scorer_path is None or not Path(self.scorer_path).is_file():
            return None
        now = self.identity()
        if now == recorded:
            return None
        return (f"changed since the run started (sha256 {recorded[:12]}... recorded, {now[:12]}... now), so its "
                "scores would not compare with the run's")

    def end_epoch(self, model: nn.Module, latents: torch.Tensor, epoch: int, row: dict[str, Any],
                  run_dir: Path | None, is_main: bool) -> None:
        """Write ``samples/epoch-NNN.png`` (rank 0) and add the score to ``row`` (every rank).

        Args:
            model: the GAN (its ``generator`` maps ``(N, latent_size)`` to images in [-1, 1]).
            latents: the fixed latent batch ``(num_samples, latent_size)``.
            epoch: the epoch's number.
            row: the epoch's row of metrics, added to in place.
            run_dir: the run directory; None writes nothing (a run without one).
            is_main: whether this rank writes files.
        """
        if is_main and run_dir is not None:
            with evaluating(model.generator) as generator:
                images = generator(latents.to(_device(generator)))
            write_grid(epoch_file(run_dir, epoch), to_pixels(images))
        if self.scorer is not None:
            row.update({f"val_{name}": value for name, value in self.score(model).items()})

    def score(self, model: nn.Module) -> dict[str, float]:
        """The scorer's numbers for ``task.score_samples`` images of ``model``'s generator (empty
        without a scorer)."""
        if self.scorer is None:
            return {}
        device = _device(model.generator)
        self.scorer.model.to(device)
        latents = self._score_latents(model.latent_size)
        with evaluating(model.generator) as generator:
            images = torch.cat([generator(chunk.to(device)) for chunk in latents.split(CHUNK)])
        scores = self.scorer.score(images)
        return {name: scores[name] for name in SAMPLE_METRICS}

    def _score_latents(self, size: int) -> torch.Tensor:
        """The scored latent vectors ``(score_samples, size)`` on the CPU, drawn once from
        :data:`SCORE_SEED` (standard normal, as the training's)."""
        if self._latents is None or self._latents.shape[1] != size:
            private = torch.Generator().manual_seed(SCORE_SEED)  # the run's generators are not touched
            self._latents = torch.randn(self.score_samples, size, generator=private)
        return self._latents


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


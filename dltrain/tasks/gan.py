"""``task=gan``: adversarial training of ``model=dcgan`` (a generator and a discriminator).

Each batch of real images, D is updated to tell them from generated ones, then G to make D
call its images real (the non-saturating loss), each network with its own Adam (the paper's
lr 2e-4 and betas (0.5, 0.999) by default): the generator's is the run's optimizer (its LR is
the one reported), the discriminator's is this task's state, saved in every checkpoint with the
fixed latent batch the samples are drawn from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from dltrain.errors import ConfigError
from dltrain.losses import Loss
from dltrain.tasks.base import TASKS, BadTaskState, Task
from dltrain.tasks.gan_metrics import SAMPLE_METRICS
from dltrain.tasks.gan_state import (
    D_OPTIMIZER,
    LATENTS,
    SCORER_SHA256,
    checked_latents,
    checked_sha256,
    load_adam_state,
)
from dltrain.tasks.gan_step import EvalLatents, GanStep, adversarial_losses
from dltrain.tasks.sample_watch import SampleWatch, carry_samples, watched

if TYPE_CHECKING:
    from torch import nn

    from dltrain.data import DataSplits
    from dltrain.training.profiler import Profiler
    from dltrain.training.step import StepOptions


class AdversarialLoss(Loss):
    """BCE on D's logit (one per image): what check_model sizes D's output by; the step
    computes D's and G's losses from it with their own targets."""

    output_width = 1

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(output, target.float().reshape(output.shape))


class GanTask(Task):
    """``task=gan`` (see the module's docstring).

    Attributes:
        latents: the fixed latent batch ``(num_samples, latent_size)`` on the run's device,
            drawn once from the run's seed (None before :meth:`make_step`): every epoch's samples
            come from it, so they show one generator's progress on the same inputs.
        discriminator_optimizer: D's Adam (None before :meth:`make_optimizer`).
        samples: each epoch's ``samples/epoch-NNN.png`` and, with ``task.scorer``, the sample score.
    """

    name = "gan"
    writes_predictions = False  # D's logits on test images are no predictions of their labels

    def __init__(self, label_smoothing: float = 0.0, num_samples: int = 64,
                 generator: Mapping[str, Any] | None = None, discriminator: Mapping[str, Any] | None = None,
                 scorer: str | None = None, confidence: float = 0.9, score_samples: int = 1000) -> None:
        super().__init__()
        self.samples = SampleWatch(scorer, confidence, score_samples)  # samples/ and the score, each epoch
        self.label_smoothing, self.num_samples = label_smoothing, num_samples
        self.adam = {"generator": dict(generator or {}), "discriminator": dict(discriminator or {})}
        self.to_range: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.latents: torch.Tensor | None = None
        self.discriminator_optimizer: torch.optim.Optimizer | None = None
        self.eval_latents = EvalLatents()  # dltrain-eval's (the run's step has its own)

    def check(self, data: DataSplits) -> None:
        pixels = getattr(data.preprocessing, "pixels", None)
        if pixels is None or len(data.input_shape) != 3:  # check_task_fits refused such data by name already
            raise ConfigError("task=gan generates images, and this data gives none: use image data (data=digits, "
                              "mnist, ...).")
        # The data's model inputs back to pixels in [0, 1], then to the generator's Tanh range: an
        # affine map per value (the inverse of the standardisation), found once so that a step
        # makes no new tensor on the host (pixels() would copy the statistics to the device).
        probe = torch.zeros((1, *data.input_shape))  # (1, C, H, W)
        shift = pixels(probe)
        self._range_map = ((pixels(probe + 1) - shift) * 2, shift * 2 - 1)
        self.to_range = self._to_range
        self.samples.check(data)  # task.scorer: loaded and checked against these images

    def check_resumed(self, state: Any) -> None:
        """A resume scores with the file the run scored with: one whose content changed since
        (its SHA-256 is not the checkpoint's) is refused before anything is built or written, as
        is a recorded SHA-256 that is none (:class:`BadTaskState`)."""
        if not isinstance(state, dict):
            raise BadTaskState(f"task state is a {type(state).__name__}, not the dict task=gan saves")
        self._refuse_changed_scorer(checked_sha256(state.get(SCORER_SHA256)))

    def _refuse_changed_scorer(self, recorded: str | None) -> None:
        if (changed := self.samples.changed(recorded)) is not None:
            raise ConfigError(f"task.scorer={self.samples.scorer_path} {changed}: put the original file back to "
                              "resume this run, or give the new scorer to a new run (without resume=).")

    def check_for_evaluation(self, data: DataSplits, state: Any = None) -> str | None:
        """A scorer no longer there, or whose content changed since the run started (its SHA-256
        is not the one ``state``, the checkpoint's task entry, recorded), or one that cannot be
        matched with a damaged record, leaves ``dltrain-eval`` the losses and D's outputs, said once."""
        scorer = self.samples.scorer_path
        try:
            changed = self.samples.changed(checked_sha256(state.get(SCORER_SHA256)) if isinstance(state, dict)
                                           else None)
        except BadTaskState as err:  # a crafted entry: whether the scorer is the run's cannot be told
            changed, damaged = None, str(err)
        else:
            damaged = None
        gone = scorer is not None and not Path(scorer).is_file()
        if gone or changed is not None or (damaged is not None and scorer is not None):
            self.samples.scorer_path = None
        self.check(data)
        if damaged is not None and scorer is not None:
            return (f"the checkpoint's {damaged}, so task.scorer={scorer} cannot be told to be the run's scorer: no "
                    "sample score, the losses and D's outputs only")
        if changed is not None:
            return (f"task.scorer={scorer} {changed}: no sample score, the losses and D's outputs only (put the "
                    "original file back to score the samples)")
        return f"task.scorer={scorer} does not exist: no sample score, the losses and D's outputs only" if gone \
            else None

    def _to_range(self, x: torch.Tensor) -> torch.Tensor:
        """Model inputs ``(B, C, H, W)`` -> the same images in [-1, 1]."""
        scale, shift = self._range_map
        if scale.device != x.device:  # once: the maps move to the data's device
            self._range_map = scale, shift = scale.to(x.device), shift.to(x.device)
        return torch.addcmul(shift, x, scale)

    def loss(self, data: DataSplits) -> tuple[str, Loss]:
        return "adversarial_bce", AdversarialLoss()

    def metric_kind(self, data_task: str) -> str:
        return "gan"

    def watched(self, monitor: str, mode: str) -> tuple[str | None, str, str | None]:
        return watched(self.samples.scores, monitor, mode)  # the sample score, not the losses

    def needs_validation(self, monitor: str) -> bool:
        return monitor.startswith("val_") and monitor.removeprefix("val_") not in SAMPLE_METRICS  # generated images

    def end_epoch(self, trainer: Any, row: dict[str, Any]) -> None:
        self.samples.end_epoch(trainer.model, self.latents, trainer.epoch + 1, row, self.run_dir, self.is_main)

    def after_test(self, trainer: Any, data: DataSplits, batches: Any,
                   outputs: list[torch.Tensor]) -> dict[str, float]:
        """The tested weights' sample score (with ``task.scorer``), in ``summary.json``'s ``test``."""
        return self.samples.score(trainer.model)

    def carry_from(self, run_dir: Path, epoch: int) -> None:
        carry_samples(run_dir, self.run_dir, epoch)  # samples/epoch-NNN.png of the epochs kept

    def evaluate_model(self, model: nn.Module) -> dict[str, float]:
        """``dltrain-eval``: the checkpoint's sample score with the run's ``task.scorer`` (none without one)."""
        return self.samples.score(model)

    def evaluate_batch(self, model: nn.Module, loss_fn: nn.Module, x: torch.Tensor,
                       y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D's logits and both losses, as validation computes them (``dltrain-eval``: one split,
        its latents from the start as in the run's evaluations)."""
        return adversarial_losses(model, self.to_range(x), self.eval_latents, 1.0 - self.label_smoothing)

    def make_optimizer(self, model: nn.Module, saved_groups: list[dict[str, Any]] | None = None
                       ) -> torch.optim.Optimizer:
        """G's Adam (the run's optimizer); D's is kept as :attr:`discriminator_optimizer`."""
        from dltrain.optim import build_optimizer

        def adam(network: nn.Module, key: str, saved: list[dict[str, Any]] | None) -> torch.optim.Optimizer:
            return build_optimizer("adam", network, saved_groups=saved, **self.adam[key])

        self.discriminator_optimizer = adam(model.discriminator, "discriminator", None)
        return adam(model.generator, "generator", saved_groups)

    def make_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                  options: StepOptions, profiler: Profiler | None = None) -> GanStep:
        device = next(model.parameters()).device
        # From the run's seed (torch's, which the run seeded), on a generator of its own: the run's
        # random stream is not moved.
        seed = torch.initial_seed()
        drawn = torch.randn(self.num_samples, model.latent_size, generator=torch.Generator().manual_seed(seed))
        self.latents = drawn.to(device)  # (num_samples, latent_size)
        if self.discriminator_optimizer is None:  # a trainer built without the build step
            optimizer = self.make_optimizer(model)
        return GanStep(model, optimizer, loss_fn, options, profiler,
                       discriminator_optimizer=self.discriminator_optimizer,
                       to_range=self.to_range or (lambda x: x), label_smoothing=self.label_smoothing)

    def state_dict(self) -> dict[str, Any]:
        return {LATENTS: self.latents, D_OPTIMIZER: self.discriminator_optimizer.state_dict(),
                SCORER_SHA256: self.samples.identity()}  # hashed once, when the scorer was loaded

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is None:  # every GAN's checkpoint has it: without, D's Adam and the latents would start again
            raise BadTaskState("task entry is missing (task=gan saves the discriminator's optimizer and the fixed "
                               "latent batch there)")
        if not isinstance(state, dict):
            raise BadTaskState(f"task state is a {type(state).__name__}, not the dict task=gan saves")
        self.latents = checked_latents(state.get(LATENTS), tuple(self.latents.shape)).to(self.latents.device)
        load_adam_state(self.discriminator_optimizer, state.get(D_OPTIMIZER))
        # None: a checkpoint from before the scorer's file was recorded, resumed as it is
        self._refuse_changed_scorer(checked_sha256(state.get(SCORER_SHA256)))


@TASKS.register("gan", default_model="dcgan", inputs=("images", "ink_counts"), distributed=False,
                refuses_serving="its discriminator predicts no labels; its generated images are the run's samples/, "
                                "and dltrain-eval reports D(x) and D(G(z))", path_keys=("scorer",))
def gan(label_smoothing: float = 0.0, num_samples: int = 64, generator: Mapping[str, Any] | None = None,
        discriminator: Mapping[str, Any] | None = None, scorer: str | None = None, confidence: float = 0.9,
        score_samples: int = 1000) -> GanTask:
    """``task=gan``: D and G trained in turn, each with its own Adam (``task.generator.*``,
    ``task.discriminator.*``), one-sided ``label_smoothing`` on the real images' target, and a
    fixed latent batch of ``num_samples`` vectors; with a ``scorer`` (a dltrain classifier), the
    samples' score each epoch (``confidence``, ``score_samples``: see :mod:`dltrain.tasks.sample_watch`)."""
    return GanTask(label_smoothing, num_samples, generator, discriminator, scorer, confidence, score_samples)

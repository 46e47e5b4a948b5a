"""``task=autoencoder``: the model learns to reconstruct its input, the labels unused.

The loss compares the reconstruction with the clean input: ``mse`` or ``l1`` in the
standardised space the data's preprocessing gives, or ``bce`` on the pixels in [0, 1] that the
preprocessing's record maps them back to (images and digits; a table has no such range). With
``denoise``, each training batch's inputs (after augmentation) are corrupted before the forward
pass, from torch's global generator, so a resumed run draws the same noise; validation and test
see clean inputs, and the test also reports the reconstruction error of noisy test inputs drawn
from a fixed seed (``noisy_loss``), the same every run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dltrain.data.batches import shard_range
from dltrain.errors import ConfigError
from dltrain.losses import Loss
from dltrain.tasks.base import TASKS, Task
from dltrain.training.metrics import MetricAccumulator
from dltrain.training.step import Forward, OptimizerStep

if TYPE_CHECKING:
    from dltrain.data import DataSplits
    from dltrain.training.profiler import Profiler
    from dltrain.training.step import StepOptions

Corrupt = Callable[[torch.Tensor], torch.Tensor]
#: Seeds the noise of the noisy test inputs (example i: NOISE_SEED + i): the same noise every run, however
#: the test split is batched or sharded.
NOISE_SEED = 0
EPS = 1e-6  # bce: probabilities kept inside (0, 1), where the logarithms are finite


def corruption(denoise: str, noise: float) -> Corrupt | None:
    """``task.denoise``'s noise as a function of a batch; None for ``none``."""
    if denoise == "gaussian":
        return lambda x: x + noise * torch.randn_like(x)
    if denoise == "masking":  # a masked input reads 0: the training split's mean, once standardised
        return lambda x: x * (torch.rand_like(x) >= noise).to(x.dtype)
    return None


class ReconstructionLoss(Loss):
    """The reconstruction's error against the clean input ``(B, *input_shape)``, one number a batch.

    Args:
        kind: ``mse``, ``l1`` or ``bce``.
        input_shape: one example's shape: the model's output and the target have it.
        pixels: for ``bce``, ``(scale, shift)`` of shape ``(1, *input_shape)`` mapping standardised
            inputs to pixels in [0, 1] (``x * scale + shift``).
    """

    def __init__(self, kind: str, input_shape: tuple[int, ...],
                 pixels: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.kind, self.output_shape = kind, tuple(input_shape)
        self.output_width = int(torch.Size(input_shape).numel())
        scale, shift = pixels if pixels is not None else (torch.ones(1), torch.zeros(1))
        self.register_buffer("scale", scale.float(), persistent=False)
        self.register_buffer("shift", shift.float(), persistent=False)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        output, target = output.float(), target.float()  # the error in float32 under autocast too
        if self.kind == "mse":
            return (output - target).square().mean()
        if self.kind == "l1":
            return (output - target).abs().mean()
        p = (output * self.scale + self.shift).clamp(EPS, 1 - EPS)  # (B, *input_shape) pixels
        t = (target * self.scale + self.shift).clamp(0, 1)
        return -(t * p.log() + (1 - t) * (1 - p).log()).mean()


class ReconstructionStep(OptimizerStep):
    """An optimizer step whose loss compares the outputs with the (augmented) clean inputs; with
    ``corrupt``, the model sees them corrupted. Evaluation compares with the inputs as given."""

    def __init__(self, *args: Any, corrupt: Corrupt | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.corrupt = corrupt

    def augmented(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch the loss sees: (noisy) augmented inputs, and the clean ones as the target."""
        x, _ = super().augmented(x, y)
        if self.corrupt is None:
            return x, x
        with self.phase("augment"):
            return self.corrupt(x), x

    def eval_outputs_and_loss(self, x: torch.Tensor, y: torch.Tensor,
                              forward: Forward | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.outputs_and_loss(x, x, forward)


class AutoencoderTask(Task):
    """``task=autoencoder`` (see the module's docstring).

    Args:
        loss: ``mse``, ``l1`` or ``bce``.
        denoise: ``none``, ``gaussian`` or ``masking``.
        noise: the gaussian noise's std, or the masked fraction.
    """

    name = "autoencoder"
    writes_predictions = False  # the outputs are reconstructions: latents.csv and pictures instead

    def __init__(self, loss: str = "mse", denoise: str = "none", noise: float = 0.2) -> None:
        super().__init__()
        if denoise == "masking" and noise >= 1:
            raise ConfigError(f"task.noise={noise:g} would mask every input (task.denoise=masking): use a fraction "
                              "below 1, e.g. task.noise=0.2.")
        self.loss_kind, self.denoise, self.noise = loss, denoise, noise
        self.corrupt = corruption(denoise, noise)
        self._noisy_sum, self._noisy_count = 0.0, 0  # dltrain-eval's noisy_loss so far

    def check(self, data: DataSplits) -> None:
        if data.vocab_size is not None:
            raise ConfigError("task=autoencoder reconstructs numeric inputs, and this data gives token ids (text): "
                              "use image or table data (data=digits, mnist, csv, ...), or task=supervised.")
        if self.loss_kind == "bce" and pixel_map(data) is None:
            raise ConfigError("task.loss=bce compares pixels in [0, 1], which this data's standardised inputs have "
                              "none of (a table or points): use task.loss=mse or l1, or image data.")

    def loss(self, data: DataSplits) -> tuple[str, Loss]:
        pixels = pixel_map(data) if self.loss_kind == "bce" else None
        return self.loss_kind, ReconstructionLoss(self.loss_kind, data.input_shape, pixels)

    def metric_kind(self, data_task: str) -> str:
        return "reconstruction"

    def target(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x

    def evaluate_batch(self, model: nn.Module, loss_fn: nn.Module, x: torch.Tensor,
                       y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The split's loss, and (with ``denoise``) its ``noisy_loss`` as the run's test computed it:
        the batches come in order, so example ``i``'s noise is drawn from ``NOISE_SEED + i``."""
        from dltrain.tasks.autoencoder_outputs import noisy_examples

        output, loss = super().evaluate_batch(model, loss_fn, x, y)
        if self.corrupt is not None:
            noisy = loss_fn(model(noisy_examples(x, self.corrupt, NOISE_SEED + self._noisy_count)), x)
            self._noisy_sum += float(noisy) * len(x)  # dltrain-eval, not training: one read per batch is fine
            self._noisy_count += len(x)
        return output, loss

    def evaluate_model(self, model: nn.Module) -> dict[str, float]:
        if self.corrupt is None or not self._noisy_count:
            return {}
        return {"noisy_loss": self._noisy_sum / self._noisy_count}

    def make_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                  options: StepOptions, profiler: Profiler | None = None) -> OptimizerStep:
        return ReconstructionStep(model, optimizer, loss_fn, options, profiler, corrupt=self.corrupt)

    def after_test(self, trainer: Any, data: DataSplits, batches: Any,
                   outputs: list[torch.Tensor]) -> dict[str, float]:
        """``noisy_loss`` (with ``denoise``), then latents.csv, latents.png and reconstructions.png."""
        from dltrain.tasks.autoencoder_outputs import write_outputs

        start = shard_range(len(data.x_test), trainer.ranks.rank, trainer.ranks.world_size)[0]  # this rank's first
        metrics = {"noisy_loss": noisy_loss(trainer, batches, self.corrupt, start)} if self.corrupt is not None else {}
        if self.is_main and self.run_dir is not None:
            write_outputs(self.run_dir, trainer.evaluated_model, data, self.corrupt, NOISE_SEED)
        return metrics


def pixel_map(data: DataSplits) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(scale, shift)`` with ``x * scale + shift`` the pixels in [0, 1] of standardised inputs ``x``,
    read off the data's preprocessing (an affine map); None for data without pixels."""
    pixels = getattr(data.preprocessing, "pixels", None)
    if pixels is None:
        return None
    device = data.example(1).device
    zeros = torch.zeros(1, *data.input_shape, device=device)
    shift = pixels(zeros)
    if tuple(shift.shape) != tuple(zeros.shape):  # grayscale repeated to 3 channels: no pixel per input
        return None
    return pixels(torch.ones_like(zeros)) - shift, shift


@torch.no_grad()
def noisy_loss(trainer: Any, batches: Any, corrupt: Corrupt, start: int = 0) -> float:
    """The test's reconstruction loss of noisy inputs against the clean ones, the noise of the
    split's example ``i`` drawn from seed ``NOISE_SEED + i`` without touching the run's random
    numbers (``start``: the position of ``batches``' first example in the split, this rank's shard's)."""
    from dltrain.tasks.autoencoder_outputs import noisy_examples

    model = trainer.evaluated_model
    model.eval()
    forward = None if model is trainer.model else model
    acc = MetricAccumulator("reconstruction")
    for x, y in batches:  # an unshuffled split: its examples in order from start
        output, loss = trainer.step.outputs_and_loss(noisy_examples(x, corrupt, NOISE_SEED + start), x, forward)
        acc.update(output, y, loss)
        start += len(x)
    return trainer.reduce(acc)["loss"]


@TASKS.register("autoencoder", default_model="autoencoder")
def autoencoder(loss: str = "mse", denoise: str = "none", noise: float = 0.2) -> AutoencoderTask:
    """``task=autoencoder``: reconstruction of the inputs (``model=autoencoder``)."""
    return AutoencoderTask(loss, denoise, noise)

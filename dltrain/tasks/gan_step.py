"""A GAN's training step: the discriminator's update on real and generated images, then the
generator's with the non-saturating loss, on one batch of real images.

The step's ``output`` is ``(B, 4)``, per example: D's logit on the real image, on a generated
one in D's update, on the same generated one in G's update (D already updated), and D's loss;
``loss`` is D's loss plus G's, which the divergence check reads. The metrics
(:mod:`dltrain.tasks.gan_metrics`) sum them on the device, with no read from it per step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dltrain.training.profiler import Profiler
from dltrain.training.step import Forward, OptimizerStep, StepOptions

EVAL_SEED = 1  # validation's, the test's and dltrain-eval's latents: never the run's random stream


class EvalLatents:
    """The latent vectors that validation, the test and ``dltrain-eval`` give the generator: from a
    private CPU generator seeded with :data:`EVAL_SEED` again at each evaluation, one vector per
    example in turn, so every evaluation of a split sees the same ones whatever its batch size,
    and training draws the same numbers with or without validation."""

    def __init__(self) -> None:
        self.generator = torch.Generator()
        self.restart()

    def restart(self) -> None:
        """The first example of the next evaluation gets the first vector again."""
        self.generator.manual_seed(EVAL_SEED)

    def __call__(self, n: int, latent_size: int, device: torch.device) -> torch.Tensor:
        """The next ``n`` vectors ``(n, latent_size)`` on ``device``."""
        drawn = [torch.randn(latent_size, generator=self.generator) for _ in range(n)]  # one draw per example
        return torch.stack(drawn).to(device)


class GanStep(OptimizerStep):
    """``step(x, y) -> (output, loss)`` for a :class:`~dltrain.models.dcgan.DCGAN`.

    Args:
        model: holds ``generator``, ``discriminator`` and ``latent_size``.
        optimizer: the generator's; ``discriminator_optimizer`` the discriminator's.
        loss_fn: unused (the losses are the adversarial BCE); kept for the step's interface.
        options: augmentation (of the real images), clipping (each network's own gradients),
            precision and memory format, as for any step.
        to_range: the data's model inputs ``(B, C, H, W)`` -> images in [-1, 1], the range of
            the generator's Tanh, so real and generated images look alike to D.
        label_smoothing: one-sided: real images' target is ``1 - label_smoothing``.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                 options: StepOptions, profiler: Profiler | None = None, *,
                 discriminator_optimizer: torch.optim.Optimizer,
                 to_range: Callable[[torch.Tensor], torch.Tensor], label_smoothing: float = 0.0) -> None:
        super().__init__(model, optimizer, loss_fn, options, profiler)
        self.generator, self.discriminator = model.generator, model.discriminator
        self.discriminator_optimizer = discriminator_optimizer
        self.to_range, self.real_target = to_range, 1.0 - label_smoothing
        self.eval_latents = EvalLatents()

    def latents(self, n: int, device: torch.device) -> torch.Tensor:
        """``n`` latent vectors from the device's own generator (saved and restored with the run's RNGs)."""
        return torch.randn(n, self.model.latent_size, device=device)  # (n, latent_size)

    def real_images(self, x: torch.Tensor) -> torch.Tensor:
        """The batch as D sees real images: in [-1, 1], in the step's memory format."""
        real = self.to_range(x)
        return real.contiguous(memory_format=self.options.memory_format) if self.options.memory_format else real

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D's update, then G's, on one batch of real images; ``y`` (labels) is not used."""
        x, _ = self.augmented(x, y)
        real = self.real_images(x)
        with self.phase("forward"), self.autocast():
            fake = self.generator(self.latents(len(real), real.device))  # (B, C, H, W)
        real_logit, fake_logit, d_terms = self.discriminator_step(real, fake.detach())
        g_logit, g_loss = self.generator_step(fake)
        output = torch.cat([real_logit, fake_logit, g_logit, d_terms], dim=1).detach().float()  # (B, 4)
        return output, d_terms.detach().mean() + g_loss.detach()

    def discriminator_step(self, real: torch.Tensor,
                           fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One update of D on real images (target ``1 - label_smoothing``) and generated ones
        (target 0; detached: G receives no gradient). Returns D's logits on both ``(B, 1)`` and
        its loss per example ``(B, 1)``, whose mean it minimised."""
        with self.phase("forward"), self.autocast():
            real_logit, fake_logit = self.discriminator(real), self.discriminator(fake)  # (B, 1) each
            d_terms = discriminator_terms(real_logit, fake_logit, self.real_target)
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        with self.phase("backward"):
            d_terms.mean().backward()
        self._update_network(self.discriminator, self.discriminator_optimizer)
        return real_logit.detach(), fake_logit.detach(), d_terms.detach()

    def generator_step(self, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One update of G with the non-saturating loss ``-log D(G(z))`` (BCE of D's logit
        against 1). D takes no gradient meanwhile, so G's update never moves it. Returns D's
        logits on the generated images ``(B, 1)`` and G's loss."""
        self.discriminator.requires_grad_(False)
        try:
            with self.phase("forward"), self.autocast():
                g_logit = self.discriminator(fake)  # (B, 1)
                g_loss = F.binary_cross_entropy_with_logits(g_logit, torch.ones_like(g_logit))
            self.optimizer.zero_grad(set_to_none=True)
            with self.phase("backward"):
                g_loss.backward()
        finally:
            self.discriminator.requires_grad_(True)
        self._update_network(self.generator, self.optimizer)
        return g_logit.detach(), g_loss

    def _update_network(self, network: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Clip ``network``'s gradients (``regularization.grad_clip*``) and step its optimizer."""
        with self.phase("optimizer"):
            if self.options.grad_clip is not None:
                nn.utils.clip_grad_norm_(network.parameters(), self.options.grad_clip)
            if self.options.grad_clip_value is not None:
                nn.utils.clip_grad_value_(network.parameters(), self.options.grad_clip_value)
            optimizer.step()

    def begin_evaluation(self) -> None:
        self.eval_latents.restart()

    def eval_outputs_and_loss(self, x: torch.Tensor, y: torch.Tensor,
                              forward: Forward | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Validation and the test: :func:`adversarial_losses` of the batch, no update."""
        with self.autocast():
            return adversarial_losses(self.model, self.real_images(x), self.eval_latents, self.real_target)


def adversarial_losses(model: nn.Module, real: torch.Tensor, latents: EvalLatents, real_target: float = 1.0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """D's logits on real images ``(B, C, H, W)`` in [-1, 1] and on as many generated ones (from
    ``latents``), and both losses, without updates (validation, the test, ``dltrain-eval``): the
    output's columns as in training (G's column repeats D's: nothing was updated between), and D's loss plus G's."""
    fake = model.generator(latents(len(real), model.latent_size, real.device))
    real_logit, fake_logit = model.discriminator(real), model.discriminator(fake)  # (B, 1) each
    d_terms = discriminator_terms(real_logit, fake_logit, real_target)
    g_loss = F.binary_cross_entropy_with_logits(fake_logit, torch.ones_like(fake_logit))
    output = torch.cat([real_logit, fake_logit, fake_logit, d_terms], dim=1).float()  # (B, 4)
    return output, d_terms.mean() + g_loss


def discriminator_terms(real_logit: torch.Tensor, fake_logit: torch.Tensor, real_target: float) -> torch.Tensor:
    """D's loss per example ``(B, 1)``: BCE of its logit on a real image against ``real_target``
    plus that on a generated one against 0."""
    return (F.binary_cross_entropy_with_logits(real_logit, torch.full_like(real_logit, real_target), reduction="none")
            + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit), reduction="none"))

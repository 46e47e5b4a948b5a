"""Accumulation under a class-weighted cross-entropy: a micro-batch counts as the sum of its
targets' weights (what weighted cross-entropy divides by), so k micro-batches take the step
of one batch of all their examples; an interrupt inside a group resumes to the same step."""

from __future__ import annotations

import torch

from dltrain.data.batches import TensorBatches
from dltrain.losses import CrossEntropy
from dltrain.training.callbacks import EarlyStopping
from dltrain.training.trainer import StepOptions, Trainer
from tests import accumulate_workers as workers

WEIGHTS = torch.tensor([1.0, 4.0, 0.25])


def data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def trainer_for(k: int) -> Trainer:
    model = workers.mlp()
    return Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                   CrossEntropy(3, WEIGHTS, label_smoothing=0.0, log_probs=False), "multiclass", max_epochs=1,
                   stopper=EarlyStopping("val_loss"), options=StepOptions(accumulate_grad_batches=k))


def weights_after(k: int, batch_size: int, n: int) -> dict[str, torch.Tensor]:
    trainer = trainer_for(k)
    trainer.train_epoch(TensorBatches(*data(n), batch_size))
    return trainer.model.state_dict()


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_weighted_micro_batches_equal_the_weighted_big_batch():
    """2 steps of 3 batches of 4 (the last group 4 + 4 + 2) against batches of 12 (the last 10)."""
    assert_same(weights_after(3, 4, 22), weights_after(1, 12, 22))


def test_a_weighted_group_checkpointed_inside_resumes_to_the_same_step():
    first = trainer_for(3)
    accumulation = first.accumulation
    batches = list(TensorBatches(*data(12), 4))
    x, y = next(accumulation.batches(batches, 3, 0))
    accumulation(x, y)
    saved = accumulation.state_dict()
    resumed = trainer_for(3)
    resumed.accumulation.load_state_dict(saved)
    for x, y in resumed.accumulation.batches(batches[1:], 3, 1):
        resumed.accumulation(x, y)
    assert resumed.accumulation.stepped
    assert_same(resumed.model.state_dict(), weights_after(1, 12, 12))

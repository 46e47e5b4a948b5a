"""The rank processes of ``tests/test_accumulate.py``'s DDP test: ``python -m tests.accumulate_workers OUT``.

Started twice with torchrun's variables, each process joins one gloo group and trains one
group of ``K`` micro-batches of ``B`` (its shard of a shuffled split) through DDP, counting
the all-reduces DDP starts (a communication hook that counts, then all-reduces as DDP's
default does); then ``K`` plain steps, counted the same way. What it saw is written to
``OUT/accumulate.rank<r>.pt``; an unexpected exception is written there too (``unexpected``).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from dltrain.data.batches import TensorBatches
from dltrain.training.callbacks import EarlyStopping
from dltrain.training.distributed import Ranks, init
from dltrain.training.trainer import StepOptions, Trainer

B, K = 2, 3  # per-rank micro-batch and micro-batches per optimizer step
N = 40  # examples in the split


def mlp() -> nn.Module:
    """The same 8 -> 16 -> 3 MLP in every process."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def batches(batch_size: int, limit: int, rank: int = 0, world_size: int = 1) -> TensorBatches:
    """The first ``limit`` batches of a shuffled split of ``N`` random examples (this rank's shard)."""
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(N, 8, generator=g), torch.randint(0, 3, (N,), generator=g)
    return TensorBatches(x, y, batch_size, shuffle=True, generator=torch.Generator().manual_seed(1),
                         limit_batches=limit, rank=rank, world_size=world_size)


def trained(k: int, batch_size: int, limit: int, ranks: Ranks | None = None,
            hook: Any = None) -> dict[str, torch.Tensor]:
    """The MLP's weights after an epoch of ``limit`` batches, ``k`` to an optimizer step (SGD
    with momentum); with several ranks through DDP, whose all-reduces ``hook`` sees."""
    model = mlp()
    distributed = ranks is not None and ranks.distributed
    ddp = nn.parallel.DistributedDataParallel(model) if distributed else None
    if ddp is not None and hook is not None:
        ddp.register_comm_hook(None, hook)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), nn.CrossEntropyLoss(),
                      "multiclass", max_epochs=1, stopper=EarlyStopping("val_loss"), ranks=ranks,
                      options=StepOptions(train_forward=ddp, accumulate_grad_batches=k))
    rank, world = (ranks.rank, ranks.world_size) if distributed else (0, 1)
    trainer.train_epoch(batches(batch_size, limit, rank, world))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def scenario(ranks: Ranks) -> dict[str, Any]:
    """One accumulated step, then K plain steps, each with DDP's all-reduces counted."""
    calls: list[int] = []

    def counting(state, bucket):  # noqa: ANN001, ANN202 - DDP reads a hook's annotations: none, or its own types
        calls.append(1)
        return allreduce_hook(state, bucket)

    accumulated = trained(K, B, K, ranks, counting)
    accumulated_calls = len(calls)
    calls.clear()
    trained(1, B, K, ranks, counting)
    return {"weights": accumulated, "allreduce_calls": accumulated_calls, "plain_allreduce_calls": len(calls),
            **inside_a_group(ranks)}


def inside_a_group(ranks: Ranks) -> dict[str, Any]:
    """After the first micro-step of a group: this rank's own gradients (not yet all-reduced)
    and what a checkpoint saves of them."""
    model = mlp()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), "multiclass",
                      max_epochs=1, stopper=EarlyStopping("val_loss"), ranks=ranks,
                      options=StepOptions(train_forward=nn.parallel.DistributedDataParallel(model),
                                          accumulate_grad_batches=K))
    accumulation = trainer.accumulation
    x, y = next(accumulation.batches(batches(B, K, ranks.rank, ranks.world_size), K, 0))
    accumulation(x, y)
    return {"local_grads": [p.grad.clone() for p in model.parameters()], "saved": accumulation.state_dict()}


def main(out: Path) -> None:
    ranks = init("cpu")
    try:
        result = scenario(ranks)
    except BaseException:  # noqa: BLE001 - recorded for the test
        result = {"unexpected": traceback.format_exc()}
    torch.save(result, out / f"accumulate.rank{ranks.rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

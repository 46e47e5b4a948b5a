"""Mini-batches of in-memory tensors, by index: no per-sample Python, no collate.

One shuffled permutation per epoch and one indexing op per batch, on the tensors' own
device, is the whole data path for datasets that fit in memory.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class TensorBatches:
    """Iterate ``(x, y)`` mini-batches of two aligned tensors.

    Args:
        x, y: tensors with the same first dimension.
        batch_size: examples per batch; the last batch may be smaller.
        shuffle: draw a new permutation each epoch from ``generator``.
        generator: a CPU ``torch.Generator``; the data order depends on it alone.
        limit_batches: stop after this many batches (``fast_dev_run``).
        min_batch_size: drop a last batch smaller than this (its examples come back in
            other positions next epoch when shuffling).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        limit_batches: int | None = None,
        min_batch_size: int = 1,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.limit_batches = limit_batches
        self.min_batch_size = min_batch_size

    def __len__(self) -> int:
        n = -(-len(self.x) // self.batch_size)
        if n and len(self.x) - (n - 1) * self.batch_size < self.min_batch_size:
            n -= 1
        return min(n, self.limit_batches) if self.limit_batches else n

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        if self.shuffle:
            # Drawn on the CPU so the order is the same on every device, then moved once.
            order = torch.randperm(n, generator=self.generator).to(self.x.device)
        for i in range(len(self)):
            start = i * self.batch_size
            if self.shuffle:
                idx = order[start:start + self.batch_size]
                yield self.x[idx], self.y[idx]
            else:
                yield self.x[start:start + self.batch_size], self.y[start:start + self.batch_size]

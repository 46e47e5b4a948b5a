"""Mini-batches: of in-memory tensors by index (no per-sample Python, no collate), or of
datasets read from disk through a DataLoader.

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


class LoaderBatches:
    """Iterate ``(x, y)`` mini-batches of a dataset read from disk, through a DataLoader.

    For data that does not fit in memory (``data.in_memory=false``): worker processes
    decode examples while the model trains, into pinned memory when the batches go to a
    GPU, and each batch is copied to ``device`` without blocking. Workers persist across
    epochs (``persistent``), so they start once per run.

    Args:
        dataset: a map-style dataset whose item ``i`` is ``(x_i, y_i)``.
        batch_size, shuffle, generator, limit_batches, min_batch_size: as for
            :class:`TensorBatches`; the data order depends on ``generator`` alone.
        device: where the batches are used.
        num_workers: decoding processes; 0 decodes in the training process.
        persistent: keep the workers between epochs (for splits read every epoch).
    """

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        batch_size: int,
        *,
        device: torch.device,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        num_workers: int = 0,
        limit_batches: int | None = None,
        min_batch_size: int = 1,
        persistent: bool = True,
    ) -> None:
        n = len(dataset)
        last = n % batch_size
        self.device = device
        self.limit_batches = limit_batches
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=num_workers,
            pin_memory=device.type == "cuda", persistent_workers=persistent and num_workers > 0,
            drop_last=0 < last < min_batch_size)

    def __len__(self) -> int:
        n = len(self.loader)
        return min(n, self.limit_batches) if self.limit_batches else n

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i, (x, y) in enumerate(self.loader):
            if self.limit_batches and i >= self.limit_batches:
                break
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

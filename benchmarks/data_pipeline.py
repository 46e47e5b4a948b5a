"""Batches per second of dltrain's in-memory data path against a plain DataLoader loop.

For data that fits in memory dltrain iterates :class:`dltrain.data.TensorBatches`: the tensors sit on the
training device, each epoch draws one permutation and each batch is one indexing op. The usual alternative is
``DataLoader(TensorDataset(x, y), batch_size, shuffle=True)``, which fetches one example at a time and stacks
them in Python. This script times both, on the same model and data, by whole epochs::

    python -m benchmarks.data_pipeline                  # 5 timed epochs per row, on the CPU
    python -m benchmarks.data_pipeline --repeats 10 --device cuda

Each path is timed twice per batch size: "data only" iterates the batches and sums each one (so that every
batch is really produced), "train step" runs a full Adam step of dltrain's MLP (784-128-64-10, cross-entropy)
on each. The data are the 8,000 MNIST training images in ``samples/mnist-8k`` when that folder exists (run
``dltrain-samples --mnist-8k --from <an MNIST download>`` in the project root to make it), otherwise 8,000
random 784-pixel images with 10 classes, which the table's data line says. A markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.machine import cpu_model, sync
from dltrain.data import TensorBatches
from dltrain.models import MODELS

MNIST_DIR = "samples/mnist-8k"  # relative to the project root: dltrain-samples --mnist-8k writes it
MNIST_RAW = Path(__file__).resolve().parents[1] / MNIST_DIR / "MNIST" / "raw"
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def load_data() -> tuple[torch.Tensor, torch.Tensor, str]:
    """The training images as ``(N, 784)`` floats in [0, 1], their labels, and where they came from."""
    images, labels = MNIST_RAW / "train-images-idx3-ubyte", MNIST_RAW / "train-labels-idx1-ubyte"
    if images.is_file() and labels.is_file():
        # IDX files: a 16-byte header (magic, count, rows, cols) before the images, 8 bytes before the labels.
        x = np.fromfile(images, dtype=np.uint8, offset=16).reshape(-1, 784)
        y = np.fromfile(labels, dtype=np.uint8, offset=8)
        source = f"MNIST, {len(x):,} training images ({MNIST_DIR})"
        return torch.from_numpy(x).float().div_(255), torch.from_numpy(y).long(), source
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(8000, 784, generator=generator)
    y = torch.randint(0, 10, (8000,), generator=generator)
    return x, y, (f"random, 8,000 x 784 with 10 classes ({MNIST_DIR} not found: dltrain-samples --mnist-8k "
                  "--from <an MNIST download> makes it)")


class OnDevice:
    """A DataLoader's epochs with each batch copied to ``device``, as a training loop over a DataLoader does."""

    def __init__(self, loader: DataLoader, device: torch.device) -> None:
        self.loader, self.device = loader, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            yield x.to(self.device), y.to(self.device)


def data_only(device: torch.device) -> Callable[[Batches], None]:
    """An epoch function that sums every batch and reads the total once at the end."""

    def epoch(batches: Batches) -> None:
        total = torch.zeros((), device=device)
        for x, y in batches:
            total += x.sum() + y.sum()
        total.item()

    return epoch


def train_step(device: torch.device) -> Callable[[Batches], None]:
    """An epoch function that takes one Adam step of dltrain's MLP on every batch."""
    torch.manual_seed(0)
    model = MODELS.build("mlp", input_shape=(784,), num_outputs=10, hidden=[128, 64]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def epoch(batches: Batches) -> None:
        for x, y in batches:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        sync(device)

    return epoch


def time_epochs(
    batches: TensorBatches | OnDevice, epoch: Callable[[Batches], None], repeats: int, device: torch.device
) -> float:
    """Median batches per second over ``repeats`` timed epochs, after one untimed warm-up epoch."""
    count = len(batches)
    epoch(batches)
    rates = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        epoch(batches)
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> None:
    """Time every path, batch size and workload, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per row (the median is reported)")
    parser.add_argument("--device", default="cpu", help="where the data and the model live: cpu, cuda, cuda:1")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes of the third DataLoader row; 0 leaves that row out")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    x, y, source = load_data()
    x_dev, y_dev = x.to(device), y.to(device)
    dataset = TensorDataset(x, y)

    print(f"# Data pipeline: batches/s, {datetime.datetime.now():%Y-%m-%d %H:%M}\n")
    print(f"- CPU: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    if device.type == "cuda":
        print(f"- GPU: {torch.cuda.get_device_name(device)}")
    print(f"- device: {device}; data: {source}")
    print(f"- median of {args.repeats} epochs after one warm-up epoch\n")
    print("| path | setting | batches/s (median) | vs DataLoader |")
    print("|---|---|---:|---:|")

    for batch_size in args.batch_sizes:
        loaders = {
            "DataLoader, num_workers=0": DataLoader(dataset, batch_size=batch_size, shuffle=True),
        }
        if args.workers:
            loaders[f"DataLoader, num_workers={args.workers}"] = DataLoader(
                dataset, batch_size=batch_size, shuffle=True, num_workers=args.workers, persistent_workers=True)
        for workload, make_epoch in (("data only", data_only), ("train step", train_step)):
            setting = f"{workload}, batch {batch_size}"
            ours = TensorBatches(x_dev, y_dev, batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
            rates = {"TensorBatches (dltrain)": time_epochs(ours, make_epoch(device), args.repeats, device)}
            for name, loader in loaders.items():
                rates[name] = time_epochs(OnDevice(loader, device), make_epoch(device), args.repeats, device)
            baseline = rates["DataLoader, num_workers=0"]
            for name, rate in rates.items():
                print(f"| {name} | {setting} | {rate:,.0f} | {rate / baseline:.2f}x |")

    if args.workers:
        print(f"\nThe num_workers={args.workers} rows start their worker processes in the warm-up epoch; on "
              f"{os.cpu_count()} cores those processes compete with the training process for the CPU.")


if __name__ == "__main__":
    main()

"""What verifying a checkpoint's checksums costs: ``dltrain.training.checkpoint.verify_checksums`` (the
CRC-32 of every zip member, read before each load) against ``torch.load(weights_only=True)``
of the same file, for checkpoints of several sizes, read from the page cache.

    python -m benchmarks.checkpoint_load            # options: --sizes-mb 4 32 128 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.machine import cpu_model
from dltrain.training.checkpoint import verify_checksums


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: the file in the page cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[4, 32, 128])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"{cpu_model()}, torch {torch.__version__}, median of {args.repeats}\n")
    print("| checkpoint | verify_checksums | torch.load | checksums per MB |")
    print("|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for mb in args.sizes_mb:
            path = Path(tmp) / f"{mb}.pt"
            # Several tensors, as a model's state dict has: 4 MB each (float32).
            state = {"model": {f"w{i}": torch.randn(1 << 20) for i in range(max(mb // 4, 1))}}
            torch.save(state, path)
            size = path.stat().st_size / 2**20
            check = _median_ms(lambda path=path: verify_checksums(path), args.repeats)
            load = _median_ms(lambda path=path: torch.load(path, weights_only=True), args.repeats)
            print(f"| {size:.0f} MB | {check:.1f} ms | {load:.1f} ms | {check / size:.2f} ms |")


if __name__ == "__main__":
    main()

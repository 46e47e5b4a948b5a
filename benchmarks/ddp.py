"""DistributedDataParallel through dltrain's trainer on one machine: an epoch on 1 rank and
on N ranks (the same global batch, so the same steps), and what the ranks' vote after every
step (on a stop signal) costs.

    python -m benchmarks.ddp                          # 1 and 2 ranks on the CPU (gloo)
    python -m benchmarks.ddp --ranks 4 --device cuda  # 1 and 4 GPUs (nccl)

Each size runs under ``torchrun --standalone``; rank 0 reports. The workload is target 1's
of BENCHMARKS.md: an MLP on 20,000 examples of 64 features, global batch 64.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.machine import cpu_model, sync

EXAMPLES, FEATURES, CLASSES, BATCH, EPOCHS = 20_000, 64, 10, 64, 5


def child(out: Path, device_spec: str) -> None:
    """One rank: time EPOCHS epochs after a warm-up, then the vote alone."""
    from dltrain.data.batches import TensorBatches
    from dltrain.models import MODELS
    from dltrain.optim import build_optimizer
    from dltrain.training.callbacks import EarlyStopping
    from dltrain.training.device import resolve_device
    from dltrain.training.distributed import device_for, init, wrap
    from dltrain.training.trainer import StepOptions, Trainer

    ranks = init(device_spec)
    device = device_for(ranks, resolve_device(device_spec))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(EXAMPLES, FEATURES, generator=g).to(device)
    y = torch.randint(0, CLASSES, (EXAMPLES,), generator=g).to(device)
    torch.manual_seed(0)
    model = MODELS.build("mlp", input_shape=(FEATURES,), num_outputs=CLASSES, hidden=[128, 64], activation="relu",
                         dropout=0.0, batch_norm=False).to(device)
    optimizer = build_optimizer("adam", model, l2=0.0, lr=1e-3)  # as dltrain builds it (fused on CPU and CUDA)
    trainer = Trainer(model, optimizer, torch.nn.CrossEntropyLoss(), "multiclass",
                      max_epochs=EPOCHS + 1, stopper=EarlyStopping("val_loss"), ranks=ranks,
                      options=StepOptions(train_forward=wrap(model, device) if ranks.distributed else None))
    batches = TensorBatches(x, y, BATCH // ranks.world_size, shuffle=True, generator=torch.Generator().manual_seed(1),
                            rank=ranks.rank, world_size=ranks.world_size)
    epochs = []
    for epoch in range(EPOCHS + 1):
        sync(device)
        start = time.perf_counter()
        trainer.train_epoch(batches)
        sync(device)
        if epoch:  # the first one warms up
            epochs.append(time.perf_counter() - start)
    votes = 2000
    start = time.perf_counter()
    for _ in range(votes):
        ranks.vote(0, 0)
    vote = (time.perf_counter() - start) / votes
    if ranks.is_main:
        out.write_text(json.dumps({"world_size": ranks.world_size, "backend": ranks.backend or "-",
                                   "steps": len(batches), "epoch": statistics.median(epochs), "vote": vote,
                                   "threads": torch.get_num_threads()}))


def run(ranks: int, device: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "-m", "benchmarks.ddp", "--child", str(out), "--device", device]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if done.returncode or not out.is_file():
            raise SystemExit(f"{ranks} rank(s) failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2, help="the larger world size (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.device)
    one, many = run(1, args.device), run(args.ranks, args.device)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{cpu_model()}, {os.cpu_count()} cores"
    print(f"# DDP on one machine: {where}; torch {torch.__version__}; OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"MLP 20,000x64, global batch {BATCH}, median of {EPOCHS} epochs after one warm-up\n")
    print("| ranks | backend | threads/rank | steps/epoch | epoch (s) | step (ms) | vote per step (ms) | vote share |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in (one, many):
        step = r["epoch"] / r["steps"]
        share = f"{r['vote'] / step:.0%}" if r["world_size"] > 1 else "-"
        vote = f"{r['vote'] * 1e3:.3f}" if r["world_size"] > 1 else "-"
        print(f"| {r['world_size']} | {r['backend']} | {r['threads']} | {r['steps']} | {r['epoch']:.3f} | "
              f"{step * 1e3:.2f} | {vote} | {share} |")
    print(f"\n{args.ranks} ranks: {one['epoch'] / many['epoch']:.2f}x the speed of one")


if __name__ == "__main__":
    main()

"""pytorch/examples' MNIST net trained side by side: by a hand-written script and by ``dltrain model=mnist_net``.

The hand-written side is the ``mnist/main.py`` of pytorch/examples as a user runs it, written out here: the
net (conv 32 3x3 - relu - conv 64 3x3 - relu - max pool 2 - dropout 0.25 - flatten - dense 128 - relu -
dropout 0.5 - dense 10 - log-softmax, 1,199,882 parameters), the negative log-likelihood, Adadelta with
lr 1.0, StepLR stepping every epoch with gamma 0.7, batches of 64 (test batches of 1,000), the pixels read
by ``torchvision.datasets.MNIST`` and normalised with the script's constants (0.1307, 0.3081). The script
shuffles its training set only on an accelerator; here it shuffles on every device, as dltrain does.

The dltrain side is the installed ``dltrain`` command (see :func:`dltrain_overrides`), the same recipe as
config, in a fresh temporary run directory; its test accuracy is read from ``summary.json``. It trains on
the same 8,000 images (``data.val_fraction=0``: nothing is held out, so the last epoch is tested, as the
script does) and tests on the same 2,000; it standardises with the training images' own mean and std
instead of the script's constants. Both start from torch's default initialisation.

The data are mnist-8k (``samples/mnist-8k``: ``dltrain-samples --mnist-8k --from <an MNIST download>``
makes it; any other MNIST is refused, so that the numbers are those of the same images). The sides
alternate, seed by seed, so that the machine's drift falls on both. Run it from the project root::

    python -m benchmarks.mnist_net                      # 3 seeds of 5 epochs each side, on the CPU
    python -m benchmarks.mnist_net --seeds 5 --epochs 14 --device cuda

The table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.machine import cpu_model, sync
from benchmarks.readme_results import ReadmeError, check_mnist_8k, dltrain_command

MNIST_DIR = "samples/mnist-8k"  # relative to the project root: dltrain-samples --mnist-8k writes it
MEAN, STD = 0.1307, 0.3081  # the script's Normalize constants (MNIST's training set)
BATCH_SIZE, TEST_BATCH_SIZE = 64, 1000
LR, GAMMA = 1.0, 0.7


class Net(nn.Module):
    """pytorch/examples' MNIST net, for 1x28x28 images and 10 classes; returns log-probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(64 * 12 * 12, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))  # (B, 32, 26, 26)
        x = F.relu(self.conv2(x))  # (B, 64, 24, 24)
        x = self.dropout1(F.max_pool2d(x, 2))  # (B, 64, 12, 12)
        x = self.dropout2(F.relu(self.fc1(torch.flatten(x, 1))))  # (B, 128)
        return F.log_softmax(self.fc2(x), dim=1)  # (B, 10)


@dataclass(frozen=True)
class Mnist:
    """MNIST's two sets as the script reads them: uint8 images ``(N, 1, 28, 28)`` and int64 labels ``(N,)``."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@dataclass(frozen=True)
class Result:
    """One training run: its test accuracy, the model's parameter count and its wall time."""

    accuracy: float
    params: int
    seconds: float


def load_mnist(root: str | Path) -> Mnist:
    """The training and the test set in ``root/MNIST/raw``, read by ``torchvision.datasets.MNIST`` (never
    downloaded), in file order."""
    from torchvision.datasets import MNIST

    train, test = (MNIST(str(root), train=flag, download=False) for flag in (True, False))
    return Mnist(train.data.unsqueeze(1), train.targets, test.data.unsqueeze(1), test.targets)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 as ``ToTensor()`` then ``Normalize((0.1307,), (0.3081,))`` make them."""
    return (images.float() / 255 - MEAN) / STD


def count_params(model: nn.Module) -> int:
    """The model's parameters, all of them trainable here."""
    return sum(p.numel() for p in model.parameters())


def train_epoch(model: Net, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
                generator: torch.Generator) -> None:
    """One pass over ``(x, y)`` in a fresh random order, batches of :data:`BATCH_SIZE`."""
    model.train()
    order = torch.randperm(len(y), generator=generator).to(x.device)
    for batch in order.split(BATCH_SIZE):
        optimizer.zero_grad()
        F.nll_loss(model(x[batch]), y[batch]).backward()
        optimizer.step()


@torch.no_grad()
def test_accuracy(model: Net, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of ``(x, y)`` classified right, in batches of :data:`TEST_BATCH_SIZE`."""
    model.eval()
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(TEST_BATCH_SIZE),
                                                                         y.split(TEST_BATCH_SIZE), strict=True))
    return correct / len(y)


def hand_run(data: Mnist, seed: int, epochs: int, device: torch.device) -> Result:
    """The hand-written script: seeded as it seeds (``torch.manual_seed``), then ``epochs`` epochs, then
    the test set."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_train, x_test = normalise(data.x_train).to(device), normalise(data.x_test).to(device)
    y_train, y_test = data.y_train.to(device), data.y_test.to(device)
    model = Net().to(device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=GAMMA)
    for _ in range(epochs):
        train_epoch(model, x_train, y_train, optimizer, generator)
        scheduler.step()
    accuracy = test_accuracy(model, x_test, y_test)
    sync(device)
    return Result(accuracy, count_params(model), time.perf_counter() - start)


def dltrain_overrides(root: str | Path, seed: int, epochs: int, device: str) -> list[str]:
    """The command line of the dltrain side (after ``dltrain``): the script's recipe as config."""
    return ["model=mnist_net", "data=mnist", f"data.root={root}", "data.download=false", "data.val_fraction=0",
            "loss=nll", "optim=adadelta", f"optim.lr={LR}", "scheduler=step", "scheduler.step_size=1",
            f"scheduler.gamma={GAMMA}", f"trainer.batch_size={BATCH_SIZE}",
            f"trainer.eval_batch_size={TEST_BATCH_SIZE}", f"trainer.max_epochs={epochs}", f"seed={seed}",
            f"device={device}"]


def dltrain_run(root: Path, seed: int, epochs: int, device: str) -> Result:
    """``dltrain`` with :func:`dltrain_overrides` in a temporary run directory; the result from its ``summary.json``.

    Raises:
        ReadmeError: the command failed (with the end of its output).
    """
    with tempfile.TemporaryDirectory(prefix="mnist_net_") as folder:
        run_dir = Path(folder, "run")
        command = [*dltrain_command(), *dltrain_overrides(root, seed, epochs, device), f"hydra.run.dir={run_dir}"]
        env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode:
            raise ReadmeError(f"dltrain exited with {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
        summary = json.loads((run_dir / "summary.json").read_text())
    return Result(summary["test"]["accuracy"], summary["num_params"], seconds)


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def report(sides: dict[str, list[Result]], seeds: list[int], epochs: int, device: str) -> str:
    """The markdown table of both sides and the line comparing them."""
    lines = [f"{epochs} epochs, seeds {', '.join(map(str, seeds))}, on {device} ({cpu_model()}, "
             f"{len(os.sched_getaffinity(0))} cores), torch {torch.__version__}, "
             f"{datetime.datetime.now(datetime.timezone.utc).date().isoformat()}", "",
             "| side | parameters | test accuracy per seed | mean ± std | seconds per run |", "|---|---:|---|---|---:|"]
    stats = {}
    for name, results in sides.items():
        params = sorted({r.params for r in results})
        stats[name] = mean, std = spread([r.accuracy for r in results])
        lines.append(f"| {name} | {', '.join(f'{p:,}' for p in params)} | "
                     f"{', '.join(f'{r.accuracy:.4f}' for r in results)} | {mean:.4f} ± {std:.4f} | "
                     f"{statistics.median(r.seconds for r in results):.0f} |")
    (hand_mean, hand_std), (ours_mean, ours_std) = stats.values()
    pooled = math.sqrt((hand_std**2 + ours_std**2) / 2)
    units = f" = {(ours_mean - hand_mean) / pooled:+.2f} pooled std of the seeds" if pooled else ""
    lines += ["", f"dltrain - script: {ours_mean - hand_mean:+.4f}{units}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist-root", default=MNIST_DIR, help="mnist-8k's folder (dltrain-samples --mnist-8k "
                        "writes samples/mnist-8k)")
    parser.add_argument("--seeds", type=int, default=3, help="runs per side, seeds 0, 1, ...")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run (the script's default is 14)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    root = Path(args.mnist_root).resolve()
    check_mnist_8k(root)
    data, device, seeds = load_mnist(root), torch.device(args.device), list(range(args.seeds))
    sides: dict[str, list[Result]] = {"hand-written script": [], "dltrain model=mnist_net": []}
    for seed in seeds:
        for name, run in zip(sides, (lambda: hand_run(data, seed, args.epochs, device),
                                     lambda: dltrain_run(root, seed, args.epochs, args.device)), strict=True):
            result = run()
            sides[name].append(result)
            print(f"{name}, seed {seed}: accuracy {result.accuracy:.4f}, {result.params:,} parameters, "
                  f"{result.seconds:.0f} s", file=sys.stderr, flush=True)
    print(report(sides, seeds, args.epochs, args.device))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ReadmeError as error:
        print(f"mnist_net: error: {error}", file=sys.stderr)
        sys.exit(1)

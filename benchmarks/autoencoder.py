"""The README's autoencoder measurements, on mnist-8k (``--mnist-root``: the folder ``dltrain-samples --mnist-8k
--from <an MNIST download>`` writes), each a ``dltrain`` command:

1. a denoising autoencoder: the same MLP autoencoder trained on clean inputs and on inputs with Gaussian noise,
   each tested on the clean test images and on the same images with that noise (the reconstruction's mean
   squared error against the clean image, in the standardised pixels the loss sees);
2. its latent plot: the denoising run's ``latents.png``;
3. pretraining: a classifier (``model=mlp`` with the encoder's widths) trained on ``--labelled`` labelled
   training images (``--labelled / 10`` per digit, written as an image folder with mnist-8k's 2,000 test
   images as its test split), started from the denoising autoencoder's encoder and from scratch, over
   ``--seeds``: one sweep, ``dltrain -m model.weights=none,<best.pt> seed=0,1,2``, whose ``sweep_groups.csv``
   gives each start's mean and standard deviation of the test accuracy.

The runs stay under ``--dir`` (default ``outputs/autoencoder``, empty or new). A markdown block with the
commands and the results goes to stdout, progress to stderr. From the project root::

    python -m benchmarks.autoencoder --mnist-root samples/mnist-8k
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.commands import invocation, run
from benchmarks.readme_results import ReadmeError, check_mnist_8k
from benchmarks.transfer import empty_folder

SIDE = 28
#: The autoencoder of every run: an MLP encoder 784 -> 256 -> 32 and its mirror, Adam.
AUTOENCODER = ["task=autoencoder", "model=autoencoder", "model.hidden=[256]", "model.bottleneck=32",
               "optim=adam", "optim.lr=0.001", "device=cpu"]
#: The noise the denoising autoencoder trains with, and both are tested with.
NOISE = ["task.denoise=gaussian", "task.noise=0.5"]
#: The classifier on the labelled images: the encoder's layers, then the head.
CLASSIFIER = ["model=mlp", "model.hidden=[256,32]", "optim=adam", "optim.lr=0.001", "device=cpu"]


def read_idx(path: Path) -> np.ndarray:
    """The array of an uncompressed IDX file of unsigned bytes (mnist-8k's four files)."""
    data = path.read_bytes()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def write_labelled(mnist_root: Path, folder: Path, labelled: int) -> tuple[int, int]:
    """Write ``labelled // 10`` of each digit from mnist-8k's training images (the first ones of each class)
    into ``folder/train/<digit>/`` and every test image into ``folder/test/<digit>/``, as PNG files.

    Returns:
        The number of training and of test images written.
    """
    from PIL import Image

    raw = mnist_root / "MNIST" / "raw"
    counts = []
    for split, prefix, per_class in (("train", "train", labelled // 10), ("test", "t10k", None)):
        images, labels = read_idx(raw / f"{prefix}-images-idx3-ubyte"), read_idx(raw / f"{prefix}-labels-idx1-ubyte")
        written = 0
        for digit in range(10):
            chosen = np.flatnonzero(labels == digit)[:per_class]
            (folder / split / str(digit)).mkdir(parents=True, exist_ok=True)
            for index in chosen:
                Image.fromarray(images[index]).save(folder / split / str(digit) / f"{index:04d}.png")
            written += len(chosen)
        counts.append(written)
    return counts[0], counts[1]


def autoencoder_command(mnist_root: str, epochs: int, run_dir: Path, noise: bool) -> list[str]:
    """The dltrain command that trains the autoencoder on mnist-8k, with or without the noise."""
    return ["dltrain", "data=mnist", f"data.root={mnist_root}", "data.download=false", *AUTOENCODER,
            *(NOISE if noise else []), f"trainer.max_epochs={epochs}", "trainer.batch_size=128",
            f"hydra.run.dir={run_dir}"]


def classifier_sweep(labelled: Path, weights: Path, epochs: int, seeds: list[int], sweep_dir: Path) -> list[str]:
    """The sweep that trains the classifier on the labelled images from scratch and from the encoder, per seed."""
    return ["dltrain", "-m", "data=image_folder", f"data.path={labelled}", "data.color=grayscale",
            f"data.image_size=[{SIDE},{SIDE}]", *CLASSIFIER, f"model.weights=none,{weights}",
            f"seed={','.join(map(str, seeds))}", f"trainer.max_epochs={epochs}", "trainer.batch_size=32",
            f"hydra.sweep.dir={sweep_dir}"]


def reconstruction_errors(run_dir: Path, noise_std: float, seed: int = 0) -> tuple[float, float]:
    """The mean squared error of the run's best.pt reconstructions of the clean test images, and of the same
    images with Gaussian noise of ``noise_std`` (drawn from ``seed``), both against the clean images, in the
    standardised pixels the model reads."""
    import torch

    from dltrain.build import load_data
    from dltrain.inference.restore import load_model

    restored = load_model(run_dir / "checkpoints" / "best.pt", "cpu")
    data = load_data(restored.cfg, torch.device("cpu"), recorded=restored.data)
    clean = data.x_test
    noisy = clean + noise_std * torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return tuple(float(((restored.model(x) - clean) ** 2).mean()) for x in (clean, noisy))


def sweep_groups(sweep_dir: Path) -> dict[str, dict[str, str]]:
    """``sweep_groups.csv`` of a sweep, by the group's ``model.weights``."""
    with (sweep_dir / "sweep_groups.csv").open(newline="") as f:
        return {row["model.weights"]: row for row in csv.DictReader(f)}


def report(commands: list[str], errors: dict[str, tuple[float, float]], groups: dict[str, dict[str, str]],
           counts: tuple[int, int], seconds: float, noise_std: float, argv: list[str] | None = None) -> str:
    """The markdown block: where it was measured, the commands and the two tables."""
    from benchmarks.machine import cpu_model

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    lines = [f"Measured by `{invocation('benchmarks.autoencoder', argv)}` on {cpu_model()} "
             f"({cores} cores), torch {importlib.metadata.version('torch')}, {date}, in {seconds:.0f} s.", "",
             "```bash", *commands, "```", "",
             f"| autoencoder | test MSE, clean inputs | test MSE, inputs with noise (std {noise_std}) |",
             "|---|---|---|"]
    lines += [f"| {name} | {clean:.4f} | {noisy:.4f} |" for name, (clean, noisy) in errors.items()]
    lines += ["", f"The classifier on {counts[0]} labelled images ({counts[0] // 10} per digit; tested on "
              f"{counts[1]:,}), test accuracy over the seeds (the sweep's `sweep_groups.csv`):", "",
              "| start | n | test accuracy, mean ± sd | note |", "|---|---|---|---|"]
    for weights, row in groups.items():
        name = "from scratch" if weights == "none" else "from the denoising autoencoder's encoder"
        lines.append(f"| {name} | {row['n']} | {float(row['test_accuracy_mean']):.3f} ± "
                     f"{float(row['test_accuracy_sd'] or 0):.3f} | {row.get('note', '')} |")
    return "\n".join(lines)


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist-root", required=True, help="mnist-8k's folder (samples/mnist-8k)")
    parser.add_argument("--dir", type=Path, default=Path("outputs/autoencoder"), help="where the runs go")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of each autoencoder")
    parser.add_argument("--labelled", type=int, default=100, help="labelled training images of the classifier")
    parser.add_argument("--classifier-epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    root = Path(args.mnist_root)
    check_mnist_8k(root)
    started, folder = time.perf_counter(), empty_folder(args.dir)
    counts = write_labelled(root, folder / "labelled", args.labelled)
    plain, denoising = (autoencoder_command(args.mnist_root, args.epochs, folder / name, noise)
                        for name, noise in (("plain", False), ("denoising", True)))
    sweep = classifier_sweep(folder / "labelled", folder / "denoising" / "checkpoints" / "best.pt",
                             args.classifier_epochs, args.seeds, folder / "classifier")
    for command in (plain, denoising, sweep):
        run(command)
    noise_std = float(NOISE[1].split("=")[1])
    errors = {"trained on clean inputs": reconstruction_errors(folder / "plain", noise_std),
              f"trained with noise (std {noise_std})": reconstruction_errors(folder / "denoising", noise_std)}
    groups = sweep_groups(folder / "classifier")
    block = report([shlex.join(c) for c in (plain, denoising, sweep)], errors, groups, counts,
                   time.perf_counter() - started, noise_std, argv)
    print(block)
    print(json.dumps({"errors": errors, "groups": groups}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ReadmeError as error:
        print(f"autoencoder: error: {error}", file=sys.stderr)
        sys.exit(1)

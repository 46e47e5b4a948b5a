"""Transfer learning measured with no network: a CNN pretrained by dltrain on one image set, fine-tuned on a
few hundred images of another, against the same CNN trained from scratch on those images.

The pretraining set is mnist-8k (8,000 MNIST digits, ``--mnist-root``: the folder ``dltrain-samples --mnist-8k
--from <an MNIST download>`` writes). The small set is scikit-learn's 1,797 handwritten digits, a different scan
of different writers at 8x8 pixels: the script writes ``--per-class`` of each class (200 in all by default) as
28x28 PNG files into an image folder (``train/``, one sub-folder per class), and every other digit into its
``test/`` split. Then, for each seed, two runs with the same data, model, optimizer and epochs:

- fine-tuned: ``model.weights=<the pretraining run's best.pt>``, the backbone frozen for ``--freeze-epochs``
  epochs (only the head trains), then everything at ``--backbone-lr`` times the head's learning rate;
- from scratch: the same command without the four ``model.weights/freeze*/backbone_lr`` keys.

Every run is a ``dltrain`` command, printed as run; the runs stay under ``--dir`` (default
``outputs/transfer``, which must be empty or new). A markdown block with the commands and the test accuracy of
each run (mean and standard deviation over the seeds) goes to stdout, progress to stderr; ``--write`` puts
the block into README.md between the ``transfer_results`` markers. From the project root::

    python -m benchmarks.transfer --mnist-root samples/mnist-8k
    python -m benchmarks.transfer --mnist-root samples/mnist-8k --write
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.commands import invocation, run
from benchmarks.readme_results import README, ReadmeError, check_mnist_8k

BEGIN = "<!-- transfer_results:begin -->"
END = "<!-- transfer_results:end -->"
SIDE = 28  # the pretraining images' side: the small set is written at it, so the two CNNs are the same network
DIGIT_SIDE = 20  # MNIST centres each digit in a 20x20 box inside its 28x28 image; the 8x8 digits are drawn so too
#: The CNN and its training, the same in every run (experiment=mnist_cnn's network, Adam at 3e-3).
NETWORK = ["model=cnn", "model.channels=[32,64]", "model.hidden=[128]", "regularization.dropout=0.25",
           "optim=adam", "optim.lr=0.003", "device=cpu"]


def write_digits(folder: Path, per_class: int, seed: int = 0) -> tuple[int, int]:
    """Write scikit-learn's digits as 28x28 grayscale PNG files: ``per_class`` of each class (drawn with
    ``seed``) under ``folder/train/<digit>/``, the others under ``folder/test/<digit>/``.

    Returns:
        The number of training and of test images written.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(digits.target), dtype=bool)
    for digit in range(10):
        chosen[rng.permutation(np.flatnonzero(digits.target == digit))[:per_class]] = True
    margin = (SIDE - DIGIT_SIDE) // 2
    for index, (pixels, digit) in enumerate(zip(digits.images, digits.target, strict=True)):
        small = Image.fromarray(np.round(pixels * (255 / 16)).astype(np.uint8))  # ink 0..16 -> 0..255
        image = Image.new("L", (SIDE, SIDE))
        image.paste(small.resize((DIGIT_SIDE, DIGIT_SIDE), Image.Resampling.BILINEAR), (margin, margin))
        target = folder / ("train" if chosen[index] else "test") / str(digit)
        target.mkdir(parents=True, exist_ok=True)
        image.save(target / f"{index:04d}.png")
    return int(chosen.sum()), int((~chosen).sum())


def pretrain_command(mnist_root: str, epochs: int, run_dir: Path) -> list[str]:
    """The dltrain command that pretrains the CNN on mnist-8k."""
    return ["dltrain", "data=mnist", f"data.root={mnist_root}", "data.download=false", *NETWORK,
            f"trainer.max_epochs={epochs}", "trainer.batch_size=128", f"hydra.run.dir={run_dir}"]


def small_set_command(digits: Path, epochs: int, seed: int, run_dir: Path, start: list[str]) -> list[str]:
    """The dltrain command that trains the CNN on the small digit folder, from ``start`` (the transfer keys,
    or none for a run from scratch)."""
    return ["dltrain", "data=image_folder", f"data.path={digits}", "data.color=grayscale",
            f"data.image_size=[{SIDE},{SIDE}]", *NETWORK, *start, f"trainer.max_epochs={epochs}",
            "trainer.batch_size=32", f"seed={seed}", f"hydra.run.dir={run_dir}"]


def transfer_keys(weights: Path, freeze_epochs: int, backbone_lr: float) -> list[str]:
    """The keys that start a run from the pretrained weights with the fine-tune schedule."""
    return [f"model.weights={weights}", "model.freeze=backbone", f"model.freeze_epochs={freeze_epochs}",
            f"model.backbone_lr={backbone_lr}"]


def plan(args: argparse.Namespace) -> tuple[list[str], dict[str, list[list[str]]]]:
    """The pretraining command, and for each way of training on the small set its command per seed."""
    folder = args.dir
    pretrain = pretrain_command(args.mnist_root, args.pretrain_epochs, folder / "pretrain")
    start = transfer_keys(folder / "pretrain" / "checkpoints" / "best.pt", args.freeze_epochs, args.backbone_lr)
    ways = {"fine-tuned from the pretrained CNN": ("finetune", start), "from scratch": ("scratch", [])}
    return pretrain, {name: [small_set_command(folder / "digits", args.epochs, seed, folder / f"{label}-seed{seed}",
                                               keys) for seed in args.seeds]
                      for name, (label, keys) in ways.items()}


def shown_commands(pretrain: list[str], runs: dict[str, list[list[str]]]) -> list[str]:
    """The commands the README shows: the pretraining, then each way's run of the first seed."""
    return [shlex.join(pretrain), *(shlex.join(commands[0]) for commands in runs.values())]


def validation_share() -> float:
    """The share of the small set's training folder held out for validation: image_folder's default."""
    from dltrain.config.schemas import ImageFolderConfig

    return next(f.default for f in dataclasses.fields(ImageFolderConfig) if f.name == "val_fraction")


def mean_std(values: list[float]) -> str:
    """``mean ± std`` of accuracies (the sample standard deviation; 0 for one value)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


def table(results: dict[str, list[float]], seeds: list[int]) -> list[str]:
    """The markdown table: one row per way of training, the test accuracy per seed, then mean ± std."""
    lines = ["| training on the small set | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |",
             "|---" * (len(seeds) + 2) + "|"]
    for name, accuracies in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{a:.3f}" for a in accuracies) + f" | {mean_std(accuracies)} |")
    return lines


def report(commands: list[str], results: dict[str, list[float]], seeds: list[int], counts: tuple[int, int],
           pretrain_accuracy: float, seconds: float, argv: list[str] | None = None) -> str:
    """The markdown block: where it was measured, the data, the commands and the table."""
    from benchmarks.machine import cpu_model

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    return "\n".join([
        f"Measured by `{invocation('benchmarks.transfer', argv)}` on {cpu_model()} ({cores} cores), torch "
        f"{importlib.metadata.version('torch')}, {date}, in {seconds:.0f} s: the pretrained CNN's test accuracy on "
        f"mnist-8k is {pretrain_accuracy:.3f}; the small set is {counts[0]} of scikit-learn's digits "
        f"({counts[0] // 10} per class, {validation_share():.0%} of them for validation), the test split its other "
        f"{counts[1]:,}.",
        "", "```bash", *commands, "```", "", *table(results, seeds)])


def write_readme(block: str, path: Path = README) -> None:
    """Replace what lies between the ``transfer_results`` markers in ``path`` with ``block``, in one step."""
    from dltrain.files import atomic_write

    text = path.read_text(encoding="utf-8")
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ReadmeError(f"README.md has no {BEGIN} ... {END} around the transfer results: put them back.")
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        f.write(f"{text[:start + len(BEGIN)]}\n\n{block}\n\n{text[end:]}")


def empty_folder(folder: Path) -> Path:
    """``folder``, made if new.

    Raises:
        ReadmeError: it holds anything (earlier runs are never written over).
    """
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ReadmeError(f"--dir {folder} is not empty: remove it or pass another --dir.")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def argument_parser() -> argparse.ArgumentParser:
    """The script's arguments; their defaults give the runs the README shows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist-root", required=True, help="mnist-8k's folder (samples/mnist-8k)")
    parser.add_argument("--dir", type=Path, default=Path("outputs/transfer"), help="where the runs go (empty or new)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-class", type=int, default=20, help="training images of each digit in the small set")
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every run on the small set")
    parser.add_argument("--freeze-epochs", type=int, default=1, help="of those, epochs with the backbone frozen")
    parser.add_argument("--backbone-lr", type=float, default=0.3, help="the backbone's LR once unfrozen, "
                        "as a fraction of the head's")
    parser.add_argument("--write", action="store_true", help="put the block into README.md")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    check_mnist_8k(Path(args.mnist_root))
    started, folder = time.perf_counter(), empty_folder(args.dir)
    counts = write_digits(folder / "digits", args.per_class)
    pretrain, runs = plan(args)
    pretrain_accuracy = run(pretrain)["test"]["accuracy"]
    results: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(len(args.seeds)):  # seed by seed, each way in turn
        for name, commands in runs.items():
            results[name].append(run(commands[i])["test"]["accuracy"])
    seconds = time.perf_counter() - started
    block = report(shown_commands(pretrain, runs), results, args.seeds, counts, pretrain_accuracy, seconds, argv)
    print(block)
    if args.write:
        write_readme(block)
        print(f"written to {README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ReadmeError as error:
        print(f"transfer: error: {error}", file=sys.stderr)
        sys.exit(1)

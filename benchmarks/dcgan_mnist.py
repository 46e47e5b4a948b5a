"""The README's DCGAN measurement: a DCGAN trained by dltrain on mnist-8k, its samples scored each epoch by
a CNN that dltrain trained on the same digits, with no download.

The data is mnist-8k (8,000 MNIST digits, ``--mnist-root``: the folder ``dltrain-samples --mnist-8k --from
<an MNIST download>`` writes). Two ``dltrain`` commands, printed as run:

1. the scorer: ``experiment=mnist_cnn``'s CNN for ``--scorer-epochs`` epochs (its test accuracy is reported);
2. the GAN: ``task=gan`` (``model=dcgan``) for ``--epochs`` epochs with ``task.scorer=`` the scorer's best.pt,
   so each epoch's row holds ``val_sample_score``, ``val_sample_confident`` and ``val_sample_classes``.

The runs stay under ``--dir`` (default ``outputs/dcgan``, which must be empty or new). A markdown block with the
commands and the score of every epoch (from the GAN's metrics.csv) goes to stdout, progress to stderr; the
samples of the best epoch are copied to ``docs/dcgan_mnist.png``. ``--write`` puts the block into README.md
between the ``dcgan_results`` markers. From the project root::

    python -m benchmarks.dcgan_mnist --mnist-root samples/mnist-8k
    python -m benchmarks.dcgan_mnist --mnist-root samples/mnist-8k --write
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from benchmarks.commands import invocation, run
from benchmarks.readme_results import README, ReadmeError, check_mnist_8k
from benchmarks.transfer import empty_folder

BEGIN = "<!-- dcgan_results:begin -->"
END = "<!-- dcgan_results:end -->"
PICTURE = Path("docs/dcgan_mnist.png")
#: The scorer: experiment=mnist_cnn's CNN (Adam at 3e-3), as the transfer measurement pretrains it.
SCORER = ["model=cnn", "model.channels=[32,64]", "model.hidden=[128]", "regularization.dropout=0.25", "optim=adam",
          "optim.lr=0.003", "device=cpu", "trainer.batch_size=128"]
#: The GAN: DCGAN's layers at half the default widths, so that an epoch takes seconds on a CPU.
GAN = ["task=gan", "model.latent_size=64", "model.generator.channels=[64,32]", "model.discriminator.channels=[32,64]",
       "device=cpu", "trainer.batch_size=64"]


def data_keys(mnist_root: str) -> list[str]:
    return ["data=mnist", f"data.root={mnist_root}", "data.download=false"]


def commands(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The scorer's command and the GAN's."""
    scorer_dir, gan_dir = args.dir / "scorer", args.dir / "gan"
    scorer = ["dltrain", *data_keys(args.mnist_root), *SCORER, f"trainer.max_epochs={args.scorer_epochs}",
              f"hydra.run.dir={scorer_dir}"]
    gan = ["dltrain", *data_keys(args.mnist_root), *GAN, f"trainer.max_epochs={args.epochs}",
           f"task.scorer={scorer_dir / 'checkpoints' / 'best.pt'}", f"hydra.run.dir={gan_dir}"]
    return scorer, gan


def epoch_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def table(rows: list[dict[str, str]], best: int | None) -> list[str]:
    """One line per epoch: the sample score and its two parts, D's outputs, the epoch's seconds."""
    lines = ["| epoch | val_sample_score | val_sample_confident | val_sample_classes | train D(x) | train D(G(z)) "
             "| seconds |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        mark = " (best)" if int(row["epoch"]) == best else ""
        lines.append(f"| {row['epoch']}{mark} | {float(row['val_sample_score']):.2f} | "
                     f"{float(row['val_sample_confident']):.3f} | {float(row['val_sample_classes']):.3f} | "
                     f"{float(row['train_d_real']):.3f} | {float(row['train_d_fake']):.3f} | "
                     f"{float(row['epoch_seconds']):.0f} |")
    return lines


def report(shown: list[str], scorer_accuracy: float, rows: list[dict[str, str]], summary: dict,
           seconds: float, argv: list[str] | None = None) -> str:
    """The markdown block: where it was measured, the commands, the table and the picture."""
    from benchmarks.machine import cpu_model

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    best = summary.get("best_epoch")
    return "\n".join([
        f"Measured by `{invocation('benchmarks.dcgan_mnist', argv)}` on {cpu_model()} ({cores} cores), torch "
        f"{importlib.metadata.version('torch')}, {date}, in {seconds:.0f} s: the scorer's test accuracy on mnist-8k "
        f"is {scorer_accuracy:.3f}; the GAN ran {summary['epochs_run']} epochs ({summary['stop_reason']}), "
        f"its best epoch {best}.",
        "", "```bash", *shown, "```", "", *table(rows, best), "",
        f"![The best epoch's samples (epoch {best}) from the fixed latent batch]({PICTURE.as_posix()})", "",
        prose(rows)])


def prose(rows: list[dict[str, str]]) -> str:
    """What the table says, in words: the score's first and last values and the last epoch's parts."""
    first, last = rows[0], rows[-1]
    return (f"The score went from {float(first['val_sample_score']):.2f} after epoch 1 to "
            f"{float(last['val_sample_score']):.2f} of a possible 10 after epoch {last['epoch']}: by then "
            f"{float(last['val_sample_confident']):.3f} of the samples are digits the scorer is 90% sure of, and "
            f"the spread of the predicted classes is {float(last['val_sample_classes']):.3f} (1: all equally often).")


def write_readme(block: str, path: Path = README) -> None:
    """Replace what lies between the ``dcgan_results`` markers in ``path`` with ``block``, in one step."""
    from dltrain.files import atomic_write

    text = path.read_text(encoding="utf-8")
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ReadmeError(f"README.md has no {BEGIN} ... {END} around the DCGAN results: put them back.")
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        f.write(f"{text[:start + len(BEGIN)]}\n\n{block}\n\n{text[end:]}")


def argument_parser() -> argparse.ArgumentParser:
    """The script's arguments; their defaults give the runs the README shows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist-root", required=True, help="mnist-8k's folder (samples/mnist-8k)")
    parser.add_argument("--dir", type=Path, default=Path("outputs/dcgan"), help="where the runs go (empty or new)")
    parser.add_argument("--scorer-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6, help="the GAN's epochs")
    parser.add_argument("--write", action="store_true", help="put the block into README.md and the best "
                        f"epoch's samples into {PICTURE}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    check_mnist_8k(Path(args.mnist_root))
    started, folder = time.perf_counter(), empty_folder(args.dir)
    scorer, gan = commands(args)
    scorer_accuracy = run(scorer)["test"]["accuracy"]
    summary = run(gan)
    seconds = time.perf_counter() - started
    best = summary.get("best_epoch") or summary["epochs_run"]
    block = report([shlex.join(scorer), shlex.join(gan)], scorer_accuracy, epoch_rows(folder / "gan"), summary,
                   seconds, argv)
    print(block)
    if args.write:
        PICTURE.parent.mkdir(exist_ok=True)
        shutil.copyfile(folder / "gan" / "samples" / f"epoch-{best:03d}.png", PICTURE)
        write_readme(block)
        print(f"written to {README} and {PICTURE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ReadmeError as error:
        print(f"dcgan_mnist: error: {error}", file=sys.stderr)
        sys.exit(1)

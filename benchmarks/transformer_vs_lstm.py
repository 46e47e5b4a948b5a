"""model=transformer against the recurrent models on the same data and training settings: the README's
comparison (### Transformers), measured with dltrain commands.

- text: the review sample (``data=text_csv data.path=samples/reviews.csv``, written by the first run when
  missing), ``model=lstm`` against ``model=transformer`` (class-token and mean pooling), with
  ``experiment=text_lstm``'s training settings;
- digits read row by row: scikit-learn's 8x8 digits (``data=digits``, 8 steps of 8 pixels), ``model=lstm``
  against ``model=transformer``, every other key at its default;
- with ``--mnist-root``: mnist-8k's 28x28 digits, ``model=mnist_rnn`` (28 rows) against a small ViT
  (``model=transformer model.patch_size=7``: 16 patches).

Every run is a ``dltrain`` command on the CPU, printed as it starts, its run directory under ``--dir`` (default
``outputs/transformer_vs_lstm``, which must be empty or new). The runs get ``OMP_NUM_THREADS=--threads``
(default 1: one thread per run, so that the timings compare the models' work rather than how torch shares
the machine's cores between its threads). A markdown block with the commands and each run's test accuracy,
best validation accuracy and its epoch (from ``metrics.csv``), epochs run, training seconds, seconds per
epoch and parameters (from its ``summary.json``) goes to stdout, progress to stderr. From the project root::

    python -m benchmarks.transformer_vs_lstm
    python -m benchmarks.transformer_vs_lstm --mnist-root samples/mnist-8k
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import os
import shlex
import sys
import time
from pathlib import Path

from benchmarks.commands import invocation, run
from benchmarks.readme_results import ReadmeError, check_mnist_8k

#: experiment=text_lstm's training keys (its model keys are the LSTM's own), for both models on the texts.
TEXT = ["data=text_csv", "data.path=samples/reviews.csv", "optim.lr=0.003", "regularization.dropout=0.2",
        "trainer.max_epochs=20"]


def runs(mnist_root: str | None) -> list[tuple[str, list[str]]]:
    """(data, the run's keys) of every run, the recurrent model of each pair first."""
    pairs = [("reviews (text)", [*TEXT, "model=lstm"]), ("reviews (text)", [*TEXT, "model=transformer"]),
             ("reviews (text)", [*TEXT, "model=transformer", "model.pooling=mean"]),
             ("digits 8x8, by rows", ["model=lstm"]), ("digits 8x8, by rows", ["model=transformer"])]
    if mnist_root is not None:
        mnist = ["data=mnist", f"data.root={mnist_root}", "data.download=false", "trainer.max_epochs=5"]
        pairs += [("mnist-8k 28x28", [*mnist, "model=mnist_rnn"]),
                  ("mnist-8k 28x28", [*mnist, "model=transformer", "model.patch_size=7"])]
    return pairs


def command(keys: list[str], run_dir: Path | str) -> list[str]:
    """The dltrain command of one run: its keys on the CPU, into ``run_dir``."""
    return ["dltrain", *keys, "device=cpu", f"hydra.run.dir={run_dir}"]


def best_validation(run_dir: Path) -> tuple[float, int]:
    """The highest ``val_accuracy`` in the run's ``metrics.csv`` and its epoch (the first, on a tie)."""
    with (run_dir / "metrics.csv").open(newline="") as f:
        rows = [(float(r["val_accuracy"]), int(r["epoch"])) for r in csv.DictReader(f)]
    return max(rows, key=lambda r: (r[0], -r[1]))


def row(data: str, keys: list[str], summary: dict) -> str:
    """One line of the table: the data, the run's model keys, what its summary.json and metrics.csv say."""
    model = " ".join(f"`{key}`" for key in keys if key.startswith("model"))
    accuracy, epoch = best_validation(Path(summary["run_dir"]))
    epochs, seconds = summary["epochs_run"], summary["train_seconds"]
    return (f"| {data} | {model} | {summary['test']['accuracy']:.3f} | {accuracy:.3f} ({epoch}) | {epochs} | "
            f"{seconds:.1f} | {seconds / epochs:.2f} | {summary['num_params']:,} |")


def report(done: list[tuple[str, list[str], list[str], dict]], threads: int, seconds: float,
           argv: list[str] | None = None) -> str:
    """The markdown block: where it was measured, the commands, the table."""
    from benchmarks.machine import cpu_model

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    return "\n".join([
        f"Measured by `{invocation('benchmarks.transformer_vs_lstm', argv)}` on {cpu_model()} ({cores} cores, "
        f"OMP_NUM_THREADS={threads}), torch {importlib.metadata.version('torch')}, {date}, in {seconds:.0f} s:",
        "", "```bash", *(shlex.join(args) for _, _, args, _ in done), "```", "",
        "| data | model | test accuracy | best val accuracy (epoch) | epochs | train seconds | seconds per epoch "
        "| parameters |", "|---|---|---|---|---|---|---|---|",
        *(row(data, keys, summary) for data, keys, _, summary in done)])


def argument_parser() -> argparse.ArgumentParser:
    """The script's arguments; their defaults give the runs the README shows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist-root", help="mnist-8k's folder (samples/mnist-8k): adds the 28x28 pair")
    parser.add_argument("--dir", type=Path, default=Path("outputs/transformer_vs_lstm"),
                        help="where the runs go (empty or new)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every run")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = argument_parser().parse_args(argv)
    if args.mnist_root is not None:
        check_mnist_8k(Path(args.mnist_root))
    if args.dir.exists() and any(args.dir.iterdir()):
        raise ReadmeError(f"--dir {args.dir} is not empty: remove it or pass another --dir.")
    start, done = time.perf_counter(), []
    for i, (data, keys) in enumerate(runs(args.mnist_root)):
        args_ = command(keys, args.dir / f"run{i}")
        done.append((data, keys, args_, run(args_, {"OMP_NUM_THREADS": str(args.threads)})))
    print(report(done, args.threads, time.perf_counter() - start, argv))


if __name__ == "__main__":
    try:
        main()
    except ReadmeError as err:
        sys.exit(f"transformer_vs_lstm: {err}")

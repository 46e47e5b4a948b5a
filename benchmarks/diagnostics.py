"""What ``trainer.diagnostics`` costs: epochs with it on and off, and the measured step's own extra time.

Each workload trains in this process through ``dltrain.train`` with ``trainer.max_epochs=E+1`` and early
stopping off, alternately with ``trainer.diagnostics=true`` and ``false`` (on, off, off, on, ...) so that
the machine's drift falls on both; the epoch time is ``metrics.csv``'s ``epoch_seconds`` (train +
validation), the first epoch of every run dropped (warm-up). With it on, the measured step is also timed
directly: the time of ``Diagnostics.measure`` minus that of the optimizer step it wraps is what measuring
adds to an epoch (the hooks, the weights' copy, the norms and the one read from the device).

Workloads: ``mlp``, the default run (``model=mlp`` on the digits: 1,149 training images of 8x8, batch 64,
18 steps an epoch); ``cnn``, the default ``model=cnn`` on the 8,000 MNIST images of ``samples/mnist-8k``
(``dltrain-samples --mnist-8k --from <an MNIST download>`` makes it; skipped when it is absent). Run it
from the project root::

    python -m benchmarks.diagnostics                      # 3 rounds of 5 timed epochs, both workloads
    python -m benchmarks.diagnostics --only mlp --repeats 5 --epochs 10
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.machine import cpu_model
from dltrain import compose, train
from dltrain.training.diagnostics import Diagnostics

MNIST_DIR = Path("samples/mnist-8k")  # relative to the project root: dltrain-samples --mnist-8k writes it
WORKLOADS = {
    "mlp": ("mlp, digits 8x8, batch 64", []),
    "cnn": ("cnn, mnist-8k 1x28x28, batch 64",
            ["model=cnn", "data=mnist", f"data.root={MNIST_DIR}", "data.download=false"]),
}


class StepTimer:
    """Wraps ``Diagnostics.measure`` to time each measured step and the optimizer step inside it."""

    def __init__(self) -> None:
        self.extra: list[float] = []  # seconds measuring added to each measured step
        self._measure = Diagnostics.measure

    def __enter__(self) -> StepTimer:
        timer, measure = self, self._measure

        def timed(diagnostics: Diagnostics, step: Callable[..., Any], x: torch.Tensor, y: torch.Tensor) -> Any:
            inner = [0.0]

            def timed_step(x: torch.Tensor, y: torch.Tensor) -> Any:
                started = time.perf_counter()
                result = step(x, y)
                inner[0] = time.perf_counter() - started
                return result

            started = time.perf_counter()
            result = measure(diagnostics, timed_step, x, y)
            timer.extra.append(time.perf_counter() - started - inner[0])
            return result

        Diagnostics.measure = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        Diagnostics.measure = self._measure  # type: ignore[method-assign]


def epoch_seconds(overrides: list[str], epochs: int, on: bool) -> list[float]:
    """Train ``epochs + 1`` epochs; every epoch's ``epoch_seconds`` but the first."""
    with tempfile.TemporaryDirectory(prefix="bench_diagnostics_") as folder:
        run = Path(folder) / "run"
        cfg = compose([*overrides, "device=cpu", f"trainer.max_epochs={epochs + 1}",
                       "trainer.early_stopping.enabled=false", f"trainer.diagnostics={str(on).lower()}"])
        with contextlib.redirect_stdout(io.StringIO()):  # the run's own results table: not this script's output
            train(cfg, run_dir=run)
        with (run / "metrics.csv").open(newline="") as f:
            return [float(row["epoch_seconds"]) for row in csv.DictReader(f)][1:]


def bench(name: str, repeats: int, epochs: int) -> list[str]:
    """The table rows of one workload."""
    what, overrides = WORKLOADS[name]
    times: dict[bool, list[float]] = {True: [], False: []}
    timer = StepTimer()
    for round_ in range(repeats):
        for on in (True, False) if round_ % 2 == 0 else (False, True):
            print(f"{name}: round {round_ + 1}, diagnostics {'on' if on else 'off'}", file=sys.stderr)
            if on:
                with timer:
                    times[on] += epoch_seconds(overrides, epochs, on)
            else:
                times[on] += epoch_seconds(overrides, epochs, on)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    extra = statistics.median(timer.extra)
    return [f"| {what} | on | {on:.4f} | {on / off:.3f}× off | {extra * 1e3:.2f} ms ({extra / off:.1%} of an epoch) |",
            f"| {what} | off | {off:.4f} | — | — |"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds of one run on and one off")
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per run (after a warm-up epoch)")
    parser.add_argument("--only", default="mlp,cnn", help="workloads, comma-separated: mlp, cnn")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n != "cnn" or (MNIST_DIR / "MNIST" / "raw").is_dir()]
    rows = [row for name in names for row in bench(name, args.repeats, args.epochs)]
    print(f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{args.repeats} rounds of {args.epochs} timed epochs\n")
    print("| workload | trainer.diagnostics | median epoch (s) | ratio | measured step's extra time (median) |")
    print("|---|---|---:|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the end-of-run report costs: the time each picture of the default run takes to draw and save.

Trains the default run (``model=mlp`` on the digits, every default: early stopping, diagnostics on)
in this process through ``dltrain.train``, ``--repeats`` times, with every picture function the run
calls (``plot_curves``, ``plot_confusion_matrix``, ``plot_image_grid`` for ``worst_predictions.png``
and ``samples.png``, ``plot_gradients``) wrapped in a clock; prints each picture's median seconds,
their sum per run, and the run's whole wall time beside it. The first run's pictures are dropped
(matplotlib's import and font cache). Run it from the project root::

    python -m benchmarks.report                 # 3 timed runs
    python -m benchmarks.report --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from benchmarks.machine import cpu_model
from dltrain import compose, train
from dltrain.report import diagnostics_plot, plots, report_plots

#: The modules whose ``plot_*`` functions a run calls, found by name at call time.
MODULES = (plots, report_plots, diagnostics_plot)


@contextlib.contextmanager
def timed_pictures(seconds: dict[str, list[float]]) -> Iterator[None]:
    """Every ``plot_*`` function of :data:`MODULES` appends its time to ``seconds[<file name>]``."""
    originals = [(module, name, getattr(module, name)) for module in MODULES for name in dir(module)
                 if name.startswith("plot_")]

    def clocked(draw: Callable[..., Path]) -> Callable[..., Path]:
        def run(*args: Any, **kwargs: Any) -> Path:
            started = time.perf_counter()
            path = draw(*args, **kwargs)
            seconds[Path(path).name].append(time.perf_counter() - started)
            return path
        return run

    for module, name, draw in originals:
        setattr(module, name, clocked(draw))
    try:
        yield
    finally:
        for module, name, draw in originals:
            setattr(module, name, draw)


def one_run(seconds: dict[str, list[float]]) -> float:
    """Train the default run once, its pictures timed into ``seconds``; returns its wall time."""
    with tempfile.TemporaryDirectory(prefix="bench_report_") as folder:
        started = time.perf_counter()
        with timed_pictures(seconds), contextlib.redirect_stdout(io.StringIO()):  # the run's table is not ours
            train(compose(["device=cpu"]), run_dir=Path(folder) / "run")
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (after one warm-up run)")
    args = parser.parse_args(argv)
    one_run(defaultdict(list))  # warm-up: imports, fonts
    seconds: dict[str, list[float]] = defaultdict(list)
    walls = []
    for i in range(args.repeats):
        print(f"run {i + 1} of {args.repeats}", file=sys.stderr)
        walls.append(one_run(seconds))
    print(f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}; the default run "
          f"(digits, mlp), median of {args.repeats} runs\n")
    print("| picture | draw + save (s) |")
    print("|---|---:|")
    for name, times in sorted(seconds.items(), key=lambda item: -statistics.median(item[1])):
        print(f"| {name} | {statistics.median(times):.3f} |")
    total = statistics.median(sum(times[i] for times in seconds.values()) for i in range(args.repeats))
    print(f"| all pictures, per run | {total:.3f} |")
    print(f"| the whole run (train, test, report, pictures) | {statistics.median(walls):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

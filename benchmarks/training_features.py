"""What the training features cost per epoch: EMA, gradient accumulation, the simple profiler,
MixUp and deterministic algorithms against the plain run (and, given ``--baseline``, the plain run
of an earlier checkout of dltrain, to see whether the loop's new hooks cost anything when off).

Every run is its own process (``python -c`` through ``dltrain.train``), so that no setting of one
run (deterministic algorithms, allocator state) reaches the next, and so that an earlier checkout
runs its own code (its folder first on ``PYTHONPATH``). Each run trains ``E + 1`` epochs with
early stopping off, the first dropped (warm-up), and gives two times per epoch: the CPU seconds
of its training pass (``Trainer.train_epoch``, every optimizer step and what a feature adds to
it; with ``--threads 1`` this is the work done, which other processes on the machine barely
change) and ``metrics.csv``'s ``epoch_seconds`` (wall clock, train + validation). The variants
run in rounds, each round in another order (rotated by one), so that the machine's drift falls
on all of them alike.

Workload: the suite's ``mlp`` (``benchmarks.run``): a 20,000 x 64 table of 10 classes
(``data=csv``, 16,000 rows train), the default ``model=mlp``, batch 64, 250 steps an epoch, where
a cost per step shows. Run it from the project root::

    python -m benchmarks.training_features                        # 3 rounds of 10 timed epochs
    mkdir -p /tmp/before && git archive 657540f | tar -x -C /tmp/before \
        && ln -s /tmp/before/conf /tmp/before/dltrain/conf
    python -m benchmarks.training_features --baseline /tmp/before --repeats 5
    python -m benchmarks.training_features --quick --only plain,deterministic   # a smoke check
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
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.machine import cpu_model
from benchmarks.run import BATCH_SIZE, FULL, QUICK, machine_busy_seconds, own_cpu_seconds, write_table

#: name -> (what it is, its overrides); ``plain`` is what every ratio is against.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "plain": ("plain run", []),
    "ema": ("EMA", ["regularization.ema_decay=0.999"]),
    "accumulate": (f"accumulation, k=4 at batch {BATCH_SIZE // 4} ({BATCH_SIZE} examples per optimizer step)",
                   ["trainer.accumulate_grad_batches=4", f"trainer.batch_size={BATCH_SIZE // 4}"]),
    "plain_small": (f"plain run at batch {BATCH_SIZE // 4} (the micro-batch above, one step each)",
                    [f"trainer.batch_size={BATCH_SIZE // 4}"]),
    "accumulate_same": (f"accumulation, k=4 at batch {BATCH_SIZE} (a quarter of the optimizer steps)",
                        ["trainer.accumulate_grad_batches=4"]),
    "profiler": ("simple profiler", ["trainer.profiler=simple"]),
    "mixup": ("MixUp", ["regularization.augment=[mixup]"]),
    "deterministic": ("deterministic algorithms", ["trainer.deterministic=true"]),
}
BASELINE = "before"  # the plain run of the --baseline checkout

# One run, in a fresh process: prints the timed epochs' seconds as JSON on its last line.
CHILD = r"""
import contextlib, csv, io, json, sys, tempfile, time
from pathlib import Path
import torch
from dltrain import compose, train
from dltrain.training.trainer import Trainer
overrides, threads = json.loads(sys.argv[1]), int(sys.argv[2])
if threads:
    torch.set_num_threads(threads)
cpu, train_epoch = [], Trainer.train_epoch
def timed(self, batches):
    started = time.process_time()
    result = train_epoch(self, batches)
    cpu.append(time.process_time() - started)
    return result
Trainer.train_epoch = timed
with tempfile.TemporaryDirectory(prefix="bench_features_") as folder:
    run = Path(folder) / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        train(compose(overrides), run_dir=run)
    with (run / "metrics.csv").open(newline="") as f:
        wall = [float(row["epoch_seconds"]) for row in csv.DictReader(f)][1:]
print(json.dumps({"cpu": cpu[1:], "wall": wall}))
"""
KINDS = {"cpu": "CPU seconds of an epoch's training pass", "wall": "wall seconds of an epoch (train + validation)"}


def run_once(overrides: list[str], checkout: Path | None,
             threads: int = 0) -> tuple[dict[str, list[float]], float]:
    """The timed epochs of one run (``cpu`` and ``wall`` seconds) (in ``checkout``'s dltrain when
    given), and the cores other processes used on average meanwhile. ``threads``: torch's
    threads in the run (0: its default)."""
    env = dict(os.environ)
    if checkout is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(checkout), env.get("PYTHONPATH")]))
    busy, own, started = machine_busy_seconds(), own_cpu_seconds(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(overrides), str(threads)], env=env,
                          capture_output=True, text=True, cwd=checkout or Path.cwd())
    if proc.returncode != 0:
        raise RuntimeError(f"run {' '.join(overrides)} failed:\n{proc.stderr[-3000:]}")
    wall = time.perf_counter() - started
    after = machine_busy_seconds()
    other = 0.0 if busy is None or after is None else max(0.0, (after - busy) - (own_cpu_seconds() - own)) / wall
    return json.loads(proc.stdout.strip().splitlines()[-1]), other


def order(names: list[str], round_: int) -> list[str]:
    """Round ``round_``'s order: the names rotated by it."""
    shift = round_ % len(names)
    return names[shift:] + names[:shift]


def bench(names: list[str], common: list[str], repeats: int, baseline: Path | None,
          threads: int = 0) -> tuple[dict[str, list[dict[str, list[float]]]], list[float]]:
    """Per variant, per round: the timed epochs' seconds; and per run, the cores other processes used."""
    runs = names + ([BASELINE] if baseline is not None else [])
    times: dict[str, list[dict[str, list[float]]]] = {name: [] for name in runs}
    others: list[float] = []
    for round_ in range(repeats):
        for name in order(runs, round_):
            print(f"[{time.strftime('%H:%M:%S')}] round {round_ + 1}/{repeats}: {name}", file=sys.stderr, flush=True)
            overrides = [*common, *VARIANTS["plain" if name == BASELINE else name][1]]
            try:
                seconds, other = run_once(overrides, baseline if name == BASELINE else None, threads)
            except RuntimeError as err:  # e.g. a source file saved half-way while the run imported it: once more
                print(f"{err}\nrunning it once more", file=sys.stderr)
                seconds, other = run_once(overrides, baseline if name == BASELINE else None, threads)
            times[name].append(seconds)
            others.append(other)
    return times, others


def rows(times: dict[str, list[dict[str, list[float]]]], baseline: Path | None, kind: str = "cpu") -> list[str]:
    """The table of one ``kind`` of time: per variant the median epoch over every round, the
    rounds' medians, and the ratio to the plain run: per round (the runs next to each other in
    time), and their median."""
    plain = [statistics.median(r[kind]) for r in times["plain"]]
    out = []
    for name, runs in times.items():
        rounds = [r[kind] for r in runs]
        what, overrides = (f"plain run of {baseline}", []) if name == BASELINE else VARIANTS[name]
        medians = [statistics.median(r) for r in rounds]
        pooled = statistics.median([s for r in rounds for s in r])
        ratios = [m / p for m, p in zip(medians, plain, strict=True)]
        per_round = ", ".join(f"{r:.2f}" for r in ratios)
        ratio = "—" if name == "plain" else f"{statistics.median(ratios):.3f}× (per round: {per_round})"
        keys = " ".join(f"`{o}`" for o in overrides) or "—"
        spread = f"{min(medians):.4f}–{max(medians):.4f}"
        out.append(f"| {what} | {keys} | {pooled:.4f} | {spread} | {ratio} |")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds of one run of each variant")
    parser.add_argument("--epochs", type=int, default=10, help="timed epochs per run (after a warm-up epoch)")
    parser.add_argument("--only", default=",".join(VARIANTS), help="variants, comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a checkout of an earlier dltrain (git archive <commit> | tar -x -C DIR): its plain run")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch's threads in each run; 0: torch's default (1 is steadier on a shared machine)")
    parser.add_argument("--quick", action="store_true", help="a smoke check: 2,000 rows, 1 round of 1 timed epoch")
    args = parser.parse_args(argv)
    names = ["plain", *(n for n in args.only.split(",") if n != "plain")]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")
    if args.baseline is not None and not (args.baseline / "dltrain" / "conf").is_dir():
        # else its dltrain would read this checkout's configs (the installed package's dltrain.conf)
        parser.error(f"--baseline {args.baseline}: it needs its configs inside its package: "
                     f"ln -s {args.baseline.resolve()}/conf {args.baseline}/dltrain/conf")
    repeats, epochs, sizes = (1, 1, replace(QUICK)) if args.quick else (args.repeats, args.epochs, FULL)
    with tempfile.TemporaryDirectory(prefix="bench_features_data_") as folder:
        table = write_table(Path(folder), sizes)
        common = ["data=csv", f"data.path={table}", "data.target=label", "data.val_fraction=0.1",
                  "data.test_fraction=0.1", "model=mlp", "device=cpu",  # batch 64: the default
                  f"trainer.max_epochs={epochs + 1}", "trainer.early_stopping.enabled=false"]
        load = os.getloadavg()[0]
        times, others = bench(names, common, repeats, args.baseline.resolve() if args.baseline else None, args.threads)
    print(f"{cpu_model()}, {args.threads or torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"mlp {sizes.table_rows:,}×{sizes.table_features}, batch {BATCH_SIZE}; {repeats} rounds of {epochs} timed "
          f"epochs; load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; other processes used "
          f"{statistics.mean(others):.2f} cores on average (at most {max(others):.2f} during one run)\n")
    for kind, what in KINDS.items():
        print(f"{what}:\n")
        print("| variant | overrides | median epoch (s) | rounds' medians (s) | ratio to the plain run |")
        print("|---|---|---:|---|---|")
        print("\n".join(rows(times, args.baseline, kind)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Learning with dltrain: the notes' claims, each run as dltrain runs and judged by what they print.

Six claims, each shown by two or three ``dltrain`` commands that differ in one thing:

1. XOR needs a hidden layer (``data=xor``: a linear model against one hidden layer);
2. zero initialisation never breaks the symmetry (``init=zeros`` against ``init=he_normal``);
3. gradients vanish in a deep sigmoid MLP, not in a ReLU one with He initialisation (``diagnostics.csv``);
4. a learning rate too low crawls, one too high diverges (``optim=sgd``, three ``optim.lr``);
5. dropout and L2 shrink the gap between training and validation loss of a model that overfits;
6. batch size 1 against the full batch at the same number of epochs (noise, time, accuracy).

Every command runs once per seed (``--seeds``, the command as shown with ``seed=N`` added) through the
Python API (``compose`` and ``train``: the run the command line makes, without its ``.hydra/`` folder and
log file), in a run directory under ``--dir`` (default ``outputs/learning``, which must be empty or new),
so the pictures each run draws (``curves.png``, ``gradients.png``) stay to be looked at. The numbers come
from what the runs write (``summary.json``, ``metrics.csv``, ``diagnostics.csv``), mean ± standard
deviation over the seeds; each claim gets a verdict from a rule stated in its row. A markdown table goes to
stdout, then a paragraph of what claims 3 and 4's ``diagnostics.csv`` show layer by layer, progress to stderr;
``--write`` puts the table into README.md between the ``learning_results`` markers and the paragraph between
the ``learning_gradients`` markers.
From the project root::

    python -m benchmarks.learning
    python -m benchmarks.learning --write
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import importlib.metadata
import io
import json
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.readme_results import README, ReadmeError
from benchmarks.transfer import empty_folder

BEGIN = "<!-- learning_results:begin -->"
END = "<!-- learning_results:end -->"
#: Around the paragraph of what the vanishing and learning-rate runs' diagnostics.csv show, layer by layer.
GRADIENTS_BEGIN = "<!-- learning_gradients:begin -->"
GRADIENTS_END = "<!-- learning_gradients:end -->"
HEADER = "| claim | command | what it printed (mean ± sd over the seeds) | verdict |"
#: The digits' training split under the default data keys (1,797 images less 20% test and 10% validation).
DIGITS_TRAIN = 1257
DEEP = "model.hidden=[32,32,32,32,32,32]"
#: Moons with few training points (10% of 1,000) and much noise: a wide MLP learns the noise.
OVERFIT = ("data=moons", "data.samples=1000", "data.noise=0.4", "data.val_fraction=0.45", "data.test_fraction=0.45",
           "model.hidden=[256,256]", "optim.lr=0.01", "trainer.max_epochs=150", "trainer.early_stopping.enabled=false",
           "trainer.early_stopping.restore_best_weights=false")


@dataclass
class Result:
    """What one run wrote: its summary, its epochs, its diagnostics, and the error line of a diverged run."""

    summary: dict[str, Any]
    epochs: list[dict[str, str]]
    diagnostics: dict[int, dict[str, dict[str, str]]]
    error: str = ""

    @property
    def diverged(self) -> bool:
        return self.summary.get("status") == "diverged"

    def test(self, metric: str = "accuracy") -> float:
        return float(self.summary["test"][metric])

    def last(self, column: str) -> float:
        """``column`` of metrics.csv's last epoch."""
        return float(self.epochs[-1][column])

    def layer(self, name: str, column: str, epoch: int | None = None) -> float:
        """``column`` of diagnostics.csv for layer ``name`` in ``epoch`` (default: the last measured).

        Raises:
            ReadmeError: the run measured nothing (``trainer.diagnostics=false``).
        """
        if not self.diagnostics:
            raise ReadmeError(f"{self.summary.get('run_dir')} has no diagnostics.csv: this claim reads it, "
                              "so leave trainer.diagnostics on.")
        rows = self.diagnostics[max(self.diagnostics) if epoch is None else epoch]
        return float(rows[name][column])

    def grad_ratio(self, epoch: int | None = None) -> float:
        """The first hidden layer's gradient norm over the output layer's."""
        return self.layer("fc1", "grad_norm", epoch) / self.layer("out", "grad_norm", epoch)

    def rises(self) -> int:
        """In how many epochs the validation loss went up."""
        losses = [float(row["val_loss"]) for row in self.epochs]
        return sum(b > a for a, b in zip(losses, losses[1:]))

    def epoch_seconds(self) -> float:
        return statistics.mean(float(row["epoch_seconds"]) for row in self.epochs)


Results = dict[str, list[Result]]  # a claim's runs: variant label -> one result per seed


@dataclass(frozen=True)
class Claim:
    """A claim of the notes and the runs that show it.

    Attributes:
        title: the claim in a few words (the table's first column).
        variants: label -> the command's overrides; the runs differ in these alone.
        shows: what a variant's runs printed, in words and numbers.
        verdict: whether the runs show the claim, and by which rule.
    """

    title: str
    variants: dict[str, tuple[str, ...]]
    shows: Callable[[list[Result]], str]
    verdict: Callable[[Results], tuple[bool, str]]


def stat(values: list[float], fmt: str = ".3f") -> str:
    """``mean ± sd`` (the sample standard deviation); one value alone, with ``(n=1)``: it has no sd."""
    if len(values) == 1:
        return f"{values[0]:{fmt}} (n=1)"
    return f"{statistics.mean(values):{fmt}} ± {statistics.stdev(values):{fmt}}"


def mean(results: list[Result], value: Callable[[Result], float]) -> float:
    return statistics.mean(value(r) for r in results)


def accuracy(results: list[Result]) -> str:
    return f"test accuracy {stat([r.test() for r in results])}"


def xor_verdict(runs: Results) -> tuple[bool, str]:
    linear, hidden = (mean(runs[k], Result.test) for k in ("linear", "hidden"))
    return linear <= 0.8 and hidden >= 0.95, "linear ≤ 0.80 and one hidden layer ≥ 0.95"


def zero_init_shows(results: list[Result]) -> str:
    identical = stat([r.layer("fc1", "identical_units") for r in results], ".2f")
    return f"{accuracy(results)}; identical units in fc1 {identical}"


def zero_init_verdict(runs: Results) -> tuple[bool, str]:
    zeros, he = runs["zeros"], runs["he"]
    shown = (mean(zeros, Result.test) < 0.2 and all(r.layer("fc1", "identical_units") == 1 for r in zeros)
             and mean(he, Result.test) >= 0.9 and all(r.layer("fc1", "identical_units") == 0 for r in he))
    return shown, "zeros: chance (< 0.2) with every fc1 unit alike; He: ≥ 0.9 with none alike"


def vanishing_shows(results: list[Result]) -> str:
    first = stat([r.grad_ratio(1) for r in results], ".1e")
    last = stat([r.grad_ratio() for r in results], ".1e")
    return f"{accuracy(results)}; fc1/out gradient norm {first} in epoch 1, {last} in the last"


def vanishing_verdict(runs: Results) -> tuple[bool, str]:
    sigmoid, relu = runs["sigmoid"], runs["relu"]
    ratio = mean(relu, Result.grad_ratio) / mean(sigmoid, Result.grad_ratio)
    shown = ratio >= 10 and mean(sigmoid, Result.test) < mean(relu, Result.test)
    return shown, f"ReLU+He's fc1/out ratio {ratio:,.0f}× sigmoid's (≥ 10×), and the higher accuracy"


def layer_values(results: list[Result], column: str, layers: list[str] | None = None) -> list[float]:
    """``column`` of diagnostics.csv in every seed, epoch and layer (those of ``layers`` alone if given), where it
    has a number (activations have no gradient, a zero weight no update ratio)."""
    values = (row[column] for r in results for rows in r.diagnostics.values() for name, row in rows.items()
              if layers is None or name in layers)
    return [v for v in map(float, filter(None, values)) if not math.isnan(v)]


def layer_means(results: list[Result], column: str) -> dict[str, float]:
    """``column``'s mean over the seeds and epochs, layer by layer in the model's order (layers that have it)."""
    names = [name for name, row in next(iter(results[0].diagnostics.values())).items() if row[column]]
    return {name: statistics.mean(layer_values(results, column, [name])) for name in names}


def gradients_text(vanishing: Results, lr: Results | None = None) -> str:
    """What claim 3's diagnostics.csv show layer by layer (and the learning rates' update ratios): the README's
    paragraph between the ``learning_gradients`` markers."""
    sigmoid, relu = vanishing["sigmoid"], vanishing["relu"]
    norms = layer_means(sigmoid, "grad_norm")
    names = list(norms)
    steps = [norms[after] / norms[before] for before, after in zip(names, names[1:])]
    early = names[:3]
    early_ratio = max(layer_values(sigmoid, "update_ratio", early))
    relu_norms, dead = layer_values(relu, "grad_norm"), max(layer_values(relu, "dead_fraction"))
    saturated = max(layer_values(sigmoid, "saturated_fraction"))
    saturate = f"at most {percent(saturated)} of its units saturate" if saturated else "none of its units saturates"
    text = (f"Read by `python -m benchmarks.learning` from the runs' `diagnostics.csv` (every epoch of every seed): "
            f"in claim 3, the sigmoid network's gradient norm (mean over the epochs and seeds) falls from "
            f"{norms[names[-1]]:.2g} at `{names[-1]}` to {norms[names[0]]:.2g} at `{names[0]}`, each layer "
            f"{min(steps):.1f} to {max(steps):.1f} times below the one after it; the update ratios of "
            f"{', '.join(f'`{n}`' for n in early)} reach at most {early_ratio:.2g}"
            f", and {saturate}. The ReLU "
            f"network's gradient norms lie between {min(relu_norms):.2g} and {max(relu_norms):.2g} in every layer "
            f"and epoch, with at most {percent(dead)} of its units dead.")
    if lr is not None:
        ratios = [f"{min(v):.2g} to {max(v):.2g} at `{label}`" for label, v in
                  ((learning_rate(label), layer_values(runs, "update_ratio")) for label, runs in lr.items())]
        text += f" Claim 4's update ratios (`optim=sgd`, every layer and epoch): {'; '.join(ratios)}."
    return text


def percent(fraction: float) -> str:
    """``fraction`` in percent to two significant digits: a few units in a thousand are not 0%."""
    return f"{100 * fraction:.2g}%"


def learning_rate(label: str) -> str:
    """The ``optim.lr=`` override of claim 4's variant ``label``."""
    return next(o for o in claims()["lr"].variants[label] if o.startswith("optim.lr="))


def lr_shows(results: list[Result]) -> str:
    diverged = [r for r in results if r.diverged]
    if diverged:
        return f"status diverged in {len(diverged)} of {len(results)}: {diverged[0].error}"
    first = stat([float(r.epochs[0]["train_loss"]) for r in results])
    last = stat([r.last("train_loss") for r in results])
    return f"train_loss {first} in epoch 1, {last} in epoch {len(results[0].epochs)}; {accuracy(results)}"


def lr_verdict(runs: Results) -> tuple[bool, str]:
    low, good, high = runs["low"], runs["good"], runs["high"]
    crawled = not any(r.diverged for r in low) and mean(low, lambda r: r.last("train_loss")) > 2.0
    trained = not any(r.diverged for r in good) and mean(good, Result.test) >= 0.9
    return crawled and trained and all(r.diverged for r in high), \
        "1e-4: train_loss still > 2.0 (chance: ln 10 = 2.30); 0.1: ≥ 0.9; 100: every seed diverged"


def gap(result: Result) -> float:
    return result.last("val_loss") - result.last("train_loss")


def overfit_shows(results: list[Result]) -> str:
    def last(column: str) -> str:
        return f"{column} {stat([r.last(column) for r in results])}"

    return (f"last epoch: {last('train_loss')}, {last('val_loss')} (gap {stat([gap(r) for r in results])}); "
            f"{last('train_accuracy')}, {last('val_accuracy')}; {accuracy(results)}")


def overfit_verdict(runs: Results) -> tuple[bool, str]:
    none, dropout, l2 = (mean(runs[k], gap) for k in ("none", "dropout", "l2"))
    return none > 2 * dropout and none > 2 * l2, "the loss gap without regularization > 2× the gap with each"


def batch_shows(results: list[Result]) -> str:
    rises = stat([r.rises() for r in results], ".1f")
    seconds = stat([r.epoch_seconds() for r in results], ".3f")
    return (f"{accuracy(results)}; val_loss rose in {rises} of {len(results[0].epochs) - 1} epochs; "
            f"{seconds} s an epoch")


def batch_verdict(runs: Results) -> tuple[bool, str]:
    one, full = runs["one"], runs["full"]
    shown = mean(one, Result.rises) > mean(full, Result.rises) and \
        mean(one, Result.epoch_seconds) > 5 * mean(full, Result.epoch_seconds)
    return shown, "batch 1: val_loss rises in more epochs, and an epoch takes > 5× as long"


def claims() -> dict[str, Claim]:
    """The six claims, in the README's order."""
    sgd = ("optim=sgd", "trainer.max_epochs=10")
    batch = (*sgd, "trainer.early_stopping.enabled=false")
    return {
        "xor": Claim("XOR needs a hidden layer", {
            "linear": ("experiment=xor", "model.hidden=[]"),
            "hidden": ("experiment=xor",),
        }, accuracy, xor_verdict),
        "zero_init": Claim("zero init never breaks symmetry", {
            "zeros": ("init=zeros", "trainer.max_epochs=10"),
            "he": ("init=he_normal", "trainer.max_epochs=10"),
        }, zero_init_shows, zero_init_verdict),
        "vanishing": Claim("gradients vanish in a deep sigmoid MLP", {
            "sigmoid": (DEEP, "model.activation=sigmoid", "optim=sgd", "optim.lr=0.1", "trainer.max_epochs=10"),
            "relu": (DEEP, "model.activation=relu", "init=he_normal", "optim=sgd", "optim.lr=0.1",
                     "trainer.max_epochs=10"),
        }, vanishing_shows, vanishing_verdict),
        "lr": Claim("a learning rate too low crawls, too high diverges", {
            "low": (*sgd, "optim.lr=0.0001"),
            "good": (*sgd, "optim.lr=0.1"),
            "high": (*sgd, "optim.lr=100"),
        }, lr_shows, lr_verdict),
        "overfit": Claim("dropout and L2 against overfitting", {
            "none": OVERFIT,
            "dropout": (*OVERFIT, "regularization.dropout=0.5"),
            "l2": (*OVERFIT, "regularization.l2=0.01"),
        }, overfit_shows, overfit_verdict),
        "batch": Claim("batch size 1 against the full batch", {
            "one": (*batch, "trainer.batch_size=1", "optim.lr=0.01"),
            "full": (*batch, f"trainer.batch_size={DIGITS_TRAIN}", "optim.lr=1"),
        }, batch_shows, batch_verdict),
    }


def command(overrides: tuple[str, ...], extra: list[str]) -> str:
    """The ``dltrain`` command a variant runs, as typed in a shell."""
    return shlex.join(["dltrain", *overrides, *extra])


def read_run(run_dir: Path, error: str = "") -> Result:
    """A run's summary.json, metrics.csv and diagnostics.csv (by epoch, then layer; empty when absent)."""
    with (run_dir / "metrics.csv").open(newline="") as f:
        epochs = list(csv.DictReader(f))
    diagnostics: dict[int, dict[str, dict[str, str]]] = {}
    if (run_dir / "diagnostics.csv").is_file():
        with (run_dir / "diagnostics.csv").open(newline="") as f:
            for row in csv.DictReader(f):
                diagnostics.setdefault(int(row["epoch"]), {})[row["layer"]] = row
    return Result(json.loads((run_dir / "summary.json").read_text()), epochs, diagnostics, error)


def run(overrides: list[str], run_dir: Path) -> Result:
    """Train ``overrides`` in ``run_dir`` (its console output kept back) and read what it wrote.

    A diverged run is a result (its error line kept); any other error stops the script.
    """
    from dltrain import compose, train
    from dltrain.errors import TrainingDiverged, UserError

    print(f"running: {shlex.join(['dltrain', *overrides])}", file=sys.stderr, flush=True)
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output):
            train(compose(overrides), run_dir=run_dir)
    except TrainingDiverged as err:
        return read_run(run_dir, str(err))
    except UserError as err:
        raise ReadmeError(f"`{shlex.join(['dltrain', *overrides])}` failed: {err}\n{output.getvalue()[-2000:]}")
    return read_run(run_dir)


def run_claim(key: str, claim: Claim, seeds: list[int], extra: list[str], folder: Path) -> Results:
    """Every variant of ``claim`` once per seed, seed by seed."""
    runs: Results = {label: [] for label in claim.variants}
    for seed in seeds:
        for label, overrides in claim.variants.items():
            runs[label].append(run([*overrides, *extra, f"seed={seed}"], folder / f"{key}-{label}-seed{seed}"))
    return runs


def rows(claim: Claim, runs: Results, extra: list[str]) -> list[str]:
    """The claim's table rows: one per variant, the title and verdict on the first."""
    shown, rule = claim.verdict(runs)
    lines = []
    for i, (label, overrides) in enumerate(claim.variants.items()):
        first = i == 0
        verdict = f"{'shown' if shown else 'NOT shown'}: {rule}" if first else ""
        lines.append(f"| {claim.title if first else ''} | `{command(overrides, extra)}` | "
                     f"{claim.shows(runs[label])} | {verdict} |")
    return lines


def report(table: list[str], seeds: list[int], threads: int, seconds: float) -> str:
    """The markdown block: where and how it was measured, then the table."""
    from benchmarks.machine import cpu_model

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    return "\n".join([
        f"Measured by `python -m benchmarks.learning` on {cpu_model()} ({cores} cores, torch on {threads} "
        f"thread{'s' if threads > 1 else ''}), torch {importlib.metadata.version('torch')}, {date}, in "
        f"{seconds:.0f} s: each command run with `seed={'`, `seed='.join(map(str, seeds))}`.",
        "", HEADER, "|---|---|---|---|", *table])


def write_readme(block: str, path: Path = README, gradients: str | None = None) -> None:
    """Replace what lies between the ``learning_results`` markers in ``path`` with ``block`` (and between the
    ``learning_gradients`` markers with ``gradients``, if given), in one step."""
    from dltrain.files import atomic_write

    text = between(path.read_text(encoding="utf-8"), BEGIN, END, block, "the learning results")
    if gradients is not None:
        text = between(text, GRADIENTS_BEGIN, GRADIENTS_END, gradients, "what claim 3's diagnostics show")
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def between(text: str, begin: str, end: str, block: str, what: str) -> str:
    """``text`` with ``block`` between the markers ``begin`` and ``end``."""
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ReadmeError(f"README.md has no {begin} ... {end} around {what}: put them back.")
    return f"{text[:start + len(begin)]}\n\n{block}\n\n{text[stop:]}"


def argument_parser() -> argparse.ArgumentParser:
    """The script's arguments; their defaults give the runs the README shows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("outputs/learning"), help="where the runs go (empty or new)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", choices=list(claims()), help="run these claims alone")
    parser.add_argument("--extra", nargs="+", default=[], help="overrides added to every command")
    # the runs are small: one thread each is their fastest (threads only wait on each other), same numbers
    parser.add_argument("--threads", type=int, default=1, help="torch's CPU threads")
    parser.add_argument("--write", action="store_true", help="put the table into README.md")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    started, folder = time.perf_counter(), empty_folder(args.dir)
    table, runs = [], {}
    for key, claim in claims().items():
        if not args.only or key in args.only:
            runs[key] = run_claim(key, claim, args.seeds, args.extra, folder)
            table += rows(claim, runs[key], args.extra)
    block = report(table, args.seeds, args.threads, time.perf_counter() - started)
    print(block)
    gradients = gradients_text(runs["vanishing"], runs.get("lr")) if "vanishing" in runs else None
    if gradients is not None:
        print(f"\n{gradients}")
    if args.write:
        write_readme(block, gradients=gradients)
        print(f"written to {README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ReadmeError as error:
        print(f"learning: error: {error}", file=sys.stderr)
        sys.exit(1)

"""dltrain's performance suite: every comparison in one command, one markdown table of medians and ratios.

What is measured, by target (the numbers of the table's target column, those of the project's performance
targets; target 4 is not measured here), and ``--only`` picks parts by the names in parentheses:

1. **Epoch time against a hand-written loop** (``mlp``, ``cnn``, ``gru``). ``dltrain.train(cfg, run_dir)`` runs
   in this process with ``trainer.max_epochs=E+1``, early stopping off and every other key at its default
   (checkpoints and ``metrics.csv`` are written as usual); the epoch time is ``metrics.csv``'s
   ``epoch_seconds`` (train + validation). The baseline is the loop a competent user writes: the same
   architecture defined by hand (its parameter count is checked against dltrain's), the same tensors (taken
   from dltrain's own splits of the same config, on the device), a shuffled permutation index per epoch, the
   same batch sizes, and the loss and number correct summed on the device and read once per epoch; then
   validation under ``model.eval()`` and ``torch.no_grad()``. The loop runs twice: with Adam exactly as dltrain
   built it (read from the run's checkpoint: the same hyperparameters and the same implementation, e.g.
   ``fused=True``), which makes the ratio measure dltrain's own overhead and nothing else, and with
   ``torch.optim.Adam(params, lr)`` as users write it (torch's per-tensor step on the CPU), for reference.
   Workloads: ``mlp`` on a 20,000 x 64 table of 10 classes written to a CSV (``data=csv``, 16,000 rows train,
   2,000 validate); ``cnn`` on 28x28 MNIST images (``data=mnist``: the 8,000 real training images in
   ``samples/mnist-8k`` when that folder exists, made by ``dltrain-samples --mnist-8k --from <an MNIST
   download>``, otherwise random images in the same IDX files, which the report's data line says);
   ``gru`` on windows of a noisy chirp (``data=chirp``, a regression: MSE). Goal: dltrain / loop <= 1.05.
   The extra column "run / epoch" is dltrain's whole ``train_seconds`` divided by its epochs: it adds the
   warm-up epoch and the checkpoint and ``metrics.csv`` writes between epochs.
2. **PyTorch Lightning** (``lightning``). The ``mlp`` workload through ``lightning.Trainer`` with its defaults
   (logger, checkpointing, progress bar and model summary as a user gets them), a ``LightningModule`` as the
   Lightning docs write one, and ``DataLoader(TensorDataset)`` batches; also the hand-written loop over the
   same DataLoaders. Lightning's epoch is timed by a callback from ``on_train_epoch_start`` to
   ``on_validation_epoch_end`` (train + validation, before its checkpoint is saved, like dltrain's
   ``epoch_seconds``); its "run / epoch" column is the time between consecutive epoch starts (with the
   checkpoint and logging). dltrain runs in the same rounds. Goal: Lightning / dltrain >= 2.5. Each Lightning
   fit runs in a process of its own: importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1``, after which
   every ``torch.cuda.is_available()`` asks NVML (on a CPU-only machine with a CUDA build of torch, tens of
   microseconds instead of about one), and torch's optimizers ask once per ``step()``. Lightning users pay
   that, so it stays in Lightning's numbers; in this process it would also slow every later dltrain and loop
   epoch.
3. **Start-up** (``startup``). Wall time of whole processes: ``dltrain trainer.fast_dev_run=true`` (the
   console script next to this Python), ``benchmarks/bare_app.py`` (a Hydra app that imports torch and makes
   one tensor), the same app taking one Adam step (the floor of any torch training process: the first step
   imports ``torch._dynamo``), and ``dltrain --help`` (run through ``dltrain.cli.app.main``, recording whether it
   imported torch or torchvision; it should not).
5. **Sweeps** (``sweep``). ``dltrain -m trainer.fast_dev_run=true seed=0,...,7`` (Hydra's basic launcher: one
   process, eight jobs) against eight separate ``dltrain trainer.fast_dev_run=true`` processes.

Repetitions alternate the things compared (dltrain, loop, dltrain, loop, ...; the commands of a start-up round
in rotating order) so that drift of the machine falls on both; every epoch median drops each run's first
epoch (warm-up) and pools the rest of all repetitions. Run it from the project root::

    python -m benchmarks.run                          # everything: 3 repetitions of 5 timed epochs, on the CPU
    python -m benchmarks.run --quick                  # tiny sizes, one repetition: checks that every part runs
    python -m benchmarks.run --only mlp,lightning --repeats 5 --json bench.json
    python -m benchmarks.run --device cuda

The table goes to stdout, progress to stderr; ``--json PATH`` also writes every repetition's numbers. The
exit code is 0 whether or not a goal is met (the table says which are); a failed run or command is an error.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import importlib.metadata
import importlib.util
import inspect
import json
import os
import platform
import shlex
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import dltrain
from benchmarks.machine import cpu_model, sync
from dltrain import compose, train
from dltrain.build import load_data
from dltrain.data import DataSplits

ROOT = Path(__file__).resolve().parents[1]  # the project root: subprocesses run there
MNIST_DIR = "samples/mnist-8k"  # relative to the project root: dltrain-samples --mnist-8k writes it
MNIST_RAW = ROOT / MNIST_DIR / "MNIST" / "raw"
BARE_APP = ROOT / "benchmarks" / "bare_app.py"
PARTS = ("mlp", "cnn", "gru", "lightning", "startup", "sweep")
GOAL_LOOP = 1.05  # dltrain epoch / hand-written loop epoch, at most
GOAL_LIGHTNING = 2.5  # Lightning epoch / dltrain epoch, at least
GOAL_SWEEP = 0.5  # an N-job sweep / N separate processes, at most ("far below one process per job")
BATCH_SIZE = 64


class BenchmarkError(RuntimeError):
    """A run or a command failed: the numbers would mean nothing, so the suite stops."""


class LightningMissing(Exception):
    """The Lightning process could not import Lightning: target 2 is left out with a row that says so."""


@dataclass(frozen=True)
class Sizes:
    """How big each workload is; ``--quick`` shrinks them all."""

    table_rows: int  # data=csv rows (80% train, 10% validation, 10% test)
    table_features: int
    table_classes: int
    mnist_images: int | None  # training images kept from the real files; None: all of them
    mnist_test_images: int | None
    random_images: int  # when the real files are absent: random training images of the same shape
    random_test_images: int
    chirp_length: int  # data=chirp samples; about 70% of the windows train
    sweep_jobs: int


FULL = Sizes(20_000, 64, 10, None, None, 8_000, 2_000, 15_000, 8)
QUICK = Sizes(2_000, 64, 10, 800, 200, 800, 200, 1_500, 8)


# --------------------------------------------------------------------------------------------- the machine


@contextlib.contextmanager
def silenced(log: Path) -> Iterator[None]:
    """Send everything written to stdout and stderr (Python's and C's, progress bars, logs) to ``log``.

    dltrain and Lightning report progress as they train; the table has to stay readable, and a redirect at
    the file-descriptor level catches every writer, including consoles created before this call. When the
    body fails, the log's tail is shown before the error goes on.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    failed = False
    try:
        with open(log, "ab") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                yield
            except BaseException:
                failed = True
                raise
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])
        if failed:
            print(f"--- last output ({log}) ---\n{tail(log.read_text(errors='replace'))}", file=sys.stderr)


def tail(text: str, chars: int = 3000) -> str:
    return text if len(text) <= chars else "..." + text[-chars:]


def machine_busy_seconds() -> float | None:
    """CPU-seconds every process on the machine has used since boot (Linux /proc/stat), or None elsewhere."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle and iowait; steal (time other virtual machines took) counts as busy
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU-seconds of this process and of the commands it has run and waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Sharing:
    """How much CPU other processes took while each step of the suite ran.

    On a 2-core machine one other busy process can slow an epoch many times over (torch's threads wait for each other at
    every parallel region), so the report has to say when the machine was shared: CPU-seconds used by the whole
    machine, less those of the suite and its commands, per step between two progress lines.
    """

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self._last: tuple[str, float, float | None, float] | None = None

    def mark(self, message: str) -> None:
        now, busy, own = time.perf_counter(), machine_busy_seconds(), own_cpu_seconds()
        if self._last is not None:
            label, then, busy_then, own_then = self._last
            if busy is not None and busy_then is not None:
                other = max(0.0, (busy - busy_then) - (own - own_then))
                self.steps.append({"step": label, "wall": round(now - then, 2), "other_cpu": round(other, 2)})
        self._last = (message, now, busy, own)

    def summary(self) -> str | None:
        if not self.steps:
            return None
        wall = sum(s["wall"] for s in self.steps)
        other = sum(s["other_cpu"] for s in self.steps)
        def cores(step: dict[str, Any]) -> float:
            return step["other_cpu"] / max(step["wall"], 1e-9)

        worst = max(self.steps, key=cores)
        return (f"other processes used {other:.0f} CPU-seconds during the suite's {wall:.0f} s "
                f"({other / max(wall, 1e-9):.2f} cores on average; at most {cores(worst):.2f} in \"{worst['step']}\"): "
                "above about 0.1 the timings of those steps are not to be trusted")


SHARING = Sharing()


def progress(message: str) -> None:
    """A line on stderr while the suite runs (the table itself goes to stdout); marks a step for SHARING."""
    SHARING.mark(message)
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def round_ratios(numerators: list[list[float]], denominators: list[list[float]]) -> list[float]:
    """Per round, the median timed epoch (the first is warm-up) of one run over that of the other: runs of the
    same round ran minutes apart at most, so these show how much of a ratio is the machine's drift."""
    return [median(a[1:]) / median(b[1:]) for a, b in zip(numerators, denominators, strict=True)]


def rounds_text(ratios: list[float]) -> str:
    return f" (per round: {', '.join(f'{r:.2f}' for r in ratios)})" if len(ratios) > 1 else ""


# --------------------------------------------------------------------------------------------- the report


@dataclass
class Row:
    """One line of the table."""

    target: str
    workload: str
    what: str
    median: float | None
    per_run: float | None = None  # "run / epoch": a whole run's time per epoch, where that differs
    ratio: str = "—"
    goal: str = "—"
    met: str = "—"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def markdown(self) -> str:
        lines = ["| target | workload | what | median (s) | run / epoch (s) | ratio | goal | met |",
                 "|---|---|---|---:|---:|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r.target} | {r.workload} | {r.what} | {seconds(r.median)} | {seconds(r.per_run)} | "
                         f"{r.ratio} | {r.goal} | {r.met} |")
        return "\n".join(lines)


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 10 else f"{value:.2f}"


def yes_no(ok: bool) -> str:
    return "yes" if ok else "**no**"


# --------------------------------------------------------------------------------------------- data files


def write_table(folder: Path, sizes: Sizes, seed: int = 0) -> Path:
    """A learnable table: Gaussian features, the label the arg-max of a random linear teacher plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(sizes.table_rows, sizes.table_features))
    teacher = rng.normal(size=(sizes.table_features, sizes.table_classes))
    y = (x @ teacher + rng.normal(scale=2.0, size=(sizes.table_rows, sizes.table_classes))).argmax(axis=1)
    path = folder / "table.csv"
    header = ",".join([f"f{i}" for i in range(sizes.table_features)] + ["label"])
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=header, comments="",
               fmt=["%.5f"] * sizes.table_features + ["%d"])
    return path


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (big-endian magic ``0x0000 08 <dims>``, then one uint32 per dimension) as a uint8 array."""
    raw = path.read_bytes()
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """``array`` (uint8) as an IDX file: magic 0x00000801 for labels, 0x00000803 for images."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def mnist_root(folder: Path, sizes: Sizes) -> tuple[Path, str]:
    """A ``data.root`` for ``data=mnist`` and a description of what it holds.

    The real files are used in place when no subset is asked for; a subset (``--quick``), or random images when
    the real files are absent, are written as IDX files of the same format into ``folder``.
    """
    names = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    real = all((MNIST_RAW / name).is_file() for pair in names.values() for name in pair)
    if real and sizes.mnist_images is None:
        count = len(read_idx(MNIST_RAW / names["train"][1]))
        return (ROOT / MNIST_DIR).resolve(), f"MNIST, the {count:,} real training images in {MNIST_DIR}"
    raw = folder / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, (images, labels) in names.items():
        keep = sizes.mnist_images if split == "train" else sizes.mnist_test_images
        if real:
            x, y = read_idx(MNIST_RAW / images)[:keep], read_idx(MNIST_RAW / labels)[:keep]
        else:
            n = sizes.random_images if split == "train" else sizes.random_test_images
            x, y = rng.integers(0, 256, size=(n, 28, 28)), rng.integers(0, 10, size=n)
        write_idx(raw / images, x)
        write_idx(raw / labels, y)
    count = len(read_idx(raw / names["train"][1]))
    what = f"the first {count:,} real MNIST training images" if real else \
        f"{count:,} random 28x28 images with 10 classes ({MNIST_DIR} not found: dltrain-samples --mnist-8k " \
        "--from <an MNIST download> makes it)"
    return folder / "mnist", what


# --------------------------------------------------------------------------------------------- hand-written models


def hand_mlp(data: DataSplits) -> nn.Module:
    """model=mlp with its defaults: hidden [128, 64], ReLU."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(data.input_shape)), 128), nn.ReLU(),
                         nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, data.num_outputs))


def hand_cnn(data: DataSplits) -> nn.Module:
    """model=cnn with its defaults: conv 32 and 64 (3x3, same padding), ReLU, 2x2 max pools, dense 128."""
    channels, height, width = data.input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (height // 4) * (width // 4), 128), nn.ReLU(), nn.Linear(128, data.num_outputs))


class HandGRU(nn.Module):
    """model=gru with its defaults: one GRU layer of 64 units; a linear head on the last hidden state."""

    def __init__(self, features: int, outputs: int, hidden: int = 64) -> None:
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.out = nn.Linear(hidden, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, time, features)
        _, h = self.gru(x)
        return self.out(h[-1])


def hand_gru(data: DataSplits) -> nn.Module:
    return HandGRU(data.input_shape[-1], data.num_outputs)


def regression_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(output.squeeze(1), target)


@dataclass
class Workload:
    """One comparison of target 1: the dltrain overrides and the matching hand-written model and loss."""

    key: str
    label: str
    overrides: list[str]
    build: Callable[[DataSplits], nn.Module]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    classify: bool


# --------------------------------------------------------------------------------------------- the loops


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def index_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled batches by one permutation index on the tensors' device. A last batch of a single example is
    left out, as dltrain leaves it out (batch norm cannot normalise one example), so both do the same steps."""
    n = len(x)
    order = torch.randperm(n, device=x.device)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if len(idx) < 2:
            break
        yield x[idx], y[idx]


def slices(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size], y[start:start + batch_size]


class OnDevice:
    """A DataLoader's batches copied to ``device``, as a loop over a DataLoader does."""

    def __init__(self, loader: DataLoader, device: torch.device) -> None:
        self.loader, self.device = loader, device

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            yield x.to(self.device), y.to(self.device)


def loop_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, classify: bool,
               train_batches: Batches, val_batches: Batches, device: torch.device) -> float:
    """One epoch of the hand-written loop (train, then validate); returns its wall seconds.

    Sums stay on the device and are read once per pass, as a loop written for speed does: a ``.item()`` per
    step would wait for the device every step.
    """
    sync(device)
    start = time.perf_counter()
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    for x, y in train_batches:
        optimizer.zero_grad(set_to_none=True)
        output = model(x)
        loss = loss_fn(output, y)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(y)
        if classify:
            correct += (output.argmax(dim=1) == y).sum()
        count += len(y)
    train_metrics = (loss_sum.item() / count, correct.item() / count)
    model.eval()
    with torch.no_grad():
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        count = 0
        for x, y in val_batches:
            output = model(x)
            loss_sum += loss_fn(output, y) * len(y)
            if classify:
                correct += (output.argmax(dim=1) == y).sum()
            count += len(y)
        val_metrics = (loss_sum.item() / count, correct.item() / count)
    sync(device)
    elapsed = time.perf_counter() - start
    if not all(np.isfinite(train_metrics + val_metrics)):
        raise BenchmarkError(f"the hand-written loop diverged: train {train_metrics}, validation {val_metrics}")
    return elapsed


def user_adam(cfg: DictConfig) -> dict[str, Any]:
    """What a user writes: ``torch.optim.Adam(model.parameters(), lr=...)`` with dltrain's default learning rate,
    every other argument at torch's default (on the CPU that is the per-tensor implementation)."""
    return {"lr": float(cfg.optim.lr)}


def dltrain_adam(run_dir: Path) -> dict[str, Any]:
    """The Adam arguments a dltrain run trained with, as its checkpoint records them: hyperparameters and the
    implementation (``fused``, ``foreach``), so that a loop can take exactly the same optimizer steps."""
    state = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    group = state["optimizer"]["param_groups"][0]
    accepted = inspect.signature(torch.optim.Adam).parameters
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in group.items() if k in accepted and k != "params"}


def describe_adam(kwargs: dict[str, Any]) -> str:
    """``fused=True`` or ``torch's default``: how an Adam's step is computed."""
    chosen = [f"{k}={kwargs[k]}" for k in ("fused", "foreach") if kwargs.get(k) is not None]
    return ", ".join(chosen) if chosen else "torch's default implementation"


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------- the suite


class Suite:
    """Runs the selected parts and fills the report."""

    def __init__(self, args: argparse.Namespace, sizes: Sizes, tmp: Path) -> None:
        self.args, self.sizes, self.tmp = args, sizes, tmp
        self.device = torch.device(args.device)
        self.epochs = args.epochs
        self.repeats = args.repeats
        self.report = Report()
        self.log = tmp / "output.log"  # what the silenced runs printed
        self.threads = torch.get_num_threads()
        self.data_sources: dict[str, str] = {}
        self._table: Path | None = None

    # ---- helpers

    def check_threads(self, who: str) -> None:
        """Every timed run gets the same torch threads; a library that changed them is reset and named."""
        now = torch.get_num_threads()
        if now != self.threads:
            self.report.notes.append(f"torch threads changed from {self.threads} to {now} after {who}; reset")
            torch.set_num_threads(self.threads)

    def table_path(self) -> Path:
        if self._table is None:
            self._table = write_table(self.tmp, self.sizes)
            s = self.sizes
            self.data_sources["mlp"] = (f"a {s.table_rows:,} x {s.table_features} table of {s.table_classes} "
                                        "classes (Gaussian features, labels from a random linear teacher, seed 0)")
        return self._table

    def common(self) -> list[str]:
        return [f"trainer.max_epochs={self.epochs + 1}", "trainer.early_stopping.enabled=false",
                f"device={self.args.device}", f"trainer.batch_size={BATCH_SIZE}"]

    def workloads(self, keys: list[str]) -> list[Workload]:
        s, out = self.sizes, []
        if "mlp" in keys:
            out.append(Workload(
                "mlp", f"mlp {s.table_rows:,}×{s.table_features}, batch {BATCH_SIZE}",
                ["data=csv", f"data.path={self.table_path()}", "data.target=label", "data.val_fraction=0.1",
                 "data.test_fraction=0.1", "model=mlp"], hand_mlp, F.cross_entropy, True))
        if "cnn" in keys:
            root, what = mnist_root(self.tmp, s)
            self.data_sources["cnn"] = what
            out.append(Workload("cnn", f"cnn 1×28×28, batch {BATCH_SIZE}",
                                ["data=mnist", f"data.root={root}", "data.download=false", "model=cnn"],
                                hand_cnn, F.cross_entropy, True))
        if "gru" in keys:
            self.data_sources["gru"] = f"data=chirp, data.length={s.chirp_length:,}, windows of 32 (regression)"
            out.append(Workload("gru", f"gru chirp window 32, batch {BATCH_SIZE}",
                                ["data=chirp", f"data.length={s.chirp_length}", "model=gru"],
                                hand_gru, regression_loss, False))
        return out

    def rounds(self, part: str, runs: list[tuple[str, Callable[[int], None]]]) -> None:
        """``--repeats`` rounds of every run, interleaved so that the machine's drift falls on all of them; every
        other round goes in reverse order (ABBA), so that no run always comes first or right after another."""
        for rep in range(self.repeats):
            for what, run in runs if rep % 2 == 0 else runs[::-1]:
                progress(f"{part}: repetition {rep + 1}/{self.repeats}: {what}")
                run(rep)

    def run_dltrain(self, cfg: DictConfig, name: str) -> dict[str, Any]:
        """One in-process dltrain run: its per-epoch seconds (metrics.csv), whole train_seconds and size."""
        self.check_threads("the previous run")
        run_dir = self.tmp / name
        with silenced(self.log):
            summary = train(cfg, run_dir=run_dir)
        if summary.get("status") != "completed" or summary.get("epochs_run") != self.epochs + 1:
            raise BenchmarkError(f"dltrain run {run_dir} ended {summary.get('status')} after "
                                 f"{summary.get('epochs_run')} epochs ({summary.get('stop_reason')}); expected "
                                 f"{self.epochs + 1} completed epochs")
        with open(run_dir / "metrics.csv", newline="") as f:
            epoch_seconds = [float(row["epoch_seconds"]) for row in csv.DictReader(f)]
        return {"epoch_seconds": epoch_seconds, "train_seconds": float(summary["train_seconds"]),
                "epochs": int(summary["epochs_run"]), "num_params": int(summary["num_params"]),
                "split_sizes": summary.get("data")}

    def run_loop(self, build: Callable[[], nn.Module], seed: int, adam: dict[str, Any], loss_fn: LossFn,
                 classify: bool, batches: Callable[[], tuple[Batches, Batches]]) -> list[float]:
        """E + 1 epochs of the hand-written loop with ``torch.optim.Adam(**adam)``; ``batches()`` gives each
        epoch's train and validation batches."""
        self.check_threads("the previous run")
        torch.manual_seed(seed)
        model = build().to(self.device)
        optimizer = torch.optim.Adam(model.parameters(), **adam)
        times = []
        for _ in range(self.epochs + 1):
            train_batches, val_batches = batches()
            times.append(loop_epoch(model, optimizer, loss_fn, classify, train_batches, val_batches, self.device))
        return times

    # ---- target 1

    def target_loop(self, keys: list[str]) -> None:
        for w in self.workloads(keys):
            self.compare_with_loop(w)

    def compare_with_loop(self, w: Workload) -> None:
        cfg = compose([*w.overrides, *self.common()])
        # The loop's tensors are dltrain's own splits of this very config, already on the device.
        data = load_data(cfg, self.device)
        x_train, y_train, x_val, y_val = data.x_train, data.y_train, data.x_val, data.y_val
        tcfg = cfg.trainer
        hand_params = count_params(w.build(data))
        raw: dict[str, Any] = {"dltrain": [], "loop": [], "loop_user_adam": [], "hand_params": hand_params,
                               "train_examples": len(x_train), "val_examples": len(x_val),
                               "batch_size": tcfg.batch_size, "eval_batch_size": tcfg.eval_batch_size,
                               "user_adam": user_adam(cfg)}

        def build() -> nn.Module:
            return w.build(data)

        def batches() -> tuple[Batches, Batches]:
            return index_batches(x_train, y_train, tcfg.batch_size), slices(x_val, y_val, tcfg.eval_batch_size)

        def run_dltrain(rep: int) -> None:
            d = self.run_dltrain(cfg, f"{w.key}-dltrain-{rep}")
            if d["num_params"] != hand_params:
                raise BenchmarkError(f"{w.key}: the hand-written model has {hand_params:,} parameters but "
                                     f"dltrain's has {d['num_params']:,}: they are not the same architecture")
            raw["dltrain"].append(d)
            if "dltrain_adam" not in raw:
                # The like-for-like loop steps with the optimizer dltrain built (it may pick a faster
                # implementation than torch's default, which would hide dltrain's own overhead).
                raw["dltrain_adam"] = dltrain_adam(self.tmp / f"{w.key}-dltrain-{rep}")

        def run_loop(rep: int) -> None:
            raw["loop"].append(self.run_loop(build, cfg.seed, raw["dltrain_adam"], w.loss, w.classify, batches))

        def run_user_loop(rep: int) -> None:
            if describe_adam(raw["dltrain_adam"]) != describe_adam(raw["user_adam"]):  # else the same as run_loop
                raw["loop_user_adam"].append(self.run_loop(build, cfg.seed, raw["user_adam"], w.loss, w.classify,
                                                           batches))

        self.rounds(w.key, [("dltrain", run_dltrain), ("hand-written loop, dltrain's Adam", run_loop),
                            ("hand-written loop, torch's default Adam", run_user_loop)])
        raw["dltrain_params"] = raw["dltrain"][0]["num_params"]
        self.report.raw[w.key] = raw
        ours = median(s for d in raw["dltrain"] for s in d["epoch_seconds"][1:])
        per_run = median(d["train_seconds"] / d["epochs"] for d in raw["dltrain"])
        theirs = median(s for run in raw["loop"] for s in run[1:])
        ratio = ours / theirs
        raw["round_ratios"] = round_ratios([d["epoch_seconds"] for d in raw["dltrain"]], raw["loop"])
        sizes = f"{len(x_train):,} train / {len(x_val):,} val"
        self.report.rows += [
            Row("1", w.label, f"dltrain epoch (train+val), {sizes}", ours, per_run,
                f"{ratio:.2f}× hand loop{rounds_text(raw['round_ratios'])}", f"≤ {GOAL_LOOP}",
                yes_no(ratio <= GOAL_LOOP)),
            Row("1", w.label, f"hand-written loop epoch, Adam as dltrain's ({describe_adam(raw['dltrain_adam'])})",
                theirs),
        ]
        if raw["loop_user_adam"]:
            users = median(s for run in raw["loop_user_adam"] for s in run[1:])
            self.report.rows.append(Row("1", w.label, f"hand-written loop epoch, `torch.optim.Adam(params, "
                                                      f"lr={cfg.optim.lr})` as users write it", users, None,
                                        f"dltrain {ours / users:.2f}× this"))
        self.report.notes.append(f"{w.key}: {hand_params:,} parameters in both models "
                                 f"(dltrain {raw['dltrain_params']:,}, hand-written {hand_params:,}); "
                                 f"data: {self.data_sources[w.key]}")

    # ---- target 2

    def target_lightning(self) -> None:
        w = self.workloads(["mlp"])[0]
        if importlib.util.find_spec("lightning") is None:
            self.report.rows.append(Row("2", w.label, "Lightning is not installed: `pip install -e .[bench]` to "
                                        "run this comparison", None))
            return
        overrides = [*w.overrides, *self.common()]
        cfg = compose(overrides)
        data = load_data(cfg, torch.device("cpu"))  # DataLoaders read CPU tensors; batches then move
        eval_batch = cfg.trainer.eval_batch_size
        train_loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=BATCH_SIZE, shuffle=True)
        val_loader = DataLoader(TensorDataset(data.x_val, data.y_val), batch_size=eval_batch)

        def loaders() -> tuple[Batches, Batches]:  # re-iterable: each pass draws a new shuffle
            return OnDevice(train_loader, self.device), OnDevice(val_loader, self.device)

        raw: dict[str, Any] = {"dltrain": [], "lightning": [], "dataloader_loop": [],
                               "lightning_version": importlib.metadata.version("lightning")}

        def run_dltrain(rep: int) -> None:
            raw["dltrain"].append(self.run_dltrain(cfg, f"lightning-dltrain-{rep}"))

        def run_lightning(rep: int) -> None:
            result = self.run_lightning(overrides, rep)
            if "import_error" in result:
                raise LightningMissing(result["import_error"])
            raw["lightning"].append(result)

        def run_loader_loop(rep: int) -> None:
            raw["dataloader_loop"].append(self.run_loop(lambda: hand_mlp(data), cfg.seed, user_adam(cfg),
                                                        F.cross_entropy, True, loaders))

        try:
            self.rounds("lightning", [("dltrain", run_dltrain), ("Lightning Trainer (own process)", run_lightning),
                                      ("hand-written loop over DataLoader", run_loader_loop)])
        except LightningMissing as err:
            self.report.rows.append(Row("2", w.label, f"Lightning cannot be imported ({err}): "
                                        "`pip install -e .[bench]` to run this comparison", None))
            return
        hand_params = count_params(hand_mlp(data))
        for name, params in (("LightningModule", raw["lightning"][0]["num_params"]), ("hand-written", hand_params)):
            if params != raw["dltrain"][0]["num_params"]:
                raise BenchmarkError(f"lightning: the {name} model has {params:,} parameters but dltrain's has "
                                     f"{raw['dltrain'][0]['num_params']:,}")
        self.report.raw["lightning"] = raw
        ours = median(s for d in raw["dltrain"] for s in d["epoch_seconds"][1:])
        ours_run = median(d["train_seconds"] / d["epochs"] for d in raw["dltrain"])
        theirs = median(s for r in raw["lightning"] for s in r["epoch_seconds"][1:])
        theirs_run = median(s for r in raw["lightning"] for s in r["between_starts"][1:])
        loader_loop = median(s for run in raw["dataloader_loop"] for s in run[1:])
        speedup = theirs / ours
        raw["round_ratios"] = round_ratios([r["epoch_seconds"] for r in raw["lightning"]],
                                           [d["epoch_seconds"] for d in raw["dltrain"]])
        self.report.rows += [
            Row("2", w.label, "dltrain epoch (same rounds)", ours, ours_run),
            Row("2", w.label, f"Lightning {raw['lightning_version']} Trainer epoch (defaults)", theirs, theirs_run,
                f"{speedup:.2f}× dltrain{rounds_text(raw['round_ratios'])}", f"≥ {GOAL_LIGHTNING}",
                yes_no(speedup >= GOAL_LIGHTNING)),
            Row("2", w.label, "hand-written loop over DataLoader(TensorDataset), torch's default Adam", loader_loop,
                None, f"{loader_loop / ours:.2f}× dltrain"),
        ]
        first = raw["lightning"][0]
        self.report.notes.append(
            "lightning: epoch = on_train_epoch_start to on_validation_epoch_end (train + validation, before the "
            "checkpoint); its run / epoch = time between consecutive epoch starts (the last closed by "
            f"on_train_end), with the checkpoint and logging; default logger: {first['logger']}; validation "
            f"batches of {eval_batch} as dltrain's; model summary, progress bar and checkpointing on (the "
            f"defaults); `torch.optim.Adam(self.parameters(), lr={cfg.optim.lr})`; each fit in a process of its "
            f"own ({first['threads']} torch threads), because importing Lightning slows later torch code in the "
            "same process (see the module docstring)")

    def run_lightning(self, overrides: list[str], rep: int) -> dict[str, Any]:
        """One Lightning fit in a fresh process (:func:`lightning_child`); returns what it measured."""
        spec = {"overrides": overrides, "epochs": self.epochs, "device": self.args.device,
                "root": str(self.tmp / f"lightning-{rep}"), "out": str(self.tmp / f"lightning-{rep}.json")}
        spec_path = self.tmp / f"lightning-{rep}-spec.json"
        spec_path.write_text(json.dumps(spec))
        self.run_command([sys.executable, "-c",
                          f"from benchmarks.run import lightning_child; lightning_child({str(spec_path)!r})"])
        return json.loads(Path(spec["out"]).read_text())

    # ---- targets 3 and 5: whole processes

    def cli(self) -> tuple[list[str], str]:
        """The ``dltrain`` console script of this environment, or ``python -m dltrain`` (the same ``main``)."""
        script = Path(sys.executable).with_name("dltrain")
        if script.is_file():
            return [str(script)], f"the console script {script}"
        return [sys.executable, "-m", "dltrain"], f"{sys.executable} -m dltrain"

    def run_command(self, command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
        """Wall seconds of one command; a non-zero exit is an error that shows the command's output."""
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise BenchmarkError(f"`{shlex.join(command)}` exited with {proc.returncode}:\n"
                                 f"--- stderr ---\n{tail(proc.stderr)}\n--- stdout ---\n{tail(proc.stdout)}")
        return wall, proc

    def target_processes(self, startup: bool, sweep: bool) -> None:
        cli, cli_text = self.cli()
        device = f"device={self.args.device}"
        jobs = self.sizes.sweep_jobs
        seeds = ",".join(str(i) for i in range(jobs))
        commands: dict[str, Callable[[int], list[str]]] = {
            "fast_dev_run": lambda r: [*cli, "trainer.fast_dev_run=true", f"hydra.run.dir={self.tmp}/fd{r}", device]}
        if startup:
            bare = [sys.executable, str(BARE_APP), f"+device={self.args.device}"]
            commands["bare"] = lambda r: [*bare, f"hydra.run.dir={self.tmp}/bare{r}"]
            commands["bare_step"] = lambda r: [*bare, "+step=true", f"hydra.run.dir={self.tmp}/bare_step{r}"]
            commands["help"] = lambda r: [sys.executable, "-c", HELP_PROBE]
        if sweep:
            commands["sweep"] = lambda r: [*cli, "-m", "trainer.fast_dev_run=true", f"seed={seeds}",
                                           f"hydra.sweep.dir={self.tmp}/sweep{r}", device]
        # Start-up times are noisy: never fewer than 3 rounds, but --quick only checks that they run.
        rounds = self.repeats if self.args.quick else max(3, self.repeats)
        names = list(commands)
        walls: dict[str, list[float]] = {name: [] for name in names}
        imported: dict[str, Any] = {}
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]  # rotate: no command always goes first
            for name in order:
                progress(f"processes: round {r + 1}/{rounds}: {name}")
                wall, proc = self.run_command(commands[name](r))
                walls[name].append(wall)
                if name == "help":
                    imported = json.loads(proc.stdout.strip().splitlines()[-1])
                    if imported.get("exit_code") not in (0, None):
                        raise BenchmarkError(f"dltrain --help exited with {imported['exit_code']}:\n"
                                             f"{tail(proc.stderr)}")
                if name == "sweep":
                    done = [p for p in (self.tmp / f"sweep{r}").glob("*/summary.json")
                            if json.loads(p.read_text()).get("status") == "completed"]
                    if len(done) != jobs:
                        raise BenchmarkError(f"the sweep in {self.tmp}/sweep{r} completed {len(done)} of {jobs} jobs")
        self.report.raw["processes"] = {"rounds": rounds, "walls": walls, "cli": cli_text,
                                        "commands": {n: shlex.join(c(0)) for n, c in commands.items()},
                                        "help_imported": imported}
        single = median(walls["fast_dev_run"])
        workload = "default data (digits), mlp"
        if startup:
            bare, step = median(walls["bare"]), median(walls["bare_step"])
            self.report.rows += [
                Row("3", workload, "`dltrain trainer.fast_dev_run=true` process", single, None,
                    f"{single / bare:.2f}× bare app; {single / step:.2f}× bare app + 1 step"),
                Row("3", "Hydra + torch", "bare Hydra app (imports torch, one tensor)", bare),
                Row("3", "Hydra + torch", "bare Hydra app + one Adam step", step),
            ]
            torch_in, vision_in = imported.get("torch"), imported.get("torchvision")
            self.report.rows.append(Row(
                "3", "CLI", f"`dltrain --help` (torch imported: {'yes' if torch_in else 'no'}, torchvision: "
                f"{'yes' if vision_in else 'no'})", median(walls["help"]), None, "—", "no torch import",
                yes_no(not torch_in and not vision_in)))
            self.report.notes.append(f"start-up: dltrain is {cli_text} (it calls dltrain.cli.app.main, as "
                                     "`python -m dltrain` does); `--help` runs dltrain.cli.app.main in `python -c` and "
                                     f"reads sys.modules after it; median of {rounds} rounds")
        if sweep:
            total = median(walls["sweep"])
            ratio = total / (jobs * single)
            marginal = (total - single) / (jobs - 1)
            self.report.rows += [
                Row("5", f"{jobs} jobs, fast_dev_run", f"`dltrain -m ... seed=0..{jobs - 1}` total (one process)",
                    total, None, f"{ratio:.2f}× {jobs} separate processes", f"≤ {GOAL_SWEEP}",
                    yes_no(ratio <= GOAL_SWEEP)),
                Row("5", f"{jobs} jobs, fast_dev_run", "sweep per job (total ÷ jobs)", total / jobs, None,
                    f"{total / jobs / single:.2f}× one process"),
            ]
            self.report.notes.append(
                f"sweep: each job after the first adds about {marginal:.2f} s ((sweep - one process) / {jobs - 1}) "
                f"against {single:.2f} s for a separate fast_dev_run process; the goal \"far below one process per "
                f"job\" is read as ≤ {GOAL_SWEEP}")


HELP_PROBE = """
import json, sys
sys.argv = ["dltrain", "--help"]
from dltrain.cli.app import main
code = None
try:
    main()
except SystemExit as stop:
    code = stop.code
sys.stdout.flush()
print()
print(json.dumps({"torch": "torch" in sys.modules, "torchvision": "torchvision" in sys.modules, "exit_code": code}))
"""


def lightning_classes(L: Any) -> tuple[type, type]:
    """The LightningModule (as the Lightning docs write one) and the epoch-timing callback.

    Defined here rather than at module level, so that the suite runs (without target 2) where Lightning is not
    installed.
    """

    class LitClassifier(L.LightningModule):
        def __init__(self, model: nn.Module, lr: float) -> None:
            super().__init__()
            self.model = model
            self.lr = lr

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = F.cross_entropy(self.model(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
            x, y = batch
            logits = self.model(x)
            self.log("val_loss", F.cross_entropy(logits, y))
            self.log("val_acc", (logits.argmax(dim=1) == y).float().mean())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=self.lr)

    class EpochTimer(L.Callback):
        """Per epoch: the train-epoch start, the end of its validation, and (for the whole epoch) the next start."""

        def __init__(self, device: torch.device) -> None:
            self.device = device
            self.starts: list[float] = []
            self.val_ends: list[float] = []
            self.train_end: float | None = None

        def _now(self) -> float:
            sync(self.device)
            return time.perf_counter()

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self.starts.append(self._now())

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if not trainer.sanity_checking:  # the two validation batches Lightning runs before training
                self.val_ends.append(self._now())

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self.train_end = self._now()

        def epoch_seconds(self) -> list[float]:
            return [end - start for start, end in zip(self.starts, self.val_ends, strict=False)]

        def between_starts(self) -> list[float]:
            ends = self.starts[1:] + ([self.train_end] if self.train_end is not None else [])
            return [end - start for start, end in zip(self.starts, ends, strict=False)]

    return LitClassifier, EpochTimer


def lightning_child(spec_path: str) -> None:
    """One Lightning fit of the mlp workload, in the process that calls this (``Suite.run_lightning`` starts it).

    The spec names the dltrain overrides (so the data are dltrain's own splits, as in the parent), the epochs,
    the device, the Trainer's root folder and where to write the result: per-epoch seconds, the parameter count,
    the logger Lightning picked and the torch threads. A Lightning that cannot be imported is reported, not
    raised, so that the suite goes on without it.
    """
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    try:
        import lightning as L
    except ImportError as err:
        out.write_text(json.dumps({"import_error": str(err)}))
        return
    device = torch.device(spec["device"])
    cfg = compose(spec["overrides"])
    data = load_data(cfg, torch.device("cpu"))
    torch.manual_seed(cfg.seed)
    model = hand_mlp(data)
    module_cls, timer_cls = lightning_classes(L)
    timer = timer_cls(device)
    trainer = L.Trainer(max_epochs=spec["epochs"] + 1, devices=1, callbacks=[timer],
                        accelerator="gpu" if device.type == "cuda" else "cpu", default_root_dir=spec["root"])
    trainer.fit(module_cls(model, float(cfg.optim.lr)),
                DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=BATCH_SIZE, shuffle=True),
                DataLoader(TensorDataset(data.x_val, data.y_val), batch_size=cfg.trainer.eval_batch_size))
    if len(timer.epoch_seconds()) != spec["epochs"] + 1:
        raise BenchmarkError(f"Lightning ran {len(timer.epoch_seconds())} epochs, not {spec['epochs'] + 1}")
    out.write_text(json.dumps({
        "epoch_seconds": timer.epoch_seconds(), "between_starts": timer.between_starts(),
        "logger": type(trainer.logger).__name__ if trainer.logger else None, "num_params": count_params(model),
        "threads": torch.get_num_threads(), "version": L.__version__}))


# --------------------------------------------------------------------------------------------- main


def header(args: argparse.Namespace, suite: Suite, started: datetime.datetime, wall: float) -> str:
    try:  # the version only: importing Lightning would change this process (see the module docstring)
        lightning_version = importlib.metadata.version("lightning")
    except importlib.metadata.PackageNotFoundError:
        lightning_version = "not installed"
    lines = [f"# dltrain benchmarks, {started:%Y-%m-%d %H:%M}", "",
             f"- CPU: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__} ({suite.threads} threads); "
             f"Python {platform.python_version()}; dltrain {dltrain.__version__}; Lightning {lightning_version}",
             f"- device: {suite.device}" + (f" ({torch.cuda.get_device_name(suite.device)})"
                                             if suite.device.type == "cuda" else "")]
    for key, source in suite.data_sources.items():
        lines.append(f"- data, {key}: {source}")
    quick = "; --quick sizes: a smoke check, with too few epochs for its ratios to be measurements"
    lines.append(f"- {args.repeats} repetition(s) of {args.epochs} timed epochs after 1 warm-up epoch; medians pool "
                 f"every timed epoch; parts: {', '.join(args.only)}{quick if args.quick else ''}; "
                 f"the suite took {wall:.0f} s")
    sharing = SHARING.summary()
    if sharing:
        lines.append(f"- {sharing}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=None,
                        help="repetitions of every comparison (default 3; 1 with --quick)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="timed epochs per training run, after one warm-up epoch (default 5; 2 with --quick)")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {','.join(PARTS)}")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the models train")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one repetition: a smoke check")
    parser.add_argument("--json", type=Path, default=None, help="also write every number to this JSON file")
    args = parser.parse_args(argv)
    args.only = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(args.only) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.epochs = args.epochs or (2 if args.quick else 5)
    if args.repeats < 1 or args.epochs < 1:
        parser.error("--repeats and --epochs must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the selected parts and print the table (and write the JSON)."""
    args = parse_args(argv)
    started, clock = datetime.datetime.now(), time.perf_counter()
    progress(f"parts: {', '.join(args.only)}; {args.repeats} repetition(s) of {args.epochs} timed epochs")
    with tempfile.TemporaryDirectory(prefix="dltrain-bench-") as tmp:
        suite = Suite(args, QUICK if args.quick else FULL, Path(tmp))
        loops = [p for p in ("mlp", "cnn", "gru") if p in args.only]
        if loops:
            suite.target_loop(loops)
        if "lightning" in args.only:
            suite.target_lightning()
        if "startup" in args.only or "sweep" in args.only:
            suite.target_processes("startup" in args.only, "sweep" in args.only)
    wall = time.perf_counter() - clock
    progress("done")
    report = suite.report
    report.notes.append(f"torch threads: {suite.threads} for every in-process run (subprocesses use torch's default)")
    text = "\n".join([header(args, suite, started, wall), "", report.markdown(), "", "Notes:", "",
                      *(f"- {n}" for n in report.notes)])
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps({
            "date": started.isoformat(timespec="seconds"), "cpu": cpu_model(), "cores": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": suite.threads, "python": platform.python_version(),
            "dltrain": dltrain.__version__, "device": args.device, "repeats": args.repeats, "epochs": args.epochs,
            "quick": args.quick, "parts": args.only, "sharing": SHARING.steps, "data_sources": suite.data_sources,
            "seconds": round(wall, 1),
            "rows": [asdict(r) for r in report.rows], "notes": report.notes, "raw": report.raw,
        }, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

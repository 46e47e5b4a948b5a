"""The README's Experiments table, measured again: every row's command run as written, the table printed.

The rows come from README.md itself (the table between the ``readme_results`` marker comments: the
backticked ``dltrain ...`` command in the first column), so this script and the README cannot disagree on
what was run. Each command runs in a fresh temporary working directory (a first run there makes the sample
files it reads), and its ``summary.json`` gives the test result and the time (``train_seconds``). The result
shows what the task calls for: ``r2`` for a regression, ``f1``, ``precision`` and ``recall`` (then the
accuracy) for a binary task that monitors one of those, the accuracy otherwise. The "what it shows" column
and any footnote mark after a result are kept from the README. Rows whose data is downloaded are skipped
(their cells are kept as they are), except the MNIST rows when ``--mnist-root`` names the folder that
``dltrain-samples --mnist-8k --from <an MNIST download>`` writes (``samples/mnist-8k``: the 8,000 training
and 2,000 test images the README's footnote describes; any other MNIST is refused); rows that need a CUDA
GPU are skipped too. Run it from the project root::

    python -m benchmarks.readme_results                                          # print the table
    python -m benchmarks.readme_results --mnist-root samples/mnist-8k            # with the MNIST rows
    python -m benchmarks.readme_results --mnist-root samples/mnist-8k --write    # and replace the README's table

The table goes to stdout, progress to stderr. A command that fails stops the script with its exit code
and the end of its output.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import re
import shlex
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BEGIN = "<!-- readme_results:begin -->"
END = "<!-- readme_results:end -->"
HEADER = "| command | what it shows | test result | time |"
RULE = "|---|---|---|---|"
FOOTNOTE_MARK = re.compile(r"\s*[*\u2020\u2021]+$")  # a trailing *, dagger or double dagger
PR_METRICS = ("f1", "precision", "recall")


class ReadmeError(RuntimeError):
    """The README has no table to measure, or one of its commands failed."""


@dataclass(frozen=True)
class Row:
    """One row of the Experiments table, its cells as the README writes them.

    Attributes:
        command: the first cell without its backticks, e.g. ``dltrain experiment=xor``.
        shows: what the row shows (kept as written).
        result: the test result (replaced when the row is measured).
        time: the training time (replaced when the row is measured).
    """

    command: str
    shows: str
    result: str
    time: str

    def line(self) -> str:
        """The row as a markdown table line."""
        cells = (f"`{self.command}`", self.shows, self.result, self.time)
        return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"


def split_cells(line: str) -> list[str]:
    """The cells of a markdown table line; a ``|`` inside backticks belongs to its cell."""
    cells, current, in_code = [], [], False
    for char in line.strip().strip("|"):
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            cells.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    cells.append("".join(current).strip())
    return cells


def region(text: str) -> tuple[int, int]:
    """Where the measured part of the README lies: the offsets just after the begin marker and at the end one."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ReadmeError(f"README.md has no {BEGIN} ... {END} around the Experiments table: put them back "
                          "around the table and the line above it that says where it was measured.")
    return start + len(BEGIN), end


def table_rows(text: str) -> list[Row]:
    """The rows between the markers whose first cell is a backticked ``dltrain`` command."""
    start, end = region(text)
    rows = []
    for line in text[start:end].splitlines():
        cells = split_cells(line) if line.startswith("|") else []
        if len(cells) == 4 and cells[0].startswith("`dltrain ") and cells[0].endswith("`"):
            rows.append(Row(cells[0][1:-1], *cells[1:]))
    if not rows:
        raise ReadmeError("README.md's Experiments table has no row with a `dltrain ...` command in its first column.")
    return rows


def check_mnist_8k(root: Path) -> None:
    """Refuse a ``--mnist-root`` that is not mnist-8k: the README's footnote says what the MNIST rows
    trained on, so the script measures that data alone (the counts in the four IDX headers).

    Raises:
        ReadmeError: a file missing, or a count other than mnist-8k's.
    """
    from dltrain.data import mnist8k  # no torch

    fix = "write it with dltrain-samples --mnist-8k --from <an MNIST download> and pass --mnist-root samples/mnist-8k"
    test_images = mnist8k.OFFICIAL_TEST_IMAGES - mnist8k.TRAIN_IMAGES
    for prefix, want in (("train", mnist8k.TRAIN_IMAGES), ("t10k", test_images)):
        for kind in ("images-idx3", "labels-idx1"):
            path = root / "MNIST" / "raw" / f"{prefix}-{kind}-ubyte"
            try:
                with path.open("rb") as f:
                    header = f.read(8)
            except OSError as err:
                raise ReadmeError(f"--mnist-root {root} is not mnist-8k (cannot read {path}: "
                                  f"{err.strerror or err}): {fix}") from None
            count = struct.unpack(">I", header[4:])[0] if len(header) == 8 else None
            if count != want:
                raise ReadmeError(f"--mnist-root {root} is not mnist-8k ({path.name} holds "
                                  f"{'no IDX header' if count is None else f'{count:,} items'}, not {want:,}): {fix}")


def plan(row: Row, mnist_root: str | None) -> tuple[list[str] | None, str]:
    """What to add to a row's command to run it here, or ``None`` and why it is skipped."""
    from dltrain import compose  # composes the config only: no torch, nothing trained

    cfg = compose(shlex.split(row.command)[1:])
    needs = []
    if str(cfg.device).startswith("cuda"):
        needs.append("a CUDA GPU")
    if "download" in cfg.data:
        if cfg.data.name == "mnist" and mnist_root and not needs:
            return [f"data.root={mnist_root}", "data.download=false"], ""
        needs.append("the download" if cfg.data.name != "mnist" else "--mnist-root")
    return (None, "needs " + " and ".join(needs)) if needs else ([], "")


def result_cell(summary: dict[str, Any], marker: str = "") -> str:
    """The test result the way the README writes it, from a run's ``summary.json``."""
    test = summary["test"]
    monitored = re.sub(r"^(val|train)_", "", summary.get("monitor") or "")
    if summary["task"] == "regression":
        text = f"r2 {test['r2']:.3f}"
    elif summary["task"] == "binary" and monitored in PR_METRICS:
        text = ", ".join(f"{name} {test[name]:.3f}" for name in PR_METRICS) + f" (accuracy {test['accuracy']:.3f})"
    else:
        text = f"accuracy {test['accuracy']:.3f}"
    return text + marker


def time_cell(seconds: float) -> str:
    """Training seconds, rounded the way the README writes them."""
    return "< 1 s" if seconds < 0.5 else f"{seconds:.0f} s"


def dltrain_command() -> list[str]:
    """The ``dltrain`` console script of this Python's environment (``python -m dltrain`` without one)."""
    script = Path(sys.executable).with_name("dltrain")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dltrain"]


def run_row(row: Row, extra: list[str]) -> dict[str, Any]:
    """Run a row's command in a fresh temporary folder and return its ``summary.json``."""
    with tempfile.TemporaryDirectory(prefix="readme_results_") as folder:
        env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
        proc = subprocess.run([*dltrain_command(), *shlex.split(row.command)[1:], *extra], cwd=folder,
                              env={**env, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True)
        if proc.returncode:
            tail = (proc.stdout + proc.stderr)[-3000:]
            raise ReadmeError(f"`{row.command}` exited with {proc.returncode}:\n{tail}")
        summaries = sorted(Path(folder, "outputs").glob("*/*/summary.json"))
        if len(summaries) != 1:
            raise ReadmeError(f"`{row.command}` left {len(summaries)} summary.json files under outputs/, not one.")
        return json.loads(summaries[0].read_text())


def measure(row: Row, mnist_root: str | None) -> tuple[Row, str, str]:
    """The row with its result and time measured here and the device it trained on, or the row as it
    was, why it was skipped and ''."""
    extra, skipped = plan(row, mnist_root)
    if extra is None:
        return row, skipped, ""
    summary = run_row(row, extra)
    mark = FOOTNOTE_MARK.search(row.result)
    return Row(row.command, row.shows, result_cell(summary, mark.group() if mark else ""),
               time_cell(summary["train_seconds"])), "", summary["device"]


def git(*args: str) -> str:
    """A git command's output in the project root ('' when git or the repository is missing)."""
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def commit() -> str:
    """The commit being measured, and whether the tree holds changes not committed."""
    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    return sha + (" plus uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def provenance(measured_commit: str, devices: set[str]) -> str:
    """The line that says where and on what the table was measured."""
    from benchmarks.machine import cpu_model

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    return (f"Measured by `python -m benchmarks.readme_results` at commit {measured_commit} on {cpu_model()} "
            f"({cores} cores; trained on {', '.join(sorted(devices)) or 'nothing'}), torch "
            f"{importlib.metadata.version('torch')}, {date}: test metrics at the default seed; time is the run's "
            "`train_seconds`.")


def render(rows: list[Row], line: str) -> str:
    """What goes between the markers: the provenance line and the table."""
    return "\n".join([line, "", HEADER, RULE, *(row.line() for row in rows)])


def replace_region(text: str, content: str) -> str:
    """``text`` with everything between the markers replaced by ``content`` (blank lines around it)."""
    start, end = region(text)
    return f"{text[:start]}\n\n{content}\n\n{text[end:]}"


def write_readme(content: str, path: Path = README) -> None:
    """Replace the measured part of ``path`` in one step: readers see the old file or the new one."""
    from dltrain.files import atomic_write

    text = replace_region(path.read_text(encoding="utf-8"), content)
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist-root", help="mnist-8k's folder (dltrain-samples --mnist-8k writes "
                        "samples/mnist-8k): the MNIST rows train on it")
    parser.add_argument("--write", action="store_true", help="replace the table in README.md")
    args = parser.parse_args(argv)
    mnist_root = str(Path(args.mnist_root).resolve()) if args.mnist_root else None
    if mnist_root:
        check_mnist_8k(Path(args.mnist_root))
    rows = table_rows(README.read_text(encoding="utf-8"))
    started, measured, skipped, devices, measured_commit = time.perf_counter(), [], [], set(), commit()
    for row in rows:
        print(f"running: {row.command}", file=sys.stderr, flush=True)
        new_row, why, device = measure(row, mnist_root)
        measured.append(new_row)
        devices.update([device] if device else [])
        if why:
            skipped.append(f"{row.command}: {why}")
            print(f"  skipped ({why}): its cells are kept as the README has them", file=sys.stderr)
    if commit() != measured_commit:
        print(f"warning: the tree changed while measuring (it was at {measured_commit})", file=sys.stderr)
    content = render(measured, provenance(measured_commit, devices))
    print(content)
    print(f"{len(rows) - len(skipped)} of {len(rows)} rows measured in {time.perf_counter() - started:.0f} s"
          + "".join(f"\n  skipped: {line}" for line in skipped), file=sys.stderr)
    if args.write:
        if any("--mnist-root" in line for line in skipped):
            print("not written: the MNIST rows were not measured (pass --mnist-root).", file=sys.stderr)
            return 2
        write_readme(content)
        print(f"written to {README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ReadmeError as error:
        print(f"readme_results: error: {error}", file=sys.stderr)
        sys.exit(1)

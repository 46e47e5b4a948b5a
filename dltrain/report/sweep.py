"""A sweep's summary: one row per job, read back from the job directories, ranked by the monitored metric,
written beside them and printed. A sweep that varies the seed is also summarised by configuration
(``sweep_stats`` computes, ``sweep_groups`` shows): its console table has one row per group."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from dltrain.files import atomic_write, write_json
from dltrain.report.rerun import best_job_yaml, job_rerun
from dltrain.report.run_files import SWEEP_FILES, has_placeholder
from dltrain.report.summary import SUCCESS
from dltrain.report.sweep_groups import (
    GROUPS_CSV,
    best_group_yaml,
    groups_csv,
    groups_json,
    print_best_group,
    print_groups,
)
from dltrain.report.sweep_stats import Group, group_rows, is_grouped

log = logging.getLogger("dltrain")

SUMMARY_CSV, SUMMARY_JSON, BEST_OVERRIDES, SWEEP_PLOT, CURVES_PLOT = (
    "sweep_summary.csv", "sweep_summary.json", "best_overrides.yaml", "sweep.png", "sweep_curves.png")
_MISSING = "no summary.json: the job was killed or has not finished"

#: The columns after the params; ``test_*`` columns go between ``best_epoch`` and ``epochs_run``.
_HEAD = ("status", "monitor", "best_value", "best_epoch")
_TAIL = ("epochs_run", "seconds", "overrides", "message", "run_dir")
#: The note column folds a word longer than this, rather than widen the table beyond the console.
_NOTE_FOLD = 40


@dataclass
class SweepSummary:
    """The ranked rows of a sweep and what they were ranked by."""

    sweep_dir: Path
    rows: list[dict[str, Any]]
    params: list[str]
    monitor: str | None
    mode: str | None
    best: dict[str, Any] | None
    #: The jobs grouped by configuration when the sweep varies the seed (ranked), else None.
    groups: list[Group] | None = None

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The rows of jobs that did not succeed (failed, diverged, interrupted, missing)."""
        return [row for row in self.rows if row["status"] not in SUCCESS]

    @property
    def exit_code(self) -> int:
        """0 when every job succeeded, 3 when every failure diverged, else 2."""
        failed = self.failed
        if not failed:
            return 0
        return 3 if all(row["status"] == "diverged" for row in failed) else 2


def collect_jobs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One unranked row per job directory of ``sweep_dir``, sorted by job number.

    A job directory is one holding ``.hydra/hydra.yaml`` and ``.hydra/overrides.yaml``, one or
    two levels below ``sweep_dir`` (Hydra's ``hydra.sweep.subdir`` may name or nest them).
    """
    sweep_dir = Path(sweep_dir)
    found = list(_job_dirs(sweep_dir))
    jobs = []
    for order, job_dir in enumerate(found):
        overrides = _read_overrides(job_dir)
        summary = _read_summary(job_dir)
        jobs.append((_job_number(job_dir, order), job_dir, overrides, summary))
    jobs.sort(key=lambda j: (j[0], j[1].as_posix()))

    rows = [_row(num, job_dir.relative_to(sweep_dir), overrides, summary)
            for num, job_dir, overrides, summary in jobs]
    params = swept_params(rows)
    test_keys = sorted({key for row in rows for key in row if key.startswith("test_")})
    # Rebuilt in the CSV's column order, so the JSON's rows read the same way.
    return [{"rank": None, "job": row["job"], **{key: row["_values"].get(key) for key in params},
             **{key: row[key] for key in _HEAD}, **{key: row.get(key) for key in test_keys},
             **{key: row[key] for key in _TAIL}, **{key: v for key, v in row.items() if key.startswith("_")}}
            for row in rows]


def swept_params(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The override keys that vary between the jobs (or that some jobs lack), in order of appearance."""
    rows = list(rows)
    order: dict[str, None] = {}
    for row in rows:
        order.update(dict.fromkeys(_values(row)))
    return [key for key in order if len({_values(row).get(key) for row in rows}) > 1]


def rank(rows: Iterable[dict[str, Any]], monitor: str | None, mode: str | None) -> list[dict[str, Any]]:
    """The rows, best first; sets each row's ``rank`` (1 = best).

    Successful jobs that monitored ``monitor`` and have a finite ``best_value`` come first
    (ascending for ``mode="min"``, descending for ``"max"``, ties by job number); every other
    row follows, by job number.
    """
    rows = list(rows)
    ranked = [row for row in rows if _rankable(row, monitor)]
    sign = -1.0 if mode == "max" else 1.0
    ranked.sort(key=lambda row: (sign * row["best_value"], row["job"]))
    rest = sorted((row for row in rows if not _rankable(row, monitor)), key=lambda row: row["job"])
    out = ranked + rest
    for i, row in enumerate(out, start=1):
        row["rank"] = i
    return out


def write_summary(summary: SweepSummary) -> None:
    """Write ``sweep_summary.csv``, ``sweep_summary.json``, ``best_overrides.yaml``, ``sweep.png`` and
    ``sweep_curves.png`` (and ``sweep_groups.csv`` when grouped) into the sweep directory; a plot
    that cannot be drawn is only warned about."""
    sweep_dir = summary.sweep_dir
    test_keys = sorted({key for row in summary.rows for key in row if key.startswith("test_")})
    cols = ["rank", "job", *summary.params, *_HEAD, *test_keys, *_TAIL]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in summary.rows:
        writer.writerow({key: _csv_value(key, row.get(key)) for key in cols})
    _write_text(sweep_dir / SUMMARY_CSV, buffer.getvalue())

    best = summary.best
    groups = summary.groups
    if groups is not None:
        _write_text(sweep_dir / GROUPS_CSV, groups_csv(groups))
    write_json(sweep_dir / SUMMARY_JSON, {
        "sweep_dir": str(sweep_dir), "monitor": summary.monitor, "mode": summary.mode, "params": summary.params,
        "num_jobs": len(summary.rows), "num_failed": len(summary.failed),
        "best_job": best["job"] if best is not None else None,
        "jobs": [_json_safe(_public(row)) for row in summary.rows],
        **({"groups": groups_json(groups)} if groups is not None else {})})

    if best is not None and groups is not None:
        _write_text(sweep_dir / BEST_OVERRIDES, best_group_yaml(sweep_dir, groups[0], summary.monitor))
    elif best is not None:
        _write_text(sweep_dir / BEST_OVERRIDES, best_job_yaml(sweep_dir, best, summary.monitor))
    else:  # no job succeeded: a best of an earlier summary would mislead
        (sweep_dir / BEST_OVERRIDES).unlink(missing_ok=True)

    try:
        _plot(summary)
    except Exception as err:  # the plot is a bonus: the tables above are the summary
        log.warning("could not draw %s: %s", SWEEP_PLOT, err)
    try:
        _plot_curves(summary)
    except Exception as err:  # as above
        log.warning("could not draw %s: %s", CURVES_PLOT, err)


def print_summary(summary: SweepSummary, console: Console | None = None) -> None:
    """Print the ranked table (one row per group when grouped: the jobs' rows are in sweep_summary.csv),
    where the files are, the best job's (or group's) command and which jobs failed."""
    if console is None:
        console = Console()
        if not console.is_terminal and "COLUMNS" not in os.environ:
            console = Console(width=160)  # a log file or a pipe: one line per job beats rich's 80 columns
    rows, monitor = summary.rows, summary.monitor
    n = len(rows)
    if summary.groups is not None:  # one row per configuration; the per-job rows are in sweep_summary.csv
        print_groups(console, summary.groups, monitor, summary.mode, n)
        _print_after(summary, console)
        return
    title = f"sweep: {n} job{'s' if n != 1 else ''}"
    if monitor is not None:
        title += f", ranked by best {monitor} ({summary.mode})"
    table = Table(title=title, header_style="bold")
    test_keys = _shown_tests(rows)
    with_note = bool(summary.failed)
    # The run directory of a job, relative to the sweep's: a column of its own when it is not the job's number.
    with_dir = any(row["run_dir"] != str(row["job"]) for row in rows)
    def column(name: str, **kw: Any) -> None:  # never cut (see _keep_whole): the note column gives way
        table.add_column(name, no_wrap=True, **kw)

    for name in ("rank", "job"):
        column(name, justify="right")
    if with_dir:
        column("run dir")
    for param in summary.params:
        column(param)
    column("status")
    column(f"best {monitor}" if monitor else "best value", justify="right")
    column("epoch", justify="right")
    for key in test_keys:
        column(key.replace("_", " ", 1), justify="right")
    column("epochs", justify="right")
    column("seconds", justify="right")
    if with_note:
        table.add_column("note", overflow="fold")  # the one wrappable column: it narrows, and folds what is long

    for row in rows:
        ok = row["status"] in SUCCESS
        # Text, not markup: values such as model.hidden=[64,32] or an error text hold brackets.
        cells = [Text(str(row["rank"])), Text(str(row["job"]))]
        cells += [Text(row["run_dir"] + "/")] if with_dir else []
        cells += [Text(_show(row.get(param))) for param in summary.params]
        cells.append(Text(row["status"], style=None if ok else "red"))
        cells += [Text(_show(row["best_value"])), Text(_show(row["best_epoch"]))]
        cells += [Text(_show(row.get(key))) for key in test_keys]
        cells += [Text(_show(row["epochs_run"])), Text(_show(row["seconds"], ".1f"))]
        if with_note:
            cells.append(Text("" if ok else " ".join(row["message"].split()), style="red", overflow="fold"))
        table.add_row(*cells, style="bold green" if row is summary.best else None)
    console.print(_AtWidth(table, _keep_whole(table, console)), crop=False)
    _print_after(summary, console)


def _print_after(summary: SweepSummary, console: Console) -> None:
    """Print where the files are, the best job's (or group's) command and which jobs failed."""
    rows, monitor, n = summary.rows, summary.monitor, len(summary.rows)
    names = sweep_files_written(summary.sweep_dir)
    console.print(f"sweep summary in {summary.sweep_dir}: {', '.join(names) or 'nothing written'}",
                  markup=False, highlight=False, soft_wrap=True)
    if summary.best is not None and summary.groups is not None:
        print_best_group(console, summary.sweep_dir, summary.groups[0], monitor)
    elif summary.best is not None:
        best = summary.best
        # soft_wrap: the command stays on one line, ready to copy
        console.print(f"best: job {best['job']} ({monitor}={best['best_value']:.4g}): "
                      f"{job_rerun(summary.sweep_dir, best)}", markup=False, highlight=False, soft_wrap=True)
    if summary.failed:
        jobs = ", ".join(str(row["job"]) for row in summary.failed)
        console.print(f"{len(summary.failed)} of {n} jobs failed: job{'s' if len(summary.failed) > 1 else ''} "
                      f"{jobs}", markup=False, highlight=False, style="red", soft_wrap=True)


def sweep_files_written(sweep_dir: Path) -> list[str]:
    """The sweep's own files that ``sweep_dir`` holds (its jobs' folders left out), in the
    order ``dltrain --help`` lists them."""
    return [entry.name for entry in SWEEP_FILES
            if not has_placeholder(entry.name) and (sweep_dir / entry.name).exists()]


def summarize_sweep(sweep_dir: str | Path, console: Console | None = None) -> SweepSummary:
    """Collect, rank, write and print the summary of the sweep in ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    rows = collect_jobs(sweep_dir)
    monitor, mode = _monitor_and_mode(rows)
    rows = rank(rows, monitor, mode)
    best = rows[0] if rows and _rankable(rows[0], monitor) else None
    params = swept_params(rows)
    groups = group_rows(rows, params, monitor, mode) if is_grouped(params) else None
    summary = SweepSummary(sweep_dir=sweep_dir, rows=rows, params=params, monitor=monitor, mode=mode,
                           best=best, groups=groups)
    write_summary(summary)
    print_summary(summary, console)
    return summary


def _plot(summary: SweepSummary) -> None:
    # Imported here: matplotlib is heavy, and a sweep's tables must not depend on it.
    from dltrain.report.plots import plot_sweep

    if summary.groups is not None and summary.monitor is not None:
        from dltrain.report.sweep_plots import plot_groups

        plot_groups(summary.groups, summary.sweep_dir / SWEEP_PLOT, monitor=summary.monitor, mode=summary.mode)
        return
    plot_sweep([_public(row) for row in summary.rows], summary.sweep_dir / SWEEP_PLOT, monitor=summary.monitor,
               mode=summary.mode, params=summary.params)


def _plot_curves(summary: SweepSummary) -> None:
    """sweep_curves.png: every job's monitored metric per epoch, from its metrics.csv."""
    from dltrain.report.sweep_plots import job_curves, plot_curves

    if summary.monitor is not None and (curves := job_curves(summary.sweep_dir, summary.rows, summary.groups,
                                                             summary.params, summary.monitor)):
        plot_curves(curves, summary.sweep_dir / CURVES_PLOT, monitor=summary.monitor,
                    grouped=summary.groups is not None)


def _job_dirs(sweep_dir: Path) -> Iterable[Path]:
    if not sweep_dir.is_dir():
        return
    for child in sorted(sweep_dir.iterdir()):
        if _is_job(child):
            yield child
        elif child.is_dir():
            yield from (grandchild for grandchild in sorted(child.iterdir()) if _is_job(grandchild))


def _is_job(path: Path) -> bool:
    return (path / ".hydra" / "hydra.yaml").is_file() and (path / ".hydra" / "overrides.yaml").is_file()


def _job_number(job_dir: Path, order: int) -> int:
    try:
        # Only this key is read: the rest of hydra.yaml may hold interpolations that do not resolve here.
        num = OmegaConf.select(OmegaConf.load(job_dir / ".hydra" / "hydra.yaml"), "hydra.job.num",
                               throw_on_resolution_failure=False)
    except Exception:  # unreadable hydra.yaml: fall back on the directory's name
        num = None
    if isinstance(num, int) and not isinstance(num, bool):
        return num
    return int(job_dir.name) if job_dir.name.isdigit() else order


def _read_overrides(job_dir: Path) -> list[str]:
    try:
        overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in overrides] if isinstance(overrides, list) else []


def _read_summary(job_dir: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads((job_dir / "summary.json").read_text())
    except (OSError, ValueError):  # absent, or cut short: the job did not finish
        return None
    return summary if isinstance(summary, dict) else None


def _parse_override(override: str) -> tuple[str, str]:
    """An override's key (``+``/``++``/``~`` stripped) and its value as typed."""
    key, eq, value = override.partition("=")
    stripped = key.lstrip("+~")
    # A deletion is no value: keep its text, so it differs from both a value and an absent key.
    if key.startswith("~"):
        return stripped, override
    return stripped, value if eq else ""


def _values(row: dict[str, Any]) -> dict[str, str]:
    return row["_values"] if "_values" in row else dict(_parse_override(o) for o in row.get("_overrides", []))


def _row(num: int, run_dir: Path, overrides: list[str], summary: dict[str, Any] | None) -> dict[str, Any]:
    summary = summary or {}
    status = str(summary.get("status") or "unknown") if summary else "missing"
    if status == "missing":
        message = _MISSING
    elif status in SUCCESS:
        message = ""
    else:
        message = str(summary.get("stop_reason") or "")
    row: dict[str, Any] = {
        "rank": None, "job": num, "status": status, "monitor": summary.get("monitor"),
        "best_value": _number(summary.get("best_value")), "best_epoch": summary.get("best_epoch"),
    }
    test = summary.get("test")
    if isinstance(test, dict):
        row.update({f"test_{name}": _number(value) for name, value in test.items()})
    row.update({
        "epochs_run": summary.get("epochs_run"), "seconds": _number(summary.get("train_seconds")),
        "overrides": " ".join(overrides), "message": message, "run_dir": run_dir.as_posix(),
        "_overrides": overrides, "_values": dict(_parse_override(o) for o in overrides),
        "_mode": summary.get("mode"),
    })
    return row


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _monitor_and_mode(rows: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """The most common (monitor, mode) of the jobs, the successful ones first; ties: the earliest job."""
    pairs = [(row["monitor"], row["_mode"], row["status"] in SUCCESS) for row in rows
             if row.get("monitor") and row.get("_mode")]
    counts = Counter((m, md) for m, md, ok in pairs if ok) or Counter((m, md) for m, md, _ in pairs)
    if not counts:
        return None, None
    return counts.most_common(1)[0][0]


def _rankable(row: dict[str, Any], monitor: str | None) -> bool:
    value = row.get("best_value")
    return (monitor is not None and row["status"] in SUCCESS and row.get("monitor") == monitor
            and isinstance(value, float) and math.isfinite(value))


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if not key.startswith("_")}


def _json_safe(row: dict[str, Any]) -> dict[str, Any]:
    # NaN and inf are not JSON: a diverged job's value becomes null (its status says why).
    return {key: None if isinstance(v, float) and not math.isfinite(v) else v for key, v in row.items()}


def _csv_value(key: str, value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}" if key == "seconds" else f"{value:.6g}"
    return value


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path, newline="") as f:
        f.write(text)


def _shown_tests(rows: list[dict[str, Any]]) -> list[str]:
    """Up to 3 test metrics for the table: accuracy and loss first, then the others alphabetically."""
    present = {key for row in rows for key, value in row.items() if key.startswith("test_") and value is not None}
    preferred = [key for key in ("test_accuracy", "test_loss") if key in present]
    return (preferred + sorted(present - set(preferred)))[:3]


class _AtWidth:
    """A renderable drawn at a width of its own, which may be wider than the console."""

    def __init__(self, renderable: Any, width: int) -> None:
        self.renderable, self.width = renderable, width

    def __rich_console__(self, console: Console, options: Any) -> Any:
        yield from console.render(self.renderable, options.update_width(self.width))


def _keep_whole(table: Table, console: Console) -> int:
    """The width to print ``table`` at: its unwrapped columns as wide as their longest cell,
    and the console's width unless that is too narrow for them. A path or a value shortened
    with "…" would be a wrong one, so a table wider than a narrow terminal is wrapped by it."""
    wrapped = [col for col in table.columns if not col.no_wrap]
    for col in table.columns:
        if col.no_wrap:
            col.min_width = max([cell_len(str(col.header)), *(cell_len(cell.plain) for cell in col.cells)])
        else:  # a long word of a note folds rather than widen the table
            col.max_width = _NOTE_FOLD
    needed = Measurement.get(console, console.options.update_width(1 << 16), table).minimum
    for col in wrapped:
        col.max_width = None
    return max(needed, console.width)


def _show(value: Any, fmt: str = ".4g") -> str:
    if value is None:
        return "-"
    return format(value, fmt) if isinstance(value, float) else str(value)

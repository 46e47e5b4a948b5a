"""A sweep over seeds, shown by configuration: the grouped table printed, ``sweep_groups.csv``,
the groups of ``sweep_summary.json`` and the best group of ``best_overrides.yaml``."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table
from rich.text import Text

from dltrain.config.suggest import override_key
from dltrain.report.rerun import config_source, rerun_command
from dltrain.report.sweep_stats import SEED, Group

GROUPS_CSV = "sweep_groups.csv"
#: The override that makes a sweep of repeats (each configuration run N times with derived seeds).
REPEATS = "trainer.repeats"


def group_records(groups: Sequence[Group]) -> list[dict[str, Any]]:
    """One flat record per group, in the CSV's column order: rank, the group's values, n, failed,
    jobs, then mean, sd and the 95% CI of ``best_value`` and each ``test_*`` metric, p-value, note."""
    records = []
    for group in groups:
        record: dict[str, Any] = {"rank": group.rank, **group.key, "n": group.n, "failed": group.failed,
                                  "jobs": " ".join(map(str, group.jobs))}
        for metric, stat in group.stats.items():
            record.update({f"{metric}_mean": stat.mean, f"{metric}_sd": stat.sd,
                           f"{metric}_ci_low": stat.ci_low, f"{metric}_ci_high": stat.ci_high})
        records.append({**record, "p_vs_best": group.p_value, "note": group.note})
    return records


def groups_csv(groups: Sequence[Group]) -> str:
    """The text of ``sweep_groups.csv``: :func:`group_records`, one row per group."""
    records = group_records(groups)
    cols = list(dict.fromkeys(key for record in records for key in record))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({key: _csv(record.get(key)) for key in cols})
    return buffer.getvalue()


def groups_json(groups: Sequence[Group]) -> list[dict[str, Any]]:
    """The groups as ``sweep_summary.json`` holds them (NaN and inf as null)."""
    return [{key: None if isinstance(v, float) and not math.isfinite(v) else v for key, v in record.items()}
            for record in group_records(groups)]


def sweep_repeats(sweep_dir: Path) -> int:
    """``trainer.repeats`` of the sweep in ``sweep_dir`` as Hydra's ``multirun.yaml`` records its
    config (the jobs' own overrides leave it out: each job is one run); 1 when it does not say."""
    try:
        value = OmegaConf.select(OmegaConf.load(sweep_dir / "multirun.yaml"), REPEATS,
                                 throw_on_resolution_failure=False)
    except Exception:  # noqa: BLE001 - absent or unreadable: the group is then re-run as one run
        return 1
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def group_overrides(group: Group, repeats: int = 1) -> list[str]:
    """The overrides that run ``group``'s configuration: a successful job's, without its seed; for a
    sweep of ``repeats`` > 1, ``trainer.repeats=<repeats>`` first and ``seed=<the group's first seed>`` last."""
    row = next((r for r in group.rows if r.get("best_value") is not None), group.rows[0])
    kept = [o for o in row["_overrides"] if override_key(o) not in (SEED, REPEATS)]
    seeds = [int(v) for r in group.rows if (v := str(r["_values"].get(SEED, ""))).lstrip("-").isdigit()]
    if repeats <= 1 or not seeds:
        return kept
    return [f"{REPEATS}={repeats}", *kept, f"{SEED}={min(seeds)}"]


def group_rerun(sweep_dir: Path, group: Group) -> str:
    """The command line that runs ``group``'s configuration again: one run without its seed, or
    the same repeats (``dltrain -m trainer.repeats=N ... seed=<first>``) when it was repeated."""
    repeats = sweep_repeats(sweep_dir)
    return rerun_command(group_overrides(group, repeats), *config_source(sweep_dir / group.rows[0]["run_dir"]),
                         multirun=repeats > 1)


def best_group_yaml(sweep_dir: Path, group: Group, monitor: str | None) -> str:
    """The text of ``best_overrides.yaml`` for the best group: its values, its statistics, its jobs,
    the overrides that run it and the command (also on the first line, a comment)."""
    stat, command = group.stats["best_value"], group_rerun(sweep_dir, group)
    record = {"group": group.key, "monitor": monitor, "n": group.n, "mean": stat.mean, "sd": stat.sd,
              "ci95": None if stat.ci_low is None else [stat.ci_low, stat.ci_high], "jobs": group.jobs,
              "overrides": group_overrides(group, sweep_repeats(sweep_dir)), "command": command}
    text = yaml.safe_dump(record, sort_keys=False, allow_unicode=True, width=1 << 16)
    # A newline inside an override would end the comment line; the `command` key stays exact.
    comment = f"# The best group of this sweep (by its mean over seeds); run it with: {command.replace(chr(10), ' ')}"
    return f"{comment}\n{text}"


def print_best_group(console: Console, sweep_dir: Path, group: Group, monitor: str | None) -> None:
    """Print the best group, its mean and n, and the command that runs it again (on one line, to copy)."""
    console.print(f"best group: {group.label} (mean {monitor}={group.stats['best_value'].mean:.4g}, n={group.n}): "
                  f"{group_rerun(sweep_dir, group)}", markup=False, highlight=False, soft_wrap=True)


def print_groups(console: Console, groups: Sequence[Group], monitor: str | None, mode: str | None,
                 num_jobs: int) -> None:
    """Print one row per group: its values, n (and failed jobs), the monitored metric's mean ± sd
    and 95% CI, the test metrics' mean ± sd, the p-value against the best group and the note."""
    keys = list(groups[0].key) if groups else []
    title = f"sweep: {num_jobs} jobs in {len(groups)} group{'s' if len(groups) != 1 else ''} over seeds"
    if monitor is not None:
        title += f", ranked by mean best {monitor} ({mode})"
    table = Table(title=title, header_style="bold", caption="mean ± sd (ddof=1); 95% CI of the mean (Student's t); "
                  "p: Welch's t-test against the best group")
    tests = _shown_tests(groups)
    with_failed = any(g.failed for g in groups)
    for name in ["rank", *keys, "n", *(["failed"] if with_failed else [])]:
        table.add_column(name, justify="left" if name in keys else "right", no_wrap=True)
    table.add_column(f"best {monitor}" if monitor else "best value", justify="right", no_wrap=True)
    table.add_column("95% CI", justify="right", no_wrap=True)
    for key in tests:
        table.add_column(key.replace("_", " ", 1), justify="right", no_wrap=True)
    table.add_column("p vs best", justify="right", no_wrap=True)
    table.add_column("note", no_wrap=True)
    for group in groups:
        stat = group.stats["best_value"]
        cells = [str(group.rank), *(_show(group.key[k]) for k in keys), str(group.n)]
        cells += [str(group.failed)] if with_failed else []
        cells += [_mean_sd(stat.mean, stat.sd), _ci(stat.ci_low, stat.ci_high)]
        cells += [_mean_sd(group.stats[k].mean, group.stats[k].sd) for k in tests]
        cells += [_show(group.p_value, ".3g"), group.note]
        table.add_row(*map(Text, cells), style="bold green" if group.note == "best" else None)
    console.print(table, crop=False)


def _shown_tests(groups: Sequence[Group]) -> list[str]:
    """Up to 2 test metrics: accuracy and loss first, then the others alphabetically."""
    present = {k for g in groups for k, stat in g.stats.items() if k.startswith("test_") and stat.n}
    preferred = [k for k in ("test_accuracy", "test_loss") if k in present]
    return (preferred + sorted(present - set(preferred)))[:2]


def _mean_sd(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4g}" if sd is None else f"{mean:.4g} ± {sd:.2g}"


def _ci(low: float | None, high: float | None) -> str:
    return "-" if low is None else f"[{low:.4g}, {high:.4g}]"


def _show(value: Any, fmt: str = ".4g") -> str:
    if value is None:
        return "-"
    return format(value, fmt) if isinstance(value, float) else str(value)


def _csv(value: Any) -> Any:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value

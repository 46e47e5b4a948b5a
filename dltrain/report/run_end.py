"""The end of a run: its ``curves.png``, then its last lines: which files its directory
holds, then its test result.

Both go through the ``dltrain`` logger when it reaches a handler at INFO (the command line:
the console and the run's ``dltrain.log``), else to stdout (``train()`` from Python), so a
run's log file keeps them too.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dltrain.config.hydra_job import shown_dir
from dltrain.errors import first_line
from dltrain.report.run_files import RUN_FILES
from dltrain.report.summary import RunSummary, write_summary

if TYPE_CHECKING:
    from dltrain.loggers import RunLogger

log = logging.getLogger("dltrain")

#: The order a run's files are named in, that of ``dltrain --help`` (a path's first part:
#: ``checkpoints`` for ``checkpoints/last.pt``); any other entry follows, alphabetically.
_ORDER = tuple(dict.fromkeys(entry.name.split("/")[0] for entry in RUN_FILES))


def written_files(run_dir: Path) -> list[str]:
    """What ``run_dir`` holds now, as it is named at the end of a run: files by name,
    folders with a slash, the checkpoints one by one (``checkpoints/{best.pt,last.pt}``).
    Temporary files of an atomic write are left out."""
    try:
        entries = [p for p in run_dir.iterdir() if not p.name.startswith(".tmp-")]
    except OSError:  # gone, or unreadable: nothing to name
        return []
    rank = {name: i for i, name in enumerate(_ORDER)}
    entries.sort(key=lambda p: (rank.get(p.name, len(_ORDER)), p.name))
    return [_name(p) for p in entries]


def _name(path: Path) -> str:
    if not path.is_dir():
        return path.name
    if path.name != "checkpoints":
        return path.name + "/"
    try:
        inside = sorted(p.name for p in path.iterdir() if not p.name.startswith(".tmp-"))
    except OSError:
        inside = []
    if len(inside) == 1:
        return f"checkpoints/{inside[0]}"
    return f"checkpoints/{{{','.join(inside)}}}" if inside else "checkpoints/"


def result_line(test: dict[str, float]) -> str | None:
    """``test accuracy: 0.9694  loss: 0.1090``: accuracy first when there is one; None without metrics."""
    if not test:
        return None
    names = sorted(test, key=lambda name: name != "accuracy")  # stable: the others keep their order
    return "test " + "  ".join(f"{name}: {test[name]:.4f}" for name in names)


def draw_curves(rows: list[dict[str, Any]], summary: RunSummary, run_dir: Path) -> None:
    """``curves.png`` of a run's epochs ``rows`` (none: no plot). A plot is never worth the
    run's results: a failure is a warning (a signal is not)."""
    if not rows:
        return
    try:
        from dltrain.report.plots import plot_curves  # matplotlib, only for a run with epochs

        plot_curves(rows, run_dir / "curves.png", monitor=summary.monitor, best_epoch=summary.best_epoch,
                    stopped_epoch=summary.stopped_epoch, status=summary.status,
                    title=f"{run_dir.name}: {summary.status}")
    except Exception as err:  # noqa: BLE001 - a plot is never worth the run
        log.warning("warning: could not draw curves.png: %s", first_line(err))


def draw_gradients(run_dir: Path) -> None:
    """``gradients.png`` of the run's ``diagnostics.csv`` (none: ``trainer.diagnostics=false``,
    or no epoch ended); a failure to draw it is a warning."""
    source = run_dir / "diagnostics.csv"
    if not source.is_file():
        return
    try:
        from dltrain.report.diagnostics_plot import plot_gradients  # matplotlib, only when there is something to draw

        plot_gradients(source, run_dir / "gradients.png")
    except Exception as err:  # noqa: BLE001 - a plot is never worth the run
        log.warning("warning: could not draw gradients.png: %s", first_line(err))


def close_not_started(summary: RunSummary, run_dir: Path, logger: RunLogger, written: bool) -> None:
    """A run that ended before its first epoch: ``summary.json`` (``written``: in a directory
    the run may write), the logger closed, and the run's last lines naming what it left."""
    if written:
        write_summary(run_dir, summary)
    logger.finish(summary.to_dict())  # its files are closed, whatever happens next
    if written:  # what the failed run left, before the error's line
        report_end(summary.to_dict(), run_dir)


def close_run(rows: list[dict[str, Any]], summary: RunSummary, run_dir: Path, logger: RunLogger,
              main: bool) -> None:
    """``curves.png`` of the epochs in metrics.csv, ``gradients.png`` of diagnostics.csv and the
    logger's last record, then (by rank 0, ``main``) the run's last lines, however the others
    went. None may cost the run its results, so a failure of any is a warning (a signal is not)."""
    try:
        draw_curves(rows, summary, run_dir)
        if main:
            draw_gradients(run_dir)
        logger.finish(summary.to_dict())
    finally:
        if main:  # last, so the list holds curves.png when it was drawn
            report_end(summary.to_dict(), run_dir)


def report_end(summary: dict[str, Any], run_dir: Path) -> None:
    """Name the files the run directory holds, then the test result (when there is one): the
    run's last lines, however it ended. Never raises: the run's outcome is already decided."""
    try:
        names = written_files(run_dir)
        if names:
            _say(f"wrote {shown_dir(run_dir)}: {', '.join(names)}")
        line = result_line(summary.get("test") or {})
        if line is not None:
            _say(line)
    except Exception as err:  # noqa: BLE001 - e.g. a closed stdout: the run's files are written
        log.warning("warning: could not list the run's files: %s", err)


def _say(line: str) -> None:
    if log.isEnabledFor(logging.INFO) and log.hasHandlers():
        log.info("%s", line)
    else:
        print(line, flush=True)

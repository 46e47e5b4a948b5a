"""What the user sees while a run trains: a rich progress bar on a terminal, plain log
lines elsewhere (CI logs, files), and a table of the results at the end."""

from __future__ import annotations

import logging
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

log = logging.getLogger("dltrain")


class ProgressDisplay:
    """Per-epoch progress: a transient bar with the running loss, then one log line.

    Args:
        max_epochs: epochs planned, for "epoch 3/30".
        console: where to draw; the bar is shown only when it is a terminal.
    """

    def __init__(self, max_epochs: int, console: Console | None = None) -> None:
        self.max_epochs = max_epochs
        self.console = console or Console()
        self.live = self.console.is_terminal
        self._progress: Progress | None = None
        self._task = None

    def start_epoch(self, epoch: int, num_batches: int) -> None:
        if not self.live:
            return
        self._progress = Progress(
            TextColumn(f"epoch {epoch}/{self.max_epochs}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"), TimeElapsedColumn(),
            console=self.console, transient=True)
        self._task = self._progress.add_task("train", total=num_batches, loss="")
        self._progress.start()

    def update(self, step: int, running: dict[str, float] | None = None) -> None:
        """Move the bar to ``step``; ``running`` metrics come only at logging steps."""
        if self._progress is not None:
            fields = {"loss": "  ".join(f"{k} {v:.4f}" for k, v in running.items())} if running else {}
            self._progress.update(self._task, completed=step, **fields)

    def end_epoch(self, row: dict[str, Any], improved: bool) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        metrics = "  ".join(f"{k}={v:.4f}" for k, v in row.items()
                            if k not in ("epoch", "epoch_seconds", "lr") and isinstance(v, float))
        log.info("epoch %d/%d  %s  lr=%.3g  (%.2fs)%s", row["epoch"], self.max_epochs, metrics,
                 row["lr"], row["epoch_seconds"], "  *best*" if improved else "")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def print_results(summary: dict[str, Any], console: Console | None = None) -> None:
    """The table that closes a run: how it ended, its best monitored value, its size and time.
    The files it wrote and its test result follow it (``dltrain.report.run_end``)."""
    console = console or Console()
    table = Table(title="dltrain results", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value")
    table.add_row("status", summary["status"])
    table.add_row("stop reason", str(summary["stop_reason"]))
    table.add_row("epochs run", str(summary["epochs_run"]))
    if str(summary.get("validation", "")).startswith("none"):  # no validation split: say what was tested
        table.add_row("validation", f"{summary['validation']}; tested: {summary.get('test_weights')}")
    if summary.get("best_value") is not None:
        table.add_row(f"best {summary['monitor']}", f"{summary['best_value']:.4f} (epoch {summary['best_epoch']})")
    table.add_row("parameters", f"{summary['num_params']:,}")
    table.add_row("train seconds", f"{summary['train_seconds']:.1f}")
    console.print(table)

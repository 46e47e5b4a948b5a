"""logger=tensorboard: TensorBoard event files in the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dltrain.errors import ConfigError
from dltrain.loggers.registry import LOGGERS, HParams, Logger, is_finite_number


@LOGGERS.register("tensorboard")
class TensorBoardLogger(Logger):
    """TensorBoard event files in ``<run_dir>/<subdir>``: scalars per epoch, the config, the hyperparameters.

    Everything goes into the one log directory, so ``tensorboard --logdir outputs`` shows each run as
    one run, with its hyperparameters and results side by side in the HParams tab.

    Args:
        run_dir: the run's output directory.
        subdir: folder under ``run_dir`` for the event files.
        flush_secs: how often buffered events are written to disk.

    Raises:
        ConfigError: the tensorboard package is not installed.
    """

    def __init__(self, run_dir: str | Path, subdir: str = "tensorboard", flush_secs: int = 30) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("logger=tensorboard needs the tensorboard package: pip install 'dltrain[tensorboard]' "
                              "(or pip install tensorboard), or use logger=csv.") from None
        self._writer_cls = SummaryWriter
        self.log_dir = Path(run_dir) / subdir
        self.flush_secs = flush_secs
        self._writer: Any = None
        self._hparams: HParams | None = None
        self._last_epoch = 0
        self._closed = False

    def _get_writer(self) -> Any:
        # Created on first use, so a run that fails before its first hook leaves no empty event file.
        if self._writer is None:
            self._writer = self._writer_cls(log_dir=str(self.log_dir), flush_secs=self.flush_secs)
        return self._writer

    def start(self, hparams: HParams, config_yaml: str) -> None:
        self._hparams = {k: _hparam_value(v) for k, v in hparams.items()}
        # Indented by 4 spaces, the text is a Markdown code block: TensorBoard shows the YAML verbatim.
        text = "\n".join("    " + line for line in config_yaml.splitlines())
        self._get_writer().add_text("config", text, global_step=0)

    def log_epoch(self, row: dict[str, Any]) -> None:
        epoch = int(row["epoch"])
        self._last_epoch = max(self._last_epoch, epoch)
        writer = self._get_writer()
        for key, value in row.items():
            if key == "epoch" or not is_finite_number(value):
                continue  # a diverged epoch's NaN would wreck the chart's scale
            writer.add_scalar(scalar_tag(key), float(value), global_step=epoch)

    def finish(self, summary: dict[str, Any]) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is None and self._hparams is None:
            return  # nothing was ever logged: leave no event file behind
        writer = self._get_writer()
        try:
            writer.add_text("summary", f"status: {summary.get('status')}\n\n"
                                       f"stop reason: {summary.get('stop_reason')}", global_step=self._last_epoch)
            if self._hparams is not None:
                self._write_hparams(writer, summary)
            writer.flush()
        finally:
            writer.close()

    def _write_hparams(self, writer: Any, summary: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        metrics = {"hparam/best_value": summary.get("best_value")}
        metrics.update({f"hparam/test_{m}": v for m, v in (summary.get("test") or {}).items()})
        metrics = {k: float(v) for k, v in metrics.items() if is_finite_number(v)}
        # SummaryWriter.add_hparams would write into a new sub-run folder (named by time, or run_name); writing the
        # same three summaries into this writer keeps the hyperparameters in the run's own log directory.
        for proto in hparams_summaries(self._hparams, metrics):
            writer.file_writer.add_summary(proto, self._last_epoch)
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, global_step=self._last_epoch)


def scalar_tag(key: str) -> str:
    """TensorBoard tag of a metrics.csv column, grouped by metric so train and val share a chart.

    ``train_loss`` -> ``loss/train``, ``val_accuracy`` -> ``accuracy/val``, ``epoch_seconds`` ->
    ``time/epoch_seconds``; anything else (``lr``) keeps its name.
    """
    for split in ("train", "val"):
        if key.startswith(split + "_") and len(key) > len(split) + 1:
            return f"{key[len(split) + 1:]}/{split}"
    if key == "epoch_seconds":
        return "time/epoch_seconds"
    return key


def _hparam_value(value: Any) -> bool | int | float | str:
    # The hparams plugin takes only bool, number and string values; anything else is shown as its text.
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)

"""``dltrain-eval``: a checkpoint's loss and metrics on its run's test (or validation) split.

    dltrain-eval ckpt=outputs/2024-05-01/12-00-00/checkpoints/best.pt [split=test|val] [device=auto] [data.*=...]

The model and the split are rebuilt from the checkpoint's own config and seed, so the test
metrics of a run's ``best.pt`` are those in its ``summary.json``. Prints the metrics and, for
classes, a confusion matrix; writes both to ``eval.json`` beside the checkpoint, and the split's
report (:mod:`dltrain.report.run_report`) into a folder of its own beside the checkpoint's run
(``eval-<checkpoint>-<split>/``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dltrain.errors import UserError
from dltrain.inference.restore import (
    REQUIRED,
    TRUST_KEYS,
    Key,
    Restored,
    apply_overrides,
    load_model,
    parse_args,
    run_tool,
)

TOOL = "dltrain-eval"
KEYS = {
    "ckpt": Key(REQUIRED, "the checkpoint: a run's checkpoints/best.pt or last.pt"),
    "split": Key("test", "the split to evaluate: test or val"),
    "device": Key("auto", "auto, cpu, cuda, cuda:N or mps; auto takes a GPU when there is one"),
    **TRUST_KEYS,
}
ABOUT = ("Evaluate a checkpoint on its run's test (or validation) split, rebuilt from the checkpoint's own "
         "config and seed:\nloss and metrics, and a confusion matrix for classification. Writes eval.json beside "
         "the checkpoint,\nand its report (the run's report files, for this checkpoint and split) into "
         "eval-<checkpoint>-<split>/ in its run directory\n(an autoencoder's or a GAN's checkpoint gets eval.json "
         "alone: its outputs predict no labels).")
EXAMPLE = f"{TOOL} ckpt=outputs/2024-05-01/12-00-00/checkpoints/best.pt split=test"


def evaluate_checkpoint(ckpt: str | Path, split: str = "test", device: str = "auto",
                        overrides: dict[str, Any] | None = None, *, model_target: str | None = None,
                        trust_code: bool = False) -> dict[str, Any]:
    """Evaluate ``ckpt`` on ``split`` and write ``eval.json`` beside it.

    Args:
        ckpt: a checkpoint written by ``dltrain`` training.
        split: ``test`` or ``val``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        overrides: config keys to change first (``data.path`` of a moved file), as
            :func:`~dltrain.inference.restore.parse_args` returns them.
        model_target, trust_code: what the user allows a ``model=custom`` checkpoint to
            import (``target`` and ``trust_code`` of :func:`~dltrain.inference.restore.load_model`).

    Returns:
        What ``eval.json`` holds.

    Raises:
        UserError: a bad checkpoint, split, device or override, or data that no longer
            matches the checkpoint.
    """
    from dltrain.build import build_loss, build_task, load_data, make_batches
    from dltrain.data.synthetic import FunctionValuesError
    from dltrain.files import write_json
    from dltrain.report.classification import confusion_matrix, predicted_classes
    from dltrain.training.device import resolve_device
    from dltrain.training.metrics import MetricAccumulator
    from dltrain.training.rng import seed_everything

    if split not in ("test", "val"):
        raise UserError(f"split={split} is not a choice: use test or val")
    dev = resolve_device(device)
    restored = load_model(ckpt, dev, target=model_target, trust_code=trust_code)
    cfg = restored.cfg
    apply_overrides(cfg, overrides or {})
    cfg.device = device
    cfg.trainer.fast_dev_run = False  # every batch of the split
    seed_everything(cfg.seed)
    try:
        # The input the model declared comes from the record: its weights file may be gone.
        data = load_data(cfg, dev, recorded=restored.data)
    except FunctionValuesError as err:  # the function is the checkpoint's, not the user's
        raise UserError(f"checkpoint {ckpt}: its {err.problem}: use a checkpoint written by dltrain "
                        "training") from None
    _check_same_data(restored, data)
    if split == "val" and not data.has_validation:
        raise UserError(f"checkpoint {ckpt}: its run had no validation split (data.val_fraction=0), so split=val "
                        "has nothing to evaluate: use split=test")
    task = build_task(cfg)  # task=: what the loss compares the outputs with, and the metrics' kind
    # What the task reads of the data (a GAN: its images' pixel range), and of its files (a GAN's scorer)
    note = task.check_for_evaluation(data, restored.state.get("task"))
    if note is not None:
        print(f"{TOOL}: warning: {note}", file=sys.stderr)
    loss_fn = build_loss(cfg, data, task)[1].to(dev)
    batches = make_batches(data, cfg.trainer.batch_size, cfg.trainer.eval_batch_size, cfg.seed,
                           dev)[1 if split == "val" else 2]

    folder = report_folder(Path(ckpt), split)
    acc = MetricAccumulator(task.metric_kind(data.task))
    outputs, targets = [], []
    # Full precision, whatever trainer.precision trained in: the weights' own quality.
    with torch.no_grad():
        for x, y in batches:
            output, loss = task.evaluate_batch(restored.model, loss_fn, x, y)  # (B, width), its loss
            acc.update(output, y, loss)
            outputs.append(output.cpu())
            targets.append(y.cpu())
    result: dict[str, Any] = {
        "checkpoint": str(Path(ckpt).resolve()), "epoch": restored.state.get("epoch"), "split": split,
        "dataset": cfg.data.name, "task": data.task, "objective": cfg.task.name, "num_examples": acc.count,
        "metrics": {**acc.compute(), **task.evaluate_model(restored.model)}, "overrides": dict(overrides or {}),
    }
    if outputs and task.writes_predictions:  # an autoencoder's outputs predict no y
        split_outputs = _split_outputs(torch.cat(outputs), torch.cat(targets), data, split)
        matrix = None
        if data.task in ("binary", "multiclass"):
            matrix = confusion_matrix(split_outputs.targets.long(), predicted_classes(split_outputs.outputs),
                                      data.num_outputs)
            result["class_names"] = list(data.class_names or range(data.num_outputs))
            result["confusion_matrix"] = matrix.tolist()
        result["report"] = _write_report(folder, split_outputs, data, split, matrix)
        result["report_dir"] = str(folder)
    target = Path(ckpt).parent / "eval.json"
    try:
        write_json(target, result)
    except OSError as err:
        raise UserError(f"could not write {target}: {err.strerror or err}; check that its folder is writable") from err
    print_eval(result, target)
    return result


def report_folder(ckpt: Path, split: str) -> Path:
    """Where the report of ``ckpt`` on ``split`` goes: ``eval-<checkpoint>-<split>/`` in its run
    directory (the folder above ``checkpoints/``), else beside it. One folder per checkpoint and
    split, so no evaluation overwrites another's.

    Raises:
        UserError: the folder holds a file that is not a report's: dltrain-eval did not write it.
    """
    from dltrain.report.run_report import REPORT_FILES

    home = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    folder = home / f"eval-{ckpt.stem}-{split}"
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file dltrain-eval did not write: move it away to write this evaluation's "
                        "report there")
    others = sorted(p.name for p in folder.iterdir() if p.name not in REPORT_FILES) if folder.is_dir() else []
    if others:
        raise UserError(f"{folder} holds {', '.join(others)}, which dltrain-eval did not write: move it away to "
                        "write this evaluation's report there")
    return folder


def _split_outputs(outputs: torch.Tensor, targets: torch.Tensor, data: Any, split: str) -> Any:
    """The split's outputs with what names each example: its row (or file) in the source where
    the data records one (``test_rows``, ``val_rows``), else its position in the split."""
    from dltrain.report.tables import SplitOutputs

    positions = list(range(len(targets)))
    rows = data.info.get(f"{split}_rows")
    return SplitOutputs(outputs, targets, positions, rows if rows and len(rows) == len(positions) else positions)


def _write_report(folder: Path, split_outputs: Any, data: Any, split: str,
                  matrix: torch.Tensor | None) -> dict[str, Any] | None:
    """The report of the split's outputs in ``folder``, the files an earlier evaluation of
    the same checkpoint and split wrote there replaced (a picture not drawn now does not stay)."""
    from dltrain.report.run_report import REPORT_FILES, write_report

    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name in REPORT_FILES:
            (folder / name).unlink(missing_ok=True)
    except OSError as err:
        raise UserError(f"could not write {folder}: {err.strerror or err}; check that its folder is writable") from err
    inputs = data.x_test if split == "test" else data.x_val
    return write_report(folder, split_outputs, data, inputs, split, matrix=matrix)


def _check_same_data(restored: Restored, data: Any) -> None:
    """Refuse data that is not what the model was trained on (another file behind ``data.path``).

    Raises:
        UserError: naming what differs.
    """
    saved = restored.data
    differences = [(what, before, now) for what, before, now in (
        ("input shape", tuple(saved["input_shape"]), tuple(data.input_shape)),
        ("task", saved["task"], data.task),
        ("classes", saved.get("class_names"), data.class_names),
        ("vocabulary size", saved.get("vocab_size"), data.vocab_size)) if before != now]
    if differences:
        what, before, now = differences[0]
        raise UserError(f"the data rebuilt from the checkpoint's config is not what {restored.path} was trained on "
                        f"({what}: {before} when trained, {now} now): point data.* at the training data")


def print_eval(result: dict[str, Any], written: Path | None = None) -> None:
    """The metrics table, and the confusion matrix (rows: true class, columns: predicted)."""
    from rich.console import Console
    from rich.table import Table

    from dltrain.report.run_report import print_report

    console = Console()
    table = Table(title=f"{TOOL}: {result['split']} split, {result['num_examples']} examples", header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result["metrics"].items():
        table.add_row(name, f"{value:.4f}")
    table.add_row("checkpoint", f"{result['checkpoint']} (epoch {result['epoch']})")
    console.print(table)
    if "confusion_matrix" in result:
        names = [str(name) for name in result["class_names"]]
        console.print("confusion matrix (rows: true class, columns: predicted)")
        matrix = Table(header_style="bold")
        matrix.add_column("true \\ predicted")
        for name in names:
            matrix.add_column(name, justify="right")
        for name, row in zip(names, result["confusion_matrix"], strict=True):
            matrix.add_row(name, *(str(count) for count in row))
        console.print(matrix)
    print_report(result.get("report"), result["split"], console)
    if written is not None:
        console.print(f"wrote {written}")
    if "report_dir" in result:
        folder = Path(result["report_dir"])
        console.print(f"wrote {folder}/: {', '.join(sorted(p.name for p in folder.iterdir()))}", soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``dltrain-eval``."""
    def run() -> None:
        args = parse_args(sys.argv[1:] if argv is None else list(argv), TOOL, KEYS, about=ABOUT, example=EXAMPLE)
        evaluate_checkpoint(args["ckpt"], args["split"], args["device"], args["overrides"],
                            model_target=args["model._target_"], trust_code=args["trust_code"])

    run_tool(TOOL, run)


if __name__ == "__main__":
    main()

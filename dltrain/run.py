"""One experiment from a composed config: the single place where config keys become
builder calls, and where the run directory is written.

``train(cfg)`` is the Python API (``from dltrain import train``); the command line calls
it through ``dltrain.cli``.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from dltrain.callbacks import EarlyStopping
from dltrain.checkpoint import save_checkpoint
from dltrain.config import validate
from dltrain.data import DATASETS, DataSplits, TensorBatches
from dltrain.device import resolve_device
from dltrain.errors import ConfigError
from dltrain.init import apply_init
from dltrain.losses import LOSSES, resolve_auto
from dltrain.metrics import metric_names
from dltrain.models import MODELS
from dltrain.models.summary import format_summary, summarize
from dltrain.optim import build_optimizer
from dltrain.progress import ProgressDisplay, print_results
from dltrain.report import MetricsCSV, versions, write_json
from dltrain.trainer import Trainer, TrainingDiverged

log = logging.getLogger("dltrain")

FAST_DEV_BATCHES = 2  # fast_dev_run: this many batches of train, val and test, one epoch


def _options(node: DictConfig) -> dict[str, Any]:
    """A group's config as builder keyword arguments (without its ``name``)."""
    opts = OmegaConf.to_container(node, resolve=True)
    opts.pop("name", None)
    return opts


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_run_dir() -> Path:
    """Hydra's run directory when called under Hydra, else ``outputs/<date>/<time>``."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not running under Hydra: the Python API
        return Path("outputs") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S.%f")


def build_data(cfg: DictConfig) -> DataSplits:
    return DATASETS.build(cfg.data.name, seed=cfg.seed, **_options(cfg.data))


def build_model(cfg: DictConfig, data: DataSplits) -> torch.nn.Module:
    return MODELS.build(
        cfg.model.name, input_shape=data.input_shape, num_outputs=data.num_outputs,
        dropout=cfg.regularization.dropout, batch_norm=cfg.regularization.batch_norm,
        **_options(cfg.model))


def check_monitor(monitor: str, task: str) -> None:
    logged = metric_names(task)
    if monitor not in logged:
        raise ConfigError(f"trainer.early_stopping.monitor={monitor} is never logged for this {task} task: "
                          f"choose one of {', '.join(logged)}.")


def train(cfg: DictConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train, validate and test one experiment, writing its run directory.

    Args:
        cfg: a config composed from ``conf/train.yaml`` (see ``dltrain.compose``).
        run_dir: where to write; defaults to Hydra's run directory, or
            ``outputs/<date>/<time>`` outside Hydra.

    Returns:
        The summary, as written to ``summary.json``.

    Raises:
        UserError: bad config or input, or a diverged run; ``summary.json`` then says
            ``failed`` or ``diverged`` when the run directory was already written.
    """
    validate(cfg)
    tcfg = cfg.trainer
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    data = build_data(cfg).to(device)
    check_monitor(tcfg.early_stopping.monitor, data.task)
    model = build_model(cfg, data)
    init_applied = apply_init(model, cfg.init.name)
    model.to(device)
    loss_name = resolve_auto(data.task) if cfg.loss.name == "auto" else cfg.loss.name
    loss_fn = LOSSES.build(loss_name, task=data.task, num_outputs=data.num_outputs)
    optimizer = build_optimizer(cfg.optim.name, model.parameters(), **_options(cfg.optim))

    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / "checkpoints"
    summary_text = format_summary(summarize(model, data.input_shape, init_applied), model)
    (run_dir / "model_summary.txt").write_text(summary_text)
    log.info("model=%s on %s, %s; %d train / %d val / %d test examples; loss=%s\n%s",
             cfg.model.name, device, cfg.data.name, *data.sizes.values(), loss_name, summary_text)

    fast = tcfg.fast_dev_run
    limit = FAST_DEV_BATCHES if fast else None
    generator = torch.Generator().manual_seed(cfg.seed)  # the data order depends on this alone
    train_batches = TensorBatches(data.x_train, data.y_train, tcfg.batch_size, shuffle=True,
                                  generator=generator, limit_batches=limit)
    val_batches = TensorBatches(data.x_val, data.y_val, tcfg.eval_batch_size, limit_batches=limit)
    test_batches = TensorBatches(data.x_test, data.y_test, tcfg.eval_batch_size, limit_batches=limit)

    es = tcfg.early_stopping
    stopper = EarlyStopping(es.monitor, es.mode, es.min_delta, es.patience, enabled=es.enabled and not fast)
    metrics_csv = MetricsCSV(run_dir / "metrics.csv")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    meta = {"config": resolved, "versions": versions()}

    def on_epoch_end(trainer: Trainer, row: dict[str, Any], improved: bool) -> None:
        metrics_csv.write(row)
        if tcfg.checkpoint.save_last:
            save_checkpoint({**trainer.state_dict(), **meta}, ckpt_dir / "last.pt")
        if improved and tcfg.checkpoint.save_best:
            save_checkpoint({**trainer.state_dict(), **meta}, ckpt_dir / "best.pt")

    trainer = Trainer(model, optimizer, loss_fn, data.task, max_epochs=1 if fast else tcfg.max_epochs,
                      stopper=stopper, log_every_n_steps=tcfg.log_every_n_steps,
                      on_epoch_end=on_epoch_end, progress=ProgressDisplay(1 if fast else tcfg.max_epochs))
    summary: dict[str, Any] = {
        "status": "failed", "stop_reason": None, "epochs_run": 0, "best_epoch": None,
        "monitor": stopper.monitor, "mode": stopper.mode, "best_value": None, "test": {},
        "num_params": sum(p.numel() for p in model.parameters()), "train_seconds": 0.0,
        "task": data.task, "loss": loss_name, "data": data.sizes, "device": str(device), "world_size": 1,
        "run_dir": str(run_dir), "started_at": datetime.now().isoformat(timespec="seconds"),
        "versions": meta["versions"],
    }
    start = time.perf_counter()
    try:
        status = trainer.fit(train_batches, val_batches)
        summary["status"] = status
        if fast:
            summary["stop_reason"] = "fast_dev_run: one epoch of a few batches"
        elif status == "early_stopped":
            summary["stop_reason"] = (f"no improvement in {stopper.monitor} for {stopper.wait} epochs "
                                      f"(patience {stopper.patience})")
        else:
            summary["stop_reason"] = f"reached trainer.max_epochs={tcfg.max_epochs}"
    except TrainingDiverged as err:
        summary.update(status="diverged", stop_reason=str(err))
        raise
    except KeyboardInterrupt:
        summary.update(status="interrupted", stop_reason="interrupted by the user (Ctrl-C)")
        raise
    except Exception as err:
        summary.update(status="failed", stop_reason=str(err).splitlines()[0] if str(err) else type(err).__name__)
        raise
    finally:
        trainer.progress.close()
        summary.update(epochs_run=trainer.epoch, best_epoch=stopper.best_epoch, best_value=stopper.best,
                       train_seconds=round(time.perf_counter() - start, 3))
        if summary["status"] not in ("completed", "early_stopped"):
            write_json(run_dir / "summary.json", summary)

    # The test split is touched once, at the end, with the best epoch's weights.
    trainer.restore_best()
    summary["test"] = trainer.evaluate(test_batches)
    summary["finished_at"] = datetime.now().isoformat(timespec="seconds")
    write_json(run_dir / "summary.json", summary)
    print_results(summary)
    return summary

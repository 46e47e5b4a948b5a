"""One experiment from a composed config: the single place where config keys become
builder calls, and where the run directory is written.

``train(cfg)`` is the Python API (``from dltrain import train``); the command line calls
it through ``dltrain.cli``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dltrain.callbacks import EarlyStopping
from dltrain.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, plain, save_checkpoint
from dltrain.checks import check_combinations, check_model, check_monitor, schedule_warnings
from dltrain.config import validate
from dltrain.data import DATASETS, Augment, DataSplits, LoaderBatches, TensorBatches, build_augment
from dltrain.device import resolve_device, resolve_precision
from dltrain.errors import ConfigError
from dltrain.files import ensure_new_run_dir, write_json
from dltrain.init import apply_init
from dltrain.losses import LOSSES, Loss, resolve_auto, trap_warnings
from dltrain.models import MODELS
from dltrain.models.summary import LayerRow, format_summary, summarize
from dltrain.optim import CLOSURE_OPTIMIZERS, build_optimizer
from dltrain.progress import ProgressDisplay, print_results
from dltrain.regularization import WeightPenalty
from dltrain.report import MetricsCSV, prediction_rows, versions, write_predictions
from dltrain.schedulers import LRSchedule, build_scheduler
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


@dataclass
class Experiment:
    """Everything a config builds before training starts."""

    data: DataSplits
    model: nn.Module
    init_applied: dict[str, str]
    summary_rows: list[LayerRow]
    loss_name: str
    loss_fn: Loss
    optimizer: torch.optim.Optimizer
    scheduler: LRSchedule
    penalty: WeightPenalty
    augment: Augment | None
    autocast_dtype: torch.dtype | None
    batches: tuple[TensorBatches | LoaderBatches, ...]
    warnings: list[str] = field(default_factory=list)


def build_experiment(cfg: DictConfig, device: torch.device) -> Experiment:
    """Data, loss, model, init, optimizer, schedule and regularizers from ``cfg``: the one
    place where config keys become builder arguments.

    Raises:
        ConfigError: for combinations that cannot work, before any training step.
    """
    reg, tcfg = cfg.regularization, cfg.trainer
    check_combinations(cfg)
    data = load_data(cfg, device)
    check_monitor("trainer.early_stopping.monitor", tcfg.early_stopping.monitor, data.task)
    autocast_dtype = resolve_precision(tcfg.precision, device, cfg.optim.name)

    # The loss first: it decides how wide the model's output layer is.
    loss_name = resolve_auto(data.task) if cfg.loss.name == "auto" else cfg.loss.name
    loss_fn = LOSSES.build(loss_name, task=data.task, num_outputs=data.num_outputs,
                           label_smoothing=reg.label_smoothing, class_counts=data.class_counts(),
                           **_options(cfg.loss)).to(device)
    warnings: list[str] = []
    model = build_model(cfg, data, loss_fn.output_width, warnings).to(device)
    # One forward pass on two training examples first: it fails here, with one line, for a
    # model that cannot work, and it gives lazy layers their shapes before the init touches them.
    example = data.example(2).to(device)
    check_model(cfg, model, example, loss_fn, loss_name, autocast_dtype)
    summary_rows = summarize(model, example)  # layers in the order they run
    last_layer = summary_rows[-1].kind if summary_rows else ""
    warnings += trap_warnings(loss_name, last_layer)
    if loss_fn.log_probs and last_layer != "LogSoftmax":
        summary_rows.append(add_log_softmax(model, loss_fn.output_width))
    # The scheme's gain follows the model's activation; LSTM and GRU compute with tanh.
    activation = cfg.model.get("activation") or cfg.model.get("nonlinearity") or (
        "tanh" if cfg.model.name in ("lstm", "gru") else None)
    init_applied = apply_init(model, cfg.init.name, activation=activation, **_options(cfg.init))
    for row in summary_rows:
        row.init = init_applied.get(row.name, "-" if row.params == 0 else "default")

    closure = cfg.optim.name in CLOSURE_OPTIMIZERS
    optimizer = build_optimizer(cfg.optim.name, model, l2=0.0 if closure else reg.l2, **_options(cfg.optim))
    penalty = WeightPenalty(model, l1=reg.l1, l2=reg.l2 if closure else 0.0)  # LBFGS: L2 as a loss term
    augment = build_augment(list(reg.augment), OmegaConf.to_container(reg.augment_params), data.input_shape)
    batches = make_batches(data, tcfg, cfg.seed, device)

    sched = _options(cfg.scheduler)
    if cfg.scheduler.name == "plateau":
        sched["monitor"] = sched["monitor"] or tcfg.early_stopping.monitor
        check_monitor("scheduler.monitor", sched["monitor"], data.task)
    max_epochs = 1 if tcfg.fast_dev_run else tcfg.max_epochs
    scheduler = build_scheduler(cfg.scheduler.name, optimizer, max_epochs=max_epochs,
                                steps_per_epoch=len(batches[0]), **sched)
    if not tcfg.fast_dev_run:
        warnings += schedule_warnings(cfg, max_epochs)
    return Experiment(data, model, init_applied, summary_rows, loss_name, loss_fn, optimizer, scheduler,
                      penalty, augment, autocast_dtype, batches, warnings)


def load_data(cfg: DictConfig, device: torch.device) -> DataSplits:
    """``data=...``, its tensors moved to ``device`` (data read from disk stays there).

    Raises:
        ConfigError: for bad data keys or files, or data too large for the device.
    """
    data = DATASETS.build(cfg.data.name, seed=cfg.seed, **_options(cfg.data))
    try:
        return data.to(device)
    except torch.OutOfMemoryError as err:
        hint = "set data.in_memory=false" if "in_memory" in cfg.data else "use device=cpu or a smaller dataset"
        raise ConfigError(f"data={cfg.data.name} does not fit in the memory of {device}: {hint}.") from err


def build_model(cfg: DictConfig, data: DataSplits, num_outputs: int, warnings: list[str]) -> nn.Module:
    """``model=...`` for ``data``'s examples, with ``regularization.dropout`` and ``batch_norm``
    passed to the built-in models (a recurrent model's own ``model.dropout`` sits between its
    layers, so the regularization one reaches it as ``head_dropout``). Token ids (text data)
    go to the recurrent models, which embed them, and to custom models that take ``vocab_size``."""
    opts = _options(cfg.model)
    reg = cfg.regularization
    name = cfg.model.name
    if data.vocab_size is not None:
        if name in ("mlp", "cnn"):
            raise ConfigError(f"data={cfg.data.name} gives sequences of token ids, which model={name} cannot read: "
                              "use model=lstm, gru or rnn (they embed the tokens first), or model=custom.")
        opts["vocab_size"] = data.vocab_size
    elif name in ("rnn", "lstm", "gru"):
        opts.pop("embedding_dim", None)  # numeric inputs are not embedded
    if cfg.model.name == "custom":
        for key in ("input_shape", "num_outputs"):
            if key in opts:
                raise ConfigError(f"model.{key} is passed by dltrain from the data: remove +model.{key}.")
        for key, off in (("dropout", 0.0), ("batch_norm", False)):
            if reg[key] != off:
                warnings.append(f"regularization.{key}={reg[key]} does not apply to model=custom: "
                                "add the layers to your module instead")
    else:
        opts["head_dropout" if "dropout" in opts else "dropout"] = reg.dropout
        opts["batch_norm"] = reg.batch_norm
    try:
        return MODELS.build(name, input_shape=data.input_shape, num_outputs=num_outputs, **opts)
    except (MemoryError, RuntimeError) as err:
        if not isinstance(err, MemoryError) and "allocate" not in str(err):
            raise
        raise ConfigError(f"model={cfg.model.name} is too large to build in memory: "
                          f"make it smaller (model.* sizes) ({str(err).splitlines()[0]}).") from err


def add_log_softmax(model: nn.Module, width: int) -> LayerRow:
    """End ``model`` in log-softmax, for ``loss=nll``, without renaming its weights: an
    ``nn.Sequential`` gets a last layer (it has no parameters), any other module a forward
    hook. Returns the summary row of the added step."""
    if isinstance(model, nn.Sequential):
        model.add_module("log_softmax", nn.LogSoftmax(dim=1))
    else:
        model.register_forward_hook(_log_softmax_hook)
    return LayerRow("log_softmax", "LogSoftmax", f"(-1, {width})", 0, "-")


def _log_softmax_hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(output, dim=1)


def make_batches(data: DataSplits, tcfg: DictConfig, seed: int,
                 device: torch.device) -> tuple[TensorBatches | LoaderBatches, ...]:
    """Train (shuffled), validation and test batches; ``fast_dev_run`` keeps two of each.

    Data in memory is batched by index on its device; data read from disk goes through a
    DataLoader with ``data.num_workers`` processes."""
    limit = FAST_DEV_BATCHES if tcfg.fast_dev_run else None
    generator = torch.Generator().manual_seed(seed)  # the data order depends on this alone
    if not data.in_memory:
        def loader(x, batch_size, **kw):
            return LoaderBatches(x, batch_size, device=device, num_workers=data.num_workers, limit_batches=limit, **kw)

        return (loader(data.x_train, tcfg.batch_size, shuffle=True, generator=generator, min_batch_size=2),
                loader(data.x_val, tcfg.eval_batch_size),
                loader(data.x_test, tcfg.eval_batch_size, persistent=False))  # read once
    return (
        # A last training batch of one example is dropped: batch norm cannot normalise it,
        # and its gradient would be the noisiest step of the epoch.
        TensorBatches(data.x_train, data.y_train, tcfg.batch_size, shuffle=True, generator=generator,
                      limit_batches=limit, min_batch_size=2),
        TensorBatches(data.x_val, data.y_val, tcfg.eval_batch_size, limit_batches=limit),
        TensorBatches(data.x_test, data.y_test, tcfg.eval_batch_size, limit_batches=limit),
    )


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
            ``failed`` or ``diverged`` if training had started.
    """
    validate(cfg)
    tcfg, fast = cfg.trainer, cfg.trainer.fast_dev_run
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
    ensure_new_run_dir(run_dir, "pass another run_dir")
    if cfg.resume is not None:
        raise ConfigError(f"resume={cfg.resume}: resuming is not available in this version of dltrain; "
                          "remove resume=... to train from scratch.")
    seed_everything(cfg.seed)
    try:
        device = resolve_device(cfg.device)
        exp = build_experiment(cfg, device)
    except Exception as err:
        if run_dir.is_dir():  # Hydra made it: say in it why nothing was trained
            write_json(run_dir / "summary.json", {"status": "failed", "stop_reason": _first_line(err),
                                                  "epochs_run": 0, "world_size": 1})
        raise
    train_batches, val_batches, test_batches = exp.batches
    run_dir.mkdir(parents=True, exist_ok=True)
    summary_text = format_summary(exp.summary_rows, exp.model)
    (run_dir / "model_summary.txt").write_text(summary_text)
    write_json(run_dir / "data.json", describe_data(cfg, exp.data))
    log.info("model=%s on %s, data=%s: %d train / %d val / %d test examples; loss=%s, optim=%s, scheduler=%s, "
             "init=%s, precision=%s\n%s", cfg.model.name, device, cfg.data.name, *exp.data.sizes.values(),
             exp.loss_name, cfg.optim.name, cfg.scheduler.name, cfg.init.name, tcfg.precision, summary_text)
    for warning in exp.warnings:
        log.warning("warning: %s.", warning)

    es = tcfg.early_stopping
    stopper = EarlyStopping(es.monitor, es.mode, es.min_delta, es.patience, enabled=es.enabled and not fast)
    metrics_csv = MetricsCSV(run_dir / "metrics.csv")
    meta = checkpoint_meta(cfg, exp)

    def on_epoch_end(trainer: Trainer, row: dict[str, Any], improved: bool) -> None:
        metrics_csv.write(row)
        if not math.isfinite(row["train_loss"]):  # diverged: no checkpoint of non-finite weights
            return
        if tcfg.checkpoint.save_last:
            save_checkpoint({**trainer.state_dict(), **meta}, run_dir / "checkpoints" / "last.pt")
        if improved and tcfg.checkpoint.save_best:
            save_checkpoint({**trainer.state_dict(), **meta}, run_dir / "checkpoints" / "best.pt")

    max_epochs = 1 if fast else tcfg.max_epochs
    trainer = Trainer(exp.model, exp.optimizer, exp.loss_fn, exp.data.task, max_epochs=max_epochs,
                      stopper=stopper, log_every_n_steps=tcfg.log_every_n_steps,
                      on_epoch_end=on_epoch_end, progress=ProgressDisplay(max_epochs),
                      scheduler=exp.scheduler, penalty=exp.penalty, augment=exp.augment,
                      grad_clip=cfg.regularization.grad_clip, grad_clip_value=cfg.regularization.grad_clip_value,
                      autocast_dtype=exp.autocast_dtype,
                      scaler=torch.amp.GradScaler(device.type) if exp.autocast_dtype == torch.float16 else None,
                      forward=torch.compile(exp.model) if tcfg.compile else None)
    summary: dict[str, Any] = {
        "status": "failed", "stop_reason": None, "epochs_run": 0, "best_epoch": None,
        "monitor": stopper.monitor, "mode": stopper.mode, "best_value": None, "test": {},
        "num_params": sum(p.numel() for p in exp.model.parameters()), "train_seconds": 0.0,
        "task": exp.data.task, "loss": exp.loss_name, "data": exp.data.sizes, "device": str(device),
        "world_size": 1, "warnings": exp.warnings, "run_dir": str(run_dir),
        "started_at": datetime.now().isoformat(timespec="seconds"),
        "versions": meta["versions"],
    }
    start = time.perf_counter()
    try:
        summary["status"] = trainer.fit(train_batches, val_batches)
        if fast:
            summary["stop_reason"] = "fast_dev_run: one epoch of a few batches"
        elif summary["status"] == "early_stopped":
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
        summary.update(status="failed", stop_reason=_first_line(err))
        if tcfg.compile and type(err).__module__.startswith(("torch._dynamo", "torch._inductor")):
            raise ConfigError(f"trainer.compile=true failed ({_first_line(err)}): "
                              "set trainer.compile=false.") from err
        raise
    finally:
        trainer.progress.close()
        summary.update(epochs_run=len(trainer.history), best_epoch=stopper.best_epoch, best_value=stopper.best,
                       train_seconds=round(time.perf_counter() - start, 3))
        if summary["status"] not in ("completed", "early_stopped"):
            write_json(run_dir / "summary.json", summary)

    # The test split is touched once, at the end, with the best epoch's weights.
    trainer.restore_best()
    outputs: list[torch.Tensor] = []
    summary["test"] = trainer.evaluate(test_batches, outputs=outputs)
    data = exp.data
    if outputs:
        write_predictions(run_dir / "predictions.csv", prediction_rows(
            torch.cat(outputs), data.y_test[:sum(len(o) for o in outputs)], data.task, data.class_names,
            data.target_scale, data.info.get("test_rows")))
    summary["finished_at"] = datetime.now().isoformat(timespec="seconds")
    write_json(run_dir / "summary.json", summary)
    log.info("%s after %d epochs (%s); test: %s", summary["status"], summary["epochs_run"], summary["stop_reason"],
             "  ".join(f"{k}={v:.4f}" for k, v in summary["test"].items()))
    print_results(summary)
    return summary


def checkpoint_meta(cfg: DictConfig, exp: Experiment) -> dict[str, Any]:
    """What a checkpoint holds besides the training state: enough to rebuild the model and
    its input preprocessing without the training data (``dltrain-eval``, ``dltrain-predict``)."""
    return {
        "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
        "config": OmegaConf.to_container(cfg, resolve=True), "versions": versions(),
        "data": plain(describe_data(cfg, exp.data)),
        "model_spec": {"output_width": exp.loss_fn.output_width, "log_softmax": bool(exp.loss_fn.log_probs)},
    }


def describe_data(cfg: DictConfig, data: DataSplits) -> dict[str, Any]:
    """``data.json``: what the model was trained on and how it was preprocessed."""
    info = {k: v for k, v in data.info.items() if k != "test_rows"}
    return {"dataset": cfg.data.name, "task": data.task, "num_outputs": data.num_outputs,
            "input_shape": list(data.input_shape), "class_names": data.class_names, **data.sizes,
            "in_memory": data.in_memory, "vocab_size": data.vocab_size,
            "target_scale": list(data.target_scale) if data.target_scale else None, **info}


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

"""One experiment from a composed config: built by :mod:`dltrain.build`, trained, tested,
and its run directory written.

``train(cfg)`` is the Python API (``from dltrain import train``); the command line calls
it through ``dltrain.cli.app``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dltrain.training.callbacks import EarlyStopping
from dltrain.build import Experiment, _options, build_experiment, checkpoint_meta, describe_data
from dltrain.training.checkpoint import load_checkpoint, prune_periodic, save_checkpoint
from dltrain.config.validation import validate, validate_once
from dltrain.data import DataSplits
from dltrain.data.batches import shard_range
from dltrain.data.synthetic import FunctionValuesError
from dltrain.training.device import resolve_device, resolve_memory_format
from dltrain.training.distributed import Ranks, device_for, init, route_logs, wrap
from dltrain.errors import ConfigError, UserError, first_line
from dltrain.files import (
    copy_atomically,
    ensure_new_run_dir,
    hydra_file_names,
    own_checkpoint,
    remove_stale_tmpfiles,
    write_json,
)
from dltrain.loggers import Logger, build_logger
from dltrain.messages import results_not_saved
from dltrain.models.summary import format_summary
from dltrain.training.progress import ProgressDisplay, print_results
from dltrain.report.tables import MetricsCSV, prediction_rows, write_predictions
from dltrain.training.resume import AUTO_ROOT, check_config, explicit_keys, find_checkpoint, resumed_config
from dltrain.training.rng import seed_everything
from dltrain.report.run_end import report_end
from dltrain.training.signals import Interrupted, StopRequest, signal_name
from dltrain.training.trainer import Trainer, TrainingDiverged
from dltrain.config.trust import check_stored_config, named_target

log = logging.getLogger("dltrain")


def default_run_dir() -> Path:
    """Hydra's run directory when called under Hydra, else ``outputs/<date>/<time>``."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not running under Hydra: the Python API
        return Path("outputs") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S.%f")


def hydra_files_in(run_dir: Path) -> tuple[str, ...]:
    """What Hydra wrote into ``run_dir`` for this run (``.hydra``, the job's log) when it is
    Hydra's run directory; nothing from the Python API."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra = HydraConfig.get()
    except ValueError:  # not running under Hydra
        return ()
    return hydra_file_names(hydra) if Path(hydra.runtime.output_dir).resolve() == run_dir.resolve() else ()


def train(cfg: DictConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train, validate and test one experiment, writing its run directory.

    Under ``torchrun`` (or in a Slurm job of several tasks) every rank calls this: they
    join one process group, train one DistributedDataParallel model, and rank 0 writes the
    run directory they agree on (under the ``dltrain`` command the others log to
    ``rank<k>.log`` in it).

    Args:
        cfg: a config composed from ``conf/train.yaml`` (see ``dltrain.compose``); with
            ``resume=...`` it continues a checkpoint's run into ``run_dir``; with
            ``resume=auto`` and a ``run_dir`` that holds a ``checkpoints/last.pt`` (a Slurm
            job requeued after pre-emption), it continues that run in place.
        run_dir: where to write; defaults to Hydra's run directory, or
            ``outputs/<date>/<time>`` outside Hydra.

    Returns:
        The summary, as written to ``summary.json``.

    Raises:
        UserError: bad config or input, or a diverged run (``TrainingDiverged``);
            ``summary.json`` then says ``failed`` or ``diverged``.
        Interrupted: a stop signal (a ``BaseException``, as ``KeyboardInterrupt`` is);
            ``summary.json`` says ``interrupted``, and a run stopped after a step has saved
            ``last.pt`` to resume from.
    """
    validate_once(cfg)  # compose() or the command line checked it already, unless it changed since
    ranks = init(cfg.device)
    # Outside Hydra the default directory is named by each rank's clock: rank 0's is the run's.
    run_dir = Path(ranks.broadcast(str(run_dir if run_dir is not None else default_run_dir())))
    own = own_checkpoint(cfg.resume, run_dir)
    error = None
    if own is None and ranks.is_main:
        try:
            ensure_new_run_dir(run_dir, "pass another run_dir", resume=cfg.resume, hydra_files=hydra_files_in(run_dir),
                               hydra_started=True)
        except ConfigError as err:
            error = err
    ranks.check(error, "checking the run directory")
    if not ranks.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        route_logs(ranks, run_dir)
    with StopRequest() as stop:
        return _train(cfg, run_dir, stop, ranks, own)


def _train(cfg: DictConfig, run_dir: Path, stop: StopRequest, ranks: Ranks, own: Path | None) -> dict[str, Any]:
    started_at = datetime.now().isoformat(timespec="seconds")
    main = ranks.is_main
    resume_path: Path | None = None
    state: dict[str, Any] | None = None
    logger: Logger | None = None
    try:
        # Each phase ends in an agreement: a rank that failed says so to the others (which stop
        # too, naming it) instead of leaving them waiting in the next collective.
        finished = None
        if own is not None or cfg.resume is not None:
            resume_path, state, cfg = _agreed(ranks, "reading the checkpoint", _load_resume, cfg, ranks, own)
            finished = _finished(cfg, state) if state is not None else None
        if finished and _results_written(resume_path, ranks):
            return _already_finished(cfg, run_dir, resume_path, state, finished, ranks)
        if finished:  # stopped between its last checkpoint and its results: the run ends now
            log.info("resume=%s: nothing to train (%s), but the run's results were never written: testing its "
                     "weights and writing them into %s", resume_path, finished, run_dir)

        def build() -> tuple[torch.device, Experiment]:
            seed_everything(cfg.seed)
            device = device_for(ranks, resolve_device(cfg.device))
            try:
                return device, build_experiment(cfg, device,
                                                state["optimizer"]["param_groups"] if resume_path else None, ranks)
            except FunctionValuesError as err:
                if resume_path is None:
                    raise
                # A resume cannot change the data: the function is the checkpoint's.
                raise ConfigError(f"resume={resume_path}: the checkpoint's {err.problem}: resume a checkpoint "
                                  "written by dltrain training, or train a new run") from None

        device, exp = _agreed(ranks, "setting up the run", build)
        train_forward = None
        if ranks.distributed:
            train_forward = wrap(exp.model, device)
            seed_everything(cfg.seed + ranks.rank)  # dropout and augmentation differ by rank, as the data does
            log.info("%d ranks (%s): a global batch of %d, %d per rank", ranks.world_size, ranks.backend,
                     cfg.trainer.batch_size, cfg.trainer.batch_size // ranks.world_size)

        def start() -> tuple[Trainer, MetricsCSV]:
            nonlocal logger
            run_dir.mkdir(parents=True, exist_ok=True)
            summary_text = format_summary(exp.summary_rows, exp.model)
            if main:
                (run_dir / "model_summary.txt").write_text(summary_text)
                write_json(run_dir / "data.json", describe_data(cfg, exp.data))
            log.info("model=%s on %s, data=%s: %d train / %d val / %d test examples; loss=%s, optim=%s, "
                     "scheduler=%s, init=%s, precision=%s\n%s", cfg.model.name, device, cfg.data.name,
                     *exp.data.sizes.values(), exp.loss_name, cfg.optim.name, cfg.scheduler.name, cfg.init.name,
                     cfg.trainer.precision, summary_text)
            for warning in exp.warnings:
                log.warning("warning: %s.", warning)
            # Rank 0 alone writes the run's files: the other ranks' logger records nothing.
            logger = build_logger(cfg.logger.name, run_dir, **_options(cfg.logger)) if main else Logger()
            trainer, metrics_csv = _make_trainer(cfg, exp, device, run_dir, stop, logger, ranks, train_forward)
            logger.start(run_hparams(cfg), OmegaConf.to_yaml(cfg, resolve=True))
            if resume_path is not None:
                _continue(trainer, metrics_csv, logger, state, resume_path, run_dir, main)
            return trainer, metrics_csv

        trainer, metrics_csv = _agreed(ranks, "starting the run", start)
    except (Exception, Interrupted) as err:
        status = "interrupted" if isinstance(err, Interrupted) else "failed"
        failed = {"status": status, "stop_reason": first_line(err), "epochs_run": 0, "stopped_epoch": None,
                  "best_epoch": None, "resumed_from": str(resume_path) if resume_path else None,
                  "world_size": ranks.world_size, "started_at": started_at}
        wrote_summary = main and run_dir.is_dir() and own is None
        if wrote_summary:  # Hydra made it: say in it why nothing was trained
            write_json(run_dir / "summary.json", failed)
        if logger is not None:  # its files are closed, whatever happens next
            _finish_logger(logger, failed)
        if wrote_summary:  # what the failed run left, before the error's line
            report_end(failed, run_dir)
        raise
    return _fit_and_test(cfg, exp, trainer, run_dir, stop, resume_path, started_at, logger, metrics_csv.rows)


def _agreed(ranks: Ranks, what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on every rank, then an agreement that it worked on all of them."""
    error: BaseException | None = None
    result = None
    try:
        result = fn(*args)
    except (Exception, Interrupted) as err:  # noqa: BLE001 - re-raised by the agreement, on this rank (a stop too)
        error = err
    ranks.check(error, what)
    return result


def _make_trainer(cfg: DictConfig, exp: Experiment, device: torch.device, run_dir: Path, stop: StopRequest,
                  logger: Logger, ranks: Ranks, train_forward: nn.Module | None) -> tuple[Trainer, MetricsCSV]:
    """The trainer, with the end-of-epoch writes: a metrics.csv row, the logger's, and the
    checkpoints (by rank 0; every rank gathers the checkpoint's state, which is collective)."""
    tcfg = cfg.trainer
    main = ranks.is_main
    metrics_csv = MetricsCSV(run_dir / "metrics.csv")
    meta = checkpoint_meta(cfg, exp)
    checkpoints = run_dir / "checkpoints"

    def on_epoch_end(trainer: Trainer, row: dict[str, Any], improved: bool) -> None:
        if main:
            metrics_csv.write(row)
            _log_epoch(logger, row)
        if not trainer.healthy:  # the monitored metric is not finite: no checkpoint of such weights
            return
        ck = tcfg.checkpoint
        periodic = ck.every_n_epochs and trainer.epoch % ck.every_n_epochs == 0
        if not (ck.save_last or (improved and ck.save_best) or periodic):
            return
        state = trainer.checkpoint()  # gathered once for every file written this epoch
        if not main:
            return
        if ck.save_last:
            save_checkpoint(state, checkpoints / "last.pt")
        if improved and ck.save_best:
            save_checkpoint(state, checkpoints / "best.pt")
        if periodic:
            save_checkpoint(state, checkpoints / f"epoch-{trainer.epoch:04d}.pt")
            prune_periodic(checkpoints, ck.keep_last)

    max_epochs = 1 if tcfg.fast_dev_run else tcfg.max_epochs
    trainer = Trainer(exp.model, exp.optimizer, exp.loss_fn, exp.data.task, max_epochs=max_epochs,
                      stopper=make_stopper(cfg, exp.data.has_validation), log_every_n_steps=tcfg.log_every_n_steps,
                      on_epoch_end=on_epoch_end, progress=ProgressDisplay(max_epochs) if main else None,
                      scheduler=exp.scheduler, penalty=exp.penalty, augment=exp.augment,
                      grad_clip=cfg.regularization.grad_clip, grad_clip_value=cfg.regularization.grad_clip_value,
                      autocast_dtype=exp.autocast_dtype,
                      scaler=torch.amp.GradScaler(device.type) if exp.autocast_dtype == torch.float16 else None,
                      forward=torch.compile(exp.model) if tcfg.compile else None,
                      train_forward=torch.compile(train_forward) if tcfg.compile and train_forward else train_forward,
                      ranks=ranks,
                      memory_format=resolve_memory_format(tcfg.channels_last, exp.data.input_shape, exp.model),
                      restore_best_weights=tcfg.early_stopping.restore_best_weights, stop=stop,
                      meta=meta)
    return trainer, metrics_csv


def _log_epoch(logger: Logger, row: dict[str, Any]) -> None:
    """The logger's epoch record; a logger that fails is switched off with a warning, and
    the run goes on (metrics.csv has the row)."""
    if getattr(logger, "broken", False):
        return
    try:
        logger.log_epoch(row)
    except Exception as err:  # noqa: BLE001
        logger.broken = True
        log.warning("warning: the %s logger failed and is off for the rest of the run: %s", type(logger).__name__,
                    first_line(err))


def _continue(trainer: Trainer, metrics_csv: MetricsCSV, logger: Logger, state: dict[str, Any], path: Path,
              run_dir: Path, main: bool = True) -> None:
    """Load a resumed run's state into ``trainer``; its history opens the new metrics.csv
    (and the logger's record), and its ``best.pt`` (when the best epoch came before the
    resume) is copied beside it."""
    try:
        trainer.load_state_dict(state)
    except RuntimeError as err:  # weights of another shape: other data behind data.path, say
        raise ConfigError(f"resume={path}: the checkpoint's weights do not fit the model this config builds "
                          f"({first_line(err)}): point data.* at the data the run was trained on") from err
    if not main:
        return
    for row in trainer.history:  # the resumed run's metrics.csv holds the whole history
        metrics_csv.write(row)
        _log_epoch(logger, row)
    best, target = path.parent / "best.pt", run_dir / "checkpoints" / "best.pt"
    if trainer.stopper.best_epoch is not None and best.is_file() and best.resolve() != target.resolve():
        copy_atomically(best, target)
    partial = state.get("partial_epoch")
    log.info("resumed from %s: %d epochs done%s", path, trainer.epoch,
             f", epoch {trainer.epoch + 1} continues after step {partial['step']}" if partial else "")


def _fit_and_test(cfg: DictConfig, exp: Experiment, trainer: Trainer, run_dir: Path, stop: StopRequest,
                  resume_path: Path | None, started_at: str, logger: Logger,
                  rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Train, then test the best epoch's weights; ``summary.json`` records how it ended, and
    ``curves.png`` and the logger close the run however it ended."""
    stopper = trainer.stopper
    summary: dict[str, Any] = {
        "status": "failed", "stop_reason": None, "epochs_run": 0, "stopped_epoch": None, "best_epoch": None,
        "monitor": stopper.monitor, "mode": watched_mode(stopper), "best_value": None, "test": {}, "test_weights": None,
        "num_params": sum(p.numel() for p in exp.model.parameters()), "train_seconds": 0.0,
        "task": exp.data.task, "loss": exp.loss_name, "data": exp.data.sizes, "device": str(trainer.device),
        "world_size": trainer.ranks.world_size, "resumed_from": str(resume_path) if resume_path else None,
        "validation": (f"{exp.data.sizes['num_val']} examples" if exp.data.has_validation
                       else "none (data.val_fraction=0)"),
        "warnings": exp.warnings,
        "run_dir": str(run_dir), "started_at": started_at, "versions": trainer.meta["versions"],
    }
    try:
        return _fit_and_test_into(summary, cfg, exp, trainer, run_dir, stop)
    finally:
        try:
            _close_run(rows, summary, run_dir, logger)
        finally:
            if trainer.ranks.is_main:  # last, so the list holds curves.png when it was drawn
                report_end(summary, run_dir)


def _fit_and_test_into(summary: dict[str, Any], cfg: DictConfig, exp: Experiment, trainer: Trainer, run_dir: Path,
                       stop: StopRequest) -> dict[str, Any]:
    tcfg, stopper = cfg.trainer, trainer.stopper
    train_batches, val_batches, test_batches = exp.batches
    diverged: TrainingDiverged | None = None
    start = time.perf_counter()
    try:
        stop.graceful = True
        summary["status"] = trainer.fit(train_batches, val_batches if exp.data.has_validation else None)
        if tcfg.fast_dev_run:
            summary["stop_reason"] = "fast_dev_run: one epoch of a few batches"
        elif summary["status"] == "early_stopped":
            summary["stop_reason"] = stopper.stop_reason
        else:
            summary["stop_reason"] = f"reached trainer.max_epochs={tcfg.max_epochs}"
    except TrainingDiverged as err:
        summary.update(status="diverged", stop_reason=str(err))
        diverged = err
    except Interrupted as err:
        stop.graceful = False  # a second signal now aborts at once, even mid-save
        summary.update(status="interrupted", stop_reason=str(err))
        if err.aborted:  # mid-step: the state is torn, so the last good last.pt stays
            raise
        state, path = trainer.checkpoint(), run_dir / "checkpoints" / "last.pt"  # every rank gathers; rank 0 saves
        # No rank leaves before last.pt exists: a launcher may end the job when the first does.
        _agreed(trainer.ranks, "saving last.pt",
                lambda: save_checkpoint(state, path) if trainer.ranks.is_main else None)
        summary["checkpoint"] = str(path)
        raise Interrupted(err.signum, f"{err}: saved {path}; continue with resume={path}") from None
    except Exception as err:
        summary.update(status="failed", stop_reason=first_line(err))
        if tcfg.compile and type(err).__module__.startswith(("torch._dynamo", "torch._inductor")):
            raise ConfigError(f"trainer.compile=true failed ({first_line(err)}): "
                              "set trainer.compile=false.") from err
        raise
    finally:
        stop.graceful = False
        if trainer.progress is not None:
            trainer.progress.close()
        inside = trainer.step_in_epoch > 0  # stopped inside an epoch (interrupted, or diverged mid-epoch)
        summary.update(epochs_run=trainer.epoch, stopped_epoch=trainer.epoch + (1 if inside else 0),
                       best_epoch=stopper.best_epoch, best_value=stopper.best,
                       train_seconds=round(trainer.train_seconds, 3),  # the whole run, every segment
                       segment_seconds=round(time.perf_counter() - start, 3))
        if summary["status"] not in ("completed", "early_stopped", "diverged"):
            _write_summary(trainer, run_dir, summary)

    # The test split is touched once, at the end, with the best epoch's weights (however
    # training ended); a run that diverged before any good epoch has nothing to test.
    restored = tcfg.early_stopping.restore_best_weights and trainer.restore_best()
    if diverged is None or restored:
        summary["test_weights"] = f"best epoch {stopper.best_epoch}" if restored else f"last epoch {trainer.epoch}"
        try:
            _test(trainer, exp.data, test_batches, summary, run_dir)
        except BaseException as err:  # a signal (which aborts at once now) or a failure: say so
            stopped = isinstance(err, (Interrupted, KeyboardInterrupt))
            summary.update(status="interrupted" if stopped else "failed",
                           stop_reason=f"training {summary['status']} ({summary['stop_reason']}), then the test "
                                       f"evaluation {'was stopped' if stopped else 'failed'}: {first_line(err)}")
            _write_summary(trainer, run_dir, summary)
            raise
    late = stop.signum  # a signal after the last step: the run is done; its exit code still says so
    if late is not None and diverged is None:
        summary["signal"] = signal_name(late)
    summary["finished_at"] = datetime.now().isoformat(timespec="seconds")
    unsaved = _write_final_summary(trainer, run_dir, summary)
    # The test result is the run's last line (report_end), after the files it wrote.
    log.info("%s after %d epochs (%s)%s", summary["status"], summary["epochs_run"], summary["stop_reason"],
             "" if summary["test"] else "; not tested")
    if trainer.ranks.is_main and (diverged is None or unsaved is not None):
        print_results(summary)  # the results reach the console even when the disk cannot take them
    if unsaved is not None:
        raise unsaved
    if diverged is not None:
        raise diverged
    if late is not None:
        raise Interrupted(late, f"{signal_name(late)} arrived after the last training step: the run "
                                f"{summary['status']} and wrote its results")
    return summary


def _write_final_summary(trainer: Trainer, run_dir: Path, summary: dict[str, Any]) -> UserError | None:
    """Write the finished run's ``summary.json``; a disk that cannot take it (full, read-only)
    is returned as the error to end the run with, once its results are printed."""
    try:
        _write_summary(trainer, run_dir, summary)
    except OSError as err:
        return results_not_saved(run_dir / "summary.json", err)
    return None


def _write_summary(trainer: Trainer, run_dir: Path, summary: dict[str, Any]) -> None:
    if trainer.ranks.is_main:  # rank 0 writes the run's files
        write_json(run_dir / "summary.json", summary)


def _close_run(rows: list[dict[str, Any]], summary: dict[str, Any], run_dir: Path, logger: Logger) -> None:
    """``curves.png`` of the epochs in metrics.csv, and the logger's last record. Neither
    may cost the run its results, so a failure of either is a warning (a signal is not)."""
    if rows:
        try:
            from dltrain.report.plots import plot_curves

            plot_curves(rows, run_dir / "curves.png", monitor=summary["monitor"],
                        best_epoch=summary["best_epoch"], stopped_epoch=summary["stopped_epoch"],
                        status=summary["status"], title=f"{run_dir.name}: {summary['status']}")
        except Exception as err:  # noqa: BLE001 - a plot is never worth the run
            log.warning("warning: could not draw curves.png: %s", first_line(err))
    _finish_logger(logger, summary)


def _finish_logger(logger: Logger, summary: dict[str, Any]) -> None:
    try:
        logger.finish(summary)
    except Exception as err:  # noqa: BLE001 - the run's own files are written already
        log.warning("warning: the %s logger could not finish: %s", type(logger).__name__, first_line(err))


def run_hparams(cfg: DictConfig) -> dict[str, bool | int | float | str]:
    """The run's main hyperparameters, flat, for a logger's hyperparameter table: each
    group's option, the usual knobs, and every key the command line set."""
    reg, tcfg = cfg.regularization, cfg.trainer
    hparams: dict[str, Any] = {group: cfg[group].name for group in ("model", "data", "optim", "loss", "init",
                                                                    "scheduler")}
    hparams.update({"optim.lr": cfg.optim.lr, "trainer.batch_size": tcfg.batch_size,
                    "trainer.max_epochs": tcfg.max_epochs, "regularization.dropout": reg.dropout,
                    "regularization.l1": reg.l1, "regularization.l2": reg.l2,
                    "regularization.batch_norm": reg.batch_norm, "seed": cfg.seed,
                    "trainer.precision": tcfg.precision})
    for key in sorted(_command_line_keys()):
        value = OmegaConf.select(cfg, key, default=None)
        if key.endswith(".name"):
            key, value = key[:-len(".name")], value
        if value is not None and not isinstance(value, DictConfig):
            hparams[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return hparams


def _command_line_keys() -> set[str]:
    """The keys set on the command line (``dltrain`` under Hydra); none from Python."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return explicit_keys(None) if HydraConfig.initialized() else set()
    except ValueError:
        return set()


def _test(trainer: Trainer, data: DataSplits, batches: Any, summary: dict[str, Any], run_dir: Path) -> None:
    """Evaluate the test split once into ``summary["test"]`` and write ``predictions.csv``
    (each rank evaluates its contiguous part; rank 0 writes them all, in order)."""
    outputs: list[torch.Tensor] = []
    summary["test"] = trainer.evaluate(batches, outputs=outputs)
    ranks = trainer.ranks
    # Which examples of the split the outputs are: a prefix of each rank's part (all of it,
    # unless fast_dev_run cut it short).
    start = shard_range(len(data.y_test), ranks.rank, ranks.world_size)[0]
    parts = ranks.all_gather((start, [o.cpu() for o in outputs])) if ranks.distributed else [(start, outputs)]
    index = [i for first, outs in parts for i in range(first, first + sum(len(o) for o in outs))]
    outputs = [o for _, outs in parts for o in outs]
    if outputs and ranks.is_main:
        rows = data.info.get("test_rows")
        write_predictions(run_dir / "predictions.csv", prediction_rows(
            torch.cat(outputs), data.y_test[torch.tensor(index, device=data.y_test.device)], data.task,
            data.class_names, data.target_scale, [rows[i] for i in index] if rows is not None else index))


def make_stopper(cfg: DictConfig, has_validation: bool = True) -> EarlyStopping:
    """The early-stopping policy of ``trainer.early_stopping`` (never stopping a fast_dev_run);
    without a validation split, a ``val_*`` monitor watches nothing and nothing stops."""
    es = cfg.trainer.early_stopping
    monitor = es.monitor if has_validation or not es.monitor.startswith("val_") else None
    return EarlyStopping(monitor, es.mode, es.min_delta, es.patience,
                         enabled=es.enabled and not cfg.trainer.fast_dev_run, baseline=es.baseline,
                         start_from_epoch=es.start_from_epoch, check_finite=es.check_finite)


def watched_mode(stopper: EarlyStopping) -> str | None:
    """Whether the monitored value improves down (``min``) or up (``max``); None when nothing
    is monitored (no validation split for a ``val_*`` monitor)."""
    return stopper.mode if stopper.monitor is not None else None


def _load_resume(cfg: DictConfig, ranks: Ranks | None = None,
                 own: Path | None = None) -> tuple[Path | None, dict[str, Any] | None, DictConfig]:
    """The checkpoint ``resume=`` names (``own``: the run directory's own, continued in place),
    loaded, and the config to continue it with: the checkpoint's own, with the keys this run
    sets on top (checked: see ``dltrain.training.resume``). Rank 0 picks the file; every rank reads it."""
    ranks = ranks or Ranks()
    found: Path | str | None = own
    if own is None and ranks.is_main:
        try:
            from dltrain.config.hydra_job import in_sweep

            found = find_checkpoint(str(cfg.resume), OmegaConf.to_container(cfg, resolve=True), exact=in_sweep())
        except BaseException as err:  # the others wait for the outcome, whatever it is
            ranks.broadcast(first_line(err))
            raise
    found = ranks.broadcast(found)
    if isinstance(found, str):  # rank 0's error, said on every rank
        raise ConfigError(found)
    path = found
    if path is None:
        log.info("resume=auto: no last.pt of this config under %s/ yet: training from scratch", AUTO_ROOT)
        return None, None, cfg
    for tmp in remove_stale_tmpfiles(path.parent) if ranks.is_main else ():
        log.info("removed %s, left by a checkpoint write that was killed", tmp)
    state = load_checkpoint(path)
    if "rng" not in state or "config" not in state:
        raise ConfigError(f"resume={path}: this checkpoint holds weights but not the training state a resume needs "
                          "(it was written by an older dltrain): train a new run.")
    # Before anything of the stored config is used: the trust comes from this run's own config alone.
    check_stored_config(path, state["config"], target=named_target(cfg.model), trust_code=cfg.trust_code,
                        naming="model=custom model._target_=")
    merged = resumed_config(cfg, state["config"], explicit_keys(cfg))
    merged.trust_code = cfg.trust_code
    validate(merged)
    for line in check_config(path, state["config"], OmegaConf.to_container(merged, resolve=True)):
        log.info("resume: override %s", line)
    return path, state, merged


def _finished(cfg: DictConfig, state: dict[str, Any]) -> str | None:
    """Why the checkpoint's run has nothing left to train under this config, or None."""
    stopper = make_stopper(cfg, _validated(state))
    stopper.load_state_dict(state["early_stopping"])
    max_epochs = 1 if cfg.trainer.fast_dev_run else cfg.trainer.max_epochs
    if stopper.should_stop:
        return f"it stopped early after epoch {state['epoch']} ({stopper.stop_reason})"
    if state["epoch"] >= max_epochs and not state.get("partial_epoch"):
        return f"it completed {state['epoch']} epochs and trainer.max_epochs={max_epochs}"
    return None


def _validated(state: dict[str, Any]) -> bool:
    """Whether the checkpoint's run had a validation split (its data record says how large)."""
    record = state.get("data")
    return not (isinstance(record, dict) and record.get("num_val") == 0)


def _results_written(path: Path, ranks: Ranks) -> bool:
    """Whether the run of the checkpoint ``path`` wrote its results: its run directory's
    ``summary.json`` says it finished and holds its test metrics, and ``predictions.csv`` and
    ``curves.png`` (drawn after the summary) are there. A run killed after its last checkpoint
    lacks some of them (or its summary says the test was stopped). Rank 0 reads it; every rank
    gets the answer."""
    written = False
    if ranks.is_main:
        import json

        try:
            done = json.loads((path.parent.parent / "summary.json").read_text())
        except (OSError, ValueError):
            done = None
        folder = path.parent.parent
        written = (isinstance(done, dict) and done.get("status") in ("completed", "early_stopped")
                   and bool(done.get("test")) and (folder / "predictions.csv").is_file()
                   and (folder / "curves.png").is_file())
    return ranks.broadcast(written)


def _already_finished(cfg: DictConfig, run_dir: Path, path: Path, state: dict[str, Any], why: str,
                      ranks: Ranks | None = None) -> dict[str, Any]:
    """Resuming a finished run trains nothing: it says so, records it, and succeeds. A run
    continued in place (its own last.pt) keeps the summary it wrote when it finished."""
    ranks = ranks or Ranks()
    log.info("resume=%s: nothing to train: %s. Raise trainer.max_epochs (or the early-stopping patience) "
             "to train on.", path, why)
    written = run_dir / "summary.json"
    if path.parent.parent.resolve() == run_dir.resolve() and written.is_file():
        import json

        try:
            done = json.loads(written.read_text())
        except ValueError:
            done = {}
        if done.get("status") in ("completed", "early_stopped"):
            return done
    es, stopper = state["early_stopping"], make_stopper(cfg, _validated(state))
    summary = {"status": "already_finished", "stop_reason": f"nothing to train: {why}", "resumed_from": str(path),
               "epochs_run": int(state["epoch"]), "stopped_epoch": int(state["epoch"]),
               "best_epoch": es.get("best_epoch"), "monitor": stopper.monitor, "mode": watched_mode(stopper),
               "best_value": es.get("best"), "world_size": ranks.world_size, "run_dir": str(run_dir)}
    if run_dir.is_dir() and ranks.is_main:
        write_json(run_dir / "summary.json", summary)
    return summary

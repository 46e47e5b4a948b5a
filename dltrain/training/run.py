"""One experiment from a composed config, its phases in the order they run: the run
directory checked; the checkpoint to resume read; the experiment built (:mod:`dltrain.build`);
the run started (its first files, the logger, the trainer); fit; the test of the best
weights; ``summary.json`` (:mod:`dltrain.report.summary`), ``curves.png`` and the logger's
last record, however the run ended.

``train(cfg)`` is the Python API (``from dltrain import train``); the command line calls
it through ``dltrain.cli.app``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dltrain.build import (
    Experiment,
    build_experiment,
    checkpoint_meta,
    describe_data,
    make_stopper,
    run_hparams,
    step_options,
    watched_mode,
)
from dltrain.config.hydra_job import default_run_dir, hydra_files_in
from dltrain.config.validation import validate_once
from dltrain.data import DataSplits
from dltrain.data.synthetic import FunctionValuesError
from dltrain.errors import ConfigError, first_line
from dltrain.files import ensure_new_run_dir, own_checkpoint, write_json
from dltrain.loggers import Logger, RunLogger, build_loggers, carry_records
from dltrain.messages import describe_divergence, results_not_saved
from dltrain.models.summary import format_summary
from dltrain.report.run_end import close_not_started, close_run
from dltrain.report.run_report import print_report, write_report
from dltrain.report.summary import RunSummary, write_summary
from dltrain.report.tables import MetricsCSV, write_test_predictions
from dltrain.report.train_samples import write_samples
from dltrain.tasks.base import BadTaskState
from dltrain.training.averaging import build_averaging
from dltrain.training.budget import TimeLimitReached, make_budget, time_limit_reason
from dltrain.training.callbacks import CheckpointPolicy, EpochEndWriter
from dltrain.training.checkpoint import save_last
from dltrain.training.determinism import nondeterministic_error, restored_determinism, set_deterministic
from dltrain.training.device import resolve_device
from dltrain.training.diagnostics import Diagnostics
from dltrain.training.distributed import Ranks, device_for, init, route_logs, training_forward
from dltrain.training.profiler import make_profiler
from dltrain.training.progress import ProgressDisplay, print_results
from dltrain.training.resume import Resume, already_finished, continue_run, load_resume, results_written
from dltrain.training.rng import seed_everything
from dltrain.training.signals import Interrupted, StopRequest, signal_name
from dltrain.training.step_checkpoints import make_step_checkpoints
from dltrain.training.top_k import make_top_k
from dltrain.training.trainer import Hooks, Trainer, TrainingDiverged

log = logging.getLogger("dltrain")


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

    def check_new() -> None:  # by rank 0: a new run's directory holds no other run's files
        if own is None and ranks.is_main:
            ensure_new_run_dir(run_dir, "pass another run_dir", resume=cfg.resume, hydra_files=hydra_files_in(run_dir),
                               hydra_started=True)

    ranks.agreed("checking the run directory", check_new)
    if not ranks.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        route_logs(ranks, run_dir)
    with StopRequest() as stop, restored_determinism():  # trainer.deterministic lasts as long as the run
        return _train(_Run(cfg, run_dir, ranks, stop), own)


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


@dataclass
class _Run:
    """What the phases of one run share: the config (a resumed run's, once read), where it
    writes, the ranks, the stop signals and the logger (a silent one until rank 0 builds it)."""

    cfg: DictConfig
    run_dir: Path
    ranks: Ranks
    stop: StopRequest
    started_at: str = field(default_factory=_now)
    resume: Resume | None = None
    logger: RunLogger = field(default_factory=lambda: RunLogger(Logger()))


def _train(run: _Run, own: Path | None) -> dict[str, Any]:
    """Read the checkpoint to resume, build, start, then fit and test. Each phase before the
    first epoch ends in an agreement of the ranks (:meth:`Ranks.agreed`); a run that ends in one of
    them says why in ``summary.json``."""
    ranks = run.ranks
    try:
        if own is not None or run.cfg.resume is not None:
            run.resume = ranks.agreed("reading the checkpoint", load_resume, run.cfg, ranks, own)
        if run.resume is not None:
            run.cfg = run.resume.cfg
            finished = run.resume.nothing_left()
            if finished and results_written(run.resume.path, ranks):
                return already_finished(run.resume, run.run_dir, finished, ranks)
            if finished:  # stopped between its last checkpoint and its results: the run ends now
                log.info("resume=%s: nothing to train (%s), but the run's results were never written: testing its "
                         "weights and writing them into %s", run.resume.path, finished, run.run_dir)
        device, exp = ranks.agreed("setting up the run", _build, run)
        train_forward = training_forward(ranks, exp.model, device, run.cfg.seed, run.cfg.trainer.batch_size)
        trainer, metrics_csv = ranks.agreed("starting the run", _start, run, exp, device, train_forward)
    except (Exception, Interrupted) as err:
        _not_started(run, err, own)
        raise
    return _fit_and_test(run, exp, trainer, metrics_csv.rows)


def _build(run: _Run) -> tuple[torch.device, Experiment]:
    """The device, and the experiment the config builds on it (a resumed run's optimizer
    keeps the checkpoint's parameter groups)."""
    seed_everything(run.cfg.seed)
    device = device_for(run.ranks, resolve_device(run.cfg.device))
    set_deterministic(run.cfg.trainer.deterministic, device)  # before the run's first cuBLAS call
    resume = run.resume
    try:
        return device, build_experiment(run.cfg, device, resume.state["optimizer"]["param_groups"] if resume else None,
                                        run.ranks, recorded=resume.state.get("data") if resume else None,
                                        first_epoch=int(resume.state["epoch"]) + 1 if resume else 1,
                                        task_state=resume.state.get("task") if resume else None)
    except FunctionValuesError as err:
        if resume is None:
            raise
        # A resume cannot change the data: the function is the checkpoint's.
        raise ConfigError(f"resume={resume.path}: the checkpoint's {err.problem}: resume a checkpoint "
                          "written by dltrain training, or train a new run") from None
    except BadTaskState as err:  # what the task's entry identifies (a GAN's scorer file), damaged or crafted
        raise ConfigError(f"resume={resume.path}: the checkpoint's {first_line(err)}: resume a checkpoint "
                          "dltrain wrote, or train a new run") from None


def _start(run: _Run, exp: Experiment, device: torch.device,
           train_forward: nn.Module | None) -> tuple[Trainer, MetricsCSV]:
    """The run directory's first files, the run described in the log, the logger and the
    trainer, into which a resumed run's state is loaded."""
    cfg, run_dir, main = run.cfg, run.run_dir, run.ranks.is_main
    run_dir.mkdir(parents=True, exist_ok=True)
    summary_text = format_summary(exp.summary_rows, exp.model, exp.summary_notes)
    if main:
        (run_dir / "model_summary.txt").write_text(summary_text)
        write_json(run_dir / "data.json", describe_data(cfg, exp.data))
        write_samples(run_dir, exp.data, exp.augment, cfg.seed)
    log.info("model=%s on %s, data=%s: %d train / %d val / %d test examples; loss=%s, optim=%s, "
             "scheduler=%s, init=%s, precision=%s\n%s", cfg.model.name, device, cfg.data.name,
             *exp.data.sizes.values(), exp.loss_name, cfg.optim.name, cfg.scheduler.name, cfg.init.name,
             cfg.trainer.precision, summary_text)
    for warning in exp.warnings:
        log.warning("warning: %s.", warning)
    if main:  # rank 0 alone writes the run's files: the other ranks' logger records nothing
        if run.resume is not None:  # a tracked run (MLflow's) carries on where the checkpoint's run logged
            carry_records(cfg.logger, run.resume.path.parent.parent, run_dir, int(run.resume.state["epoch"]))
        run.logger = RunLogger(*build_loggers(cfg.logger, run_dir))
    trainer, metrics_csv = _make_trainer(cfg, exp, device, run_dir, run.stop, run.logger, run.ranks, train_forward)
    exp.task.start(run_dir, main)  # task=: where its files go, before a resume loads its state
    run.logger.start(run_hparams(cfg), OmegaConf.to_yaml(cfg, resolve=True))
    if run.resume is not None:
        continue_run(trainer, run.resume, run.run_dir, run.ranks.is_main, metrics_csv, run.logger)
        if trainer.diagnostics is not None:  # the resumed run's rows of the epochs it keeps open the new file
            trainer.diagnostics.continue_from(run.resume.path.parent.parent / "diagnostics.csv", trainer.epoch)
        if trainer.top_k is not None and run.ranks.is_main:  # its k best checkpoints, copied when it moves
            trainer.top_k.carry_from(run.resume.path.parent)
        if run.ranks.is_main:  # task=: its files of the epochs the resumed run keeps (a GAN's samples/)
            exp.task.carry_from(run.resume.path.parent.parent, trainer.epoch)
    return trainer, metrics_csv


def _not_started(run: _Run, err: BaseException, own: Path | None) -> None:
    """A run that ended before its first epoch: ``summary.json`` says why (in a directory
    Hydra made; a run continued in place keeps its own), the logger is closed, and the run's
    last lines name what it left."""
    summary = RunSummary.not_started("interrupted" if isinstance(err, Interrupted) else "failed", first_line(err),
                                     resumed_from=str(run.resume.path) if run.resume else None,
                                     world_size=run.ranks.world_size, started_at=run.started_at)
    close_not_started(summary, run.run_dir, run.logger, run.ranks.is_main and run.run_dir.is_dir() and own is None)


def _make_trainer(cfg: DictConfig, exp: Experiment, device: torch.device, run_dir: Path, stop: StopRequest,
                  logger: RunLogger, ranks: Ranks, train_forward: nn.Module | None) -> tuple[Trainer, MetricsCSV]:
    """The trainer, with the end-of-epoch writes (:class:`EpochEndWriter`)."""
    tcfg, reg = cfg.trainer, cfg.regularization
    main = ranks.is_main
    metrics_csv = MetricsCSV(run_dir / "metrics.csv")
    ck, folder = tcfg.checkpoint, run_dir / "checkpoints"
    stopper = make_stopper(cfg, exp.data.has_validation, exp.task)
    top_k = make_top_k(folder, ck.save_top_k, stopper.monitor, stopper.mode, stopper.start_from_epoch)
    # Mid-epoch last.pt files are asked for: each epoch's end keeps it current (save_last=false
    # would leave the epoch's last mid-epoch one, which a resume would train again from).
    save_last = ck.save_last or bool(ck.every_n_steps or ck.every_n_minutes)
    policy = CheckpointPolicy(folder, save_last=save_last, save_best=ck.save_best,
                              every_n_epochs=ck.every_n_epochs, keep_last=ck.keep_last, top_k=top_k)
    profiler = make_profiler(tcfg.profiler, device, run_dir, tcfg.profiler_steps) if main else None  # rank 0's time
    # rank 0's own step is measured (its gradients are every rank's, averaged); no collective is involved
    diagnostics = Diagnostics(exp.model, run_dir / "diagnostics.csv", activations=not tcfg.compile) \
        if tcfg.diagnostics and main else None
    on_epoch_end = EpochEndWriter(metrics_csv, logger, policy, main, diagnostics, profiler)
    max_epochs = 1 if tcfg.fast_dev_run else tcfg.max_epochs
    trainer = Trainer(
        exp.model, exp.optimizer, exp.loss_fn, exp.task.metric_kind(exp.data.task), max_epochs=max_epochs,
        stopper=stopper, scheduler=exp.scheduler, ranks=ranks,
        options=step_options(cfg, exp, train_forward),
        hooks=Hooks(on_epoch_end=on_epoch_end, progress=ProgressDisplay(max_epochs) if main else None, stop=stop,
                    log_every_n_steps=tcfg.log_every_n_steps, on_epoch_start=exp.fine_tune, diagnostics=diagnostics,
                    step_checkpoints=make_step_checkpoints(folder, ck.every_n_steps, ck.every_n_minutes, main),
                    top_k=top_k, profiler=profiler),
        restore_best_weights=tcfg.early_stopping.restore_best_weights, meta=checkpoint_meta(cfg, exp),
        budget=make_budget(tcfg.max_steps, tcfg.max_time, tcfg.val_every_n_epochs, fast_dev_run=tcfg.fast_dev_run),
        averaging=build_averaging(exp.model, ema_decay=reg.ema_decay, ema_warmup=reg.ema_warmup,
                                  swa_start=reg.swa_start, evaluate_averaged=reg.evaluate_averaged),
        objective=exp.task)
    return trainer, metrics_csv


def _fit_and_test(run: _Run, exp: Experiment, trainer: Trainer, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Train, then test the best epoch's weights; ``summary.json`` records how it ended, and
    ``curves.png`` and the logger close the run however it ended."""
    summary = _summary(run, exp, trainer)
    try:
        diverged = _fit(run, exp, trainer, summary)
        _test_best(run, exp, trainer, summary, diverged)
        return _end(run, summary, diverged)
    finally:
        for batches in exp.batches:  # worker processes end with the run (data read from disk)
            if hasattr(batches, "close"):
                batches.close()
        close_run(rows, summary, run.run_dir, run.logger, run.ranks.is_main)


def _summary(run: _Run, exp: Experiment, trainer: Trainer) -> RunSummary:
    """The summary of a run about to train: ``failed`` until training says how it ended."""
    data, stopper = exp.data, trainer.stopper
    return RunSummary(
        "failed", monitor=stopper.monitor, mode=watched_mode(stopper),
        num_params=sum(p.numel() for p in exp.model.parameters()), task=data.task, objective=run.cfg.task.name,
        loss=exp.loss_name,
        data=data.sizes, device=str(trainer.device), world_size=run.ranks.world_size,
        resumed_from=str(run.resume.path) if run.resume else None,
        validation=f"{data.sizes['num_val']} examples" if data.has_validation else "none (data.val_fraction=0)",
        warnings=exp.warnings, run_dir=str(run.run_dir), started_at=run.started_at,
        versions=trainer.meta["versions"])


def _fit(run: _Run, exp: Experiment, trainer: Trainer, summary: RunSummary) -> TrainingDiverged | None:
    """Train to the end, recording in ``summary`` how training ended. A divergence is returned:
    the run still tests its best weights and writes its results, then raises it.

    Raises:
        Interrupted: a signal; stopped after a step, the run has saved ``last.pt`` first.
        UserError: training failed.

    ``trainer.max_time`` running out is no error: ``last.pt`` is saved as for a signal, the
    status is ``time_limit``, and the run goes on to its test.
    """
    tcfg, stop, stopper = run.cfg.trainer, run.stop, trainer.stopper
    train_batches, val_batches, _ = exp.batches
    start = time.perf_counter()
    try:
        stop.graceful = True
        summary.status = trainer.fit(train_batches, val_batches if exp.data.has_validation else None)
        if tcfg.fast_dev_run:
            summary.stop_reason = "fast_dev_run: one epoch of a few batches"
        elif summary.status == "early_stopped":
            summary.stop_reason = stopper.stop_reason
        else:
            summary.stop_reason = trainer.budget.stop_reason(trainer.global_step, tcfg.max_epochs)
    except TrainingDiverged as err:
        summary.status, summary.stop_reason = "diverged", describe_divergence(err)
        return err
    except TimeLimitReached as err:  # saved as an interrupt saves it; the run then tests and writes its results
        stop.graceful = False
        path = save_last(trainer, run.run_dir / "checkpoints", run.ranks)
        summary.status, summary.checkpoint = "time_limit", str(path)
        summary.stop_reason = time_limit_reason(tcfg.max_time, trainer.train_seconds, err, path)
    except Interrupted as err:
        stop.graceful = False  # a second signal now aborts at once, even mid-save
        summary.status, summary.stop_reason = "interrupted", str(err)
        if err.aborted:  # mid-step: the state is torn, so the last good last.pt stays
            raise
        path = save_last(trainer, run.run_dir / "checkpoints", run.ranks)
        summary.checkpoint = str(path)
        raise Interrupted(err.signum, f"{err}: saved {path}; continue with resume={path}") from None
    except Exception as err:
        explained = nondeterministic_error(err, tcfg.deterministic)
        summary.status, summary.stop_reason = "failed", first_line(explained or err)
        if explained is not None:
            raise explained from err
        if tcfg.compile and type(err).__module__.startswith(("torch._dynamo", "torch._inductor")):
            raise ConfigError(f"trainer.compile=true failed ({first_line(err)}): "
                              "set trainer.compile=false.") from err
        raise
    finally:
        stop.graceful = False
        if trainer.progress is not None:
            trainer.progress.close()
        inside = trainer.step_in_epoch > 0  # stopped inside an epoch (interrupted, or diverged mid-epoch)
        summary.epochs_run, summary.stopped_epoch = trainer.epoch, trainer.epoch + (1 if inside else 0)
        summary.best_epoch, summary.best_value = stopper.best_epoch, stopper.best
        summary.train_seconds = round(trainer.train_seconds, 3)  # the whole run, every segment
        summary.segment_seconds = round(time.perf_counter() - start, 3)
        summary.profile = trainer.profiler.finish(run.run_dir)  # trainer.profiler: this segment's
        if summary.status not in ("completed", "early_stopped", "time_limit", "diverged"):  # no test follows
            write_summary(run.run_dir, summary, main=run.ranks.is_main)
    return None


def _test_best(run: _Run, exp: Experiment, trainer: Trainer, summary: RunSummary,
               diverged: TrainingDiverged | None) -> None:
    """The test split, touched once at the end with the best epoch's weights, however training
    ended; a run that diverged before any good epoch has nothing to test."""
    restored = run.cfg.trainer.early_stopping.restore_best_weights and trainer.restore_best()
    if diverged is not None and not restored:
        return
    summary.test_weights = (f"best epoch {trainer.stopper.best_epoch}" if restored else
                            f"after batch {trainer.step_in_epoch} of epoch {trainer.epoch + 1}" if trainer.step_in_epoch
                            else f"last epoch {trainer.epoch}")  # inside an epoch: trainer.max_time ran out
    averaging = trainer.averaging
    if not restored and averaging is not None and averaging.evaluated:  # the average, not that step's weights
        summary.test_weights = averaging.label()
    try:
        _test(trainer, exp.data, exp.batches[2], summary, run.run_dir)
    except BaseException as err:  # a signal (which aborts at once now) or a failure: say so
        stopped = isinstance(err, (Interrupted, KeyboardInterrupt))
        summary.stop_reason = (f"training {summary.status} ({summary.stop_reason}), then the test evaluation "
                               f"{'was stopped' if stopped else 'failed'}: {first_line(err)}")
        summary.status = "interrupted" if stopped else "failed"
        write_summary(run.run_dir, summary, main=run.ranks.is_main)
        raise


def _end(run: _Run, summary: RunSummary, diverged: TrainingDiverged | None) -> dict[str, Any]:
    """Write the tested run's summary and print its results, then end as the run did: a
    divergence, a signal after the last step and a summary the disk refused are raised."""
    late = run.stop.signum  # a signal after the last step: the run is done; its exit code still says so
    if late is not None and diverged is None:
        summary.signal = signal_name(late)
    summary.finished_at = _now()
    unsaved = None
    try:
        write_summary(run.run_dir, summary, main=run.ranks.is_main)
    except OSError as err:  # a full or read-only disk: the error to end with, once the results are printed
        unsaved = results_not_saved(run.run_dir / "summary.json", err)
    # The test result is the run's last line (report_end), after the files it wrote.
    log.info("%s after %d epoch%s (%s)%s", summary.status, summary.epochs_run, "" if summary.epochs_run == 1 else "s",
             summary.stop_reason,
             "" if summary.test else "; not tested")
    if run.ranks.is_main and (diverged is None or unsaved is not None):
        print_results(summary.to_dict())  # the results reach the console even when the disk cannot take them
        print_report(summary.report)
    if unsaved is not None:
        raise unsaved
    if diverged is not None:
        raise diverged
    if late is not None:
        raise Interrupted(late, f"{signal_name(late)} arrived after the last training step: the run "
                                f"{summary.status} and wrote its results")
    return summary.to_dict()


def _test(trainer: Trainer, data: DataSplits, batches: Any, summary: RunSummary, run_dir: Path) -> None:
    """Evaluate the test split once into ``summary.test``, write ``predictions.csv`` and the
    report (each rank evaluates its contiguous part; rank 0 writes them all, in order)."""
    outputs: list[torch.Tensor] = []
    summary.test = trainer.evaluate(batches, outputs=outputs)
    averaging = trainer.averaging
    if averaging is not None:
        if not averaging.evaluate_averaged and averaging.active:  # the averaged weights at the end, beside
            summary.test_averaged = trainer.evaluate(batches, model=averaging.module)
        summary.averaging = averaging.describe()
        if (note := averaging.nothing_averaged()) is not None:
            summary.warnings.append(note)
            log.warning("warning: %s.", note)
    task = trainer.objective
    if task.writes_predictions:  # supervised: the outputs predict y
        gathered = write_test_predictions(run_dir / "predictions.csv", outputs, data, trainer.ranks)
        if gathered is not None:  # rank 0
            summary.report = write_report(run_dir, gathered, data, data.x_test)
    summary.test.update(task.after_test(trainer, data, batches, outputs))  # task=: its own metrics and files


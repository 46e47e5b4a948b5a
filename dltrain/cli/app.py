"""The command line: Hydra entry point and the boundary where errors become one line.

Config errors (unknown key, wrong type, unknown option, value out of range) and any other
:class:`~dltrain.errors.UserError` are printed as ``dltrain: error: ...`` with exit code 2
(3 for a diverged run) and no traceback; ``HYDRA_FULL_ERROR=1`` shows the full one.
Anything else is a bug and keeps its traceback.

In a sweep (``dltrain -m``) a job that fails is recorded in its own ``summary.json`` and
the sweep goes on; at the end the sweep is summarised (``dltrain.report.sweep``) and the exit code
is non-zero if any job failed. A signal stops the whole sweep.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from dltrain.cli.help import help_requested, print_help
from dltrain.cli.repeats import expand_repeats, refuse_repeats_in_a_single_run
from dltrain.config.compose import with_user_configs_first
from dltrain.config.conflicts import check_conflicts
from dltrain.config.describe import describe_config_error, name_the_file
from dltrain.config.describe import one_line as _one_line
from dltrain.config.hydra_job import in_sweep
from dltrain.config.search_path import config_dir
from dltrain.config.suggest import override_key
from dltrain.config.validation import CONFIG_NAME, validate, validate_once
from dltrain.errors import ConfigError, TrainingDiverged, UserError
from dltrain.files import (
    claim_new_dir,
    ensure_new_run_dir,
    ensure_new_sweep_dir,
    hydra_file_names,
    own_checkpoint,
)
from dltrain.messages import (
    describe_disk_error,
    describe_divergence,
    run_dir_error,
    say_once_when_unwritable,
)
from dltrain.report.summary import SUCCESS, RunSummary, read_summary, write_summary
from dltrain.training.callbacks import infer_mode
from dltrain.training.distributed import environment
from dltrain.training.signals import Interrupted


@hydra.main(version_base="1.3", config_path=config_dir(), config_name=CONFIG_NAME)
def _train_app(cfg: DictConfig) -> float | None:
    if not in_sweep():
        return _train_job(cfg)
    from dltrain.cli.sweep_signals import worker_job

    try:
        with worker_job(Path(HydraConfig.get().runtime.output_dir)):
            return _train_job(cfg)
    except Interrupted as err:  # in a worker process of a stopped sweep: before the job began, or just after
        raise SweepStopped(err) from err


def _train_job(cfg: DictConfig) -> float | None:
    sweeping = in_sweep()
    try:
        # Each job of a sweep is checked here, before torch is imported; a single run was
        # checked by RunStartChecks already, and train() checks only what was not checked.
        _validate_naming_the_file(cfg)
        from dltrain.training.run import train

        summary = train(cfg)
    except Interrupted as err:
        if sweeping:  # Hydra records a job's Exception and goes on; a signal must stop the sweep
            raise SweepStopped(err) from err
        exit_with(err)
    except Exception as err:
        if sweeping:
            return _job_failed(err)
        # A user error is reported here rather than re-raised through Hydra, which would
        # print its own "Error executing job" line first.
        if describe_error(err) is None:
            raise
        exit_with(err)
    # The value a sweeper (optuna) optimises; a job without one counts as a failed trial.
    return summary.get("best_value") if summary.get("status") in SUCCESS else None


def _validate_naming_the_file(cfg: DictConfig) -> None:
    """:func:`validate_once` on a job's config, its one line led by the user's file that set the
    value at fault (as for a single run).

    Raises:
        ConfigError: an invalid config.
    """
    try:
        validate_once(cfg)
    except ConfigError as err:
        raise ConfigError(name_the_file(err, DictConfig({"hydra": HydraConfig.get()}))) from err  # where it was set


class SweepStopped(BaseException):
    """A signal stopped a job of a sweep: the sweep stops too (Hydra's launchers record a
    job's ``Exception`` and start the next job, so this one is not an ``Exception``)."""

    def __init__(self, interrupted: Interrupted) -> None:
        super().__init__(str(interrupted))
        self.interrupted = interrupted

    def __reduce__(self) -> tuple[Any, ...]:  # crosses from a worker process to the sweep
        return type(self), (self.interrupted,)


def _job_failed(err: Exception) -> None:
    """Record a failed job of a sweep and let the sweep go on: one line on stderr (with the
    traceback for a bug), and the job's ``summary.json`` says ``failed`` (or ``diverged``)
    with the message. Returns nothing, which a sweeper reads as a failed trial."""
    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    message = describe_error(err)
    bug = message is None
    if bug or _full_error:  # a bug keeps its traceback, in a sweep too
        traceback.print_exception(err)
    message = (message or f"{type(err).__name__}: {_one_line(str(err))}").rstrip(".")
    written = read_summary(job_dir)
    status = written.status if written is not None and written.status in ("failed", "diverged") else "failed"
    if environment().rank:  # a job of several ranks: rank 0 writes its summary
        print(f"dltrain: error: job {hc.job.num} rank {environment().rank} {status}: {message}.", file=sys.stderr)
        return None
    if not (job_dir / "summary.json").exists():  # failed before train() wrote anything (e.g. a value out of range)
        write_summary(job_dir, RunSummary.job_failed(message))
    elif bug and written is not None and written.status == "failed":
        written.stop_reason = message  # name the exception: its message alone rarely says what broke
        write_summary(job_dir, written)
    overrides = " ".join(hc.overrides.task)
    print(f"dltrain: error: job {hc.job.num} ({overrides}) {status}: {message}.", file=sys.stderr)
    return None


def _remove_unused_sweep_dir(folder: Path) -> None:
    """Remove a sweep directory this process created in which no job ran (Hydra's
    ``multirun.yaml`` at most)."""
    if _sweep.get("claimed") and folder.is_dir() and {p.name for p in folder.iterdir()} <= {"multirun.yaml"}:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


class SweepReport(Callback):
    """A sweep's start and end (``hydra.callbacks`` in train.yaml): the optimisation
    direction of ``hydra/sweeper=optuna`` follows the monitored metric, and the finished
    sweep is summarised (``sweep_summary.csv`` and ``.json``, ``best_overrides.yaml``,
    ``sweep.png``, ``sweep_curves.png``, a ranked table); ``trainer.repeats`` becomes a sweep over seeds."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            if environment().distributed:
                raise ConfigError("a sweep (-m) cannot run under torchrun, where every rank would launch every job: "
                                  "run the sweep without torchrun, and give each job several ranks with "
                                  "cluster=slurm_ddp (or hydra.launcher.tasks_per_node).")
            _check_sweep(config)
            expand_repeats(config)
            claimed = _claim_dir(config, "sweep")
            if not claimed:
                sweep_dir = Path(str(config.hydra.sweep.dir))
                ensure_new_sweep_dir(sweep_dir)
                try:  # here rather than in Hydra's sweeper, so a file in the way or a read-only disk is one line
                    sweep_dir.mkdir(parents=True, exist_ok=True)
                except OSError as err:
                    raise run_dir_error("hydra.sweep.dir", sweep_dir, err) from err
        except UserError as err:
            exit_with(err)  # SystemExit: Hydra turns exceptions raised in callbacks into warnings
        if claimed:
            # Each job's config is composed again from the overrides: they carry the directory.
            quoted = str(config.hydra.sweep.dir).replace("\\", "\\\\").replace("'", "\\'")
            with read_write(config.hydra.overrides):
                config.hydra.overrides.hydra.append(f"hydra.sweep.dir='{quoted}'")
        _sweep.update(dir=Path(str(config.hydra.sweep.dir)), summarized=False, exit_code=0, claimed=claimed)
        _set_sweep_direction(config)
        from dltrain.loggers import sweep_started

        sweep_started(config.logger, _sweep["dir"])  # logger=mlflow: the parent run of the jobs
        from dltrain.report.sweep_progress import SweepProgress

        # Kept on the callback, which Hydra hands (pickled) to a launcher's worker processes too.
        self.progress = SweepProgress.of(config)
        from dltrain.cli.sweep_signals import SweepSignals

        # Jobs in worker processes (joblib) stop after their step on a signal, as jobs in this one do.
        _sweep["signals"] = SweepSignals(SweepStopped).install()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A job of the sweep starts: which of how many, and about how long the rest will take."""
        if getattr(self, "progress", None) is not None:
            self.progress.job_started(config)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if getattr(self, "progress", None) is not None:
            self.progress.job_ended()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _summarize_sweep()
        from dltrain.loggers import sweep_ended

        sweep_ended(config.logger, _sweep["dir"], failed=bool(_sweep.get("failed")))


#: The sweep this process runs: its directory, whether it was summarised, its exit code.
_sweep: dict[str, Any] = {"dir": None, "summarized": False, "exit_code": 0, "claimed": False}


def _check_sweep(config: DictConfig) -> None:
    """A sweep's summary reads every job's ``.hydra`` folder.

    Raises:
        ConfigError: ``hydra.output_subdir`` is null.
    """
    if config.hydra.output_subdir is None:
        raise ConfigError("hydra.output_subdir=null: a sweep's summary reads each job's .hydra folder, "
                          "so keep it (remove the override).")


def _claim_dir(config: DictConfig, mode: str) -> bool:
    """Create ``hydra.<mode>.dir`` now (``mode`` is ``run`` or ``sweep``), or the first free
    ``<dir>_2``, ``<dir>_3``, ... when a run started in the same second has it, so two runs
    never share a directory. A directory given on the command line is left to the user.
    Returns whether it claimed one."""
    key = f"hydra.{mode}.dir"
    if any(override_key(o) == key for o in config.hydra.overrides.hydra):
        return False
    node = config.hydra[mode]
    claimed = claim_new_dir(str(node.dir))
    with read_write(node):
        node.dir = claimed
    return True


def _set_sweep_direction(config: DictConfig) -> None:
    """``hydra.sweeper.direction`` of a sweeper that has one (optuna) from the monitored
    metric's mode, unless the command line sets it."""
    sweeper = config.hydra.sweeper
    if "direction" not in sweeper:
        return
    if any(override_key(o) == "hydra.sweeper.direction" for o in config.hydra.overrides.hydra):
        return
    es = config.trainer.early_stopping
    mode = infer_mode(es.monitor) if es.mode == "auto" else es.mode
    with read_write(sweeper), open_dict(sweeper):
        sweeper.direction = "maximize" if mode == "max" else "minimize"


def _summarize_sweep(failing: bool = False) -> None:
    """Write and print the summary of this process's sweep (once), keeping its exit code.
    A failure here is reported and never hides the jobs' own results. ``failing``: the
    sweep broke off with an error of its own."""
    if _sweep.get("signals") is not None:  # the jobs are over: a signal now acts as it did before the sweep
        _sweep.pop("signals").uninstall()
    if _sweep["dir"] is None or _sweep["summarized"]:
        return
    _sweep["summarized"] = True
    try:
        from dltrain.report.sweep import collect_jobs, summarize_sweep

        if not collect_jobs(_sweep["dir"]):
            if failing:  # stopped before its first job (a value Hydra could not compose): leave no trace
                _remove_unused_sweep_dir(_sweep["dir"])
            else:
                print(f"dltrain: error: no job directories in {_sweep['dir']}: nothing to summarise.",
                      file=sys.stderr)
                _sweep["exit_code"] = 2
            return
        summary = summarize_sweep(_sweep["dir"])
    except Exception as err:
        traceback.print_exception(err)
        print(f"dltrain: error: could not summarise the sweep in {_sweep['dir']}: {_one_line(str(err))}.",
              file=sys.stderr)
        _sweep["exit_code"] = 2
        return
    _sweep["exit_code"] = summary.exit_code
    if summary.failed:
        jobs = ", ".join(str(row["job"]) for row in summary.failed)
        _sweep["failed"] = (f"{len(summary.failed)} of {len(summary.rows)} jobs failed (job {jobs}): "
                            f"see {_sweep['dir'] / 'sweep_summary.csv'}")


class RunStartChecks(Callback):
    """Checks made before Hydra creates the run directory (``hydra.callbacks`` in train.yaml):
    an invalid config or a directory that already holds a run stops here, so neither
    leaves a half-made run directory behind nor touches an old one."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self.check(config)
            if environment().distributed:
                _agree_on_run_dir(config)
            else:
                _claim_run_dir(config)
        except Exception as err:
            if describe_error(err) is None:
                if not environment().distributed:
                    raise
                # Hydra would turn it into a warning, and each rank would go on in a directory
                # of its own: a bug here ends the rank.
                traceback.print_exception(err)
                sys.exit(1)
            exit_with(err)  # SystemExit: Hydra turns exceptions raised in callbacks into warnings

    def check(self, config: DictConfig) -> None:
        """The config's checks, before any directory is claimed (a command of its own adds its
        checks here, so the config is validated once).

        Raises:
            ConfigError: an invalid config.
        """
        try:
            validate(config)
        except ConfigError as err:  # a value set in a file of the user's: the line names it
            raise ConfigError(name_the_file(err, config)) from err
        check_conflicts(config)  # keys that cannot go together, before the run directory is made
        refuse_repeats_in_a_single_run(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """The job's log files are open now: one on a full disk says so once, not with a
        traceback for every record (unless ``HYDRA_FULL_ERROR=1``)."""
        if not _full_error:
            for handler in logging.getLogger().handlers:
                say_once_when_unwritable(handler)


#: The run directory this process claimed (a single run), for messages after Hydra's job ends.
_run_dir: str | None = None


def _claim_run_dir(config: DictConfig) -> None:
    """Claim a new run directory (or, with ``resume=auto``, keep one whose run is continued in place).
    Hydra has written nothing into it yet, so a ``.hydra`` folder found there is an earlier run's."""
    try:
        _claim_dir(config, "run")
        if own_checkpoint(config.resume, config.hydra.run.dir) is None:
            ensure_new_run_dir(config.hydra.run.dir, "choose another directory with hydra.run.dir=PATH",
                               resume=config.resume, hydra_files=hydra_file_names(config.hydra))
        # Created here rather than by Hydra, so a file in the way or a read-only disk is one line.
        Path(config.hydra.run.dir).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise run_dir_error("hydra.run.dir", config.hydra.run.dir, err) from err
    global _run_dir
    _run_dir = str(config.hydra.run.dir)


def _agree_on_run_dir(config: DictConfig) -> None:
    """Under torchrun every rank composes the config, each with its own clock: rank 0
    claims the run directory and the others take it (and leave the .hydra folder to it)."""
    from dltrain.training.distributed import init

    ranks = init(config.device)
    outcome: str | None = None
    if ranks.is_main:
        try:
            _claim_run_dir(config)
            outcome = str(config.hydra.run.dir)
        except BaseException:
            ranks.broadcast(None)  # the others wait for the outcome, whatever it is
            raise
    run_dir = ranks.broadcast(outcome)
    if run_dir is None:
        raise ConfigError("rank 0 could not claim the run directory: its error above says what to change")
    with read_write(config.hydra):
        config.hydra.run.dir = run_dir
        if not ranks.is_main:
            config.hydra.output_subdir = None


def main() -> None:
    """Console script ``dltrain``."""
    argv = sys.argv[1:]
    if help_requested(argv):  # served here: Hydra's help copies its config store once per group
        run_with_error_boundary(lambda: with_user_configs_first(argv, lambda: print_help(argv, _train_app,
                                                                                          config_dir())))
        return
    run_with_error_boundary(lambda: with_user_configs_first(argv, _train_app))


#: Whether the user asked for full tracebacks (HYDRA_FULL_ERROR=1 before we set it).
_full_error = False
#: The arguments of this process's command line while it runs, for messages that quote them.
_command_line: list[str] = []
#: The command the user ran (``dltrain``, ``dltrain-lr-find``): the first word of its error lines.
_tool = "dltrain"


def run_with_error_boundary(app: Any, tool: str = "dltrain") -> None:
    """Run ``app`` (a Hydra entry point) with every user error printed as one line that begins
    ``{tool}: error:`` (the command the user ran), and the exit code it carries."""
    global _full_error, _command_line, _tool
    _full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    _command_line = sys.argv[1:]
    _tool = tool
    # Make Hydra re-raise instead of printing its own multi-line report, so every error
    # passes through describe_error() below.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app()
    except SweepStopped as stopped:  # a job of a sweep was stopped by a signal
        _summarize_sweep()
        exit_with(stopped.interrupted)
    except KeyboardInterrupt:
        _summarize_sweep()
        print(f"{_tool}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Interrupted as err:  # a stop outside a job's own boundary: its one line and exit code
        _summarize_sweep(failing=True)
        exit_with(err)
    except Exception as err:
        _summarize_sweep(failing=True)  # a sweep that broke off still gets the summary of its jobs
        if describe_error(err) is None:
            if _sweep["exit_code"]:  # e.g. a sweeper giving up because every job failed
                print(f"dltrain: error: {_sweep.get('failed', 'the sweep failed')}; then the sweeper stopped: "
                      f"{type(err).__name__}: {_one_line(str(err))}.", file=sys.stderr)
                sys.exit(_sweep["exit_code"])
            raise
        exit_with(err)
    finally:
        _command_line, _tool = [], "dltrain"
        if not _full_error:
            os.environ.pop("HYDRA_FULL_ERROR", None)
    _summarize_sweep()
    if _sweep["exit_code"]:
        print(f"dltrain: error: {_sweep.get('failed', 'the sweep failed')}.", file=sys.stderr)
        sys.exit(_sweep["exit_code"])


def exit_with(err: BaseException) -> None:
    """Print the one-line message for a user error (the traceback too with
    HYDRA_FULL_ERROR=1) and exit with the error's code."""
    if _full_error:
        traceback.print_exception(err)
    kind = "" if isinstance(err, Interrupted) else " error:"  # a stop asked for is no error
    text = describe_error(err)
    line = f"{_tool}:{kind} {text if text.endswith('?') else text.rstrip('.') + '.'}"  # no "?." after a question
    rank = environment().rank
    if rank:  # rank 0 speaks for the run (the ranks agree on stops; it names a rank that failed)
        logging.getLogger("dltrain").warning("rank %d: %s", rank, line)
    else:
        print(line, file=sys.stderr)
    sys.exit(getattr(err, "exit_code", 2))


def describe_error(err: BaseException) -> str | None:
    """One line for a user error (naming the key and what to do) or a stop signal, None for a bug."""
    if isinstance(err, TrainingDiverged):
        return describe_divergence(err)
    if isinstance(err, (UserError, Interrupted)):
        return _one_line(str(err))
    if isinstance(err, ValueError) and str(err).startswith("Only one of --run, --multirun"):
        return _one_line(str(err))  # Hydra's own check of its flags, e.g. -m with --cfg
    if (described := describe_config_error(err, _command_line)) is not None:
        return described
    if isinstance(err, OSError):  # a full or read-only disk: the user's to fix, not a bug
        return describe_disk_error(err, _hydra_run_dir())
    return None


def _hydra_run_dir() -> str | None:
    """The directory of the run Hydra started (it may be the one that cannot be written):
    Hydra forgets it when its job ends, so :class:`RunStartChecks` keeps it."""
    try:
        return str(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not in a job now: the run's (None for dltrain-eval, dltrain-predict)
        return _run_dir

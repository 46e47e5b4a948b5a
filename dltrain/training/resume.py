"""``resume=``: which checkpoint to continue from, and whether this run may continue it.

A resumed run is the same experiment carried on: it takes the checkpoint's config, with
the keys given on the command line on top. A few of those may differ from the checkpoint
because they do not change what is being trained (more epochs, more patience, another
device, a moved data folder); every difference is listed in the log, and any other one is
refused before anything is built. A run with nothing left to train (it completed, or
stopped early) is not trained again: it ends ``already_finished``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from dltrain.build import absolute_task_paths, make_stopper, watched_mode
from dltrain.config.hydra_job import command_line_keys
from dltrain.config.loggers import logger_node, upgraded, without_network
from dltrain.config.schemas import GROUP_SCHEMAS, ONE_OPTION_GROUPS, TrainConfig
from dltrain.config.trust import check_stored_config, named_target
from dltrain.config.validation import group_node, validate
from dltrain.errors import ConfigError, UserError, first_line
from dltrain.files import copy_atomically, remove_stale_tmpfiles
from dltrain.report.summary import RunSummary, read_summary, write_summary
from dltrain.tasks.base import BadTaskState
from dltrain.training.budget import parse_max_time
from dltrain.training.callbacks import EarlyStopping
from dltrain.training.checkpoint import load_checkpoint, seconds_so_far
from dltrain.training.distributed import Ranks
from dltrain.training.optimizer_state import BadOptimizerState

if TYPE_CHECKING:
    from dltrain.loggers import RunLogger
    from dltrain.report.tables import MetricsCSV
    from dltrain.training.trainer import Trainer

log = logging.getLogger("dltrain")

#: Where ``resume=auto`` looks: where runs are written by default.
AUTO_ROOT = Path("outputs")

#: Keys that steer how a run is carried out, not what it trains: a resume may change them,
#: and ``resume=auto`` ignores them when it looks for a checkpoint of this config.
RUN_CONTROL = (
    "resume", "device", "trainer.max_epochs", "trainer.max_steps", "trainer.max_time", "trainer.limit_val_batches",
    "trainer.val_every_n_epochs", "trainer.log_every_n_steps", "trainer.eval_batch_size",
    "trainer.compile", "trainer.channels_last", "trainer.cudnn_benchmark", "trainer.deterministic",
    "trainer.sync_batchnorm", "trainer.profiler", "trainer.profiler_steps",
    "trainer.checkpoint.",
    "trainer.early_stopping.patience", "trainer.early_stopping.enabled", "trainer.early_stopping.min_delta",
    "trainer.early_stopping.baseline", "trainer.early_stopping.check_finite",
    "regularization.evaluate_averaged", "data.num_workers", "logger.", "trust_code",
)
#: Keys a resumed run may change (a key, or a prefix ending in a dot): the run-control keys,
#: and where the same data lives now.
CHANGEABLE = (*RUN_CONTROL, "data.root", "data.path", "data.download", "data.in_memory")

#: Keys added to an option after checkpoints were written without them: a checkpoint that
#: lacks one resumes with the schema default. ``init.gain``: the init ran when the
#: checkpoint's run started, and a resume never repeats it.
ADDED_KEYS = ("init.gain", "trainer.limit_train_batches", "trainer.overfit_batches", "trainer.accumulate_grad_batches",
              "regularization.ema_decay", "regularization.ema_warmup", "regularization.swa_start",
              "regularization.swa_lr", "regularization.swa_anneal_epochs", "regularization.evaluate_averaged",
              "task.name",  # task.name: a checkpoint from before task= trained task=supervised
              # model=mlp took the start-weights keys later: an older mlp checkpoint has none of them
              "model.weights", "model.freeze", "model.freeze_epochs", "model.backbone_lr")

#: Keys that decide the model's layers and weights' shapes.
ARCHITECTURE = ("model.", "regularization.dropout", "regularization.batch_norm", "loss.", "data.")


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, checkpoint's value, this run's value)`` for every key that differs."""
    old, new = flatten(saved), flatten(current)
    missing = object()
    return [(key, old.get(key, missing), new.get(key, missing)) for key in sorted(set(old) | set(new))
            if old.get(key, missing) != new.get(key, missing)]


def _matches(key: str, keys: tuple[str, ...]) -> bool:
    return any(key == c or (c.endswith(".") and key.startswith(c)) for c in keys)


def _changeable(key: str) -> bool:
    return _matches(key, CHANGEABLE)


def _added_later(key: str, old: Any, new: Any, current: dict[str, Any]) -> bool:
    """Whether ``key`` is absent from the checkpoint's config and this run has it at its
    schema default: no change to the checkpoint's run. A key of a plain node
    (``trainer.*``, ``regularization.augment_params.mixup.alpha``) at any depth; a key of a
    group's option only when it is one of :data:`ADDED_KEYS`."""
    if type(old) is not object:  # differences() marks an absent key with a bare object()
        return False
    group, _, leaf = key.partition(".")
    node = current.get(group)
    schema = GROUP_SCHEMAS.get(group, {}).get(node.get("name")) if isinstance(node, dict) else None
    if schema is not None:
        return key in ADDED_KEYS and "." not in leaf and _default(schema, leaf.split(".")) == new
    schema = typing.get_type_hints(TrainConfig).get(group)
    return dataclasses.is_dataclass(schema) and _default(schema, leaf.split(".")) == new


def _default(schema: Any, path: list[str]) -> Any:
    """The default of the field ``path`` names in the dataclass ``schema`` (through nested
    dataclass fields); a bare object() when it has none."""
    field = {f.name: f for f in dataclasses.fields(schema)}.get(path[0])
    if field is None:
        return object()
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return object()
    if len(path) == 1:
        return value
    return _default(type(value), path[1:]) if dataclasses.is_dataclass(value) else object()


def explicit_keys(cfg: DictConfig) -> set[str]:
    """The keys this run sets itself. Under Hydra: the command line's overrides, where a
    group's option (``data=csv``) counts as its ``name`` key (``data.name``). From Python:
    the keys whose values differ from the defaults of the same options, those ``compose``'s
    overrides set (``trainer.max_time=null`` too), and the ``name`` of each group whose
    option differs from the default one."""
    keys = command_line_keys()
    if keys is not None:
        return keys
    from dltrain.config.compose import compose, given_keys

    current = OmegaConf.to_container(cfg, resolve=True)
    default = OmegaConf.to_container(compose([], check=False), resolve=True)
    same_options = OmegaConf.to_container(compose([f"{g}={current[g]['name']}" for g in ONE_OPTION_GROUPS],
                                                  check=False), resolve=True)  # a required key (data.path) reads "???"
    keys = {key for key, _, _ in differences(same_options, current)} | given_keys(cfg, flatten(current))
    return keys | {f"{g}.name" for g in ONE_OPTION_GROUPS if current[g]["name"] != default[g]["name"]}


def resumed_config(cfg: DictConfig, saved: dict[str, Any], explicit: set[str]) -> DictConfig:
    """The checkpoint's config with this run's own keys (``explicit``) applied on top, so
    ``dltrain resume=... trainer.max_epochs=50`` continues the run as it was configured
    without repeating its command line.

    Raises:
        ConfigError: the checkpoint's config has an option or key this version lacks, or a
            key given for this run does not exist in the checkpoint's option.
    """
    if "experiment" in explicit:  # a preset sets many keys at once: compare the whole config
        return cfg
    merged = copy.deepcopy(cfg)
    keep = set(explicit)  # keys (or whole nodes) whose value this run decides
    if not any(key == "logger" or key.startswith("logger.") for key in explicit):
        stored, replaced = without_network(saved.get("logger"))  # a destination is named on this command line
        for line in replaced:
            log.warning("warning: %s.", line)
        merged.logger = logger_node(stored)  # the checkpoint's loggers, unless this run names its own
    keep.add("logger")  # a node of its loggers, never merged key by key
    for group in ONE_OPTION_GROUPS:
        node = saved.get(group)
        if not isinstance(node, dict) or node.get("name") == merged[group].name:
            continue
        if f"{group}.name" in explicit:  # another option asked for: it stands, and is refused below
            keep.add(group)
            continue
        schema = GROUP_SCHEMAS[group].get(node.get("name"))
        if schema is None:
            raise ConfigError(f"the checkpoint's {group}={node.get('name')} is not an option of this dltrain "
                              "version: train a new run")
        merged[group] = group_node(schema, node)
        for key in sorted(k for k in explicit if k.startswith(group + ".")):
            _update(merged, key, OmegaConf.select(cfg, key), f"{key} is not a key of the checkpoint's "
                                                              f"{group}={node.get('name')}")
    for group in ONE_OPTION_GROUPS:  # model=custom: the checkpoint's +model.KEY values are its module's own
        if getattr(GROUP_SCHEMAS[group].get(merged[group].name), "ALLOWS_EXTRA_KEYS", False):
            OmegaConf.set_struct(merged[group], False)
    for key, value in flatten(saved).items():
        if not any(key == k or key.startswith(k + ".") for k in keep):
            _update(merged, key, value, f"the checkpoint's {key}={value} does not fit this dltrain version's config")
    return merged


def _update(cfg: DictConfig, key: str, value: Any, problem: str) -> None:
    try:
        OmegaConf.update(cfg, key, value, merge=False)
    except Exception as err:  # noqa: BLE001 - a key or value the schema does not know
        raise ConfigError(f"{problem} ({str(err).splitlines()[0]}): train a new run") from err


def _show(value: Any) -> str:
    return "(absent)" if type(value) is object else str(value)


def check_config(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The differences this run makes to the checkpoint's config, as ``key: old -> new`` lines.

    Raises:
        ConfigError: a key differs that a resume may not change; architecture keys first.
    """
    diffs = [d for d in differences(saved, current) if d[0] != "resume" and not _added_later(*d, current)]
    refused = [d for d in diffs if not _changeable(d[0])]
    if refused:
        arch = [d for d in refused if d[0].startswith(ARCHITECTURE)]
        listed = "; ".join(_describe_changes(arch or refused)[:4])
        why = ("the model's architecture and data must stay those the weights were trained with"
               if arch else "a resumed run continues the same experiment")
        raise ConfigError(f"resume={path}: {listed}: {why}; drop that override, or train a new run without "
                          f"resume= (only {_changeable_keys()} may change)")
    return [f"{k}: {_show(old)} -> {_show(new)}" for k, old, new in diffs]


def _changeable_keys() -> str:
    """The keys a resume may change, for a refusal: ``trainer.checkpoint.*`` for a prefix."""
    return ", ".join(key + "*" if key.endswith(".") else key for key in CHANGEABLE if key != "resume")


def _describe_changes(changes: list[tuple[str, Any, Any]]) -> list[str]:
    """``key=new (checkpoint: old)`` for each changed key; a group whose option changed
    (``model=mlp`` to ``model=cnn``) is named once by its option, not by each of its keys
    (most of which the other option lacks)."""
    groups = {key.removesuffix(".name"): (old, new) for key, old, new in changes
              if key.removesuffix(".name") in GROUP_SCHEMAS}
    described = [f"{g}={_show(old)} (checkpoint) vs {g}={_show(new)} (now)" for g, (old, new) in groups.items()]
    return described + [f"{k}={_show(new)} (checkpoint: {_show(old)})" for k, old, new in changes
                        if k.split(".", 1)[0] not in groups]


def _last_checkpoints(folder: Path) -> Iterator[Path]:
    """``last.pt`` files under ``folder``, newest first."""
    found = [p for p in folder.rglob("last.pt") if p.is_file()]
    yield from sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def find_checkpoint(spec: str, current: dict[str, Any], exact: bool = False) -> Path | None:
    """The checkpoint ``resume=spec`` names.

    Args:
        spec: a checkpoint file; a directory (its newest ``last.pt``, sub-folders included);
            or ``auto``: the newest ``last.pt`` under ``outputs/`` whose run had this config
            (up to the run-control keys: epochs, patience, device, checkpoints).
        current: this run's resolved config.
        exact: ``auto`` takes only a run of exactly this config (``resume`` aside): a job of a
            sweep never continues a sibling that differs from it in a run-control key
            (``trainer.max_epochs=10,20``), only the same job of an earlier sweep.

    Returns:
        The file, or None for ``auto`` when there is none yet (train from scratch).

    Raises:
        ConfigError: the file or directory does not exist, or the directory has no ``last.pt``.
    """
    if spec == "auto":
        if not AUTO_ROOT.is_dir():
            return None
        for path in _last_checkpoints(AUTO_ROOT):
            try:
                saved = upgraded(load_checkpoint(path).get("config", {}))
            except UserError as err:
                # An unreadable file is no candidate; said aloud, as it may hold the run meant to continue.
                log.warning("resume=auto passed over an unreadable checkpoint: %s", err)
                continue
            ignored = ("resume", "trust_code") if exact else RUN_CONTROL
            if not [d for d in differences(saved, current)
                    if not _matches(d[0], ignored) and not _added_later(*d, current)]:
                return path
        return None
    path = Path(spec).expanduser()
    if path.is_dir():
        newest = next(_last_checkpoints(path), None)
        if newest is None:
            raise ConfigError(f"resume={spec}: the directory holds no last.pt: pass a checkpoint file "
                              "(.../checkpoints/last.pt) or a run directory that has one.")
        return newest
    if not path.exists():
        raise ConfigError(f"resume={spec}: no such file or directory: pass a checkpoint (.../checkpoints/last.pt), "
                          "a run directory, or resume=auto.")
    return path


@dataclasses.dataclass
class Resume:
    """A checkpoint this run continues: its file, its training state, and the config to
    continue it with (the checkpoint's own, with this run's keys on top)."""

    path: Path
    state: dict[str, Any]
    cfg: DictConfig

    def stopper(self) -> EarlyStopping:
        """The checkpoint's early stopping under this run's settings (a larger patience, say)."""
        record = self.state.get("data")  # how large the checkpoint's validation split was
        stopper = make_stopper(self.cfg, not (isinstance(record, dict) and record.get("num_val") == 0))
        stopper.load_state_dict(self.state["early_stopping"])
        return stopper

    def nothing_left(self) -> str | None:
        """Why the checkpoint's run has nothing left to train under this config, or None."""
        stopper, epoch = self.stopper(), self.state["epoch"]
        max_epochs = 1 if self.cfg.trainer.fast_dev_run else self.cfg.trainer.max_epochs
        if stopper.should_stop:
            return f"it stopped early after epoch {epoch} ({stopper.stop_reason})"
        if epoch >= max_epochs and not self.state.get("partial_epoch"):
            return f"it completed {epoch} epochs and trainer.max_epochs={max_epochs}"
        max_steps = None if self.cfg.trainer.fast_dev_run else self.cfg.trainer.max_steps
        steps = int(self.state["global_step"])
        if max_steps is not None and steps >= max_steps and not self.state.get("partial_epoch"):
            return f"it took {self.state['global_step']} optimizer steps and trainer.max_steps={max_steps}"
        return None


def load_resume(cfg: DictConfig, ranks: Ranks, own: Path | None = None) -> Resume | None:
    """The checkpoint ``resume=`` names (``own``: the run directory's own, continued in place),
    loaded, with the config to continue it with (checked: see :func:`check_config`); None for
    ``resume=auto`` when no run of this config left one. Rank 0 picks the file; every rank
    reads it.

    Raises:
        ConfigError: no such checkpoint, one without a training state, or a config that may
            not continue it.
    """
    absolute_task_paths(cfg)  # as the checkpoint stores them (a relative task.scorer would differ from it)
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
    if found is None:
        log.info("resume=auto: no last.pt of this config under %s/ yet: training from scratch", AUTO_ROOT)
        return None
    for tmp in remove_stale_tmpfiles(found.parent) if ranks.is_main else ():
        log.info("removed %s, left by a checkpoint write that was killed", tmp)
    state = load_checkpoint(found)
    if "rng" not in state or "config" not in state:
        raise ConfigError(f"resume={found}: this checkpoint holds weights but not the training state a resume needs "
                          "(it was written by an older dltrain): train a new run.")
    # Before anything of the stored config is used: the trust comes from this run's own config alone.
    check_stored_config(found, state["config"], target=named_target(cfg.model), trust_code=cfg.trust_code,
                        naming="model=custom model._target_=")
    saved = upgraded(state["config"])  # a run written when the logger group held one logger too
    check_saved_groups(found, saved)
    merged = resumed_config(cfg, saved, explicit_keys(cfg))
    merged.trust_code = cfg.trust_code
    validate(merged)
    for line in check_config(found, saved, OmegaConf.to_container(merged, resolve=True)):
        log.info("resume: override %s", line)
    resume = Resume(found, state, merged)
    check_length(found, state, saved, merged, finished=resume.nothing_left() is not None)
    return resume


def check_saved_groups(path: Path, saved: dict[str, Any]) -> None:
    """Refuse a stored config whose one-option group (``task``, ``model``, ...) is not an option's
    keys (a list, a name this version has no option of): the file was changed after training.
    A group missing altogether was written before the group existed, and takes its default.

    Raises:
        ConfigError: naming the checkpoint and the group.
    """
    for group, options in ONE_OPTION_GROUPS.items():
        node = saved.get(group)
        if group in saved and not (isinstance(node, dict) and node.get("name") in options):
            raise ConfigError(f"resume={path}: its config's {group} ({node!r:.60}) is not an option of this dltrain "
                              f"version ({', '.join(options)}): the file was changed after training, or another "
                              "version wrote it; resume a checkpoint dltrain wrote, with that version.")


#: Schedules stepped per optimizer step over a length fixed when the run started.
SIZED_ON_THE_RUN = ("onecycle",)


def check_length(path: Path, state: dict[str, Any], saved: dict[str, Any], cfg: DictConfig, *,
                 finished: bool = False) -> None:
    """Refuse a resume whose length cannot continue the checkpoint's run.

    Args:
        finished: the checkpoint's run has nothing left to train for another reason (it
            completed or stopped early): its spent time is no error, the run is just done.

    Raises:
        ConfigError: ``trainer.max_time`` is spent already (nothing to train), or
            ``trainer.max_epochs`` / ``max_steps`` changed under a schedule sized on them
            (it would train on at its final learning rate).
    """
    max_time = parse_max_time(cfg.trainer.max_time)
    spent = seconds_so_far(state)
    if max_time is not None and spent >= max_time and not finished:
        raise ConfigError(f"resume={path}: nothing to train: the checkpoint's run trained {spent:.1f} s and "
                          f"trainer.max_time={cfg.trainer.max_time}: raise trainer.max_time (or set it to null)")
    if cfg.scheduler.name not in SIZED_ON_THE_RUN:
        return
    old = saved.get("trainer", {})
    for key in ("max_epochs", "max_steps"):
        if key in old and old[key] != cfg.trainer[key]:
            raise ConfigError(f"resume={path}: trainer.{key}={cfg.trainer[key]} (checkpoint: {old[key]}) changes "
                              f"the length scheduler={cfg.scheduler.name} was sized on: keep trainer.{key}="
                              f"{old[key]}, or start a new run without resume=")


def results_written(path: Path, ranks: Ranks) -> bool:
    """Whether the run of the checkpoint ``path`` wrote its results: its run directory's
    ``summary.json`` says it finished and holds its test metrics, and ``predictions.csv`` and
    ``curves.png`` (drawn after the summary) are there. A run killed after its last checkpoint
    lacks some of them (or its summary says the test was stopped). Rank 0 reads it; every rank
    gets the answer."""
    written = False
    if ranks.is_main:
        folder = path.parent.parent
        done = read_summary(folder)
        written = (done is not None and done.finished and bool(done.test)
                   and (folder / "predictions.csv").is_file() and (folder / "curves.png").is_file())
    return ranks.broadcast(written)


def already_finished(resume: Resume, run_dir: Path, why: str, ranks: Ranks) -> dict[str, Any]:
    """Resuming a finished run trains nothing: it says so, records it, and succeeds. A run
    continued in place (its own last.pt) keeps the summary it wrote when it finished."""
    log.info("resume=%s: nothing to train: %s. Raise trainer.max_epochs or trainer.max_steps (or the "
             "early-stopping patience) to train on.", resume.path, why)
    if resume.path.parent.parent.resolve() == run_dir.resolve():
        done = read_summary(run_dir)
        if done is not None and done.finished:
            return done.to_dict()
    stopper = resume.stopper()
    summary = RunSummary.already_finished(
        why, resumed_from=str(resume.path), epochs=int(resume.state["epoch"]), best_epoch=stopper.best_epoch,
        monitor=stopper.monitor, mode=watched_mode(stopper), best_value=stopper.best, world_size=ranks.world_size,
        run_dir=str(run_dir))
    if run_dir.is_dir():
        write_summary(run_dir, summary, main=ranks.is_main)
    return summary.to_dict()


def continue_run(trainer: Trainer, resume: Resume, run_dir: Path, main: bool, metrics_csv: MetricsCSV,
                 logger: RunLogger) -> None:
    """Load the resumed run's state into ``trainer``; on rank 0 (``main``) its history opens
    the new metrics.csv (and the logger's record), and its ``best.pt`` (when the best epoch
    came before the resume) is copied into ``run_dir``."""
    try:
        trainer.load_state_dict(resume.state)
    except RuntimeError as err:  # weights of another shape: other data behind data.path, say
        raise ConfigError(f"resume={resume.path}: the checkpoint's weights do not fit the model this config builds "
                          f"({first_line(err)}): point data.* at the data the run was trained on") from err
    except (BadTaskState, BadOptimizerState) as err:  # an optimizer's or the task's own entry, damaged or crafted
        raise ConfigError(f"resume={resume.path}: the checkpoint's {first_line(err)}: resume a checkpoint "
                          "dltrain wrote, or train a new run") from None
    if not main:
        return
    for row in trainer.history:  # the resumed run's metrics.csv holds the whole history
        metrics_csv.write(row)
        logger.log_epoch(row)
    best, target = resume.path.parent / "best.pt", run_dir / "checkpoints" / "best.pt"
    if trainer.stopper.best_epoch is not None and best.is_file() and best.resolve() != target.resolve():
        copy_atomically(best, target)
    partial = resume.state.get("partial_epoch")
    log.info("resumed from %s: %d epochs done%s", resume.path, trainer.epoch,
             f", epoch {trainer.epoch + 1} continues after batch {partial['step']}" if partial else "")

"""``dltrain-lr-find``: the learning-rate range test of :mod:`dltrain.training.lr_find` on
the config ``dltrain`` would compose from the same overrides.

Its own keys (``lr_find.start_lr``, ``lr_find.end_lr``, ``lr_find.num_steps``,
``lr_find.beta``) are taken off the command line here and checked against
:class:`LRFindOptions`; the rest go to Hydra, composed from ``conf/lr_find.yaml`` (which is
``conf/train.yaml`` with its own folder, ``lr_find/<date>/<time>/``), and checked as
``dltrain`` checks them, with the same one-line errors.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dltrain.cli.app import (
    RunStartChecks,
    describe_error,
    exit_with,
    run_with_error_boundary,
)
from dltrain.config.compose import with_user_configs_first
from dltrain.config.schemas import spec
from dltrain.config.search_path import USER_PROVIDER, config_dir
from dltrain.config.validation import CONFIG_NAME as TRAIN_CONFIG
from dltrain.config.validation import validate_once
from dltrain.config.value_types import check_value
from dltrain.errors import ConfigError
from dltrain.report.run_files import LR_FIND_FILES

log = logging.getLogger("dltrain")

#: The primary config of the command (``conf/lr_find.yaml``).
CONFIG_NAME = "lr_find"
PREFIX = "lr_find."


@dataclass
class LRFindOptions:
    """The range test's own keys (``lr_find.<key>=<value>``)."""

    start_lr: float = spec(1e-7, gt=0, help="the learning rate of the first step")
    end_lr: float = spec(10.0, gt=0, help="the learning rate of the last step")
    # 200: on the digits MLP with SGD 100 steps move the weights too little for the loss to fall
    # before it diverges (the suggestion lands late, at 1.3); 200 suggest 0.68 and 300 suggest 0.38,
    # both in the steep part of the loss's descent.
    num_steps: int = spec(200, ge=10, le=100_000, help="training steps from start_lr to end_lr")
    # lr_find()'s defaults, restated here so that --help and a config error import no torch:
    # dltrain.training.lr_find.BETA says why 0.8 (tests/test_lr_find_cli.py checks they agree).
    beta: float = spec(0.8, ge=0, lt=1, help="smoothing of the loss: an exponential moving average")


def split_options(argv: list[str]) -> tuple[LRFindOptions, list[str]]:
    """The range test's options from ``argv``'s ``lr_find.<key>=<value>`` arguments, and the
    other arguments (for Hydra).

    Raises:
        ConfigError: an unknown key, a value of the wrong type or out of range.
    """
    fields = {f.name: f for f in dataclasses.fields(LRFindOptions)}
    values: dict[str, Any] = {}
    rest = []
    for arg in argv:
        if not arg.startswith(PREFIX):
            rest.append(arg)
            continue
        key, sep, text = arg[len(PREFIX):].partition("=")
        if key not in fields:
            raise ConfigError(f"{PREFIX}{key} is not a key of dltrain-lr-find (its keys: "
                              f"{', '.join(PREFIX + name for name in fields)}).")
        if not sep:
            raise ConfigError(f"{arg} has no value: give it as {PREFIX}{key}=VALUE.")
        values[key] = _parse(PREFIX + key, text, fields[key].type)
        check_value(PREFIX + key, values[key], dict(fields[key].metadata))
    return LRFindOptions(**values), rest


def _parse(key: str, text: str, kind: str) -> int | float:
    """``text`` read as the YAML number a key of type ``kind`` (``int`` or ``float``) takes."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if kind == "float" and isinstance(value, str):  # YAML 1.1 reads 1e-7 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    number = (int,) if kind == "int" else (int, float)
    if isinstance(value, bool) or not isinstance(value, number):
        raise ConfigError(f"{key}={text} is not valid: expected {'an integer' if kind == 'int' else 'a number'}.")
    return float(value) if kind == "float" else value


#: The options of this process's command line (Hydra calls the app without arguments).
_options = LRFindOptions()


class LRFindStartChecks(RunStartChecks):
    """dltrain's start checks (``hydra.callbacks.checks`` in ``conf/lr_find.yaml``) and the
    range test's own, before its folder is claimed: a test refused (``optim=lbfgs``) leaves
    no folder behind."""

    def check(self, config: DictConfig) -> None:
        """dltrain's checks of the config, then the range test's settings.

        Raises:
            ConfigError: an invalid config, or a range test that cannot run.
        """
        super().check(config)
        from dltrain.training.lr_find import check_settings

        check_settings(config, **dataclasses.asdict(_options))


@hydra.main(version_base="1.3", config_path=config_dir(), config_name=CONFIG_NAME)
def _lr_find_app(cfg: DictConfig) -> None:
    try:
        validate_once(cfg)
        from dltrain.report.lr_find import write_lr_find
        from dltrain.training.lr_find import format_lr, lr_find

        options = dataclasses.asdict(_options)
        log.info("lr_find: %d steps from lr %s to %s on model=%s, data=%s, optim=%s (seed %d)", _options.num_steps,
                 format_lr(_options.start_lr), format_lr(_options.end_lr), cfg.model.name, cfg.data.name,
                 cfg.optim.name, cfg.seed)
        finding = lr_find(cfg, **options)
        hc = HydraConfig.get()
        overrides = list(hc.overrides.task)
        command = finding.command(overrides, *_config_source(hc))
        folder = Path(hc.runtime.output_dir)
        written = write_lr_find(folder, finding, overrides, command)
    except Exception as err:
        if describe_error(err) is None:
            raise
        exit_with(err)
    if finding.stopped:
        log.info("stopped after %d steps: %s", len(finding.lrs), finding.stopped)
    log.info("suggested %s=%s (%s)", finding.key, format_lr(finding.suggestion), finding.reason)
    for warning in finding.warnings:
        log.warning("warning: %s.", warning)
    log.info("wrote %s/: %s", _shown(folder), ", ".join(written))
    log.info("next: %s", command)


def _config_source(hc: DictConfig) -> tuple[str | None, str | None]:
    """The ``--config-dir`` and ``--config-name`` that ``dltrain`` takes to train what the finder
    tested (None for dltrain's own): the user's folder among the job's config sources, as a
    sweep's re-run command reads it (:func:`dltrain.report.rerun.config_source`)."""
    folder = next((s.path for s in hc.runtime.config_sources if s.provider == USER_PROVIDER and s.schema == "file"),
                  None)
    name = hc.job.config_name
    return folder, None if name in (CONFIG_NAME, TRAIN_CONFIG) else name


def _shown(folder: Path) -> str:
    """``folder`` as the user named it: relative to the working directory when inside it."""
    try:
        return str(folder.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(folder)


def main(argv: list[str] | None = None) -> None:
    """Console script ``dltrain-lr-find`` (``argv``: the arguments, default the command line's)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--help" in argv or "-h" in argv:
        print(_usage())
        return

    def app() -> None:
        global _options
        if {"-m", "--multirun"} & set(argv):
            raise ConfigError("dltrain-lr-find runs one range test: drop -m (run it once per config).")
        _options, rest = split_options(argv)
        sys.argv[1:] = rest  # what Hydra parses
        with_user_configs_first(rest, _lr_find_app)

    run_with_error_boundary(app, tool="dltrain-lr-find")


def _usage() -> str:
    keys = "\n".join(f"  {PREFIX}{f.name}={f.default!r:<10} {f.metadata.get('help', '')}"
                     for f in dataclasses.fields(LRFindOptions))
    files = "\n".join(f"  {entry.name:<13} {entry.what}" for entry in LR_FIND_FILES)
    return (
        "dltrain-lr-find: a learning-rate range test on the config dltrain would train.\n\n"
        "Usage:\n"
        "  dltrain-lr-find [group=option ...] [key=value ...] [lr_find.key=value ...]\n"
        "  dltrain-lr-find optim=sgd                 the range test of `dltrain optim=sgd`\n\n"
        "It trains a copy of the run's model while the learning rate grows exponentially from start_lr\n"
        "to end_lr, stops when the smoothed loss diverges, and prints the suggested learning rate\n"
        "(optim.lr, or scheduler.max_lr with scheduler=onecycle) and the dltrain command to train with it.\n"
        "Every override of dltrain works here (see dltrain --help). Its own keys:\n"
        f"{keys}\n\n"
        f"Files it writes (hydra.run.dir: lr_find/<date>/<time>/):\n{files}"
    )

"""``trainer.repeats=N``: a sweep runs each configuration N times, with the seeds ``seed``,
``seed+1``, ..., ``seed+N-1`` (``seed`` as the command line or the config sets it, 0 by
default). It becomes a sweep over ``seed=`` added to the sweep's overrides before Hydra's
basic sweeper expands them, so each job is one ordinary run and the seed varies fastest
(the repeats of a configuration are neighbouring jobs). ``trainer.repeats=N`` itself leaves the
overrides, so that a job's overrides re-run it as a single run; Hydra's ``multirun.yaml`` keeps N
for the command that re-runs a group. The sweep's summary then groups the jobs by their other
values (``dltrain.report.sweep_stats``).
"""

from __future__ import annotations

from omegaconf import DictConfig, read_write

from dltrain.config.suggest import override_key
from dltrain.errors import ConfigError

REPEATS, SEED = "trainer.repeats", "seed"
_BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def expand_repeats(config: DictConfig) -> None:
    """Add ``seed=<seed>,...,<seed+N-1>`` to the overrides of a sweep with ``trainer.repeats=N > 1``
    in place of a single ``seed=`` given and of ``trainer.repeats=N`` (each job is one run).

    Raises:
        ConfigError: ``trainer.repeats`` is itself swept, the seed is swept too, or the sweeper
            is not Hydra's basic one (Optuna would pick seeds as values to optimise).
    """
    task = list(config.hydra.overrides.task)
    swept = _swept_keys([*task, *_sweeper_params(config)])
    if REPEATS in swept:
        raise ConfigError(f"{REPEATS} cannot be swept: give one value (e.g. {REPEATS}=5), which every "
                          "configuration of the sweep is repeated with.")
    repeats = int(config.trainer.repeats)
    if repeats <= 1:
        return
    if SEED in swept:
        raise ConfigError(f"{REPEATS}={repeats} and a sweep over seed= both repeat each configuration over seeds: "
                          f"keep one (seed=a,b,c names the seeds; {REPEATS}=N takes seed, seed+1, ..., seed+N-1).")
    if config.hydra.sweeper.get("_target_") != _BASIC_SWEEPER:
        raise ConfigError(f"{REPEATS}={repeats} needs Hydra's basic sweeper (a search such as optuna would treat "
                          "the seed as a value to optimise): remove hydra/sweeper or hparams_search, or set "
                          f"{REPEATS}=1.")
    first = int(config.seed)
    seeds = ",".join(str(first + i) for i in range(repeats))
    with read_write(config.hydra.overrides):
        config.hydra.overrides.task = [o for o in task if override_key(o) not in (SEED, REPEATS)] + [f"{SEED}={seeds}"]


def refuse_repeats_in_a_single_run(config: DictConfig) -> None:
    """A single run is one seed.

    Raises:
        ConfigError: ``trainer.repeats`` > 1 without ``-m``.
    """
    repeats = int(config.trainer.repeats)
    if repeats > 1:
        raise ConfigError(f"{REPEATS}={repeats} repeats each configuration as a sweep: add -m "
                          f"(dltrain -m {REPEATS}={repeats} ...), or remove it for a single run.")


def _swept_keys(overrides: list[str]) -> set[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - an override Hydra cannot parse fails in the sweeper, with its message
        return set()
    return {o.key_or_group for o in parsed if o.is_sweep_override()}


def _sweeper_params(config: DictConfig) -> list[str]:
    params = config.hydra.sweeper.get("params") or {}
    return [f"{key}={value}" for key, value in params.items()]

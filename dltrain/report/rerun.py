"""The command line that runs a job of a sweep again (or, with ``-m``, a group of its jobs):
``dltrain``, the ``--config-dir`` and ``--config-name`` the sweep was started with, and the
overrides, shell-quoted."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from dltrain.config.validation import CONFIG_NAME

#: Config groups that only shape how a sweep runs (its search space, its launcher): a
#: single run of the best job does without them.
SWEEP_ONLY = ("hparams_search", "cluster")


def rerun_command(overrides: list[str], config_dir: str | None = None, config_name: str | None = None, *,
                  multirun: bool = False) -> str:
    """The command line that runs one job again (a sweep with ``-m`` when ``multirun``):
    ``dltrain``, the ``--config-dir`` and ``--config-name`` the sweep was started with (when
    given), and the overrides, shell-quoted (without the groups that only configure a sweep)."""
    kept = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] not in SWEEP_ONLY]
    flags = [*(["--config-dir", config_dir] if config_dir else []),
             *(["--config-name", config_name] if config_name else [])]
    return " ".join(["dltrain", *(["-m"] if multirun else []), *(shlex.quote(o) for o in [*flags, *kept])])


def job_rerun(sweep_dir: Path, row: dict[str, Any]) -> str:
    """The command line that runs the job of ``row`` (a row of the sweep's summary) again."""
    return rerun_command(row["_overrides"], *config_source(sweep_dir / row["run_dir"]))


def best_job_yaml(sweep_dir: Path, row: dict[str, Any], monitor: str | None) -> str:
    """The text of ``best_overrides.yaml`` for the best job (``row``): its number, value, directory,
    overrides and the command that runs it again (also on the first line, a comment)."""
    command = job_rerun(sweep_dir, row)
    text = yaml.safe_dump({"job": row["job"], "monitor": monitor, "best_value": row["best_value"],
                           "run_dir": row["run_dir"], "overrides": list(row["_overrides"]), "command": command},
                          sort_keys=False, allow_unicode=True, width=1 << 16)
    # A newline inside an override would end the comment line; the `command` key stays exact.
    return f"# The best job of this sweep; re-run it with: {command.replace(chr(10), ' ')}\n{text}"


def config_source(job_dir: Path) -> tuple[str | None, str | None]:
    """The config directory (``--config-dir``) and config name (``--config-name``) a job was
    composed from, as its ``.hydra/hydra.yaml`` records them; None for dltrain's own. An
    unreadable or odd hydra.yaml gives (None, None): the command is then only incomplete."""

    try:
        hydra = OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "hydra.yaml"))["hydra"]
        sources = (hydra.get("runtime") or {}).get("config_sources") or []
        config_dir = next((s.get("path") for s in sources if isinstance(s, dict) and s.get("provider") == "command-line"
                           and s.get("schema") == "file"), None)
        name = (hydra.get("job") or {}).get("config_name")
    except Exception:  # noqa: BLE001 - whatever is wrong in the file, the overrides still re-run the job
        return None, None
    config_dir = config_dir if isinstance(config_dir, str) and config_dir else None
    return config_dir, name if isinstance(name, str) and name and name != CONFIG_NAME else None

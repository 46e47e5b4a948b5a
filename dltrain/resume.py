"""``resume=``: which checkpoint to continue from, and whether this run may continue it.

A resumed run is the same experiment carried on, so its config must match the
checkpoint's. A few keys may change because they do not change what is being trained
(more epochs, more patience, another device, a moved data folder); every difference is
listed in the log, and any other difference is refused before anything is built.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dltrain.checkpoint import load_checkpoint
from dltrain.errors import ConfigError

log = logging.getLogger("dltrain")

#: Where ``resume=auto`` looks: where runs are written by default.
AUTO_ROOT = Path("outputs")

#: Keys a resumed run may change (a key, or a prefix ending in a dot).
CHANGEABLE = (
    "resume", "device", "trainer.max_epochs", "trainer.log_every_n_steps", "trainer.eval_batch_size",
    "trainer.compile", "trainer.checkpoint.", "trainer.early_stopping.patience", "trainer.early_stopping.enabled",
    "trainer.early_stopping.min_delta", "trainer.early_stopping.baseline",
    "trainer.early_stopping.restore_best_weights", "trainer.early_stopping.check_finite",
    "data.root", "data.path", "data.download", "data.num_workers", "data.in_memory",
)

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


def _changeable(key: str) -> bool:
    return any(key == c or (c.endswith(".") and key.startswith(c)) for c in CHANGEABLE)


def _show(value: Any) -> str:
    return "(absent)" if type(value) is object else str(value)


def check_config(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The differences this run may make, as ``key: old -> new`` lines.

    Raises:
        ConfigError: another key differs; the architecture keys are named first.
    """
    diffs = [d for d in differences(saved, current) if d[0] != "resume"]
    refused = [d for d in diffs if not _changeable(d[0])]
    if refused:
        arch = [d for d in refused if d[0].startswith(ARCHITECTURE)]
        listed = "; ".join(f"{k}={_show(new)} (checkpoint: {_show(old)})" for k, old, new in (arch or refused)[:4])
        why = ("the model's architecture and data must stay those the weights were trained with"
               if arch else "a resumed run continues the same experiment")
        raise ConfigError(f"resume={path}: {listed}: {why}; remove the override, or train a new run without "
                          "resume= (only trainer.max_epochs, early-stopping patience, device, checkpoint and data "
                          "location keys may change)")
    return [f"{k}: {_show(old)} -> {_show(new)}" for k, old, new in diffs]


def _last_checkpoints(folder: Path) -> Iterator[Path]:
    """``last.pt`` files under ``folder``, newest first."""
    found = [p for p in folder.rglob("last.pt") if p.is_file()]
    yield from sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def find_checkpoint(spec: str, current: dict[str, Any]) -> Path | None:
    """The checkpoint ``resume=spec`` names.

    Args:
        spec: a checkpoint file; a directory (its newest ``last.pt``, sub-folders included);
            or ``auto``: the newest ``last.pt`` under ``outputs/`` whose run had this config
            (up to the keys a resume may change).
        current: this run's resolved config.

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
                saved = load_checkpoint(path).get("config", {})
            except Exception:  # noqa: BLE001 - an unreadable file is no candidate
                continue
            if not [d for d in differences(saved, current) if not _changeable(d[0])]:
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

"""Shared fixtures: configs composed exactly as the command line composes them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def compose() -> Callable[..., object]:
    """``compose(overrides)``: the validated config for those command-line overrides."""
    from dltrain import compose as _compose

    return _compose


def run_cli(args: Sequence[str], cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dltrain ARGS`` in ``cwd`` and capture its output."""
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update({"PYTHONUNBUFFERED": "1", **(env or {})})
    return subprocess.run([sys.executable, "-m", "dltrain", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)

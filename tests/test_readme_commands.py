"""The README's commands, run as a newcomer runs them: in a fresh clone, in a fresh virtual environment.

The repository is copied with ``git clone`` of this checkout, so what runs is the committed state: changes not
yet committed are not in the clone. In the clone's root, the ```bash blocks of the README's Quick start run
as written (``python3 -m venv .venv``, ``pip install .``, ``dltrain``), except that the test suite's block
ends in ``pytest --collect-only -q`` instead of ``pytest``: running the whole suite from inside one of its
tests would be recursive, so its install runs and the suite is only collected. Then every command of the
Experiments table whose data needs no download and whose device is not a GPU runs in the clone's root with
that environment active. Each must exit with 0. The commands are parsed from the README, so a new command
there is covered without a change here. ``pip install .`` as written brings torch with its CUDA libraries
(several GB), so this takes many minutes, mostly the installs: a slow test. The clone is removed afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.readme_results import plan, table_rows

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 1800  # seconds for one command: installing torch with its CUDA libraries takes minutes

pytestmark = pytest.mark.slow


def quick_start_commands(readme: str) -> list[str]:
    """The ```bash blocks between the Quick start heading and the next heading, one command per line."""
    section = readme.split("\n## Quick start\n", 1)[1]
    section = re.split(r"\n#+ ", section, maxsplit=1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def collect_only(command: str) -> str:
    """The command with its final ``pytest`` step only collecting the suite (running it here would recurse)."""
    steps = command.split(" && ")
    assert steps[-1] == "pytest", f"the test suite's Quick start command no longer ends in `&& pytest`: {command}"
    return " && ".join([*steps[:-1], "pytest --collect-only -q"])


def clean_env() -> dict[str, str]:
    """This process's environment without its own virtual environment: the clone's must stand alone."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "HYDRA_FULL_ERROR")}
    if sys.prefix != sys.base_prefix:
        own = str(Path(sys.prefix) / "bin")
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != own)
    return env


def run_bash(command: str, cwd: Path) -> float:
    """Run ``command`` with ``bash -c`` in ``cwd``; assert it exits with 0, and return its seconds."""
    started = time.perf_counter()
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          timeout=TIMEOUT)
    seconds = time.perf_counter() - started
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, f"`{command}` exited with {proc.returncode} after {seconds:.0f} s:\n{tail}"
    print(f"{seconds:6.1f} s  {command}")
    return seconds


@pytest.fixture
def clone(tmp_path: Path) -> Iterator[Path]:
    """A clone of this repository's committed state, removed afterwards (its environment holds GBs)."""
    folder = tmp_path / "dltrain"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(folder)], check=True, capture_output=True)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_readme_quick_start_and_experiments_run_in_a_fresh_clone(clone: Path) -> None:
    readme = (clone / "README.md").read_text(encoding="utf-8")
    quick_start = quick_start_commands(readme)
    assert len(quick_start) == 2, f"the Quick start has {len(quick_start)} commands, not the install and the tests"
    run_bash(quick_start[0], clone)
    run_bash(collect_only(quick_start[1]), clone)
    rows = [row for row in table_rows(readme) if plan(row, None)[0] is not None]
    assert rows, "no Experiments row runs without a download"
    for row in rows:
        run_bash(f". .venv/bin/activate && {row.command}", clone)

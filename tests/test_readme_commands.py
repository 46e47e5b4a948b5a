"""The README's commands, run as a newcomer runs them: in a fresh clone, in a fresh virtual environment.

The repository is copied with ``git clone`` of this checkout, so what runs is the committed state: changes not
yet committed are not in the clone. In the clone's root, the ```bash blocks of the README's Quick start run
as written (``python3 -m venv .venv``, ``pip install .``, ``dltrain``), except that the test suite's block
ends in ``pytest --collect-only -q`` instead of ``pytest``: running the whole suite from inside one of its
tests would be recursive, so its install runs and the suite is only collected. Then every command of the
Experiments table whose data needs no download and whose device is not a GPU runs in the clone's root with
that environment active. Each must exit with 0. The commands are parsed from the README, so a new command
there is covered without a change here. ``pip install .`` as written brings torch with its CUDA libraries
(several GB), so this takes many minutes, mostly the installs: a slow test. The clone is removed afterwards; on
a disk without room for that environment the test is skipped, saying how much is free.

Every other ``dltrain`` and ``dltrain-*`` command of the README's fenced blocks is composed as written, in this
process: its overrides (each job's, for a ``-m`` sweep) composed and validated as ``dltrain`` would, the tools'
own arguments parsed by their own parsers. An example that shows an error must fail with the line it shows.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.readme_results import plan, table_rows

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 1800  # seconds for one command: installing torch with its CUDA libraries takes minutes
NEEDED_GB = 10  # disk for that environment: 6.5 GB once installed, with room for the runs' outputs
#: A line that calls one of the tools: environment variables, ``python -m`` or ``torchrun ... -m`` before it.
TOOL = re.compile(r"(?:[A-Z_]+=\S+\s+)*(?:(?:python3?|torchrun)\s.*?-m\s+)?(dltrain(?:-[a-z-]+)?)(?:\s+(.*))?$")
ERROR = re.compile(r"dltrain(?:-[a-z-]+)?: error: ")


@dataclass
class Command:
    """A command of a README block: the tool, its arguments, and the error lines the README shows it print."""

    tool: str
    args: list[str]
    errors: list[str]


def fenced_commands(readme: str) -> list[Command]:
    """The tools' commands in the README's fenced blocks. In a block with ``$ `` prompts only the prompted lines
    are commands (the rest is what they print); commands start at a line's start, joined over ``\\`` and split at
    ``&&``; a ``...`` argument stands for arguments left out, a ``#`` starts a comment."""
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", readme, flags=re.S):
        lines = block.replace("\\\n", " ").splitlines()
        prompted = any(line.startswith("$ ") for line in lines)
        for i, line in enumerate(lines):
            if prompted and not line.startswith("$ "):
                continue
            printed = itertools.takewhile(lambda out: not out.startswith("$ "), lines[i + 1:]) if prompted else ()
            errors = [out for out in printed if ERROR.match(out)]
            for step in line.removeprefix("$ ").split(" && "):
                if match := TOOL.match(step):
                    args = [a for a in shlex.split(match[2] or "", comments=True) if a != "..."]
                    commands.append(Command(match[1], args, errors))
    return commands


def sweep_jobs(args: list[str]) -> list[list[str]]:
    """A ``-m`` sweep's jobs in Hydra's order (every combination of the comma lists); one job without ``-m``."""
    if "-m" not in args:
        return [args]
    choices = []
    for arg in (a for a in args if a != "-m"):
        key, _, value = arg.partition("=")
        values = re.findall(r"(?:\[[^\]]*\]|[^,])+", value) if not key.startswith("hydra.") else [value]
        choices.append([f"{key}={v}" for v in values] if value else [arg])
    return [list(job) for job in itertools.product(*choices)]


def test_fenced_commands_are_read_as_a_shell_reads_them() -> None:
    readme = """```bash
python3 -m venv .venv && . .venv/bin/activate && dltrain
TORCH_HOME=/x dltrain optim=sgd 'model.hidden=[8]'   # a comment
torchrun --nnodes=2 \\
    -m dltrain model=cnn ...
```
```
$ dltrain-lr-find optim=sgd
next: dltrain optim=sgd optim.lr=0.1
$ dltrain optim.lr=abc
dltrain: error: optim.lr=abc is not a number.
                    dltrain results
```
"""
    read = [(c.tool, c.args, c.errors) for c in fenced_commands(readme)]
    assert read == [("dltrain", [], []), ("dltrain", ["optim=sgd", "model.hidden=[8]"], []),
                    ("dltrain", ["model=cnn"], []), ("dltrain-lr-find", ["optim=sgd"], []),
                    ("dltrain", ["optim.lr=abc"], ["dltrain: error: optim.lr=abc is not a number."])]
    assert sweep_jobs(["-m", "optim=sgd,adam", "model.hidden=[8,8],[4]", "hydra.sweep.dir=a,b"]) == [
        [optim, hidden, "hydra.sweep.dir=a,b"] for optim in ("optim=sgd", "optim=adam")
        for hidden in ("model.hidden=[8,8]", "model.hidden=[4]")]
    assert sweep_jobs(["optim=sgd,adam"]) == [["optim=sgd,adam"]]


def test_the_readme_s_tool_commands_take_their_arguments() -> None:
    from dltrain.cli import config_tool
    from dltrain.cli.lr_find import split_options
    from dltrain.data.samples import _parser
    from dltrain.export import cli as export_cli
    from dltrain.inference import evaluate, predict
    from dltrain.inference.restore import parse_args

    commands = [c for c in fenced_commands((ROOT / "README.md").read_text(encoding="utf-8")) if c.tool != "dltrain"]
    assert {c.tool for c in commands} == {"dltrain-eval", "dltrain-predict", "dltrain-samples", "dltrain-lr-find",
                                         "dltrain-config", "dltrain-export"}
    for command in commands:
        if command.tool == "dltrain-lr-find":
            split_options(command.args)
        elif command.tool == "dltrain-config":
            config_tool._parser().parse_args(command.args)
        elif command.tool == "dltrain-samples":
            _parser().parse_args(command.args)
        else:
            tool = {"dltrain-eval": evaluate, "dltrain-predict": predict, "dltrain-export": export_cli}[command.tool]
            parse_args(command.args, tool.TOOL, tool.KEYS, about="", example="")


@pytest.mark.slow
def test_every_readme_command_composes_as_written() -> None:
    # about a second a composition, for every job of every sweep: too slow for the default suite
    from dltrain import compose
    from dltrain.cli.lr_find import split_options
    from dltrain.config.describe import describe_config_error
    from dltrain.errors import ConfigError

    for command in fenced_commands((ROOT / "README.md").read_text(encoding="utf-8")):
        if command.tool not in ("dltrain", "dltrain-lr-find"):
            continue
        args, folder = config_dir_flag(command.args)
        jobs = sweep_jobs(args) if command.tool == "dltrain" else [split_options(args)[1]]
        for num, job in enumerate(jobs):
            try:
                compose(job, config_name="train" if command.tool == "dltrain" else "lr_find", config_dir=folder)
            except Exception as err:  # only where the README shows that error (the command line's line), with its job
                line = str(err) if isinstance(err, ConfigError) else describe_config_error(err, job) or str(err)
                shown = f"job {num} ({' '.join(job)}) failed: " if len(jobs) > 1 else ""
                assert any(f"error: {shown}{line.rstrip('.')}" in out for out in command.errors), \
                    f"`{command.tool} {shlex.join(command.args)}` as written: {line}"


def config_dir_flag(args: list[str]) -> tuple[list[str], str | None]:
    """The arguments without ``--config-dir DIR``, and that folder (relative to the repository's root,
    where the README's commands run)."""
    if "--config-dir" not in args:
        return args, None
    at = args.index("--config-dir")
    return [*args[:at], *args[at + 2:]], str(ROOT / args[at + 1])


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


@pytest.mark.slow
def test_readme_quick_start_and_experiments_run_in_a_fresh_clone(clone: Path) -> None:
    free = shutil.disk_usage(clone).free / 2**30
    if free < NEEDED_GB:  # a full disk is this machine's state, not the README's: said as a skip, with the figures
        pytest.skip(f"{free:.1f} GB free beside the clone, and a fresh environment with torch needs about "
                    f"{NEEDED_GB} GB: free some space to run the README's commands")
    readme = (clone / "README.md").read_text(encoding="utf-8")
    quick_start = quick_start_commands(readme)
    assert len(quick_start) == 2, f"the Quick start has {len(quick_start)} commands, not the install and the tests"
    run_bash(quick_start[0], clone)
    run_bash(collect_only(quick_start[1]), clone)
    rows = [row for row in table_rows(readme) if plan(row, None)[0] is not None]
    assert rows, "no Experiments row runs without a download"
    for row in rows:
        run_bash(f". .venv/bin/activate && {row.command}", clone)

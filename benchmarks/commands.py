"""What the README measurement scripts share: running a ``dltrain`` command and naming the script's own command.

A measurement prints the command that produced it (``Measured by ...``) with every argument it was given, so
the block it prints can be reproduced as written.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.readme_results import ReadmeError, dltrain_command


def invocation(module: str, argv: list[str] | None = None) -> str:
    """``python -m <module>`` with the arguments the script was given (``sys.argv`` when ``argv`` is None).

    ``--write`` is left out: it puts the block into README.md and changes nothing the block measures.
    """
    given = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", "-m", module, *(arg for arg in given if arg != "--write")])


def run(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a dltrain command (printed to stderr first) and return its run's ``summary.json``.

    Args:
        command: ``["dltrain", key=value, ...]``; the installed entry point runs it.
        env: variables set for the command on top of this process's (``OMP_NUM_THREADS``, ...).

    Returns:
        The summary of the run in ``hydra.run.dir=``; empty for a command without one (a sweep).

    Raises:
        ReadmeError: the command failed.
    """
    print(f"running: {shlex.join(command)}", file=sys.stderr, flush=True)
    # Without HYDRA_FULL_ERROR a failure ends in the one line the user would see, which the error quotes.
    inherited = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run([*dltrain_command(), *command[1:]], capture_output=True, text=True,
                          env={**inherited, "PYTHONUNBUFFERED": "1", **(env or {})})
    if proc.returncode:
        raise ReadmeError(f"`{shlex.join(command)}` exited with {proc.returncode}:\n"
                          f"{(proc.stdout + proc.stderr)[-3000:]}")
    run_dir = next((arg.split("=", 1)[1] for arg in command if arg.startswith("hydra.run.dir=")), None)
    return {} if run_dir is None else json.loads(Path(run_dir, "summary.json").read_text())

"""A child Python process whose name lookups are refused and recorded: proof that a run reaches
for no network (the tests have none, and a library's telemetry must not try)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

#: Prepended to the child's code: every lookup refused and recorded, printed as the last line.
WATCH = """
import atexit, socket, sys
looked_up = []
def refuse(host, *args, **kwargs):
    looked_up.append(host)
    raise socket.gaierror(host)
socket.getaddrinfo = refuse
atexit.register(lambda: print("looked up:", looked_up))  # registered first: runs after the libraries' own
"""

#: The ``dltrain`` command line, its arguments those the child is given.
DLTRAIN = "import runpy\nsys.argv[0] = 'dltrain'\nrunpy.run_module('dltrain', run_name='__main__')\n"


def lookups(code: str, args: list[str], env: dict[str, str], cwd: Path | None = None,
            timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], list[Any]]:
    """Run ``code`` with ``args`` in a child Python watching its name lookups; the finished
    process and the hosts it tried to look up (up to the interpreter's exit)."""
    done = subprocess.run([sys.executable, "-c", WATCH + code, *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)
    last = done.stdout.splitlines()[-1] if done.stdout.strip() else ""
    assert last.startswith("looked up: "), done.stderr[-2000:]
    return done, ast.literal_eval(last.removeprefix("looked up: "))

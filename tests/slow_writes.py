"""Test hook: makes dltrain's checkpoint writes slow and visible, so a test can signal or kill
a training process in the middle of one.

Importing this module replaces the ``torch`` that :mod:`dltrain.training.checkpoint` sees with a stand-in
whose ``save`` serialises to memory first and then writes the bytes into the file in
``SLOW_WRITES_CHUNKS`` chunks (default 20) with a sleep of ``SLOW_WRITES_DELAY`` seconds (default
0.015) after each one. Around every write it prints, to stderr::

    SLOW-WRITE-START <file being written> partial=<step>
    SLOW-WRITE-END <file being written>

where ``<step>`` is the checkpoint's ``partial_epoch["step"]`` (0 for an epoch-end checkpoint), so
a test can tell the save that follows an interrupt from the saves at the end of each epoch.
Nothing else in the process changes (``torch.save`` itself is left alone).

Use it in a subprocess::

    python -c "import tests.slow_writes, sys; sys.argv = ['dltrain', *ARGS]; from dltrain.cli.app import main; main()"

with the repository root on ``PYTHONPATH``.
"""

from __future__ import annotations

import io
import os
import sys
import time
import types
from typing import Any

import torch

import dltrain.training.checkpoint

START, END = "SLOW-WRITE-START", "SLOW-WRITE-END"
CHUNKS = int(os.environ.get("SLOW_WRITES_CHUNKS", "20"))
DELAY = float(os.environ.get("SLOW_WRITES_DELAY", "0.015"))

_real_save = torch.save


def _target_name(f: Any) -> str:
    """The path of the file ``f`` writes (``os.fdopen`` files are named by their descriptor)."""
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f)
    try:
        return os.readlink(f"/proc/self/fd/{f.fileno()}")
    except (OSError, AttributeError, ValueError):
        return str(getattr(f, "name", "?"))


def slow_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
    """``torch.save(obj, f)``, written in :data:`CHUNKS` slow pieces."""
    buffer = io.BytesIO()
    _real_save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    partial = obj.get("partial_epoch") if isinstance(obj, dict) else None
    name = _target_name(f)
    print(f"{START} {name} partial={partial['step'] if partial else 0}", file=sys.stderr, flush=True)
    out = open(f, "wb") if isinstance(f, (str, os.PathLike)) else f  # noqa: SIM115 - closed below if ours
    try:
        size = -(-len(data) // CHUNKS)
        for start in range(0, len(data), size):
            out.write(data[start:start + size])
            out.flush()
            time.sleep(DELAY)
    finally:
        if out is not f:
            out.close()
    print(f"{END} {name}", file=sys.stderr, flush=True)


class _SlowTorch(types.ModuleType):
    """``torch`` with a slow :func:`slow_save`; every other attribute is torch's own."""

    save = staticmethod(slow_save)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


dltrain.training.checkpoint.torch = _SlowTorch("torch")

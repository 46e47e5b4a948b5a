"""``trainer.deterministic``: torch's deterministic algorithms for one run, and the one line
that names an operation which has none.

The switches are process-wide, and ``train()`` is a Python API that may train many runs in
one process: :func:`restored_determinism` puts back what was there before the run, whatever
the run set.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from dltrain.errors import ConfigError

log = logging.getLogger("dltrain")

#: cuBLAS reuses one workspace per stream only with this setting (NVIDIA's recommended value):
#: it must be in the environment before the process's first cuBLAS call.
CUBLAS_WORKSPACE = ":4096:8"
_CUBLAS_KEY = "CUBLAS_WORKSPACE_CONFIG"

# torch's words when an operation has no deterministic implementation (at::globalContext's alert)
_NO_DETERMINISTIC = re.compile(r"^\s*(\S.*?) does not have a deterministic implementation, but you set "
                               r"'torch\.use_deterministic_algorithms\(True\)'")
# ... and when cuBLAS runs without a workspace setting that makes it deterministic
_CUBLAS = re.compile(r"this operation is not deterministic because it uses CuBLAS")


def set_deterministic(enabled: bool, device: torch.device) -> None:
    """Turn torch's deterministic algorithms on for this run (``enabled``); off, the process's
    own settings stay (a Python caller may have set them).

    On CUDA it also makes cuDNN deterministic, without its timed pick of algorithms, and sets
    ``CUBLAS_WORKSPACE_CONFIG`` (before the run's first cuBLAS call) unless the user set it.
    """
    if not enabled:
        return
    torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        if _CUBLAS_KEY not in os.environ and torch.cuda.is_initialized():  # cuBLAS read it at its first use
            log.warning("trainer.deterministic=true: CUDA was used in this process before the run, so cuBLAS "
                        "may not honour %s set now: set %s=%s in the environment before starting Python.",
                        _CUBLAS_KEY, _CUBLAS_KEY, CUBLAS_WORKSPACE)
        os.environ.setdefault(_CUBLAS_KEY, CUBLAS_WORKSPACE)  # a value of the user's own is theirs
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


@contextmanager
def restored_determinism() -> Iterator[None]:
    """Around one run: the deterministic-algorithm settings, ``cudnn.deterministic`` and the
    cuBLAS workspace setting are as they were before it, however it ends. ``cudnn.benchmark``
    is not among them: every run sets it (``trainer.cudnn_benchmark``) as it is built."""
    algorithms = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = torch.backends.cudnn.deterministic
    workspace = os.environ.get(_CUBLAS_KEY)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
        torch.backends.cudnn.deterministic = cudnn
        if workspace is None:
            os.environ.pop(_CUBLAS_KEY, None)
        else:
            os.environ[_CUBLAS_KEY] = workspace


def nondeterministic_error(err: BaseException, deterministic: bool) -> ConfigError | None:
    """The one line for torch's error about an operation without a deterministic
    implementation (naming the operation) in a run with ``trainer.deterministic=true``; None
    for any other error, or where the key is false (a Python caller turned torch's setting on)."""
    if not deterministic or not isinstance(err, RuntimeError):
        return None
    text = str(err)
    if _CUBLAS.search(text):
        value = os.environ.get(_CUBLAS_KEY, "")
        return ConfigError(f"trainer.deterministic=true: cuBLAS is deterministic only with {_CUBLAS_KEY}="
                           f"{CUBLAS_WORKSPACE} (or :16:8), and the environment has {_CUBLAS_KEY}={value!r}: "
                           "unset it, or set trainer.deterministic=false.")
    found = _NO_DETERMINISTIC.search(text)
    if found is None:
        return None
    op = found.group(1)
    return ConfigError(f"trainer.deterministic=true: {op} has no deterministic implementation in torch: set "
                       f"trainer.deterministic=false, or change the model or option that uses {op}.")

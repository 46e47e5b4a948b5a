"""The ``device`` key (``auto|cpu|cuda|cuda:N|mps``), ``trainer.precision`` and the device's
speed switches (``trainer.channels_last``, ``trainer.cudnn_benchmark``)."""

from __future__ import annotations

import logging

import torch
from torch import nn

from dltrain.errors import ConfigError

log = logging.getLogger("dltrain.device")  # the name dltrain.log has always shown


def resolve_device(spec: str) -> torch.device:
    """The torch device for ``spec``.

    ``auto`` takes CUDA, then MPS, then the CPU, and says which. Any explicit device that
    is not there is an error, never a silent fallback.

    Raises:
        ConfigError: the device asked for is not available.
    """
    if spec == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda")
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
        log.info("device=auto: using %s", device)
        return device
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={spec}: CUDA is not available on this machine; use device=cpu or device=auto.")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device={spec}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                              f"(cuda:0..cuda:{torch.cuda.device_count() - 1}).")
        return torch.device(spec)
    if spec == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise ConfigError("device=mps: Apple's MPS backend is not available here; use device=cpu or device=auto.")
        return torch.device("mps")
    if spec == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"device={spec} is not valid: expected auto, cpu, cuda, cuda:N or mps.")


def resolve_precision(precision: str, device: torch.device, optim: str = "",
                      closure: bool = False) -> torch.dtype | None:
    """The autocast dtype for ``trainer.precision`` on ``device``; None for full precision.

    Args:
        precision: ``trainer.precision``.
        device: the device the run trains on.
        optim: the ``optim=`` option, named in the error.
        closure: the optimizer re-evaluates the loss within a step (its registered
            ``closure`` fact): it cannot use the scaled loss of float16.

    Raises:
        ConfigError: a precision this device (or optimizer) cannot train in.
    """
    if precision == "32":
        return None
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"trainer.precision=bf16: {torch.cuda.get_device_name(device)} has no bfloat16 "
                              "support; use trainer.precision=16 or 32.")
        return torch.bfloat16
    if precision == "16":
        if device.type != "cuda":
            raise ConfigError(f"trainer.precision=16 needs a CUDA device (float16 autocast with a gradient scaler), "
                              f"and this run is on {device.type}: use trainer.precision=bf16 or 32.")
        if closure:
            raise ConfigError(f"trainer.precision=16 scales the loss, which optim={optim}'s line search cannot "
                              f"use: use trainer.precision=bf16 or 32 with {optim.upper()}.")
        return torch.float16
    raise ConfigError(f"trainer.precision={precision} is not valid: expected 32, bf16 or 16.")


def resolve_memory_format(channels_last: bool, input_shape: tuple[int, ...],
                          model: nn.Module) -> torch.memory_format | None:
    """The layout ``trainer.channels_last`` puts the model and its batches in.

    Returns:
        ``torch.channels_last`` when it is asked for, the examples are images ``(C, H, W)``
        and the model has 4-D weights (convolutions) to run faster; else None, the default
        layout (``dltrain.training.checks.channels_last_warnings`` says why it was ignored).
    """
    if channels_last and len(input_shape) == 3 and any(p.dim() == 4 for p in model.parameters()):
        return torch.channels_last
    return None


def set_cudnn_benchmark(enabled: bool, device: torch.device) -> None:
    """``trainer.cudnn_benchmark``: on CUDA, cuDNN times its convolution algorithms on the
    first batches of each shape and keeps the fastest.

    That makes convolutions on fixed shapes faster, at the cost of bit-for-bit repeatability
    across runs (the fastest algorithm can differ from run to run), which is why it is off by
    default. The flag is process-wide, so it is set on every run, true or false: one run's
    choice never leaks into the next run a Python process trains.
    """
    torch.backends.cudnn.benchmark = enabled and device.type == "cuda"

"""What the benchmarks share: the machine's description and a clock-safe device sync."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo, or what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it measures the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)

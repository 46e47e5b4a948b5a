"""The device key: explicit devices that are not there are errors, auto falls back."""

from __future__ import annotations

import pytest
import torch

from dltrain.errors import ConfigError
from dltrain.training.device import resolve_device

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_cpu():
    assert resolve_device("cpu") == torch.device("cpu")


@no_cuda
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_an_error(spec):
    with pytest.raises(ConfigError, match=f"device={spec}: CUDA is not available"):
        resolve_device(spec)


@no_cuda
def test_auto_falls_back_to_cpu(caplog):
    with caplog.at_level("INFO"):
        device = resolve_device("auto")
    if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        assert device == torch.device("cpu")
    assert "device=auto: using" in caplog.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_index_out_of_range():
    with pytest.raises(ConfigError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")

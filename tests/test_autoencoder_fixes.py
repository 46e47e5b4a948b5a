"""Review fixes around the autoencoder: start weights of the wrong kind are refused, and the test
split's noise does not depend on how it is batched."""

from __future__ import annotations

import pytest
import torch

from dltrain import compose, train
from dltrain.errors import ConfigError
from tests.test_autoencoder_transfer import FAST, autoencoder_state


@pytest.mark.parametrize("dtype", [torch.complex64, torch.int64])
@pytest.mark.parametrize("autoencoder", [True, False])
def test_start_weights_of_another_kind_are_one_line_naming_the_file(tmp_path, dtype, autoencoder):
    path = tmp_path / "w.pt"
    if autoencoder:
        state = autoencoder_state(path)
        state["encoder.1.weight"] = state["encoder.1.weight"].to(dtype)
    else:
        state = {"fc1.weight": torch.ones(32, 64, dtype=dtype), "fc1.bias": torch.zeros(32)}
    torch.save(state, path)
    cfg = compose(["model=mlp", "model.hidden=[32,8]", f"model.weights={path}", *FAST])
    with pytest.raises(ConfigError, match=rf"model.weights={path}: its tensors .*weight \({str(dtype)[6:]}\)"):
        train(cfg, run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()

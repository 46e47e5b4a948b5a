"""MixUp's lam: Beta(alpha, alpha)'s own numbers, drawn without building a distribution per step."""

from __future__ import annotations

import pytest
import torch

from dltrain.data.mixing import Mix


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_lam_is_betas_draw_without_a_distribution_per_step(monkeypatch, alpha):
    expected = []
    torch.manual_seed(3)
    for _ in range(4):
        expected.append(torch.distributions.Beta(torch.tensor(alpha), torch.tensor(alpha)).sample())
        torch.rand(())  # the draw of p
    monkeypatch.setattr(torch.distributions, "Beta", None)  # a step that built one would fail
    torch.manual_seed(3)
    drawn = [Mix._lam({"alpha": alpha, "p": 1.0}, torch.device("cpu")) for _ in range(4)]
    assert torch.equal(torch.stack(drawn), torch.stack(expected))

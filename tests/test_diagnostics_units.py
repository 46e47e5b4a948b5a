"""diagnostics.csv's ``identical_units`` compares units' incoming weights, so only layers whose
weight rows are units have it: Linear, Conv and a recurrent layer's input weights; an embedding's
rows (tokens) and a transposed convolution's (input channels) are no units, so it is blank there."""

from __future__ import annotations

import torch
from torch import nn

from tests.test_diagnostics import by_layer, one_step


class _Tokens(nn.Module):
    """Token ids -> embedding -> GRU -> a class per sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(12, 6)
        self.rnn = nn.GRU(6, 5, batch_first=True)
        self.out = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(self.embed(x))[0][:, -1])  # (B, 3): the last step's state


def _zeroed(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        nn.init.zeros_(p)
    return model


def test_embeddings_have_no_identical_units_and_recurrent_input_weights_do():
    torch.manual_seed(0)
    rows = by_layer(one_step(_zeroed(_Tokens()), torch.randint(0, 12, (8, 4)), torch.randint(0, 3, (8,))))
    assert "identical_units" not in rows["embed"]  # every token's vector alike is no symmetry of units
    assert rows["rnn"]["identical_units"] == 1.0 and rows["out"]["identical_units"] == 1.0
    random = by_layer(one_step(_Tokens(), torch.randint(0, 12, (8, 4)), torch.randint(0, 3, (8,))))
    assert random["rnn"]["identical_units"] == 0.0 and "identical_units" not in random["embed"]


def test_transposed_convolutions_are_left_blank_and_convolutions_measured():
    torch.manual_seed(0)
    model = _zeroed(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ConvTranspose2d(4, 2, 3), nn.Flatten(),
                                  nn.Linear(2 * 6 * 6, 3)))
    rows = by_layer(one_step(model, torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))))
    assert rows["0"]["identical_units"] == 1.0 and rows["3"]["identical_units"] == 1.0
    assert "identical_units" not in rows["1"]

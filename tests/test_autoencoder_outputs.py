"""What an autoencoder leaves: latents.csv (one row per test example: row, label, z0..zK-1), latents.png
(the codes, or their first two principal components), reconstructions.png; dltrain-predict's latent codes
and reconstructions; the export of its encoder."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dltrain import compose
from dltrain.build import load_data
from dltrain.report.latents import latent_rows, latents_figure, project_2d
from dltrain.tasks.autoencoder_outputs import encode_split, write_outputs


class TinyAutoencoder(nn.Module):
    """A linear autoencoder of 8x8 images through ``k`` codes: ``encode``, ``decode``, ``forward``."""

    def __init__(self, k: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, k))
        self.decoder = nn.Sequential(nn.Linear(k, 64), nn.Unflatten(1, (1, 8, 8)))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x))


@pytest.fixture(scope="module")
def digits():
    return load_data(compose(["device=cpu"]), torch.device("cpu"))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_latent_rows_name_each_example_its_label_and_code():
    codes = torch.tensor([[0.5, -1.25, 3.0], [1.0, 2.0, 0.0]])
    rows = latent_rows(codes, ["a.png", "=b.png"], ["cat", "dog"])
    assert rows == [{"row": "a.png", "label": "cat", "z0": 0.5, "z1": -1.25, "z2": 3.0},
                    {"row": "=b.png", "label": "dog", "z0": 1.0, "z1": 2.0, "z2": 0.0}]
    assert list(latent_rows(codes, [0, 1])[0]) == ["row", "z0", "z1", "z2"]  # no labels, no label column


def test_two_codes_are_drawn_as_they_are_more_by_their_principal_components():
    torch.manual_seed(0)
    codes = torch.randn(200, 2)
    same = project_2d(codes)
    assert np.allclose(same.points, codes.double().numpy()) and same.axes == ("z0", "z1")
    # codes that vary along one direction of 5-D space: the first component is that direction
    direction = torch.tensor([1.0, 2.0, 0.0, -1.0, 0.5]) / torch.tensor([1.0, 2.0, 0.0, -1.0, 0.5]).norm()
    t = torch.linspace(-3, 3, 200)
    wide = t[:, None] * direction + 0.01 * torch.randn(200, 5)
    projected = project_2d(wide)
    assert projected.axes == ("PC1", "PC2") and "principal components" in projected.how and "SVD" in projected.how
    assert projected.points.shape == (200, 2)
    assert abs(np.corrcoef(projected.points[:, 0], t.numpy())[0, 1]) > 0.999
    fig = latents_figure(wide, ["a" if v < 0 else "b" for v in t.tolist()])
    assert "principal components" in fig.texts[0].get_text()
    assert [text.get_text() for text in fig.axes[0].get_legend().get_texts()] == ["a", "b"]


@pytest.mark.pictures
def test_write_outputs_encodes_the_whole_test_split(tmp_path, digits):
    model = TinyAutoencoder(5)
    written = write_outputs(tmp_path, model, digits, corrupt=lambda x: x + torch.randn_like(x), seed=0)
    assert written == ["latents.csv", "latents.png", "reconstructions.png"]
    rows = read_csv(tmp_path / "latents.csv")
    assert len(rows) == len(digits.y_test)
    assert list(rows[0]) == ["row", "label", "z0", "z1", "z2", "z3", "z4"]
    codes = torch.tensor([[float(row[f"z{j}"]) for j in range(5)] for row in rows])
    with torch.no_grad():
        assert torch.allclose(codes, model.encode(digits.x_test), atol=1e-5)
    assert [row["label"] for row in rows] == [digits.class_names[i] for i in digits.y_test.tolist()]


def test_drawing_the_noisy_inputs_leaves_the_run_s_random_numbers_alone(tmp_path, digits):
    model = TinyAutoencoder(2)
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    write_outputs(tmp_path, model, digits, corrupt=lambda x: x + torch.randn_like(x), seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_encode_split_reads_a_split_in_batches_and_restores_the_mode(digits):
    model = TinyAutoencoder(3).train()
    codes = encode_split(model, digits.x_test)
    assert codes.shape == (len(digits.y_test), 3) and model.training

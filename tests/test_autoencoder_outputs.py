"""What an autoencoder leaves: latents.csv (one row per test example: row, label, z0..zK-1), latents.png
(the codes, or their first two principal components), reconstructions.png; dltrain-predict's latent codes
and reconstructions; the export of its encoder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dltrain import compose, train
from dltrain.build import load_data
from dltrain.errors import UserError
from dltrain.report.latents import latent_rows, latents_figure, project_2d
from dltrain.tasks.autoencoder_outputs import encode_split, write_outputs
from tests.conftest import tool_error


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


# --- a real autoencoder run, and what the tools make of its checkpoint ----------------------------------------

@pytest.fixture(scope="module")
def ae_run(tmp_path_factory) -> Path:
    """A denoising MLP autoencoder trained 2 epochs on digits (bottleneck 5): its run directory."""
    run_dir = tmp_path_factory.mktemp("ae") / "run"
    train(compose(["task=autoencoder", "model.hidden=[32]", "model.bottleneck=5", "task.denoise=gaussian",
                   "trainer.max_epochs=2", "device=cpu", "trainer.diagnostics=false"]), run_dir=run_dir)
    return run_dir


def digit_pngs(folder: Path, n: int = 12) -> Path:
    """``n`` 8x8 grayscale PNG files of random ink under ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, size=(n, 8, 8), dtype=np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    return folder


@pytest.mark.pictures
def test_an_autoencoder_run_writes_its_codes_and_pictures_and_no_predictions(ae_run):
    summary = json.loads((ae_run / "summary.json").read_text())
    names = {p.name for p in ae_run.iterdir()}
    assert {"latents.csv", "latents.png", "reconstructions.png"} <= names
    assert not names & {"predictions.csv", "confusion_matrix.png", "worst_predictions.csv"}
    rows = read_csv(ae_run / "latents.csv")
    assert len(rows) == summary["data"]["num_test"]
    assert list(rows[0]) == ["row", "label", "z0", "z1", "z2", "z3", "z4"]


def test_predict_returns_the_model_s_codes_and_reconstructions(ae_run, tmp_path):
    from dltrain.inference.predict import predict_file, read_inputs
    from dltrain.inference.restore import load_model

    ckpt, pngs = ae_run / "checkpoints" / "best.pt", digit_pngs(tmp_path / "in")
    restored = load_model(ckpt)
    ((ids, x),) = list(read_inputs(restored, pngs, 64))
    with torch.no_grad():
        codes, recon = restored.model.encode(x), restored.model(x)
    assert predict_file(ckpt, pngs, tmp_path / "latents.csv", "cpu") == len(ids)  # returns=auto: latents
    latents = read_csv(tmp_path / "latents.csv")
    assert [row["input"] for row in latents] == ids
    got = torch.tensor([[float(row[f"z{j}"]) for j in range(5)] for row in latents])
    assert torch.allclose(got, codes, rtol=1e-5, atol=1e-5)

    predict_file(ckpt, pngs, tmp_path / "rec.csv", "cpu", returns="reconstructions")
    rows = read_csv(tmp_path / "rec.csv")
    errors = torch.tensor([float(row["reconstruction_error"]) for row in rows])
    assert torch.allclose(errors, ((recon - x) ** 2).flatten(1).mean(dim=1), rtol=1e-5)
    assert [row["reconstruction"] for row in rows] == [f"rec-reconstructions/{i}.png" for i in range(len(ids))]
    assert all((tmp_path / row["reconstruction"]).is_file() for row in rows)
    # dltrain-predict's own outputs may be written again; a file it did not write may not
    predict_file(ckpt, pngs, tmp_path / "latents.csv", "cpu")
    (tmp_path / "rec-reconstructions" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="notes.txt"):
        predict_file(ckpt, pngs, tmp_path / "rec.csv", "cpu", returns="reconstructions")


def test_returns_that_the_checkpoint_has_not_is_one_line(ae_run, tmp_path, capsys):
    from dltrain.inference.predict import main as predict_main

    pngs = digit_pngs(tmp_path / "in")
    ckpt = ae_run / "checkpoints" / "best.pt"
    err = tool_error(capsys, predict_main, "dltrain-predict",
                     [f"ckpt={ckpt}", f"input={pngs}", f"output={tmp_path / 'o.csv'}", "returns=predictions"])
    assert "autoencoder's checkpoint" in err and "returns=latents" in err
    supervised = tmp_path / "clf"
    train(compose(["trainer.fast_dev_run=true", "device=cpu", "trainer.diagnostics=false"]), run_dir=supervised)
    err = tool_error(capsys, predict_main, "dltrain-predict", [f"ckpt={supervised / 'checkpoints' / 'best.pt'}",
                                                               f"input={pngs}", f"output={tmp_path / 'o.csv'}",
                                                               "returns=latents"])
    assert "not an autoencoder's checkpoint" in err and "task=supervised" in err


def test_export_writes_the_encoder_and_its_codes_come_back_from_the_onnx_file(ae_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from dltrain.export.cli import export_checkpoint
    from dltrain.inference.onnx_predict import predict_exported
    from dltrain.inference.predict import predict_file

    ckpt, pngs = ae_run / "checkpoints" / "best.pt", digit_pngs(tmp_path / "in")
    folder = export_checkpoint(ckpt, "onnx", str(tmp_path / "export"))
    card = json.loads((folder / "model.json").read_text())
    assert card["task"] == "latents" and "autoencoder" in card["autoencoder"]
    assert card["output"]["name"] == "latents" and card["output"]["columns"] == [f"z{j}" for j in range(5)]
    assert card["verification"]["max_abs_diff"] <= card["verification"]["tolerance"]
    predict_exported(folder / "model.onnx", pngs, tmp_path / "onnx.csv")
    predict_file(ckpt, pngs, tmp_path / "ckpt.csv", "cpu")
    exported, own = read_csv(tmp_path / "onnx.csv"), read_csv(tmp_path / "ckpt.csv")
    assert list(exported[0]) == list(own[0])
    assert np.allclose([[float(v) for k, v in row.items() if k.startswith("z")] for row in exported],
                       [[float(v) for k, v in row.items() if k.startswith("z")] for row in own], atol=1e-4)


def test_rows_of_a_table_are_drawn_as_one_heatmap_per_panel():
    from dltrain.report.reconstructions import reconstructions_figure

    x = torch.randn(8, 5)
    fig = reconstructions_figure([("input", x), ("noisy input", x + 1), ("reconstruction", x / 2)], None,
                                 [str(i) for i in range(8)], "rows")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["input", "noisy input", "reconstruction"]
    assert np.allclose(panels[1].images[0].get_array(), (x + 1).numpy())


def test_a_caption_fits_under_its_picture():
    from dltrain.tasks.autoencoder_outputs import caption

    assert caption(3, "7") == "3 (7)"
    assert caption("circle/circle_009.png", "circle") == "circle"
    assert caption("circle/circle_009.png", None) == "...e_009.png" and len(caption("x" * 40, None)) == 12

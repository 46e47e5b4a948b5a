"""dltrain-predict: new inputs preprocessed from the checkpoint alone give the predictions
the run itself made on the same examples (its predictions.csv), for every kind of input."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dltrain import compose, train
from dltrain.data import DATASETS
from dltrain.data.preprocessing.table import _one_hot_columns
from dltrain.inference.predict import main, read_inputs
from dltrain.inference.restore import load_model
from tests.conftest import ROOT, tool_error
from tests.files import mnist_arrays


def _train(tmp_path_factory: pytest.TempPathFactory, name: str, overrides: list[str]) -> Path:
    run = tmp_path_factory.mktemp(name) / "run"
    train(compose(["device=cpu", *overrides]), run_dir=run)
    return run / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_files) -> dict[str, Path]:
    """One short run per kind of input: name -> its best.pt."""
    files = data_files.overrides
    short = ["trainer.fast_dev_run=true"]  # every test split here fits in its two batches
    return {
        # max_categories=2: one city keeps its column, the other two share city_infrequent_sklearn
        "csv": _train(tmp_path_factory, "csv", ["data=csv", *files["csv"], "data.target=Class", "data.missing=mean",
                                                "data.max_categories=2", *short]),
        "text": _train(tmp_path_factory, "text", ["data=text_csv", *files["text_csv"], "model=gru", *short]),
        "images": _train(tmp_path_factory, "images", ["data=image_folder", *files["image_folder"], "model=cnn",
                                                      "data.image_size=[12,12]", *short]),
        "mnist": _train(tmp_path_factory, "mnist", ["data=mnist", *files["mnist"], "model=cnn", *short]),
        "digits": _train(tmp_path_factory, "digits", short),
        "moons": _train(tmp_path_factory, "moons", ["data=moons", *short]),
        "sine": _train(tmp_path_factory, "sine", ["data=sine", *short]),
    }


def _predict(ckpt: Path, source: Path, out: Path) -> pd.DataFrame:
    main([f"ckpt={ckpt}", f"input={source}", f"output={out}", "device=cpu"])
    return pd.read_csv(out, keep_default_na=False)


def _agrees_with_run(ckpt: Path, predicted: pd.DataFrame, to_input=lambda row: row) -> None:
    """Every row of the run's predictions.csv is predicted alike: class and confidence, or value."""
    run = pd.read_csv(ckpt.parent.parent / "predictions.csv", keep_default_na=False)
    mine = predicted.set_index("input")
    assert len(run) > 0
    for row in run.itertuples():
        got = mine.loc[to_input(row.row)]
        if "confidence" in run.columns:
            assert (got["prediction"], got["confidence"]) == (row.prediction, pytest.approx(row.confidence, abs=2e-5))
        else:
            assert got["prediction"] == pytest.approx(row.prediction, rel=1e-4, abs=1e-5)


def _fails(capsys, argv: list[str]) -> str:
    return tool_error(capsys, main, "dltrain-predict", argv)


def test_table_rows(runs, data_files, tmp_path, capsys):
    """Gaps filled, numbers scaled and cities one-hot encoded (with the infrequent column) as in training."""
    table = data_files.root / "table.csv"
    out = _predict(runs["csv"], table, tmp_path / "out.csv")
    assert "wrote 60 predictions" in capsys.readouterr().out
    assert list(out.columns) == ["input", "prediction", "confidence", "p_ok", "p_fraud", "input_warnings"]
    assert out["input"].tolist() == list(range(60))
    assert np.allclose(out["p_ok"] + out["p_fraud"], 1, atol=1e-5)
    assert np.allclose(out[["p_ok", "p_fraud"]].max(axis=1), out["confidence"])
    _agrees_with_run(runs["csv"], out)


def test_table_encoding(runs, tmp_path):
    """Columns in any order, extra columns ignored, an unseen city goes to the infrequent column."""
    restored = load_model(runs["csv"])
    data = restored.data
    assert data["encoded_features"][-1] == "city_infrequent_sklearn"
    frame = pd.DataFrame({"city": ["lima", data["encoded_features"][3].removeprefix("city_")], "note": ["a", "b"],
                          "score": [1.0, 2.0], "age": [30.0, np.nan], "id": [0, 1]})
    path = tmp_path / "reordered.csv"
    frame.to_csv(path, index=False)
    (_, x), = read_inputs(restored, path, 512)
    age = data["numeric_scaling"]["age"]
    assert x[:, 1].tolist() == pytest.approx([(30.0 - age["mean"]) / age["std"],
                                              (data["fill_values"]["age"] - age["mean"]) / age["std"]])
    assert x[:, 3:].tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_one_hot_columns_follow_the_encoder():
    names = ["age", "city_oslo", "city_rome", "kind_a", "kind_infrequent_sklearn"]
    assert _one_hot_columns("city", ["oslo", "rome"], names, 1) == ({"oslo": 1, "rome": 2}, 3)
    assert _one_hot_columns("kind", ["a", "b", "c"], names, 3) == ({"a": 3, "b": 4, "c": 4, None: 4}, 5)


def test_table_errors(runs, data_files, tmp_path, capsys):
    table = data_files.root / "table.csv"
    pd.read_csv(table).drop(columns="score").to_csv(tmp_path / "no_score.csv", index=False)
    err = _fails(capsys, [f"ckpt={runs['csv']}", f"input={tmp_path / 'no_score.csv'}", f"output={tmp_path / 'o.csv'}"])
    assert "no_score.csv has no column score: the model reads the columns id, age, score, city" in err
    state = torch.load(runs["csv"], weights_only=True)
    state["data"]["missing"] = "drop"  # as a run with data.missing=drop would have recorded
    torch.save(state, tmp_path / "drop.pt")
    err = _fails(capsys, [f"ckpt={tmp_path / 'drop.pt'}", f"input={table}", f"output={tmp_path / 'o.csv'}"])
    assert "empty cells in age (3 rows), city (3 rows)" in err and "data.missing=drop" in err
    err = _fails(capsys, [f"ckpt={runs['csv']}", f"input={tmp_path / 'absent.csv'}", f"output={tmp_path / 'o.csv'}"])
    assert "input=" in err and "absent.csv does not exist" in err
    assert not (tmp_path / "o.csv").exists()


def test_texts(runs, data_files, tmp_path):
    out = _predict(runs["text"], data_files.root / "texts.csv", tmp_path / "out.csv")
    assert list(out.columns) == ["input", "prediction", "confidence", "p_neg", "p_pos", "input_warnings"]
    assert len(out) == 60
    _agrees_with_run(runs["text"], out)
    restored = load_model(runs["text"])
    vocab = restored.data["vocabulary"]
    pd.DataFrame({"text": ["GOOD movie unheardof", ""]}).to_csv(tmp_path / "new.csv", index=False)
    (_, x), = read_inputs(restored, tmp_path / "new.csv", 512)
    assert x[0, :3].tolist() == [vocab.index("good"), vocab.index("movie"), 1]  # lowercased; unknown -> <unk>
    assert x[1].tolist() == [1] + [0] * (x.shape[1] - 1)  # an empty text is one <unk>
    assert x.shape[1] == restored.data["padded_length"]


def test_image_folder(runs, data_files, tmp_path, capsys):
    out = _predict(runs["images"], data_files.root / "images", tmp_path / "out.csv")
    assert "skipped 1 unreadable image: dog/bad.png" in capsys.readouterr().err
    assert len(out) == 39 and out["input"].iloc[0] == "cat/img0.png"  # 3 x 13 images, hidden and stray files skipped
    assert list(out.columns)[3:] == ["p_cat", "p_dog", "p_fox", "input_warnings"]
    _agrees_with_run(runs["images"], out)


def _png_folder(folder: Path, images: np.ndarray) -> Path:
    """uint8 images ``(N, H, W)`` or ``(N, H, W, 3)`` as ``folder/sub/NNN.png``, in index order."""
    (folder / "sub").mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / "sub" / f"{i:03d}.png")
    return folder


def test_mnist_test_images_as_files(runs, tmp_path):
    folder = _png_folder(tmp_path / "pngs", mnist_arrays(60, 20)["x_test"])
    out = _predict(runs["mnist"], folder, tmp_path / "out.csv")
    assert len(out) == 20
    _agrees_with_run(runs["mnist"], out, lambda row: f"sub/{row:03d}.png")


def test_digits_test_images_as_files(runs, tmp_path):
    """Digits' pixels are ink counts 0..16: written as PNG values, read back as the same counts."""
    data = DATASETS.build("digits", seed=0)
    scale = data.info["pixel_scaling"]
    counts = np.rint(data.x_test[:40].reshape(40, 64).numpy() * scale["std"] + scale["mean"])  # (40, 64)
    pixels = np.rint(counts * 255 / 16).astype(np.uint8).reshape(40, 8, 8)
    out = _predict(runs["digits"], _png_folder(tmp_path / "pngs", pixels), tmp_path / "out.csv")
    run = pd.read_csv(runs["digits"].parent.parent / "predictions.csv").iloc[:40]
    assert out["prediction"].astype(str).tolist() == run["prediction"].astype(str).tolist()
    assert out["confidence"].to_numpy() == pytest.approx(run["confidence"].to_numpy(), abs=2e-5)


@pytest.mark.parametrize("name", ["moons", "sine"])
def test_points(runs, tmp_path, name):
    """The test split's points in their own units (a non-numeric column is ignored)."""
    data = DATASETS.build(name, seed=0)
    scale = data.info["input_scaling"]
    points = data.x_test.numpy() * np.asarray(scale["std"]) + np.asarray(scale["mean"])  # (N, 2) or (N, 1)
    frame = pd.DataFrame(points, columns=["x", "y"][:points.shape[1]]).assign(note="new")
    frame.to_csv(tmp_path / "points.csv", index=False)
    out = _predict(runs[name], tmp_path / "points.csv", tmp_path / "out.csv")
    assert list(out.columns) == (["input", "prediction"] if name == "sine" else
                                 ["input", "prediction", "confidence", "p_0", "p_1"]) + ["input_warnings"]
    _agrees_with_run(runs[name], out)


def test_other_errors(runs, tmp_path, capsys):
    state = torch.load(runs["sine"], weights_only=True)
    state["data"]["dataset"] = "chirp"
    torch.save(state, tmp_path / "chirp.pt")
    out = f"output={tmp_path / 'out.csv'}"
    err = _fails(capsys, [f"ckpt={tmp_path / 'chirp.pt'}", f"input={tmp_path}", out])
    assert "dltrain-predict does not read inputs of data=chirp" in err
    assert "unknown key colour: dltrain-predict takes ckpt, input, output, device, batch_size, overwrite, " \
        "returns, model._target_, trust_code;" in _fails(capsys, [f"ckpt={runs['sine']}", f"input={tmp_path}", out,
                                                                  "colour=red"])
    assert "unknown key data.path" in _fails(capsys, [f"ckpt={runs['sine']}", "data.path=x.csv", out])
    assert "batch_size=0 is not a whole number" in _fails(capsys, [f"ckpt={runs['sine']}", "batch_size=0"])
    assert "input=..., output=... are required" in _fails(capsys, [f"ckpt={runs['sine']}"])
    assert "does not exist" in _fails(capsys, [f"ckpt={tmp_path / 'nope.pt'}", f"input={tmp_path}", out])
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(runs["sine"].read_bytes()[:500])
    assert "cannot be loaded" in _fails(capsys, [f"ckpt={truncated}", f"input={tmp_path}", out])
    empty = tmp_path / "empty"
    empty.mkdir()
    err = _fails(capsys, [f"ckpt={runs['mnist']}", f"input={empty}", out])
    assert "holds no image files" in err
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.slow  # a process start of its own: kept out of the default suite
def test_python_dash_m(runs, tmp_path):
    pd.DataFrame({"a": [0.0, 1.0, 2.0], "b": [0.5, -0.5, 0.0]}).to_csv(tmp_path / "points.csv", index=False)
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    done = subprocess.run([sys.executable, "-m", "dltrain.inference.predict", f"ckpt={runs['moons']}",
                           f"input={tmp_path / 'points.csv'}", f"output={tmp_path / 'out' / 'p.csv'}", "device=cpu"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"wrote 3 predictions to {tmp_path / 'out' / 'p.csv'}" in done.stdout
    with open(tmp_path / "out" / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["input"] for row in rows] == ["0", "1", "2"] and all(row["prediction"] in "01" for row in rows)

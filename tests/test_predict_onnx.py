"""dltrain-predict ckpt=<folder>/model.onnx: an exported model run by onnxruntime alone gives
the checkpoint's predictions on the same inputs (same rows, ids, flags and columns), imports no
torch, and refuses a model.json it cannot trust in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dltrain import compose, train
from dltrain.data import DATASETS
from dltrain.inference.predict import main
from tests.conftest import ROOT, tool_error

#: What the exported model's path must not import (dltrain-predict there runs without them).
HEAVY = ("torch", "omegaconf", "hydra", "sklearn", "matplotlib")


def _export(tmp_path_factory: pytest.TempPathFactory, name: str, overrides: list[str]) -> Path:
    """Train a short run and export its best.pt to ONNX: the model.onnx written."""
    from dltrain.export.cli import export_checkpoint

    run = tmp_path_factory.mktemp(name) / "run"
    train(compose(["device=cpu", "trainer.fast_dev_run=true", *overrides]), run_dir=run)
    return export_checkpoint(run / "checkpoints" / "best.pt", "onnx") / "model.onnx"


@pytest.fixture(scope="module")
def exported(exported) -> dict[str, Path]:
    """The session's digits MLP and table model exported to ONNX (tests/conftest.py): name -> model.onnx."""
    return {name: model for name, (model, _) in exported.items()}


def _checkpoint(model: Path) -> Path:
    return model.parent.parent / "checkpoints" / "best.pt"


def _predict(ckpt: Path, source: Path, out: Path) -> pd.DataFrame:
    main([f"ckpt={ckpt}", f"input={source}", f"output={out}", "device=cpu"])
    return pd.read_csv(out, keep_default_na=False)


def _same_predictions(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    """Same columns, ids, predictions and flags; probabilities within 1e-5 (values: within 1e-5 relative)."""
    assert list(ours.columns) == list(theirs.columns)
    numbers = [c for c in ours.columns if c == "confidence" or c.startswith("p_")]
    for column in ("input", "input_warnings", *(("prediction",) if numbers else ())):
        assert ours[column].astype(str).tolist() == theirs[column].astype(str).tolist()
    if not numbers:  # regression
        assert ours["prediction"].to_numpy() == pytest.approx(theirs["prediction"].to_numpy(), rel=1e-5, abs=1e-6)
        return
    assert np.abs(ours[numbers].to_numpy() - theirs[numbers].to_numpy()).max() <= 1e-5


def _digit_pngs(folder: Path) -> Path:
    """Digits' test images as PNG pixels (counts * 255 / 16), the last one inverted."""
    data = DATASETS.build("digits", seed=0)
    scale = data.info["pixel_scaling"]
    counts = np.rint(data.x_test[:30].reshape(30, 64).numpy() * scale["std"] + scale["mean"])  # (30, 64)
    pixels = np.rint(counts * 255 / 16).astype(np.uint8).reshape(30, 8, 8)
    pixels[-1] = 255 - pixels[-1]
    (folder / "sub").mkdir(parents=True)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / "sub" / f"{i:03d}.png")
    return folder


def _new_rows(data_files, path: Path) -> Path:
    """The training table's rows (with gaps), a city never seen, and an age far out of range."""
    table = pd.read_csv(data_files.root / "table.csv")
    table.loc[0, "city"] = "atlantis"
    table.loc[1, "age"] = 1e6
    table.to_csv(path, index=False)
    return path


def test_digit_images_as_the_checkpoint_predicts_them(exported, tmp_path, capsys):
    folder = _digit_pngs(tmp_path / "pngs")
    theirs = _predict(_checkpoint(exported["digits"]), folder, tmp_path / "ckpt.csv")
    ours = _predict(exported["digits"], folder, tmp_path / "onnx.csv")
    _same_predictions(ours, theirs)
    assert ours["input"].tolist()[:2] == ["sub/000.png", "sub/001.png"] and len(ours) == 30
    assert ours["input_warnings"].tolist()[-1] == "inverted"
    assert "1 of 30 inputs do not look like the training data (1 inverted)" in capsys.readouterr().err


def test_table_rows_as_the_checkpoint_predicts_them(exported, data_files, tmp_path):
    source = _new_rows(data_files, tmp_path / "new.csv")
    theirs = _predict(_checkpoint(exported["csv"]), source, tmp_path / "ckpt.csv")
    ours = _predict(exported["csv"], source, tmp_path / "onnx.csv")
    _same_predictions(ours, theirs)
    assert list(ours.columns) == ["input", "prediction", "confidence", "p_ok", "p_fraud", "input_warnings"]
    assert ours["input"].tolist() == list(range(60)) and ours["input_warnings"][1] == "out_of_range: age"


def test_the_exported_path_imports_no_torch(exported, data_files, tmp_path):
    """A process where torch and the config libraries cannot be imported predicts as in-process."""
    source = _new_rows(data_files, tmp_path / "new.csv")
    code = (f"import sys\nfor name in {HEAVY!r}:\n    sys.modules[name] = None\n"
            "from dltrain.inference.predict import main\nmain(sys.argv[1:])\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "sub.csv"
    proc = subprocess.run([sys.executable, "-c", code, f"ckpt={exported['csv']}", f"input={source}", f"output={out}"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 60 predictions" in proc.stdout
    _same_predictions(pd.read_csv(out, keep_default_na=False), _predict(exported["csv"], source, tmp_path / "in.csv"))
    checkpoint = subprocess.run([sys.executable, "-c", code, f"ckpt={_checkpoint(exported['csv'])}", f"input={source}",
                                 f"output={out}"], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert checkpoint.returncode == 2 and checkpoint.stderr.count("\n") == 1
    assert "is not installed, and a checkpoint needs dltrain's dependencies" in checkpoint.stderr


def _copy(model: Path, folder: Path) -> Path:
    shutil.copytree(model.parent, folder)
    return folder / model.name


def _edit_card(model: Path, change) -> None:
    card = model.parent / "model.json"
    data = json.loads(card.read_text())
    change(data)
    card.write_text(json.dumps(data))


def test_a_model_json_it_cannot_trust_is_one_line(exported, data_files, tmp_path, capsys):
    source = data_files.root / "table.csv"

    def fails(model: Path, source: Path = source) -> str:
        return tool_error(capsys, main, "dltrain-predict",
                          [f"ckpt={model}", f"input={source}", f"output={tmp_path / 'out.csv'}"])

    missing = _copy(exported["csv"], tmp_path / "missing")
    (missing.parent / "model.json").unlink()
    assert "has no model.json beside it" in fails(missing)
    broken = _copy(exported["csv"], tmp_path / "broken")
    (broken.parent / "model.json").write_text("{not json")
    assert "model.json cannot be read as JSON" in fails(broken)
    newer = _copy(exported["csv"], tmp_path / "newer")
    _edit_card(newer, lambda card: card.update(dltrain_export=2))
    assert "has layout version 2, and this dltrain reads version 1" in fails(newer)
    uncolumned = _copy(exported["csv"], tmp_path / "uncolumned")
    _edit_card(uncolumned, lambda card: card["input"].pop("columns"))
    assert "model.json has no input.columns: the file was changed after dltrain-export wrote it" in fails(uncolumned)
    renamed = _copy(exported["csv"], tmp_path / "renamed")
    _edit_card(renamed, lambda card: card["input"].update(name="pixels"))
    assert "its input is features tensor(double)" in fails(renamed) and "describes pixels float64" in fails(renamed)
    other = _copy(exported["digits"], tmp_path / "other")  # a digits model.json beside the table's graph
    shutil.copy(exported["csv"], other)
    assert "its input is features" in fails(other)
    garbage = _copy(exported["csv"], tmp_path / "garbage")
    garbage.write_bytes(b"not an onnx file")
    assert "cannot be loaded by onnxruntime" in fails(garbage)
    assert "does not exist" in fails(tmp_path / "nowhere" / "model.onnx")
    pd.read_csv(source).drop(columns="score").to_csv(tmp_path / "no_score.csv", index=False)
    assert "no_score.csv has no column score" in fails(exported["csv"], tmp_path / "no_score.csv")
    assert not (tmp_path / "out.csv").exists()


def _points_csv(path: Path) -> Path:
    """The moons test split's points in their own units, the last one far beyond the training range."""
    data = DATASETS.build("moons", seed=0)
    scale = data.info["input_scaling"]
    points = data.x_test.numpy() * np.asarray(scale["std"]) + np.asarray(scale["mean"])  # (N, 2)
    points[-1] = [50.0, -50.0]
    pd.DataFrame(points, columns=["x", "y"]).assign(note="new").to_csv(path, index=False)
    return path


def _sine_csv(path: Path) -> Path:
    """Points of the sine data's range, and one far beyond it."""
    pd.DataFrame({"x": [*np.linspace(-3, 3, 20), 40.0]}).to_csv(path, index=False)
    return path


def _texts_csv(data_files, path: Path) -> Path:
    """The training texts, and one of words never seen."""
    table = pd.read_csv(data_files.root / "texts.csv")
    table.loc[0, "text"] = "zyx wvu tsr"
    table.to_csv(path, index=False)
    return path


def _images_folder(data_files, folder: Path) -> Path:
    """The training image folder (a corrupt file, stray files) and an image larger than any of them."""
    shutil.copytree(data_files.root / "images", folder)
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "large.png")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["points", "values", "text", "images"])
def test_every_kind_as_the_checkpoint_predicts_it(kind, tmp_path_factory, data_files, tmp_path):
    """Points (classes, and regression's values), texts (a GRU) and RGB images resized from a
    folder with files it skips: the same rows, ids, flags and outputs as the checkpoint's."""
    files = data_files.overrides
    overrides, source = {
        "points": (["data=moons"], lambda: _points_csv(tmp_path / "points.csv")),
        "values": (["data=sine"], lambda: _sine_csv(tmp_path / "sine.csv")),
        "text": (["data=text_csv", *files["text_csv"], "model=gru"],
                 lambda: _texts_csv(data_files, tmp_path / "t.csv")),
        "images": (["data=image_folder", *files["image_folder"], "model=cnn", "data.image_size=[12,12]"],
                   lambda: _images_folder(data_files, tmp_path / "images")),
    }[kind]
    model = _export(tmp_path_factory, kind, overrides)
    inputs = source()
    theirs = _predict(_checkpoint(model), inputs, tmp_path / "ckpt.csv")
    ours = _predict(model, inputs, tmp_path / "onnx.csv")
    _same_predictions(ours, theirs)
    assert any(ours["input_warnings"])

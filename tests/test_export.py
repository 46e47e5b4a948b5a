"""dltrain-export: the graph's preprocessing per kind equals dltrain's own (no exporter needed),
the digits MLP exported to ONNX and TorchScript and verified end to end, and the refusals, one
line each. The matrix of model families and formats is in test_export_families.py (slow)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from dltrain import compose, train
from dltrain.data.preprocessing import Images, Points, from_record
from dltrain.export.cli import export_checkpoint, main
from dltrain.export.graph import ImagesInput, InkCountsInput, OutputHead, PointsInput, TableInput, export_graph
from dltrain.export.raw import held_out
from dltrain.export.verify import verify
from dltrain.inference.predict import output_rows
from dltrain.inference.restore import load_model
from dltrain.models.registry import InputNormalization
from tests.conftest import ROOT, tool_error


class BranchyNet(nn.Module):
    """A user's network whose path depends on the values of its inputs: graph exporters cannot follow it."""

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if out.sum() > 0:
            return out
        return -out


def _train(tmp_path_factory: pytest.TempPathFactory, name: str, overrides: list[str]) -> Path:
    run = tmp_path_factory.mktemp(name) / "run"
    train(compose(["device=cpu", "trainer.fast_dev_run=true", *overrides]), run_dir=run)
    return run / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, exported) -> dict[str, Path]:
    """One short run per kind checked here: name -> its best.pt (digits and the table: the
    session's exported runs, tests/conftest.py)."""
    shared = {name: model.parent.parent / "checkpoints" / "best.pt" for name, (model, _) in exported.items()}
    return {**shared, "sine": _train(tmp_path_factory, "sine", ["data=sine"])}


def _restored(ckpt: Path):
    restored = load_model(ckpt, "cpu")
    return restored, from_record(restored.data, restored.cfg.data, restored.path)


# --- the graph's preprocessing is dltrain's --------------------------------------------------------------------


def test_images_graph_repeats_grayscale_and_standardises_as_images_apply():
    raw = torch.randint(0, 256, (5, 1, 6, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    prep = Images.fit_images(raw).for_model(InputNormalization(channels=3))
    graph = ImagesInput(prep, {})
    assert graph.shape == (1, 6, 7)
    got = graph(raw.float())
    assert got.shape == (5, 3, 6, 7)
    torch.testing.assert_close(got, prep.apply(raw), rtol=0, atol=1e-6)


def test_ink_counts_graph_reads_pixels_as_ink_counts(runs):
    _, prep = _restored(runs["digits"])
    pixels = torch.randint(0, 256, (9, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(InkCountsInput(prep, {})(pixels.float()), prep.apply(prep.counts(pixels)),
                               rtol=0, atol=1e-6)


def test_points_graph_standardises_as_points_apply():
    points = np.random.default_rng(2).normal(3.0, 5.0, (20, 2))
    prep = Points.fit(points)
    torch.testing.assert_close(PointsInput(prep, {})(torch.from_numpy(points).float()),
                               prep.apply(points.astype(np.float32)), rtol=0, atol=1e-6)


def test_table_graph_fills_gaps_and_one_hot_encodes_as_training(runs):
    """NaN numbers and cities filled, an unknown city (-1) sent to the infrequent column, as Table.read does."""
    _, prep = _restored(runs["csv"])
    features = [str(c) for c in prep.features]
    city = prep.categorical["city"]
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({c: rng.normal(40, 10, 8) for c in prep.numeric})
    frame["city"] = [city[i % len(city)] for i in range(8)]
    frame.loc[1, "age"] = np.nan
    frame.loc[2, "city"] = np.nan
    frame.loc[3, "city"] = "Atlantis"
    raw = torch.tensor(np.stack([frame[c].to_numpy(dtype=np.float64) if c != "city" else
                                 np.array([city.index(v) if v in city else (np.nan if pd.isna(v) else -1)
                                           for v in frame["city"]]) for c in features], axis=1), dtype=torch.float32)
    expected = frame[features].copy()
    prep._fill(expected, Path("rows.csv"), lambda message: None)
    torch.testing.assert_close(TableInput(prep, {})(raw), prep.apply(expected), rtol=0, atol=1e-5)
    assert TableInput(prep, {}).entries()["columns"][features.index("city")]["categories"] == city


@pytest.mark.parametrize(("task", "width", "scale"), [("binary", 1, None), ("multiclass", 4, None),
                                                      ("multilabel", 3, None), ("regression", 2, (5.0, 2.5))])
def test_output_head_gives_what_dltrain_predict_reports(task, width, scale):
    outputs = torch.randn(6, width, generator=torch.Generator().manual_seed(4)) * 3
    data = {"task": task, "num_outputs": max(width, 2), "class_names": None, "target_scale": scale}
    rows = output_rows(outputs, list(range(6)), data)
    prefix = "prediction" if task == "regression" else "p_"
    expected = torch.tensor([[v for k, v in row.items() if k.startswith(prefix)] for row in rows])
    torch.testing.assert_close(OutputHead(task, width, scale)(outputs), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["csv", "sine"])
def test_a_checkpoints_graph_on_its_raw_test_split_is_dltrain(runs, name):
    """The raw test split (table cells back from their encoding, points in their units) through the graph."""
    restored, _ = _restored(runs[name])
    graph = export_graph(restored)
    examples = held_out(restored)
    result = verify(lambda x: graph(torch.from_numpy(x)).detach().numpy(), restored.model, examples,
                    restored.data, batch_size=7)
    assert result["examples"] == len(examples.raw) > 0
    assert result["max_abs_diff"] <= result["tolerance"]


# --- the digits MLP, exported and verified ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def exports(runs, exported) -> dict[str, tuple[Path, str]]:
    """The digits MLP exported to ONNX (the session's) and TorchScript: format -> (folder, what
    dltrain-export printed)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        folder = export_checkpoint(runs["digits"], "torchscript", batch_size=50)
    model, onnx_printed = exported["digits"]
    return {"onnx": (model.parent, onnx_printed), "torchscript": (folder, printed.getvalue())}


@pytest.mark.parametrize(("fmt", "file"), [("onnx", "model.onnx"), ("torchscript", "model.pt")])
def test_export_writes_the_folder_and_prints_the_verification(runs, exports, fmt, file):
    folder, printed = exports[fmt]
    assert folder == runs["digits"].parent.parent / f"export-best-{fmt}"
    assert sorted(p.name for p in folder.iterdir()) == sorted([file, "model.json"])
    lines = printed.splitlines()
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    assert lines[0] == (f"dltrain-export: largest difference: {card['verification']['max_abs_diff']:.1e} over "
                        f"{card['verification']['examples']} test examples (tolerance 1e-04)")
    assert lines[1] == f"dltrain-export: wrote {folder}/: {file}, model.json"


def test_model_json_states_the_contract(runs, exports):
    card = json.loads((exports["onnx"][0] / "model.json").read_text(encoding="utf-8"))
    assert (card["dltrain_export"], card["format"], card["file"], card["task"], card["dataset"]) == (
        1, "onnx", "model.onnx", "multiclass", "digits")
    assert card["input"] | {"layout": None} == {
        "name": "pixels", "kind": "ink_counts", "dtype": "float32", "shape": ["batch", 1, 8, 8], "layout": None,
        "image_size": [8, 8], "color": "grayscale", "value_range": [0, 255]}
    assert card["output"]["shape"] == ["batch", 10]
    assert card["output"]["columns"] == [f"p_{i}" for i in range(10)]
    assert card["versions"]["opset"] >= 18 and card["versions"]["onnxscript"]
    assert card["verification"]["examples"] == card["data"]["num_test"] > 0
    assert card["verification"]["max_abs_diff"] <= card["verification"]["tolerance"] == 1e-4
    assert card["verification"]["runtime"].startswith("onnxruntime ")
    assert card["source"]["epoch"] == load_model(runs["digits"]).state["epoch"]
    assert "vocabulary" not in card["data"] and card["data"]["pixel_max"] == 16


def test_the_onnx_file_runs_alone_on_any_batch_size(runs, exports):
    """onnxruntime, raw pixels of a batch size it was not traced with: dltrain's probabilities."""
    import onnxruntime

    restored, prep = _restored(runs["digits"])
    session = onnxruntime.InferenceSession(str(exports["onnx"][0] / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixels"]
    assert session.get_inputs()[0].shape[0] == "batch"
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    pixels = torch.randint(0, 256, (11, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    got = session.run(None, {"pixels": pixels.float().numpy()})[0]
    with torch.no_grad():
        expected = torch.softmax(restored.model(prep.apply(prep.counts(pixels))), dim=1)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


def test_exporting_again_replaces_its_own_files(runs, exports, capsys):
    main([f"ckpt={runs['digits']}", "format=torchscript"])
    printed = capsys.readouterr()
    assert "wrote" in printed.out
    assert printed.err == ""  # the exporter's warnings are hidden unless verbose=true
    assert sorted(p.name for p in exports["torchscript"][0].iterdir()) == ["model.json", "model.pt"]


# --- refusals, one line each ------------------------------------------------------------------------------------


def _fails(capsys, argv: list[str]) -> str:
    return tool_error(capsys, main, "dltrain-export", argv)


def test_help_and_a_bad_argument_import_no_torch():
    code = ("import sys\nfrom dltrain.export.cli import main\n"
            "for argv in (['--help'], ['ckpt=x.pt', 'format=tflite']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.stdout.splitlines()[0].startswith("usage: dltrain-export ckpt=... format=... [output=<run dir>/")
    assert done.stdout.splitlines()[-1] == "NO_TORCH"
    assert done.stderr == ("dltrain-export: error: format=tflite is not a format dltrain-export writes: choose one "
                           "of onnx, torchscript, exported_program.\n")


def test_an_unknown_format_is_refused(runs, capsys):
    err = _fails(capsys, [f"ckpt={runs['digits']}", "format=tflite"])
    assert ("format=tflite is not a format dltrain-export writes: choose one of onnx, torchscript, "
            "exported_program") in err


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path, capsys):
    fake = tmp_path / "best.pt"
    fake.write_text("not a checkpoint")
    err = _fails(capsys, [f"ckpt={fake}", "format=onnx"])
    assert str(fake) in err
    assert not (tmp_path / "export-best-onnx").exists()


def test_a_folder_with_files_it_did_not_write_is_refused(runs, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    err = _fails(capsys, [f"ckpt={runs['digits']}", "format=onnx", f"output={tmp_path}"])
    assert f"{tmp_path} holds notes.txt, which dltrain-export did not write" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_outputs_beyond_the_tolerance_keep_no_model_file(runs, exports, tmp_path, capsys, monkeypatch):
    """An earlier export in the folder is removed too: no model.json is left claiming a verified file."""
    folder = tmp_path / "export"
    main([f"ckpt={runs['digits']}", "format=torchscript", f"output={folder}"])
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.pt"]
    monkeypatch.setattr("dltrain.export.verify.PROBABILITY_TOLERANCE", 0.0)  # float rounding exceeds it
    err = _fails(capsys, [f"ckpt={runs['digits']}", "format=torchscript", f"output={folder}"])
    assert "the format=torchscript file's outputs differ from dltrain's (largest difference: " in err
    assert "so it was not kept: try another format, or report this" in err
    assert list(folder.iterdir()) == []


def test_the_test_split_is_read_where_data_path_says(runs, tmp_path, capsys):
    """The data a checkpoint was trained on is read again to verify: from data.path= when it moved."""
    gone = tmp_path / "moved.csv"
    err = _fails(capsys, [f"ckpt={runs['csv']}", "format=torchscript", f"data.path={gone}"])
    assert str(gone) in err
    assert not (runs["csv"].parent.parent / "export-best-torchscript").exists()


def test_a_model_the_format_cannot_hold_names_the_format_to_try(tmp_path_factory, capsys):
    ckpt = _train(tmp_path_factory, "branchy", ["model=custom", f"model._target_={__name__}.BranchyNet"])
    err = _fails(capsys, [f"ckpt={ckpt}", "format=exported_program", f"model._target_={__name__}.BranchyNet"])
    assert "dltrain-export: error: the model cannot be exported to format=exported_program: " in err
    assert err.rstrip().endswith("try format=torchscript.")
    assert not (ckpt.parent.parent / "export-best-exported_program").exists()  # nor the folder it made

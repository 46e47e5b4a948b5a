"""The export contract at its edges: a text CSV's delimiter travels in model.json; regression on
large, narrow targets and a table column of timestamps (float32 cannot hold either to the
tolerance) export and verify; dltrain-export writes only into an empty folder or one of its own
exports, and removes its own files an export no longer has; dltrain-predict refuses a changed
model.json or vocab.txt in one line, and explains an export that is not ONNX."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from dltrain import compose, train
from dltrain.data.preprocessing import Images
from dltrain.errors import UserError
from dltrain.export.card_check import check_card
from dltrain.export.cli import export_checkpoint
from dltrain.export.cli import main as export_main
from dltrain.export.graph import EIGHT_BIT, ImagesInput
from dltrain.export.raw import Examples
from dltrain.export.text import TextInput
from dltrain.export.verify import verify
from dltrain.inference.onnx_inputs import READERS
from dltrain.inference.onnx_inputs import _vocabulary as read_vocabulary
from dltrain.inference.onnx_predict import Exported
from dltrain.inference.predict import main, model_result
from dltrain.models.registry import InputNormalization
from tests.conftest import tool_error
from tests.files import reviews


def _train(tmp_path_factory: pytest.TempPathFactory, name: str, overrides: list[str]) -> Path:
    run = tmp_path_factory.mktemp(name) / "run"
    train(compose(["device=cpu", "trainer.fast_dev_run=true", *overrides]), run_dir=run)
    return run / "checkpoints" / "best.pt"


def _predict(ckpt: Path, source: Path, out: Path) -> pd.DataFrame:
    main([f"ckpt={ckpt}", f"input={source}", f"output={out}", "device=cpu"])
    return pd.read_csv(out, keep_default_na=False)


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> tuple[Path, Path]:
    """A small RNN on texts read from a ``;``-separated CSV, exported to ONNX: (model.onnx, the CSV)."""
    source = tmp_path_factory.mktemp("semicolon") / "texts.csv"
    pd.DataFrame(reviews(60)).to_csv(source, sep=";", index=False)
    ckpt = _train(tmp_path_factory, "texts", ["data=text_csv", f"data.path={source}", 'data.delimiter=";"',
                                              "model=rnn", "model.hidden_size=8", "model.embedding_dim=8"])
    return export_checkpoint(ckpt, "onnx") / "model.onnx", source


@pytest.mark.slow
def test_a_text_csvs_delimiter_is_in_model_json_and_read_by_the_onnx_model(texts, tmp_path):
    model, source = texts
    assert json.loads((model.parent / "model.json").read_text())["input"]["delimiter"] == ";"
    theirs = _predict(model.parent.parent / "checkpoints" / "best.pt", source, tmp_path / "ckpt.csv")
    ours = _predict(model, source, tmp_path / "onnx.csv")
    assert len(ours) == 60 and ours["prediction"].tolist() == theirs["prediction"].tolist()
    assert np.abs(ours["confidence"].to_numpy() - theirs["confidence"].to_numpy()).max() <= 1e-5


def test_verification_compares_values_before_rounding():
    """Values near 1e6 with a standard deviation of 1151: rounded to 6 digits they move by up to
    0.5, four times the tolerance (1e-4 of 1151); unrounded, the same graph differs by nothing."""
    model = nn.Linear(3, 1)
    data = {"task": "regression", "target_scale": (1.0e6 + 0.37, 1151.0)}
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        result = verify(lambda raw: model_result(model(torch.from_numpy(raw)), data).numpy(), model,
                        Examples(x, x), data, batch_size=16)
    assert result["max_abs_diff"] <= result["tolerance"] == pytest.approx(0.1151)


def test_timestamps_and_large_values_export_and_verify(tmp_path_factory, capsys):
    """A column of timestamps (1.7e9 +- 300: float32 steps by 128 there) predicting a price near
    1e6: the table's features are float64, the values compared unrounded, so the export is kept."""
    rng = np.random.default_rng(0)
    ts = 1.7e9 + rng.uniform(-300, 300, 80).round()
    frame = pd.DataFrame({"ts": ts, "size": rng.normal(50, 10, 80), "price": 1e6 + 3 * (ts - 1.7e9)})
    path = tmp_path_factory.mktemp("prices") / "prices.csv"
    frame.to_csv(path, index=False)
    ckpt = _train(tmp_path_factory, "prices", ["data=csv", f"data.path={path}", "data.target=price"])
    folder = export_checkpoint(ckpt, "torchscript")  # the format does not matter here; ONNX reads float64 too
    card = json.loads((folder / "model.json").read_text())
    assert card["input"]["dtype"] == "float64" and card["task"] == "regression"
    assert card["verification"]["max_abs_diff"] <= card["verification"]["tolerance"]
    assert "wrote" in capsys.readouterr().out


def test_model_json_says_what_to_do_outside_the_graph(exported):
    card = json.loads((exported["csv"][0].parent / "model.json").read_text())
    assert card["input"]["dtype"] == "float64"
    assert "index in input.columns[j].categories (-1 for any other value)" in card["outside_the_graph"]
    assert "NaN for an empty cell, which the graph fills" in card["outside_the_graph"]
    prep = Images.fit_images(torch.zeros(2, 1, 4, 4, dtype=torch.uint8)).for_model(InputNormalization(channels=1))
    assert ImagesInput(prep, {}).outside.endswith(EIGHT_BIT) and "8 bits" in EIGHT_BIT


# --- the export folder ------------------------------------------------------------------------------------------


def _export_fails(capsys, argv: list[str]) -> str:
    return tool_error(capsys, export_main, "dltrain-export", argv)


def _digits(exported) -> Path:
    return exported["digits"][0].parent.parent / "checkpoints" / "best.pt"


def test_a_users_model_file_without_model_json_is_not_replaced(exported, tmp_path, capsys):
    (tmp_path / "model.onnx").write_text("mine")
    err = _export_fails(capsys, [f"ckpt={_digits(exported)}", "format=onnx", f"output={tmp_path}"])
    assert f"{tmp_path} holds model.onnx, which dltrain-export did not write" in err
    assert (tmp_path / "model.onnx").read_text() == "mine"


def test_a_file_its_model_json_does_not_list_is_not_replaced(exported, tmp_path, capsys):
    (tmp_path / "model.json").write_text(json.dumps({"dltrain_export": 1, "file": "model.pt", "input": {}}))
    (tmp_path / "model.pt").write_text("an earlier export")
    (tmp_path / "vocab.txt").write_text("mine")
    err = _export_fails(capsys, [f"ckpt={_digits(exported)}", "format=onnx", f"output={tmp_path}"])
    assert f"{tmp_path} holds vocab.txt, which dltrain-export did not write" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.pt", "vocab.txt"]
    (tmp_path / "model.json").write_text(json.dumps({"dltrain_export": True, "file": "model.pt"}))
    (tmp_path / "vocab.txt").unlink()
    err = _export_fails(capsys, [f"ckpt={_digits(exported)}", "format=onnx", f"output={tmp_path}"])
    assert f"{tmp_path / 'model.json'} was not written by dltrain-export" in err


def test_an_earlier_exports_own_files_are_replaced_and_a_stale_vocabulary_removed(exported, tmp_path, capsys):
    card = {"dltrain_export": 1, "file": "model.onnx", "input": {"vocabulary_file": "vocab.txt"}}
    (tmp_path / "model.json").write_text(json.dumps(card))
    for name in ("model.onnx", "vocab.txt"):
        (tmp_path / name).write_text("an earlier text export")
    export_main([f"ckpt={_digits(exported)}", "format=torchscript", f"output={tmp_path}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.pt"]
    assert json.loads((tmp_path / "model.json").read_text())["dataset"] == "digits"


# --- what dltrain-predict refuses -------------------------------------------------------------------------------


def _set(*path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(card: dict[str, Any]) -> None:
        entry = card
        for key in path[:-1]:
            entry = entry[key]
        entry[path[-1]] = value

    return change


def _vocabulary(text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / "vocab.txt").write_text(text)


#: name -> (export, change to model.json, change to the folder, what the one line says)
HOSTILE: dict[str, tuple[str, Any, Any, str]] = {
    "kind_a_list": ("csv", _set("input", "kind", value=["table"]), None, "its input.kind is ['table'], not"),
    "version_true": ("csv", _set("dltrain_export", value=True), None, "has layout version True"),
    "scaling_text": ("csv", _set("data", "numeric_scaling", value={"age": {"mean": "a", "std": 1}}), None,
                     "so the inputs cannot be encoded as in training"),
    "categories_null": ("csv", lambda c: [col.update(categories=None) for col in c["input"]["columns"]
                                          if col["type"] == "categorical"], None, "its input.columns is"),
    "columns_a_string": ("csv", _set("input", "columns", value="age"), None, "its input.columns is 'age'"),
    "num_outputs_text": ("csv", _set("data", "num_outputs", value="2"), None, "its data.num_outputs is '2'"),
    "task_contradicted": ("csv", _set("data", "task", value="regression"), None, "and data.task 'regression' differ"),
    "delimiter_int": ("csv", _set("input", "delimiter", value=5), None, "its input.delimiter is 5, not one character"),
    "image_size_other": ("digits", _set("input", "image_size", value=[16, 16]), None, "do not match input.shape"),
    "image_size_huge": ("digits", _set("input", "image_size", value=[1, 10**9]), None, "its input.image_size is"),
    "color_other": ("digits", _set("input", "color", value="rgb"), None, "its input.color is 'rgb'"),
    "pixel_max_0": ("digits", _set("data", "pixel_max", value=0), None, "its data.pixel_max is 0"),
    "tokenizer_a_string": ("text", _set("input", "tokenizer", value="x"), None, "its input.tokenizer is 'x'"),
    "vocabulary_outside": ("text", _set("input", "vocabulary_file", value="/etc/passwd"), None,
                           "its input.vocabulary_file is '/etc/passwd', not a file name in the model's folder"),
    "vocabulary_longer": ("text", None, _vocabulary("".join(f"w{i}\n" for i in range(5000))),
                          "vocab.txt holds 5000 tokens"),
    "vocabulary_a_device": ("text", _set("input", "vocabulary_file", value="zero"),
                            lambda folder: (folder / "zero").symlink_to("/dev/zero"), "zero cannot be read"),
}
#: The text cases export a recurrent net to ONNX (several seconds): slow; the checks they reach
#: are also called directly below.
CASES = [pytest.param(name, marks=pytest.mark.slow) if HOSTILE[name][0] == "text" else name for name in HOSTILE]


@pytest.mark.parametrize("case", CASES)
def test_a_changed_model_json_or_vocabulary_is_one_line(case, exported, data_files, tmp_path, capsys, request):
    base, change, files, expected = HOSTILE[case]
    if base == "text":
        model, source = request.getfixturevalue("texts")  # exported only for the (slow) text cases
    else:
        model, source = {"csv": (exported["csv"][0], data_files.root / "table.csv"),
                         "digits": (exported["digits"][0], None)}[base]
    if source is None:
        source = tmp_path / "images"
        source.mkdir()
    folder = tmp_path / "export"
    shutil.copytree(model.parent, folder)
    card = json.loads((folder / "model.json").read_text())
    if change is not None:
        change(card)
    (folder / "model.json").write_text(json.dumps(card))
    if files is not None:
        files(folder)
    err = tool_error(capsys, main, "dltrain-predict",
                     [f"ckpt={folder / 'model.onnx'}", f"input={source}", f"output={tmp_path / 'out.csv'}"])
    assert expected in err
    assert not (tmp_path / "out.csv").exists()


def _text_card(exported) -> dict[str, Any]:
    """The table export's model.json with a text input's entries."""
    card = json.loads((exported["csv"][0].parent / "model.json").read_text())
    card["input"] = {"name": "token_ids", "kind": "text", "dtype": "int64", "shape": ["batch", "length"],
                     **TextInput.entries(SimpleNamespace(prep=SimpleNamespace(column="text", delimiter=";",
                                                                                lowercase=True, max_length=20),
                                                         min_length=6))}
    return card


@pytest.mark.parametrize(("entry", "value", "expected"), [
    ("tokenizer", "x", "its input.tokenizer is 'x', not a pattern"),
    ("vocabulary_file", "/etc/passwd", "its input.vocabulary_file is '/etc/passwd', not a file name in the model's"),
    ("vocabulary_file", "../vocab.txt", "its input.vocabulary_file is '../vocab.txt', not a file name"),
    ("delimiter", 5, "its input.delimiter is 5, not one character"),
    ("max_length", "20", "its input.max_length is '20', not a whole number"),
])
def test_a_text_inputs_entries_are_checked(exported, entry, value, expected, tmp_path):
    card = _text_card(exported)
    check_card(tmp_path / "model.json", card, READERS)  # as written
    card["input"][entry] = value
    with pytest.raises(UserError, match=re.escape(expected)):
        check_card(tmp_path / "model.json", card, READERS)


def test_a_vocabulary_is_a_file_of_the_models_size(tmp_path):
    where = tmp_path / "model.json"
    (tmp_path / "vocab.txt").write_text("".join(f"w{i}\n" for i in range(30)))
    assert len(read_vocabulary(tmp_path / "vocab.txt", 30, where)) == 30
    with pytest.raises(UserError, match="vocab.txt holds 30 tokens, and .*model.json says the model has 25"):
        read_vocabulary(tmp_path / "vocab.txt", 25, where)
    (tmp_path / "zero").symlink_to("/dev/zero")
    with pytest.raises(UserError, match="zero cannot be read .*not a file in the model's folder"):
        read_vocabulary(tmp_path / "zero", 25, where)


def test_onnxruntime_refusing_the_inputs_is_one_line_naming_model_json(tmp_path):
    class Refusing:
        def run(self, *args: Any) -> None:
            raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions\nmore")

    card = {"input": {"name": "pixels"}, "output": {"name": "probabilities"}}
    with pytest.raises(UserError, match="refuses the inputs read as .*model.json describes them") as err:
        Exported(card, Refusing(), tmp_path / "model.onnx").run(np.zeros((1, 2), np.float32))
    assert "\n" not in str(err.value) and "INVALID_ARGUMENT" in str(err.value)


@pytest.mark.parametrize("given", ["folder", "model.pt", "model.pt2"])
def test_an_export_that_is_not_onnx_is_explained_in_one_line(given, tmp_path, capsys):
    (tmp_path / "model.json").write_text("{}")
    (tmp_path / "model.pt").write_text("TorchScript")
    (tmp_path / "model.pt2").write_text("ExportedProgram")
    ckpt = tmp_path if given == "folder" else tmp_path / given
    err = tool_error(capsys, main, "dltrain-predict", [f"ckpt={ckpt}", "input=x.csv", "output=out.csv"])
    assert f"ckpt={ckpt} is an export of dltrain-export, and dltrain-predict runs an export's model.onnx only" in err
    assert "export the checkpoint with format=onnx" in err and "torch.jit.load" in err and "torch.export.load" in err

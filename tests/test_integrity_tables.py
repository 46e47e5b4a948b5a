"""Tables and texts are read as they are meant, or refused with one line: a stray string
keeps a numeric column numeric, infinite or unscalable numbers are named with their rows,
and targets, headers, texts and losses that make no sense stop before training."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dltrain import compose, train
from dltrain.data.cells import MOSTLY_NUMERIC
from dltrain.data.tabular import build_csv
from dltrain.data.text import build_text_csv
from dltrain.errors import ConfigError
from dltrain.inference.predict import main as predict_main
from dltrain.inference.predict import read_inputs
from dltrain.inference.restore import load_model
from dltrain.losses import LOSSES
from tests.conftest import run_cli, tool_error
from tests.files import reviews, write_csv


def numbers(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    """Numeric features ``x`` and ``z``, a true/false feature ``flag`` and a 0/1 target ``y``
    that depends on ``x``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows).round(3)
    return pd.DataFrame({"x": x, "z": rng.normal(size=rows).round(3), "flag": rng.normal(size=rows) > 0,
                         "y": (x > 0).astype(int)})


def with_cells(table: pd.DataFrame, column: str, cells: dict[int, str]) -> pd.DataFrame:
    """``table`` with the given data rows of ``column`` replaced by text cells."""
    table = table.astype({column: object})
    for row, text in cells.items():
        table.loc[row, column] = text
    return table


# --- a stray string in a numeric column ---------------------------------------------------------------------------


def test_a_stray_string_keeps_a_numeric_column_numeric(tmp_path):
    path = write_csv(tmp_path / "t.csv", with_cells(numbers(), "x", {5: "?"}))
    data = build_csv(path=str(path), target="y", missing="mean")
    assert data.info["encoded_features"] == ["x", "z", "flag"]  # standardised, not one-hot encoded
    assert set(data.info["numeric_scaling"]) == {"x", "z", "flag"}
    assert data.info["fill_values"]["x"] == pytest.approx(data.info["numeric_scaling"]["x"]["mean"], abs=1e-6)
    [warning] = data.warnings
    assert warning.startswith("column x: 1 of 300 cells is not a number ('?'), read as missing values")


def test_stray_strings_are_missing_values_that_data_missing_decides(tmp_path):
    table = with_cells(numbers(), "x", {3: "?", 40: "-", 41: "?"})
    path = write_csv(tmp_path / "t.csv", table)
    with pytest.raises(ConfigError) as err:
        build_csv(path=str(path), target="y")
    assert "has missing values: x (3; 3 of 300 cells are not numbers ('?', '-'))" in str(err.value)
    assert "data.missing=drop" in str(err.value)
    data = build_csv(path=str(path), target="y", missing="drop")
    assert data.info["rows_dropped"] == 3 and data.info["encoded_features"] == ["x", "z", "flag"]


def test_a_stray_string_keeps_a_true_false_column_numeric(tmp_path):
    path = write_csv(tmp_path / "t.csv", with_cells(numbers(), "flag", {8: "?"}))
    data = build_csv(path=str(path), target="y", missing="drop")
    assert "flag" in data.info["numeric_scaling"] and "flag" not in data.info["categorical"]
    assert data.warnings[0].startswith("column flag: 1 of 300 cells is not a number ('?')")


def test_a_stray_string_in_a_regression_target_is_a_missing_target(tmp_path):
    table = numbers().assign(y=lambda t: (3 * t["x"]).round(3))
    path = write_csv(tmp_path / "t.csv", with_cells(table, "y", {7: "?"}))
    data = build_csv(path=str(path), target="y", missing="drop")
    assert data.task == "regression" and data.info["rows_dropped"] == 1
    assert data.warnings[0].startswith("column y: 1 of 300 cells is not a number ('?'), read as missing values")
    # integer labels are classes unless data.task says otherwise
    data = build_csv(path=str(write_csv(tmp_path / "c.csv", with_cells(numbers(), "y", {7: "?"}))), target="y",
                     missing="drop", task="regression")
    assert data.task == "regression" and data.info["rows_dropped"] == 1


def labels_with_other(rows: int = 300, share: float = 0.05) -> np.ndarray:
    """Labels ``0``, ``1``, ``2`` as text, and ``other`` in ``share`` of the rows."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, rows).astype(str).astype(object)
    labels[rng.choice(rows, int(rows * share), replace=False)] = "other"
    return labels


@pytest.mark.parametrize("task", ["auto", "multiclass"])
def test_a_text_label_among_numeric_class_labels_is_a_class(tmp_path, task):
    path = write_csv(tmp_path / "t.csv", numbers().assign(y=labels_with_other()))
    data = build_csv(path=str(path), target="y", missing="drop", task=task)
    assert data.task == "multiclass" and data.class_names == ["0", "1", "2", "other"]
    assert data.info["rows_dropped"] == 0
    why = "its numbers are integers with at most 20 distinct values" if task == "auto" else "data.task=multiclass"
    assert data.warnings == [f"data.target=y: 15 of 300 cells are not numbers ('other'), read as labels of their own "
                             f"since the target is classes ({why}): empty those cells if they mean a missing label"]


def test_a_text_label_among_numeric_labels_of_texts_is_a_class(tmp_path):
    texts = write_csv(tmp_path / "t.csv", {**reviews(300), "label": labels_with_other()})
    data = build_text_csv(path=str(texts))
    assert data.task == "multiclass" and data.class_names == ["0", "1", "2", "other"]
    assert len(data.warnings) == 1 and "15 of 300 cells are not numbers ('other'), read as labels" in data.warnings[0]
    with pytest.raises(ConfigError, match=r"15 rows of .* have no label \(15 of 300 cells are not numbers"):
        build_text_csv(path=str(texts), task="regression")


def test_binary_names_the_labels_it_found(tmp_path):
    path = write_csv(tmp_path / "t.csv", with_cells(numbers(), "y", {7: "?"}))
    with pytest.raises(ConfigError, match=r"data.task=binary needs exactly 2 classes, but data.target=y holds 3 "
                                          r"\(0, 1, \?\): set data.task=multiclass, or empty the cells that are no"):
        build_csv(path=str(path), target="y", missing="drop", task="binary")


def true_among_numbers(rows: int = 300) -> pd.DataFrame:
    """A feature ``a`` of numbers near 1000 that decides ``y``, with ``true`` in row 5, and noise ``b``."""
    rng = np.random.default_rng(2)
    a = rng.normal(1000, 10, rows).round(2)
    return with_cells(pd.DataFrame({"a": a, "b": rng.normal(size=rows).round(3), "y": (a > 1000).astype(int)}),
                      "a", {5: "true"})


def test_a_true_cell_among_numbers_is_a_stray_cell(tmp_path):
    path = write_csv(tmp_path / "t.csv", true_among_numbers())
    data = build_csv(path=str(path), target="y", missing="drop")
    assert data.info["encoded_features"] == ["a", "b"] and data.info["rows_dropped"] == 1
    assert data.warnings[0].startswith("column a: 1 of 300 cells is not a number ('true'), read as missing values")
    path = write_csv(tmp_path / "q.csv", with_cells(true_among_numbers(), "a", {9: "?"}))
    with pytest.raises(ConfigError, match=r"missing values: a \(2; 2 of 300 cells are not numbers \('true', '\?'\)"):
        build_csv(path=str(path), target="y")


def test_a_true_false_column_with_gaps_is_numeric(tmp_path):
    table = numbers().astype({"flag": object})
    table.loc[[4, 9], "flag"] = None
    data = build_csv(path=str(write_csv(tmp_path / "t.csv", table)), target="y", missing="drop")
    assert data.info["encoded_features"] == ["x", "z", "flag"] and "flag" in data.info["numeric_scaling"]
    assert data.warnings == []


def test_a_text_column_with_some_numbers_stays_categorical(tmp_path):
    rows = 300
    table = numbers(rows)
    share = int(rows * (1 - MOSTLY_NUMERIC)) + 5  # just too many texts for the numeric rule
    city = np.array([str(i) for i in range(rows)], dtype=object)
    city[:share] = np.resize(["oslo", "rome"], share)
    path = write_csv(tmp_path / "t.csv", table.assign(city=city))
    data = build_csv(path=str(path), target="y", max_categories=3)
    assert "city" in data.info["categorical"] and "city" not in data.info["numeric_scaling"]
    assert data.warnings == []


def test_the_stray_warning_reaches_the_log_and_summary_json(tmp_path, caplog):
    table = with_cells(numbers(), "x", {5: "?"})
    table.loc[9, "y"] = 2  # a class of a single row: a warning too
    path = write_csv(tmp_path / "t.csv", table)
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="dltrain"):
        summary = train(compose(["device=cpu", "data=csv", f"data.path={path}", "data.target=y", "data.missing=drop",
                                 "trainer.fast_dev_run=true"]), run_dir=run)
    warnings = json.loads((run / "summary.json").read_text())["warnings"]
    assert warnings == summary["warnings"]
    assert any(w.startswith("column x: 1 of 300 cells is not a number ('?')") for w in warnings)
    assert any(w.startswith("data.target=y: class 2 has a single row, which is in one split only") for w in warnings)
    assert "column x: 1 of 300 cells is not a number ('?')" in caplog.text


# --- numbers that are not finite, or too large --------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["inf", "-inf", "1e400"])
def test_an_infinite_feature_cell_is_named_with_its_rows(tmp_path, cell):
    path = write_csv(tmp_path / "t.csv", with_cells(numbers(), "z", {7: cell, 12: cell}))
    with pytest.raises(ConfigError, match=r"t\.csv: column z holds infinite numbers in rows 7, 12 \(0 = the first "
                                          r"data row\): replace them with finite numbers, or empty those cells"):
        build_csv(path=str(path), target="y")


@pytest.mark.slow  # the console script in a subprocess; test_corpus.py runs the input in-process
def test_an_infinite_cell_through_the_command_line_is_one_line(tmp_path):
    path = write_csv(tmp_path / "t.csv", with_cells(numbers(), "z", {7: "inf"}))
    result = run_cli(["data=csv", f"data.path={path}", "data.target=y", "device=cpu", "trainer.max_epochs=1",
                      f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "optim.lr" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert "column z holds infinite numbers in row 7" in line


def test_a_regression_target_too_large_to_standardise_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    path = write_csv(tmp_path / "t.csv", {"x": rng.normal(size=100), "price": rng.normal(size=100) * 1e300})
    with pytest.raises(ConfigError, match=r"data.target=price holds values up to [0-9.]+e\+300, too large to "
                                          r"standardise .*: rescale it"):
        build_csv(path=str(path), target="price")


def test_a_feature_too_large_to_standardise_is_refused(tmp_path):
    table = numbers()
    table["z"] = table["z"] * 1e200  # its variance overflows float64
    path = write_csv(tmp_path / "t.csv", table)
    with pytest.raises(ConfigError, match="column z cannot be standardised: the values are too large"):
        build_csv(path=str(path), target="y")


# --- nonsense refused or warned about -----------------------------------------------------------------------------


def test_a_header_that_names_a_column_twice_is_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,a,y\n" + "".join(f"{i},{i % 3},{-i},{i % 2}\n" for i in range(40)))
    with pytest.raises(ConfigError, match=r"names a column more than once in its header: a \(2 columns\)"):
        build_csv(path=str(path), target="y")


def test_a_column_really_named_with_a_dot_number_is_read(tmp_path):
    table = numbers().rename(columns={"z": "x.1"})
    data = build_csv(path=str(write_csv(tmp_path / "t.csv", table)), target="y")
    assert data.info["features"] == ["x", "x.1", "flag"]


def test_a_target_of_single_row_classes_is_refused(tmp_path):
    table = numbers(1000).assign(customer=[f"c{i}" for i in range(1000)])
    path = write_csv(tmp_path / "t.csv", table)
    with pytest.raises(ConfigError, match=r"data.target=customer has 1000 classes in 1000 rows, 1000 of them with a "
                                          r"single row.*: choose another data.target"):
        build_csv(path=str(path), target="customer")
    path = write_csv(tmp_path / "n.csv", numbers(30).assign(y=np.arange(30) % 20))
    with pytest.raises(ConfigError, match="has 20 classes in 30 rows.*: set data.task=regression"):
        build_csv(path=str(path), target="y")


def test_a_single_positive_example_is_a_warning(tmp_path):
    table = numbers(100).assign(y=[1] + [0] * 99)
    data = build_csv(path=str(write_csv(tmp_path / "t.csv", table)), target="y")
    assert data.task == "binary"
    assert data.warnings == ["data.target=y: class 1 has a single row, which is in one split only (so the splits are "
                             "not stratified): it is either learned or evaluated, never both; add rows of it, or "
                             "remove it"]


def test_texts_that_are_all_empty_are_refused(tmp_path):
    path = write_csv(tmp_path / "t.csv", {"text": [""] * 40 + [" "] * 10, "label": ["a", "b"] * 25})
    with pytest.raises(ConfigError, match="data.text_column=text: every text of the training split is empty"):
        build_text_csv(path=str(path))


def test_texts_without_a_frequent_token_are_refused(tmp_path):
    path = write_csv(tmp_path / "t.csv", {"text": [f"w{i}" for i in range(50)], "label": ["a", "b"] * 25})
    with pytest.raises(ConfigError, match="data.min_freq=2: no token appears 2 times .*: lower data.min_freq"):
        build_text_csv(path=str(path))
    assert build_text_csv(path=str(path), min_freq=1).vocab_size > 2


def test_bce_on_several_classes_is_refused():
    with pytest.raises(ConfigError, match=r"loss=bce scores two classes .* has 3 classes.*: use loss=cross_entropy"):
        LOSSES.build("bce", task="multiclass", num_outputs=3)
    assert LOSSES.build("bce", task="binary", num_outputs=2).output_width == 1


# --- dltrain-predict ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table_model(tmp_path_factory) -> Path:
    """A checkpoint of :func:`numbers` trained with ``data.missing=mean``."""
    root = tmp_path_factory.mktemp("table_model")
    path = write_csv(root / "train.csv", numbers())
    train(compose(["device=cpu", "data=csv", f"data.path={path}", "data.target=y", "data.missing=mean",
                   "trainer.fast_dev_run=true"]), run_dir=root / "run")
    return root / "run" / "checkpoints" / "best.pt"


def test_predict_names_an_infinite_cell_and_writes_nothing(table_model, tmp_path, capsys):
    source = write_csv(tmp_path / "new.csv", with_cells(numbers(10), "x", {4: "-inf"}))
    out = tmp_path / "out.csv"
    err = tool_error(capsys, predict_main, "dltrain-predict", [f"ckpt={table_model}", f"input={source}",
                                                                 f"output={out}", "device=cpu"])
    assert "column x holds infinite numbers in row 4 (0 = the first data row)" in err
    assert not out.exists()


def test_predict_fills_a_stray_string_as_missing_and_says_so(table_model, tmp_path, capsys):
    source = write_csv(tmp_path / "new.csv", with_cells(numbers(10), "x", {2: "?"}))
    out = tmp_path / "out.csv"
    predict_main([f"ckpt={table_model}", f"input={source}", f"output={out}", "device=cpu"])
    err = capsys.readouterr().err
    assert "warning: cells that are not numbers filled as missing values (data.missing=mean): x (row 2" in err
    assert len(pd.read_csv(out)) == 10


def test_predict_reads_true_false_cells_beside_a_stray_string(table_model, tmp_path, capsys):
    table = numbers(10)
    source = write_csv(tmp_path / "new.csv", with_cells(table, "flag", {3: "?"}))
    (_, x), = read_inputs(load_model(table_model), source, 512)
    flag = load_model(table_model).data["numeric_scaling"]["flag"]
    expected = (table["flag"].astype(float) - flag["mean"]) / flag["std"]
    expected[3] = (flag["mean"] - flag["mean"]) / flag["std"]  # the missing cell gets the training mean
    assert x[:, 2].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    assert "flag (row 3: 1 of 10 cells is not a number ('?'))" in capsys.readouterr().err


def test_predict_refuses_a_stray_string_without_fill_values(table_model, tmp_path, capsys):
    state = torch.load(table_model, weights_only=True)
    state["data"]["missing"] = "error"  # as a run with data.missing=error would have recorded
    torch.save(state, tmp_path / "error.pt")
    source = write_csv(tmp_path / "new.csv", with_cells(numbers(10), "x", {2: "?", 6: "?"}))
    err = tool_error(capsys, predict_main, "dltrain-predict", [f"ckpt={tmp_path / 'error.pt'}", f"input={source}",
                                                                 f"output={tmp_path / 'o.csv'}", "device=cpu"])
    assert "empty cells in x (2 rows; rows 2, 6 not numbers: '?')" in err


def test_predict_reads_a_true_cell_among_numbers_as_missing(table_model, tmp_path, capsys):
    source = write_csv(tmp_path / "new.csv", with_cells(numbers(10), "x", {2: "true"}))
    (_, x), = read_inputs(load_model(table_model), source, 512)
    assert x[2, 0].item() == pytest.approx(0.0, abs=1e-6)  # the training mean, standardised; not the number 1
    assert "x (row 2: 1 of 10 cells is not a number ('true'))" in capsys.readouterr().err


@pytest.fixture(scope="module")
def point_model(tmp_path_factory) -> Path:
    """A checkpoint of ``data=xor`` (two numbers per row)."""
    run = tmp_path_factory.mktemp("point_model") / "run"
    train(compose(["device=cpu", "data=xor", "trainer.fast_dev_run=true"]), run_dir=run)
    return run / "checkpoints" / "best.pt"


@pytest.mark.parametrize("cell", [1e39, 1e300, -1e300])
def test_predict_refuses_point_numbers_beyond_float32(point_model, tmp_path, capsys, cell):
    source = write_csv(tmp_path / "points.csv", {"u": [0.1, 0.2, 0.3, cell], "v": [0.5, cell, 0.0, 0.1]})
    out = tmp_path / "out.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow warning either
        err = tool_error(capsys, predict_main, "dltrain-predict", [f"ckpt={point_model}", f"input={source}",
                                                                     f"output={out}", "device=cpu"])
    assert "column u holds numbers too large for the model in row 3 (0 = the first data row)" in err
    assert not out.exists()


def test_predict_names_the_column_of_an_infinite_point(point_model, tmp_path, capsys):
    source = write_csv(tmp_path / "points.csv", {"u": [0.1, 0.2], "v": [0.5, float("inf")]})
    err = tool_error(capsys, predict_main, "dltrain-predict", [f"ckpt={point_model}", f"input={source}",
                                                                 f"output={tmp_path / 'out.csv'}", "device=cpu"])
    assert "column v holds infinite numbers in row 1 (0 = the first data row)" in err

"""``data=csv``: reading, task inference, missing values and train-only encoding of a table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dltrain.data.registry import DATASETS
from dltrain.data.tabular import build_csv, infer_task, read_table
from dltrain.errors import ConfigError
from tests.files import people, write_csv, write_table_csv


def raw(data, split: str, column: str) -> np.ndarray:
    """A standardised numeric feature of one split mapped back to the file's values."""
    col = data.info["encoded_features"].index(column)
    scaling = data.info["numeric_scaling"][column]
    return getattr(data, f"x_{split}")[:, col].double().numpy() * scaling["std"] + scaling["mean"]


def ids(data, split: str) -> np.ndarray:
    return raw(data, split, "id").round().astype(int)


def test_string_labels_make_binary_classes(tmp_path):
    table = people()
    data = build_csv(path=str(write_csv(tmp_path / "table.csv", table)), target="label")
    counts = table["label"].value_counts()
    rarer, commoner = counts.idxmin(), counts.idxmax()
    # Index 1 is the class precision/recall/f1 score: for text labels, the rarer one.
    assert data.task == "binary" and data.num_outputs == 2 and data.class_names == [commoner, rarer]
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.info["task_reason"].startswith("data.target=label holds non-numeric")
    for split in ("train", "val", "test"):
        labels = table["label"].to_numpy()[ids(data, split)]
        y = getattr(data, f"y_{split}").numpy()
        assert [data.class_names[i] for i in y] == labels.tolist()
    assert sum(data.sizes.values()) == 200 and data.sizes["num_test"] == 30


def test_the_positive_class_can_be_named(tmp_path):
    table = people()
    path = str(write_csv(tmp_path / "table.csv", table))
    for positive in ("fraud", "ok"):
        data = build_csv(path=path, target="label", positive_class=positive)
        assert data.class_names[1] == positive
        labels = table["label"].to_numpy()[ids(data, "train")]
        assert [data.class_names[i] for i in data.y_train.numpy()] == labels.tolist()
    with pytest.raises(ConfigError, match=r"^data.positive_class=spam is not a label of data.target=label: choose"):
        build_csv(path=path, target="label", positive_class="spam")
    numbers = people().assign(label=lambda t: (t["label"] == "fraud").astype(int))  # 0/1: 1 is positive
    data = build_csv(path=str(write_csv(tmp_path / "numbers.csv", numbers)), target="label")
    assert data.class_names == ["0", "1"]


def test_categories_are_learned_from_the_training_split_only(tmp_path):
    table = people(100)
    table.loc[90:, "city"] = [f"rare{i}" for i in range(10)]  # each once: unseen when not in training
    data = build_csv(path=str(write_csv(tmp_path / "table.csv", table)), target="label")
    train_cities = set(table["city"].to_numpy()[ids(data, "train")])
    assert data.info["categorical"] == {"city": sorted(train_cities)}
    city_cols = [i for i, name in enumerate(data.info["encoded_features"]) if name.startswith("city_")]
    unseen = 0
    for split in ("val", "test"):
        block = getattr(data, f"x_{split}")[:, city_cols]
        for row, city in zip(block, table["city"].to_numpy()[ids(data, split)], strict=True):
            if city in train_cities:
                assert row.sum() == 1 and row[sorted(train_cities).index(city)] == 1
            else:
                unseen += 1
                assert row.abs().sum() == 0  # no infrequent column to take it: all zeros
    assert unseen > 0


def test_rare_categories_share_the_infrequent_column(tmp_path):
    table = people(100)
    rare = [f"rare{i}" for i in range(20)]
    table.loc[80:, "city"] = rare
    data = build_csv(path=str(write_csv(tmp_path / "table.csv", table)), target="label", max_categories=3,
                     features=["id", "city"])
    names = data.info["encoded_features"]
    assert len(names) == 4 and names[-1] == "city_infrequent_sklearn"  # id, then max_categories one-hot columns
    assert set(names[1:3]) < {"city_oslo", "city_paris", "city_rome"}
    for split in ("val", "test"):
        is_rare = torch.from_numpy(np.isin(table["city"].to_numpy()[ids(data, split)], rare))
        assert is_rare.any() and torch.all(getattr(data, f"x_{split}")[is_rare, 3] == 1)  # seen in training or not


def test_numbers_are_standardised_with_training_statistics(tmp_path):
    table = people()
    data = build_csv(path=str(write_csv(tmp_path / "table.csv", table)), target="label")
    age = data.info["encoded_features"].index("age")
    assert data.x_train[:, age].mean().abs() < 1e-5
    assert (data.x_train[:, age].std(unbiased=False) - 1).abs() < 1e-4
    assert data.x_val[:, age].mean().abs() > 1e-3
    train_ages = table["age"].to_numpy()[ids(data, "train")]
    assert data.info["numeric_scaling"]["age"]["mean"] == pytest.approx(train_ages.mean(), abs=1e-5)


def test_missing_values_are_refused_by_default_naming_columns_and_counts(tmp_path):
    table = people(50).astype({"city": object})
    table.loc[[1, 4, 7], "age"] = np.nan
    table.loc[3, "city"] = np.nan
    path = write_csv(tmp_path / "table.csv", table)
    with pytest.raises(ConfigError, match=rf"data.path={path} has missing values: age \(3\), city \(1\): "
                                          r"set data.missing=drop .* data.missing=mean"):
        build_csv(path=str(path), target="label")


def test_missing_values_dropped(tmp_path):
    table = people(100).astype({"city": object})
    table.loc[[1, 4, 7], "age"] = np.nan
    table.loc[[3, 4], "city"] = np.nan
    data = build_csv(path=str(write_csv(tmp_path / "table.csv", table)), target="label", missing="drop")
    assert data.info["rows_dropped"] == 4 and sum(data.sizes.values()) == 96
    kept = np.concatenate([ids(data, s) for s in ("train", "val", "test")])
    assert not set(kept) & {1, 3, 4, 7}


def test_missing_values_filled_from_the_training_split(tmp_path):
    table = people(100).astype({"city": object, "label": object})
    gaps = [1, 4, 7, 20, 33, 50, 61, 77, 88, 95]
    table.loc[gaps, "age"] = np.nan
    table.loc[gaps, "city"] = np.nan
    table.loc[99, "label"] = np.nan  # a row without a target is dropped
    data = build_csv(path=str(write_csv(tmp_path / "table.csv", table)), target="label", missing="mean")
    assert data.info["rows_dropped"] == 1 and sum(data.sizes.values()) == 99
    train = ids(data, "train")
    train_ages = table["age"].to_numpy()[train]
    fill = data.info["fill_values"]["age"]
    assert fill == pytest.approx(np.nanmean(train_ages))
    assert fill != pytest.approx(np.nanmean(table["age"]))  # not the whole file's mean
    assert data.info["fill_values"]["city"] == table["city"].iloc[train].mode().iloc[0]
    for split in ("train", "val", "test"):
        filled = np.isin(ids(data, split), gaps)
        assert np.allclose(raw(data, split, "age")[filled], fill, atol=1e-3)
        assert not torch.isnan(getattr(data, f"x_{split}")).any()


@pytest.mark.parametrize("values, task, names", [
    (np.linspace(0.5, 99.5, 120), "regression", None),
    (np.arange(120) % 3, "multiclass", ["0", "1", "2"]),
    (np.where(np.arange(120) % 2, "yes", "no"), "binary", ["no", "yes"]),
    (np.arange(120) % 2 == 0, "binary", ["False", "True"]),
    (np.arange(120) % 25, "regression", None),  # more distinct integers than classes: a quantity
])
def test_task_is_inferred_from_the_target(tmp_path, values, task, names):
    path = write_csv(tmp_path / "table.csv", {"x": np.arange(120), "target": values})
    data = build_csv(path=str(path))
    assert data.task == task and data.class_names == names
    if task == "regression":
        assert data.num_outputs == 1 and data.y_train.dtype == torch.float32
        mean, std = data.target_scale
        assert data.info["target_scale"] == [mean, std]
        assert data.y_train.mean().abs() < 1e-5 and data.y_val.mean().abs() > 1e-4
        recovered = data.y_test.double().numpy() * std + mean
        assert np.allclose(np.sort(recovered), np.sort(np.asarray(values, float)[ids_x(data, "test")]), atol=1e-3)
    else:
        assert data.target_scale is None and data.num_outputs == len(names)


def ids_x(data, split: str) -> np.ndarray:
    return raw(data, split, "x").round().astype(int)


def test_infer_task_reasons_and_single_class():
    assert infer_task(pd.Series([0.0, 1.0, 2.0], name="y")) == (
        "multiclass", "data.target=y holds 3 distinct integers (at most 20)")
    with pytest.raises(ConfigError, match="data.target=y holds a single value"):
        infer_task(pd.Series(["a", "a"], name="y"))


def test_explicit_task_must_fit_the_target(tmp_path):
    path = str(write_csv(tmp_path / "table.csv", {"x": np.arange(60),
                                                  "target": np.where(np.arange(60) % 2, "b", "a")}))
    with pytest.raises(ConfigError, match="data.task=regression needs a numeric target"):
        build_csv(path=path, task="regression")
    assert build_csv(path=path, task="multiclass").task == "multiclass"
    three = str(write_csv(tmp_path / "three.csv", {"x": np.arange(60), "target": np.arange(60) % 3}))
    with pytest.raises(ConfigError, match="data.task=binary needs exactly 2 classes, but data.target=target holds 3"):
        build_csv(path=three, task="binary")
    data = build_csv(path=three, task="regression")
    assert data.task == "regression" and data.info["task_reason"] == "set by data.task"


def test_a_subset_of_features(tmp_path):
    data = build_csv(path=str(write_table_csv(tmp_path / "table.csv")), target="label", features=["age", "city"])
    assert data.info["features"] == ["age", "city"]
    assert data.info["encoded_features"] == ["age", "city_oslo", "city_paris", "city_rome"]
    assert data.input_shape == (4,)


def test_unknown_columns_are_refused(tmp_path):
    path = str(write_table_csv(tmp_path / "table.csv", 50))
    with pytest.raises(ConfigError, match="data.target=nope is not a column of .*: choose one of id, age, score, city"):
        build_csv(path=path, target="nope")
    with pytest.raises(ConfigError, match="data.features names columns .* does not have: nope, gone"):
        build_csv(path=path, target="label", features=["age", "nope", "gone"])
    with pytest.raises(ConfigError, match="data.features lists the target column data.target=label"):
        build_csv(path=path, target="label", features=["age", "label"])


def test_wrong_delimiter_hint(tmp_path):
    path = str(write_table_csv(tmp_path / "table.csv", 50))
    with pytest.raises(ConfigError, match="is data.delimiter right"):
        build_csv(path=path, target="label", delimiter=";")


def test_unreadable_files_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=rf"data.path=none.csv \({tmp_path}/none.csv\) does not exist"):
        read_table("none.csv")
    with pytest.raises(ConfigError, match="is a directory"):
        read_table(tmp_path)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("a,b\n")
    with pytest.raises(ConfigError, match="has a header but no data rows"):
        read_table(tmp_path / "header.csv")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n1,2,3,4\n")
    with pytest.raises(ConfigError, match=r"cannot be read as CSV \(Error tokenizing data"):
        read_table(tmp_path / "bad.csv")
    (tmp_path / "latin1.csv").write_bytes("a,b\nété,1\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text .*: save it as UTF-8"):
        read_table(tmp_path / "latin1.csv")


def test_the_split_is_seeded(tmp_path):
    path = str(write_table_csv(tmp_path / "table.csv"))
    a, b, c = (build_csv(seed=s, path=path, target="label") for s in (0, 0, 1))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test) and a.info == b.info
    assert not np.array_equal(ids(a, "test"), ids(c, "test"))


def test_registered_as_csv(tmp_path):
    data = DATASETS.build("csv", seed=0, path=str(write_table_csv(tmp_path / "table.csv")), target="label")
    assert data.task == "binary"

"""data.json keeps the key order it has always had (people and scripts read it as text): the
fitted preprocessing's entries sit where the datasets wrote them before."""

from __future__ import annotations

from dltrain.data import DATASETS
from tests.files import write_image_folder, write_mnist, write_table_csv


def test_an_image_dataset_keeps_its_data_json_order(tmp_path):
    write_mnist(tmp_path)
    info = DATASETS.build("mnist", seed=0, root=str(tmp_path), download=False).info
    assert list(info) == ["source", "root", "normalization", "val_carved_from_train", "native_sizes"]


def test_an_image_folder_keeps_its_data_json_order(tmp_path):
    write_image_folder(tmp_path / "images")
    info = DATASETS.build("image_folder", seed=0, path=str(tmp_path / "images"), num_workers=0).info
    assert list(info) == ["path", "layout", "classes", "image_size", "color", "in_memory", "normalization", "skipped",
                          "native_sizes", "ignored_files", "test_rows", "val_rows"]


def test_a_table_keeps_its_data_json_order(tmp_path):
    path = write_table_csv(tmp_path / "table.csv", missing=5)
    info = DATASETS.build("csv", seed=0, path=str(path), target="label", missing="mean").info
    assert list(info) == ["path", "target", "task", "task_reason", "features", "encoded_features", "numeric_scaling",
                          "categorical", "numeric_range", "rows_dropped", "missing", "fill_values",
                          "fill_values_new_rows", "target_scale", "test_rows", "val_rows"]

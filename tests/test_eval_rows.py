"""dltrain-eval names each example of its report by its row (or file) in the source, on the
validation split as on the test split, and computes its confusion matrix once."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from dltrain import compose, train
from dltrain.inference.evaluate import evaluate_checkpoint
from dltrain.report import run_report

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _train(tmp_path, overrides: list[str]):
    run = tmp_path / "run"
    train(compose(["device=cpu", "trainer.max_epochs=1", *overrides]), run_dir=run)
    return run


def test_an_image_folder_names_its_validation_files(tmp_path, data_overrides):
    run = _train(tmp_path, ["data=image_folder", *data_overrides("image_folder"), "data.image_size=[16,16]",
                            "data.num_workers=0", "model=cnn"])
    val = evaluate_checkpoint(run / "checkpoints" / "best.pt", "val", "cpu")
    rows = pd.read_csv(run / "eval-best-val" / "worst_predictions.csv")["row"].tolist()
    # each row is an image file: its class folder / its name
    assert rows and all(str(row).split("/")[0] in val["class_names"] for row in rows)
    test_rows = pd.read_csv(run / "worst_predictions.csv")["row"].tolist()  # the run's, of the test split
    assert all("/" in str(row) for row in test_rows) and not set(rows) & set(test_rows)


def test_a_csv_names_its_validation_rows_by_their_place_in_the_file(tmp_path):
    from tests.files import write_table_csv

    table = write_table_csv(tmp_path / "table.csv")
    run = _train(tmp_path, ["data=csv", f"data.path={table}", "data.target=label"])
    from dltrain.data import DATASETS

    data = DATASETS.build("csv", seed=0, path=str(table), target="label")
    assert len(data.info["val_rows"]) == len(data.y_val) and not set(data.info["val_rows"]) & set(
        data.info["test_rows"])
    evaluate_checkpoint(run / "checkpoints" / "best.pt", "val", "cpu")
    rows = pd.read_csv(run / "eval-best-val" / "worst_predictions.csv")["row"]
    assert set(rows) <= set(data.info["val_rows"]) and max(rows) >= len(data.y_val)  # file rows, not positions


def test_the_confusion_matrix_is_computed_once_and_is_the_reports(tmp_path, monkeypatch):
    run = _train(tmp_path, ["trainer.fast_dev_run=true"])
    calls = []
    original = run_report.confusion_matrix

    def counted(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(run_report, "confusion_matrix", counted)
    result = evaluate_checkpoint(run / "checkpoints" / "best.pt", "test", "cpu")
    assert calls == []  # the report reuses eval.json's matrix
    matrix = torch.tensor(result["confusion_matrix"])
    per_class = result["report"]["per_class"]
    assert matrix.sum().item() == result["num_examples"]
    assert matrix.sum(dim=1).tolist() == [per_class[name]["support"] for name in result["class_names"]]

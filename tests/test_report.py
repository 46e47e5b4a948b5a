"""predictions.csv: test predictions in the data's own terms."""

from __future__ import annotations

import csv

import pytest
import torch

from dltrain.report.tables import prediction_rows, write_predictions


def test_classes_are_named_with_the_confidence_of_the_prediction():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    rows = prediction_rows(logits, torch.tensor([0, 1]), "multiclass", ["cat", "dog", "fox"], None)
    assert [(r["target"], r["prediction"]) for r in rows] == [("cat", "cat"), ("dog", "fox")]
    assert rows[0]["confidence"] == pytest.approx(float(torch.softmax(logits[0], 0)[0]), abs=1e-6)
    log_probs = torch.log_softmax(logits, dim=1)  # loss=nll: the same predictions and confidences
    assert prediction_rows(log_probs, torch.tensor([0, 1]), "multiclass", ["cat", "dog", "fox"], None) == rows


def test_one_binary_logit_and_source_row_ids():
    rows = prediction_rows(torch.tensor([[1.0], [-2.0]]), torch.tensor([1, 1]), "binary", ["ok", "fraud"], None,
                           row_ids=[17, 4])
    assert [(r["row"], r["prediction"]) for r in rows] == [(17, "fraud"), (4, "ok")]
    assert rows[1]["confidence"] == pytest.approx(1 - float(torch.sigmoid(torch.tensor(-2.0))), abs=1e-6)


def test_regression_is_mapped_back_to_the_target_units(tmp_path):
    rows = prediction_rows(torch.tensor([[0.5], [-1.0]]), torch.tensor([0.0, 1.0]), "regression", None, (100.0, 10.0))
    assert [(r["target"], r["prediction"]) for r in rows] == [(100.0, 105.0), (110.0, 90.0)]
    write_predictions(tmp_path / "p.csv", rows)
    with (tmp_path / "p.csv").open() as f:
        assert list(csv.DictReader(f))[1] == {"row": "1", "target": "110.0", "prediction": "90.0"}


def test_multilabel_lists_the_labels_predicted():
    rows = prediction_rows(torch.tensor([[1.0, -1.0, 2.0]]), torch.tensor([[1.0, 1.0, 0.0]]), "multilabel",
                           ["a", "b", "c"], None)
    assert rows == [{"row": 0, "target": "a|b", "prediction": "a|c"}]


def test_predictions_are_written_all_at_once(tmp_path, monkeypatch):
    """A write stopped halfway (a signal, a full disk) leaves the earlier file whole and no temp file."""
    import dltrain.report.tables as report

    path = tmp_path / "predictions.csv"
    report.write_predictions(path, [{"row": 0, "target": 1, "prediction": 1}])
    before = path.read_bytes()

    def half(f, rows):
        f.write("row,target,predic")
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "write_table", half)
    with pytest.raises(KeyboardInterrupt):
        report.write_predictions(path, [{"row": 0, "target": 1, "prediction": 0}])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]

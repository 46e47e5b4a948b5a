"""The report a run writes after its test evaluation (summary.json's ``report``, worst_predictions.csv,
the pictures), and the one dltrain-eval writes for a checkpoint and split into a folder of its own."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score, classification_report, roc_auc_score

from dltrain import compose, train
from dltrain.errors import UserError
from dltrain.inference.evaluate import evaluate_checkpoint
from dltrain.report import report_plots

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _run(tmp_path_factory: pytest.TempPathFactory, name: str, overrides: list[str]) -> Path:
    run = tmp_path_factory.mktemp(name) / "run"
    train(compose(["device=cpu", *overrides]), run_dir=run)
    return run


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The default run (digits, 10 classes), two epochs."""
    return _run(tmp_path_factory, "digits", ["trainer.max_epochs=2"])


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


@pytest.mark.pictures
def test_a_digits_run_reports_its_ten_classes_as_scikit_learn_reads_its_predictions(digits):
    report = _summary(digits)["report"]
    predictions = pd.read_csv(digits / "predictions.csv", dtype={"target": str, "prediction": str})
    names = [str(d) for d in range(10)]
    theirs = classification_report(predictions["target"], predictions["prediction"], labels=names,
                                   output_dict=True, zero_division=0)
    assert list(report["per_class"]) == names
    for name in names:
        assert report["per_class"][name]["f1"] == pytest.approx(theirs[name]["f1-score"], abs=1e-6)
        assert report["per_class"][name]["support"] == theirs[name]["support"]
    assert report["macro_avg"]["recall"] == pytest.approx(theirs["macro avg"]["recall"], abs=1e-6)
    assert report["accuracy"] == pytest.approx(_summary(digits)["test"]["accuracy"], abs=1e-6)
    wrong = predictions[predictions["target"] != predictions["prediction"]]
    top = wrong.groupby(["target", "prediction"]).size().max()
    assert report["most_confused"][0]["count"] == top and len(report["most_confused"]) <= 5
    assert "roc_auc" not in report  # ten classes: no binary curves
    for name in ("confusion_matrix.png", "worst_predictions.png"):
        width, height = _png(digits / name)
        assert width > 300 and height > 200
    assert not (digits / "roc_pr.png").exists() and not (digits / "regression.png").exists()


def test_the_worst_predictions_are_the_highest_losses_named_as_predictions_csv_names_them(digits):
    worst = pd.read_csv(digits / "worst_predictions.csv", dtype={"target": str, "prediction": str})
    assert list(worst.columns) == ["rank", "row", "target", "prediction", "confidence", "cross_entropy"]
    assert len(worst) == 20 and worst["rank"].tolist() == list(range(1, 21))
    assert worst["cross_entropy"].is_monotonic_decreasing
    predictions = pd.read_csv(digits / "predictions.csv", dtype={"target": str, "prediction": str}).set_index("row")
    same = predictions.loc[worst["row"]]
    assert same["target"].tolist() == worst["target"].tolist()
    assert same["prediction"].tolist() == worst["prediction"].tolist()
    right = worst[worst["target"] == worst["prediction"]]  # there the loss is -log(confidence)
    for confidence, loss in zip(right["confidence"], right["cross_entropy"], strict=True):
        assert loss == pytest.approx(-math.log(confidence), abs=1e-5)
    # no example outside the file has a higher loss: a right prediction's loss is at most -log(its confidence)
    rest = predictions.drop(index=worst["row"])
    rest_right = rest[rest["target"] == rest["prediction"]]
    assert (-rest_right["confidence"].map(math.log)).max() <= worst["cross_entropy"].min() + 1e-5


def test_the_console_shows_the_per_class_table_and_the_most_confused_pairs(tmp_path, capsys):
    train(compose(["device=cpu", "trainer.fast_dev_run=true"]), run_dir=tmp_path / "run")
    out = capsys.readouterr().out
    assert "per class (test split)" in out and "macro avg" in out and "weighted avg" in out
    assert out.index("dltrain results") < out.index("per class") < out.index("test accuracy")
    assert _summary(tmp_path / "run")["report"]["per_class"]  # fast_dev_run: a few batches, reported all the same


@pytest.mark.pictures
def test_a_binary_run_draws_roc_and_precision_recall_with_their_areas(tmp_path_factory):
    run = _run(tmp_path_factory, "moons", ["data=moons", "trainer.max_epochs=1"])
    report = _summary(run)["report"]
    predictions = pd.read_csv(run / "predictions.csv")
    positive = report["positive"]
    assert positive == list(report["per_class"])[1]  # the second class
    truth = (predictions["target"].astype(str) == positive).astype(int)
    p1 = predictions["confidence"].where(predictions["prediction"].astype(str) == positive,
                                         1 - predictions["confidence"])
    # predictions.csv rounds the confidence to 6 digits: the areas agree to that
    assert report["roc_auc"] == pytest.approx(roc_auc_score(truth, p1), abs=1e-3)
    assert report["average_precision"] == pytest.approx(average_precision_score(truth, p1), abs=1e-3)
    assert _png(run / "roc_pr.png")[0] > 300
    assert (run / "confusion_matrix.png").is_file() and (run / "worst_predictions.csv").is_file()
    assert not (run / "worst_predictions.png").exists()  # points, not images


@pytest.mark.pictures
def test_a_regression_run_draws_predictions_against_the_truth(tmp_path_factory):
    run = _run(tmp_path_factory, "sine", ["data=sine", "trainer.max_epochs=2"])
    report = _summary(run)["report"]
    predictions = pd.read_csv(run / "predictions.csv")
    error = predictions["prediction"] - predictions["target"]
    assert report["mae"] == pytest.approx(error.abs().mean(), rel=1e-4)
    assert report["rmse"] == pytest.approx((error**2).mean() ** 0.5, rel=1e-4)
    r2 = 1 - (error**2).sum() / ((predictions["target"] - predictions["target"].mean()) ** 2).sum()
    assert report["r2"] == pytest.approx(r2, abs=1e-4)
    assert _png(run / "regression.png")[0] > 300
    assert not (run / "confusion_matrix.png").exists() and not (run / "worst_predictions.csv").exists()


@pytest.mark.pictures
def test_a_picture_that_cannot_be_drawn_is_one_warning_and_the_run_stands(tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no room to draw")

    monkeypatch.setattr(report_plots, "plot_confusion_matrix", broken)
    summary = train(compose(["device=cpu", "data=xor", "trainer.fast_dev_run=true"]), run_dir=tmp_path / "run")
    assert summary["status"] == "completed" and summary["report"]["per_class"]
    assert "could not draw confusion_matrix.png: no room to draw" in caplog.text
    assert not (tmp_path / "run" / "confusion_matrix.png").exists()
    assert (tmp_path / "run" / "worst_predictions.csv").is_file()


@pytest.mark.pictures
def test_dltrain_eval_writes_the_report_of_each_split_into_a_folder_of_its_own(digits, capsys):
    best = digits / "checkpoints" / "best.pt"
    test = evaluate_checkpoint(best, "test", "cpu")
    val = evaluate_checkpoint(best, "val", "cpu")
    out = capsys.readouterr().out
    assert "per class (val split)" in out and "per class (test split)" in out
    assert Path(test["report_dir"]) == digits / "eval-best-test" and Path(val["report_dir"]) == digits / "eval-best-val"
    assert test["report"] == _summary(digits)["report"]  # best.pt is what the run tested
    assert sum(row["support"] for row in val["report"]["per_class"].values()) == val["num_examples"] == 180
    assert json.loads((best.parent / "eval.json").read_text())["report"] == val["report"]
    for folder in (digits / "eval-best-test", digits / "eval-best-val"):
        assert sorted(p.name for p in folder.iterdir()) == ["confusion_matrix.png", "worst_predictions.csv",
                                                            "worst_predictions.png"]
    # the val folder's worst predictions are the val split's
    assert len(pd.read_csv(digits / "eval-best-val" / "worst_predictions.csv")) == 20
    assert not pd.read_csv(digits / "eval-best-val" / "worst_predictions.csv").equals(
        pd.read_csv(digits / "eval-best-test" / "worst_predictions.csv"))

    # again: its own files are replaced; a file it did not write stops it, untouched
    again = evaluate_checkpoint(best, "test", "cpu")
    assert again["report"] == test["report"]
    (digits / "eval-best-test" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="eval-best-test holds notes.txt, which dltrain-eval did not write"):
        evaluate_checkpoint(best, "test", "cpu")
    assert (digits / "eval-best-test" / "notes.txt").read_text() == "mine"
    assert (digits / "eval-best-test" / "confusion_matrix.png").is_file()
    (digits / "eval-last-test").write_text("a file of mine")
    with pytest.raises(UserError, match="eval-last-test is a file dltrain-eval did not write"):
        evaluate_checkpoint(digits / "checkpoints" / "last.pt", "test", "cpu")
    assert (digits / "eval-last-test").read_text() == "a file of mine"


@pytest.mark.pictures
def test_one_binary_logit_is_reported_with_its_binary_cross_entropy(tmp_path):
    summary = train(compose(["device=cpu", "data=xor", "loss=bce", "trainer.fast_dev_run=true"]),
                    run_dir=tmp_path / "run")
    worst = pd.read_csv(tmp_path / "run" / "worst_predictions.csv")
    assert worst.columns[-1] == "binary_cross_entropy" and worst["binary_cross_entropy"].is_monotonic_decreasing
    assert 0 <= summary["report"]["roc_auc"] <= 1 and (tmp_path / "run" / "roc_pr.png").is_file()


def _report(classes: int) -> dict:
    per_class = {f"c{i}": {"precision": 1.0, "recall": 1.0, "f1": 1 - i / 100, "support": 5} for i in range(classes)}
    average = {"precision": 1.0, "recall": 1.0, "f1": 0.9, "support": 5 * classes}
    return {"per_class": per_class, "macro_avg": average, "weighted_avg": average, "most_confused": []}


def test_the_console_shows_every_class_of_few_and_the_worst_by_f1_of_many():
    from rich.console import Console

    from dltrain.report.run_report import class_table

    def shown(classes: int) -> str:
        console = Console(width=100, record=True)
        console.print(class_table(_report(classes)))
        return console.export_text()

    few = shown(20)
    assert all(f"c{i} " in few for i in range(20)) and "more in summary.json" not in few
    many = shown(50)
    assert all(f"c{i} " in many for i in range(40, 50))  # the ten lowest F1
    assert "c39 " not in many and "c0 " not in many
    assert "the 10 classes of lowest F1; 40 more in summary.json" in " ".join(many.split())
    assert "macro avg" in many and "weighted avg" in many


def test_a_multilabel_report_scores_each_label(tmp_path):
    import torch

    from dltrain.report.run_report import write_report
    from dltrain.report.tables import SplitOutputs

    data = SimpleNamespace(task="multilabel", num_outputs=3, class_names=["a", "b", "c"], input_shape=(4,))
    targets = torch.tensor([[1.0, 0, 1], [0, 1, 1], [1, 1, 0]])
    outputs = torch.tensor([[2.0, -1, 3], [-1, -2, 1], [1, 1, -1]])  # label b missed once
    report = write_report(tmp_path, SplitOutputs(outputs, targets, [0, 1, 2], [0, 1, 2]), data)
    assert report["per_class"]["b"] == {"precision": 1.0, "recall": 0.5, "f1": 0.666667, "support": 2}
    assert report["per_class"]["a"]["f1"] == report["per_class"]["c"]["f1"] == 1.0
    assert list(tmp_path.iterdir()) == []  # no files: a confusion matrix is for one label per example


@pytest.mark.pictures
def test_images_read_from_disk_show_their_worst_predictions_by_path(tmp_path, data_overrides, caplog):
    train(compose(["device=cpu", "data=image_folder", *data_overrides("image_folder"), "data.in_memory=false",
                   "trainer.fast_dev_run=true"]), run_dir=tmp_path / "run")
    assert "could not" not in caplog.text
    assert _png(tmp_path / "run" / "worst_predictions.png")[0] > 300
    worst = pd.read_csv(tmp_path / "run" / "worst_predictions.csv")
    assert worst["row"].str.endswith((".png", ".jpg")).all()  # named by the image's path, as predictions.csv

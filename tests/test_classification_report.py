"""The report's numbers, computed by dltrain itself, against scikit-learn's on the same predictions."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import average_precision_score, classification_report, roc_auc_score

from dltrain.report.classification import (
    binary_curves,
    confusion_matrix,
    example_losses,
    most_confused,
    multilabel_report,
    positive_scores,
    predicted_classes,
    worst,
)
from dltrain.report.classification import classification_report as our_report
from dltrain.report.regression import regression_report

NAMES = ["cat", "dog", "bird", "fish", "never"]
#: scikit-learn's name of each score
SK = {"precision": "precision", "recall": "recall", "f1": "f1-score", "support": "support"}


def _sklearn(targets: torch.Tensor, predicted: torch.Tensor, names: list[str]) -> dict:
    return classification_report(targets.numpy(), predicted.numpy(), labels=list(range(len(names))),
                                 target_names=names, output_dict=True, zero_division=0)


def test_per_class_scores_and_averages_equal_scikit_learns_with_a_class_never_predicted():
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 5, (300,), generator=generator)
    outputs = torch.randn(300, 5, generator=generator)
    outputs[:, 4] = -10  # class "never" is never predicted: its precision divides by nothing
    outputs[torch.arange(300), targets] += 1.0  # better than chance, so the scores differ per class
    predicted = predicted_classes(outputs)
    assert (predicted != 4).all() and (targets == 4).any()

    ours = our_report(confusion_matrix(targets, predicted, 5), NAMES)
    theirs = _sklearn(targets, predicted, NAMES)
    for name in NAMES:
        for key in ("precision", "recall", "f1"):
            assert ours["per_class"][name][key] == pytest.approx(theirs[name][SK[key]], abs=1e-6), (name, key)
        assert ours["per_class"][name]["support"] == theirs[name]["support"]
    for ours_key, theirs_key in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        for key in ("precision", "recall", "f1"):
            assert ours[ours_key][key] == pytest.approx(theirs[theirs_key][SK[key]], abs=1e-6), (ours_key, key)
        assert ours[ours_key]["support"] == theirs[theirs_key]["support"] == 300
    assert ours["accuracy"] == pytest.approx(theirs["accuracy"], abs=1e-6)
    assert ours["per_class"]["never"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                          "support": int((targets == 4).sum())}


def test_a_class_absent_from_the_split_scores_zero_as_scikit_learn_says_with_zero_division_0():
    targets = torch.tensor([0, 0, 1, 1, 1, 0])
    predicted = torch.tensor([0, 2, 1, 1, 0, 0])  # class 2 predicted once, never true
    ours = our_report(confusion_matrix(targets, predicted, 3), ["a", "b", "c"])
    theirs = _sklearn(targets, predicted, ["a", "b", "c"])
    assert ours["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    for key in ("precision", "recall", "f1"):
        assert ours["macro_avg"][key] == pytest.approx(theirs["macro avg"][SK[key]], abs=1e-6)
        assert ours["weighted_avg"][key] == pytest.approx(theirs["weighted avg"][SK[key]], abs=1e-6)


def test_multilabel_scores_equal_scikit_learns():
    generator = torch.Generator().manual_seed(1)
    targets = (torch.rand(200, 4, generator=generator) > 0.6).float()
    outputs = torch.randn(200, 4, generator=generator) + 2 * (targets - 0.5)
    ours = multilabel_report(outputs, targets, ["w", "x", "y", "z"])
    theirs = classification_report(targets.numpy(), (outputs > 0).numpy(), target_names=["w", "x", "y", "z"],
                                   output_dict=True, zero_division=0)
    for name in "wxyz":
        for key in ("precision", "recall", "f1", "support"):
            assert ours["per_class"][name][key] == pytest.approx(theirs[name][SK[key]], abs=1e-6)
    for key in ("precision", "recall", "f1"):
        assert ours["macro_avg"][key] == pytest.approx(theirs["macro avg"][SK[key]], abs=1e-6)


@pytest.mark.parametrize("ties", [False, True])
def test_roc_auc_and_average_precision_equal_scikit_learns(ties):
    generator = torch.Generator().manual_seed(2)
    truth = torch.randint(0, 2, (500,), generator=generator)
    score = torch.randn(500, generator=generator) + truth
    if ties:  # scores rounded into few values: many examples share a threshold
        score = (score * 2).round() / 2
    curves = binary_curves(score, truth)
    assert curves.roc_auc == pytest.approx(roc_auc_score(truth.numpy(), score.numpy()), abs=1e-12)
    assert curves.average_precision == pytest.approx(average_precision_score(truth.numpy(), score.numpy()), abs=1e-12)
    assert (curves.fpr[0], curves.tpr[0], curves.fpr[-1], curves.tpr[-1]) == (0, 0, 1, 1)
    assert (curves.recall[0], curves.recall[-1]) == (0, 1)


def test_binary_scores_order_examples_as_the_positive_probability_does():
    two = torch.tensor([[0.0, 1.0], [2.0, -1.0], [0.5, 0.4]])
    assert torch.equal(positive_scores(two).argsort(), torch.softmax(two, 1)[:, 1].argsort())
    one = torch.tensor([[0.5], [-2.0], [40.0], [35.0]])
    assert torch.sigmoid(one[2]) == torch.sigmoid(one[3]) == 1  # equal in float32 ...
    assert positive_scores(one).argsort().tolist() == [1, 0, 3, 2]  # ... but still ordered


def test_a_split_of_one_class_has_no_curves():
    assert binary_curves(torch.tensor([0.1, 0.9]), torch.tensor([1, 1])) is None


def test_the_most_confused_pairs_of_a_hand_made_matrix():
    matrix = torch.tensor([[50, 3, 7, 0],
                           [10, 40, 0, 0],
                           [7, 0, 30, 1],
                           [0, 0, 0, 0]])
    pairs = most_confused(matrix, ["a", "b", "c", "d"], top=5)
    assert pairs == [{"true": "b", "predicted": "a", "count": 10, "share": 0.2},
                     {"true": "a", "predicted": "c", "count": 7, "share": 0.116667},  # 7 of a's 60, before c->a
                     {"true": "c", "predicted": "a", "count": 7, "share": 0.184211},
                     {"true": "a", "predicted": "b", "count": 3, "share": 0.05},
                     {"true": "c", "predicted": "d", "count": 1, "share": 0.026316}]
    assert most_confused(torch.eye(3, dtype=torch.long), ["a", "b", "c"]) == []  # no mistakes, no pairs


def test_the_worst_predictions_are_the_highest_cross_entropies_first():
    outputs = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [-4.0, 4.0]])  # logits of two classes
    targets = torch.tensor([0, 0, 1, 0])
    losses = example_losses(outputs, targets)
    expected = torch.nn.functional.cross_entropy(outputs.double(), targets, reduction="none")
    assert losses.name == "cross_entropy"
    assert torch.allclose(losses.loss, expected)
    assert worst(losses.loss, top=3).tolist() == [3, 1, 2]
    assert losses.confidence[3] == pytest.approx(torch.softmax(outputs[3].double(), 0)[1].item())
    # log-probabilities (loss=nll) give the same losses as the logits they came from
    assert torch.allclose(example_losses(torch.log_softmax(outputs, 1), targets).loss, expected, atol=1e-6)


def test_one_binary_logit_is_scored_by_its_binary_cross_entropy():
    outputs = torch.tensor([[3.0], [-1.0], [0.5]])
    targets = torch.tensor([0, 0, 1])
    losses = example_losses(outputs, targets)
    assert losses.name == "binary_cross_entropy"
    expected = torch.nn.functional.binary_cross_entropy_with_logits(outputs[:, 0].double(), targets.double(),
                                                                     reduction="none")
    assert torch.allclose(losses.loss, expected)
    assert worst(losses.loss).tolist() == [0, 2, 1]
    assert losses.confidence[1] == pytest.approx(1 - torch.sigmoid(torch.tensor(-1.0)).item())


def test_regression_errors_equal_scikit_learns():
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    generator = torch.Generator().manual_seed(3)
    truth = torch.randn(100, 2, generator=generator, dtype=torch.float64) * 5 + 3
    prediction = truth + torch.randn(100, 2, generator=generator, dtype=torch.float64)
    report = regression_report(truth, prediction)
    assert report["mae"] == pytest.approx(mean_absolute_error(truth, prediction), abs=1e-6)
    assert report["rmse"] == pytest.approx(mean_squared_error(truth, prediction) ** 0.5, abs=1e-6)
    assert report["r2"] == pytest.approx(r2_score(truth, prediction), abs=1e-6)

"""Metrics accumulated on the device, and losses checked against the task."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import mean_absolute_error, r2_score

from dltrain.errors import ConfigError
from dltrain.losses import LOSSES, resolve_auto, trap_warnings
from dltrain.training.metrics import MetricAccumulator, metric_names


def test_classification_accuracy_and_weighted_loss():
    acc = MetricAccumulator("multiclass")
    logits1 = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    acc.update(logits1, torch.tensor([0, 1, 1]), torch.tensor(0.5))
    acc.update(torch.tensor([[0.0, 5.0]]), torch.tensor([1]), torch.tensor(1.0))
    out = acc.compute()
    assert out["accuracy"] == pytest.approx(3 / 4)
    assert out["loss"] == pytest.approx((0.5 * 3 + 1.0 * 1) / 4)  # weighted by batch size


def test_regression_metrics_match_sklearn_over_batches():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(100, 2, generator=g)
    pred = y + 0.3 * torch.randn(100, 2, generator=g)
    acc = MetricAccumulator("regression")
    for i in range(0, 100, 32):
        acc.update(pred[i:i + 32], y[i:i + 32], F.mse_loss(pred[i:i + 32], y[i:i + 32]))
    out = acc.compute()
    per_col_rmse = ((pred - y) ** 2).mean(dim=0).sqrt()
    assert out["rmse"] == pytest.approx(float(((pred - y) ** 2).mean(dim=0).mean().sqrt()), rel=1e-5)
    assert out["rmse"] == pytest.approx(float(per_col_rmse.square().mean().sqrt()), rel=1e-5)
    assert out["mae"] == pytest.approx(mean_absolute_error(y.numpy(), pred.numpy()), rel=1e-5)
    assert out["r2"] == pytest.approx(r2_score(y.numpy(), pred.numpy()), rel=1e-5)
    assert out["loss"] == pytest.approx(float(F.mse_loss(pred, y)), rel=1e-5)


def test_binary_precision_recall_f1_of_the_positive_class():
    # targets 1 1 1 0 0 0 0 0; predictions 1 1 0 1 0 0 0 0: tp 2, fp 1, fn 1
    target = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0])
    logits = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]] + [[1.0, 0.0]] * 4)
    two_columns = MetricAccumulator("binary")
    two_columns.update(logits[:5], target[:5], torch.tensor(0.1))
    two_columns.update(logits[5:], target[5:], torch.tensor(0.1))
    one_logit = MetricAccumulator("binary")  # loss=bce: one column, positive above 0
    one_logit.update(logits[:, 1:] - logits[:, :1], target, torch.tensor(0.1))
    for out in (two_columns.compute(), one_logit.compute()):
        assert out["accuracy"] == pytest.approx(6 / 8)
        assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == pytest.approx(2 / 3)
        assert out["f1"] == pytest.approx(2 / 3)
    none_predicted = MetricAccumulator("binary")
    none_predicted.update(torch.tensor([[1.0, 0.0]] * 2), torch.tensor([1, 0]), torch.tensor(0.1))
    assert none_predicted.compute()["precision"] == 0.0 and none_predicted.compute()["f1"] == 0.0


def test_metric_names_per_task():
    assert metric_names("multiclass") == ["train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"]
    assert "val_r2" in metric_names("regression") and "val_accuracy" not in metric_names("regression")
    assert {"val_precision", "val_recall", "val_f1"} <= set(metric_names("binary"))
    assert "val_f1" not in metric_names("multiclass")


def test_auto_loss_follows_the_task():
    assert resolve_auto("multiclass") == "cross_entropy"
    assert resolve_auto("binary") == "bce"
    assert resolve_auto("multilabel") == "bce"
    assert resolve_auto("regression") == "mse"


def test_cross_entropy_matches_torch():
    logits, target = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    loss = LOSSES.build("cross_entropy", task="multiclass", num_outputs=4)
    assert torch.allclose(loss(logits, target), F.cross_entropy(logits, target))


def test_cross_entropy_on_continuous_target_is_refused():
    with pytest.raises(ConfigError, match="loss=cross_entropy needs binary or multiclass targets, but this data's "
                                          "task is regression: use loss=mse or loss=auto"):
        LOSSES.build("cross_entropy", task="regression", num_outputs=1)


def test_mse_on_classes_compares_probabilities_with_one_hot():
    logits, target = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    loss = LOSSES.build("mse", task="multiclass", num_outputs=3)
    expected = ((logits.softmax(1) - F.one_hot(target, 3).float()) ** 2).mean()
    assert torch.allclose(loss(logits, target), expected)


def test_mse_on_regression():
    out, y = torch.randn(4, 1), torch.randn(4)
    assert torch.allclose(LOSSES.build("mse", task="regression", num_outputs=1)(out, y),
                          F.mse_loss(out.squeeze(1), y))


# --- the rest of the loss catalog ----------------------------------------------------

def test_binary_accuracy_from_one_logit_or_two():
    acc = MetricAccumulator("binary")
    acc.update(torch.tensor([[2.0], [-1.0], [0.5]]), torch.tensor([1, 0, 0]), torch.tensor(0.1))
    assert acc.compute()["accuracy"] == pytest.approx(2 / 3)
    acc2 = MetricAccumulator("binary")
    acc2.update(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([1, 1]), torch.tensor(0.1))
    assert acc2.compute()["accuracy"] == pytest.approx(1 / 2)


def test_multilabel_accuracy_is_per_label():
    acc = MetricAccumulator("multilabel")
    acc.update(torch.tensor([[1.0, -1.0, 1.0], [1.0, 1.0, 1.0]]), torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]),
               torch.tensor(0.1))
    assert acc.compute()["accuracy"] == pytest.approx((2 / 3 + 1) / 2)


def test_rmse_is_the_root_of_mse_and_mae_huber_match_torch():
    out, y = torch.randn(8, 1), torch.randn(8)
    mse = F.mse_loss(out.squeeze(1), y)
    assert torch.allclose(LOSSES.build("rmse", task="regression", num_outputs=1)(out, y), mse.sqrt(), atol=1e-6)
    assert torch.allclose(LOSSES.build("mae", task="regression", num_outputs=1)(out, y), F.l1_loss(out.squeeze(1), y))
    huber = LOSSES.build("huber", task="regression", num_outputs=1, delta=0.5)
    assert torch.allclose(huber(out, y), F.huber_loss(out.squeeze(1), y, delta=0.5))


def test_rmse_gradient_is_finite_at_a_perfect_fit():
    out = torch.zeros(4, 1, requires_grad=True)
    LOSSES.build("rmse", task="regression", num_outputs=1)(out, torch.zeros(4)).backward()
    assert torch.isfinite(out.grad).all()


def test_bce_on_logits_binary_one_output_with_pos_weight():
    loss = LOSSES.build("bce", task="binary", num_outputs=2, pos_weight=3.0)
    assert loss.output_width == 1
    logits, y = torch.tensor([[0.3], [-2.0], [1.5]]), torch.tensor([1, 0, 1])
    expected = F.binary_cross_entropy_with_logits(logits, y.float()[:, None], pos_weight=torch.tensor(3.0))
    assert torch.allclose(loss(logits, y), expected)
    # stable where sigmoid-then-log is not: a huge logit on the wrong side stays finite
    assert torch.isfinite(loss(torch.tensor([[-200.0]]), torch.tensor([1])))


def test_bce_multilabel_takes_float_targets():
    logits = torch.randn(4, 3)
    targets = torch.tensor([[1.0, 0.0, 1.0]] * 4)
    ml = LOSSES.build("bce", task="multilabel", num_outputs=3)
    assert torch.allclose(ml(logits, targets), F.binary_cross_entropy_with_logits(logits, targets))


def test_cross_entropy_label_smoothing_and_class_weights():
    logits, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 0, 1])
    loss = LOSSES.build("cross_entropy", task="multiclass", num_outputs=3, label_smoothing=0.1,
                        class_weights=[1.0, 2.0, 0.5])
    expected = F.cross_entropy(logits, y, weight=torch.tensor([1.0, 2.0, 0.5]), label_smoothing=0.1)
    assert torch.allclose(loss(logits, y), expected)


def test_balanced_class_weights_are_inverse_frequencies():
    loss = LOSSES.build("cross_entropy", task="multiclass", num_outputs=2, class_weights="balanced",
                        class_counts=torch.tensor([30, 10]))
    assert torch.allclose(loss.weight, torch.tensor([40 / 60, 40 / 20]))


@pytest.mark.parametrize("weights,expected", [
    ([1.0, 2.0], "loss.class_weights has 2 values but the data has 3 classes"),
    ([1.0, -2.0, 1.0], "loss.class_weights=[1.0, -2.0, 1.0] is not valid"),
    ("heavy", "loss.class_weights=heavy is not valid"),
])
def test_bad_class_weights(weights, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        LOSSES.build("cross_entropy", task="multiclass", num_outputs=3, class_weights=weights)


def test_nll_on_log_probabilities_equals_cross_entropy_on_logits():
    logits, y = torch.randn(5, 4), torch.tensor([0, 3, 1, 2, 2])
    nll = LOSSES.build("nll", task="multiclass", num_outputs=4)
    ce = LOSSES.build("cross_entropy", task="multiclass", num_outputs=4)
    assert nll.log_probs and not ce.log_probs
    assert torch.allclose(nll(logits.log_softmax(1), y), ce(logits, y))
    smooth = LOSSES.build("nll", task="multiclass", num_outputs=4, label_smoothing=0.2)
    assert torch.allclose(smooth(logits.log_softmax(1), y), F.cross_entropy(logits, y, label_smoothing=0.2))


@pytest.mark.parametrize("name", ["bce", "nll"])
def test_classification_losses_refuse_continuous_targets(name):
    with pytest.raises(ConfigError, match=f"loss={name} needs .* targets, but this data's task is regression"):
        LOSSES.build(name, task="regression", num_outputs=1)


def test_label_smoothing_refused_for_regression():
    with pytest.raises(ConfigError, match="regularization.label_smoothing=0.1 smooths class labels"):
        LOSSES.build("mse", task="regression", num_outputs=1, label_smoothing=0.1)


def test_label_smoothing_moves_one_hot_targets():
    logits, y = torch.zeros(2, 4), torch.tensor([0, 1])
    loss = LOSSES.build("mse", task="multiclass", num_outputs=4, label_smoothing=0.4)
    soft = F.one_hot(y, 4).float() * 0.6 + 0.1
    assert torch.allclose(loss(logits, y), F.mse_loss(torch.full((2, 4), 0.25), soft))


@pytest.mark.parametrize("loss,last,warns", [
    ("cross_entropy", "Softmax", True), ("bce", "Sigmoid", True), ("cross_entropy", "Linear", False),
    ("cross_entropy", "LogSoftmax", False), ("nll", "Softmax", True), ("nll", "Linear", False),
    ("nll", "LogSoftmax", False), ("bce", "LogSoftmax", True), ("mse", "Softmax", False),
])
def test_trap_warnings(loss, last, warns):
    assert bool(trap_warnings(loss, last)) is warns

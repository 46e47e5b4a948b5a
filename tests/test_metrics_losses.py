"""Metrics accumulated on the device, and losses checked against the task."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import mean_absolute_error, r2_score

from dltrain.errors import ConfigError
from dltrain.losses import LOSSES, resolve_auto
from dltrain.metrics import MetricAccumulator, metric_names


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


def test_metric_names_per_task():
    assert metric_names("multiclass") == ["train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"]
    assert "val_r2" in metric_names("regression") and "val_accuracy" not in metric_names("regression")


def test_auto_loss_follows_the_task():
    assert resolve_auto("multiclass") == "cross_entropy"
    assert resolve_auto("binary") == "cross_entropy"
    assert resolve_auto("regression") == "mse"


def test_cross_entropy_matches_torch():
    logits, target = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    loss = LOSSES.build("cross_entropy", task="multiclass", num_outputs=4)
    assert torch.allclose(loss(logits, target), F.cross_entropy(logits, target))


def test_cross_entropy_on_continuous_target_is_refused():
    with pytest.raises(ConfigError, match="loss=cross_entropy needs class labels"):
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

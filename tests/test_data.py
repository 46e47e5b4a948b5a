"""The digits dataset and the in-memory batcher."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from dltrain.data import DATASETS, TensorBatches
from dltrain.data.digits import build_digits
from dltrain.data.splits import stratified_split
from dltrain.errors import ConfigError


def test_digits_splits_sizes_and_shapes():
    data = build_digits(seed=0)
    sizes = data.sizes
    assert sum(sizes.values()) == 1797
    assert sizes["num_test"] == 360 and sizes["num_val"] == 180
    assert data.x_train.shape[1:] == (1, 8, 8) and data.input_shape == (1, 8, 8)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.task == "multiclass" and data.num_outputs == 10 and data.class_names[3] == "3"


def test_digits_split_is_seeded_and_stratified():
    a, b, c = build_digits(seed=0), build_digits(seed=0), build_digits(seed=1)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.y_test, c.y_test)
    for split in (a.y_train, a.y_val, a.y_test):
        share = torch.bincount(split, minlength=10).float() / len(split)
        assert (share - 0.1).abs().max() < 0.02  # every class about 10% in every split


def test_digits_scaling_is_fitted_on_train_only():
    data = build_digits(seed=0)
    flat = data.x_train.reshape(len(data.x_train), -1)
    varying = flat.std(dim=0) > 0
    assert flat.mean(dim=0).abs().max() < 1e-4
    assert torch.allclose(flat.std(dim=0, unbiased=False)[varying], torch.ones(int(varying.sum())), atol=1e-3)
    val_mean = data.x_val.reshape(len(data.x_val), -1).mean(dim=0)
    assert val_mean.abs().max() > 1e-3  # validation statistics were not used


def test_registry_builds_digits():
    assert DATASETS.build("digits", seed=0, val_fraction=0.2, test_fraction=0.2).sizes["num_val"] > 300


def test_batches_cover_every_example_once_per_epoch():
    x = torch.arange(10).float().unsqueeze(1)
    y = torch.arange(10)
    batches = TensorBatches(x, y, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert len(batches) == 3
    epoch1 = torch.cat([yb for _, yb in batches])
    epoch2 = torch.cat([yb for _, yb in batches])
    assert sorted(epoch1.tolist()) == list(range(10)) and sorted(epoch2.tolist()) == list(range(10))
    assert not torch.equal(epoch1, epoch2)  # a new order each epoch
    for xb, yb in batches:
        assert torch.equal(xb.squeeze(1).long(), yb)  # x and y stay aligned


def test_batches_order_depends_on_the_generator_alone():
    x, y = torch.randn(50, 3), torch.arange(50)

    def order(seed):
        g = torch.Generator().manual_seed(seed)
        return torch.cat([yb for _, yb in TensorBatches(x, y, 8, shuffle=True, generator=g)])

    torch.manual_seed(123)
    first = order(5)
    torch.manual_seed(456)
    assert torch.equal(first, order(5)) and not torch.equal(first, order(6))


def test_unshuffled_batches_and_limit():
    x, y = torch.randn(10, 2), torch.arange(10)
    assert [yb.tolist() for _, yb in TensorBatches(x, y, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    limited = TensorBatches(x, y, 4, limit_batches=2)
    assert len(limited) == 2 and len(list(limited)) == 2


def test_fractions_that_leave_no_training_data_are_refused():
    with pytest.raises(ConfigError, match=r"data.val_fraction \+ data.test_fraction = 1.1"):
        build_digits(val_fraction=0.5, test_fraction=0.6)


def test_a_last_batch_below_the_minimum_is_dropped():
    x, y = torch.randn(9, 2), torch.arange(9)
    assert [len(yb) for _, yb in TensorBatches(x, y, 4)] == [4, 4, 1]
    assert [len(yb) for _, yb in TensorBatches(x, y, 4, min_batch_size=2)] == [4, 4]
    assert [len(yb) for _, yb in TensorBatches(x[:8], y[:8], 4, min_batch_size=2)] == [4, 4]
    assert [len(yb) for _, yb in TensorBatches(x[:1], y[:1], 4, min_batch_size=2)] == []


@pytest.mark.parametrize("val,test", [(0.001, 0.2), (0.1, 0.001), (0.4, 0.595)])
def test_splits_too_small_for_every_class_are_refused(val, test):
    with pytest.raises(ConfigError, match="fewer examples than the 10 classes"):
        build_digits(val_fraction=val, test_fraction=test)


def _digits_through_sklearn(seed: int, val_fraction: float, test_fraction: float) -> list[torch.Tensor]:
    """data=digits as it was built through scikit-learn's load_digits, train_test_split and StandardScaler."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_fraction / (1 - test_fraction), stratify=y_rest, random_state=seed)
    scaler = StandardScaler().fit(x_train)
    images = [torch.from_numpy(scaler.transform(a)).reshape(-1, 1, 8, 8) for a in (x_train, x_val, x_test)]
    return [images[0], torch.from_numpy(y_train), images[1], torch.from_numpy(y_val), images[2],
            torch.from_numpy(y_test)]


@pytest.mark.parametrize("seed,val,test", [(0, 0.1, 0.2), (1, 0.15, 0.15), (7, 0.05, 0.3), (123, 0.3, 0.01)])
def test_digits_are_bit_for_bit_those_scikit_learn_gave(seed, val, test):
    """Reading the digits without importing scikit-learn changes no split and no pixel."""
    data = build_digits(seed=seed, val_fraction=val, test_fraction=test)
    ours = [data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test]
    for got, expected in zip(ours, _digits_through_sklearn(seed, val, test), strict=True):
        assert got.dtype == expected.dtype and torch.equal(got, expected)


def test_stratified_split_is_scikit_learns():
    """Same (train, test) positions as train_test_split(stratify=...) on random label sets."""
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(2, 12))
        n = int(rng.integers(3 * k, 400))
        labels = rng.integers(0, k, n)
        labels[:2 * k] = np.repeat(np.arange(k), 2)  # every class at least twice
        held, seed = int(rng.integers(k, n - k + 1)), int(rng.integers(0, 10**6))
        expected_train, expected_test = train_test_split(np.arange(n), test_size=held, stratify=labels,
                                                         random_state=seed)
        train, test = stratified_split(labels, held, seed)
        np.testing.assert_array_equal(train, expected_train)
        np.testing.assert_array_equal(test, expected_test)


def test_stratified_split_refuses_a_class_of_one():
    with pytest.raises(ValueError, match="smallest class: 1"):
        stratified_split(np.array([0, 0, 1, 2, 2]), 2, seed=0)


def test_digits_do_not_import_scikit_learn():
    code = ("import sys; from dltrain.data.digits import build_digits; build_digits(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

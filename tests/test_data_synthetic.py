"""The generated datasets: xor, sine, moons, spirals and chirp."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch

from dltrain.config.schemas import ChirpConfig, MoonsConfig, SineConfig, SpiralsConfig, XorConfig
from dltrain.data.registry import DATASETS
from dltrain.data.synthetic import build_chirp, build_moons, build_sine, build_spirals, build_xor
from dltrain.errors import ConfigError

SMALL = {"xor": {"copies": 20}, "sine": {"samples": 200}, "moons": {"samples": 200}, "spirals": {"samples": 60},
         "chirp": {"length": 600}}


def _unscale(x: torch.Tensor, scaling: dict[str, list[float]]) -> np.ndarray:
    """Inputs mapped back to their own units with the statistics in ``info``."""
    return x.double().numpy() * np.array(scaling["std"]) + np.array(scaling["mean"])


def _in_order(data) -> tuple[torch.Tensor, torch.Tensor]:
    """Chirp examples of all three splits, in signal order."""
    return torch.cat([data.x_train, data.x_val, data.x_test]), torch.cat([data.y_train, data.y_val, data.y_test])


@pytest.mark.parametrize("name, schema", [("xor", XorConfig), ("sine", SineConfig), ("moons", MoonsConfig),
                                          ("spirals", SpiralsConfig), ("chirp", ChirpConfig)])
def test_builders_take_the_schema_fields_with_its_defaults(name, schema):
    params = inspect.signature(DATASETS.get(name)).parameters
    expected = {f.name: f.default for f in dataclasses.fields(schema) if f.name != "name"}
    assert set(params) == {*expected, "seed"}
    assert {key: params[key].default for key in expected} == expected


@pytest.mark.parametrize("name, shape, y_dtype, task, outputs, classes", [
    ("xor", (2,), torch.int64, "binary", 2, ["0", "1"]),
    ("sine", (1,), torch.float32, "regression", 1, None),
    ("moons", (2,), torch.int64, "binary", 2, ["0", "1"]),
    ("spirals", (2,), torch.int64, "multiclass", 3, ["0", "1", "2"]),
    ("chirp", (32, 1), torch.float32, "regression", 1, None),
])
def test_shapes_dtypes_and_tasks(name, shape, y_dtype, task, outputs, classes):
    data = DATASETS.build(name, seed=0, **SMALL[name])
    assert data.input_shape == shape and data.task == task and data.num_outputs == outputs
    assert data.class_names == classes
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val), (data.x_test, data.y_test)):
        assert x.dtype == torch.float32 and y.dtype == y_dtype and y.shape == (len(x),) and len(x) > 0
    assert data.info  # parameters and normalisation statistics for data.json


@pytest.mark.parametrize("name", sorted(SMALL))
def test_same_seed_same_data_other_seed_other_data(name):
    a, b, c = (DATASETS.build(name, seed=seed, **SMALL[name]) for seed in (0, 0, 1))
    for split in ("x_train", "y_train", "x_val", "x_test", "y_test"):
        assert torch.equal(getattr(a, split), getattr(b, split))
    assert not torch.equal(a.x_train, c.x_train)


@pytest.mark.parametrize("noise", [0.0, 0.15])
def test_xor_labels_are_the_xor_of_the_nearest_corner(noise):
    data = build_xor(seed=0, copies=25, noise=noise)
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val), (data.x_test, data.y_test)):
        corner = np.round(_unscale(x, data.info["input_scaling"])).clip(0, 1).astype(int)
        agree = (corner[:, 0] ^ corner[:, 1]) == y.numpy()
        assert agree.all() if noise == 0 else agree.mean() > 0.95  # jitter may cross the midline, rarely
    assert sum(data.sizes.values()) == 100 and (torch.bincount(data.y_train) == len(data.y_train) // 2).all()


@pytest.mark.parametrize("function, f", [
    ("sin", np.sin), ("cubic", lambda x: x**3), ("sinc", lambda x: np.sin(x) / x), ("step", lambda x: x > 0),
    ("sin(3*x) + 0.5*x", lambda x: np.sin(3 * x) + 0.5 * x), ("tanh", np.tanh),
])
def test_sine_without_noise_is_the_function(function, f):
    data = build_sine(seed=0, function=function, x_min=-2, x_max=3, samples=200, noise=0.0)
    assert data.target_scale is None
    x = _unscale(data.x_train, data.info["input_scaling"])[:, 0]
    assert x.min() >= -2 - 1e-4 and x.max() <= 3 + 1e-4
    np.testing.assert_allclose(data.y_train.numpy(), f(x), atol=1e-4)  # y stays in the function's units


def test_sine_input_is_standardised_on_train():
    data = build_sine(seed=0, x_min=10, x_max=20, samples=300)
    assert abs(float(data.x_train.mean())) < 1e-5 and abs(float(data.x_train.std(unbiased=False)) - 1) < 1e-4
    assert data.info["input_scaling"]["mean"][0] == pytest.approx(15, abs=1)


@pytest.mark.parametrize("function", ["sin(3*x", "no_such_function", "__import__('os').system('true')",
                                      "().__class__.__bases__", "open('f')", "x[:3]", "''"])
def test_sine_refuses_what_is_not_a_function_of_x(function):
    with pytest.raises(ConfigError, match=r"^data\.function=.*sin\(3\*x\) \+ 0\.5\*x") as err:
        build_sine(seed=0, function=function, samples=50)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("x_min, x_max", [(1.0, 1.0), (2.0, -2.0)])
def test_sine_refuses_an_empty_interval(x_min, x_max):
    with pytest.raises(ConfigError, match=r"data\.x_min=.*data\.x_max"):
        build_sine(seed=0, x_min=x_min, x_max=x_max)


@pytest.mark.parametrize("build, kwargs, classes", [
    (build_moons, {"samples": 300}, 2), (build_spirals, {"samples": 100}, 3),
    (build_spirals, {"samples": 100, "classes": 5, "turns": 2.0}, 5),
])
def test_moons_and_spirals_are_balanced_in_every_split(build, kwargs, classes):
    data = build(seed=0, **kwargs)
    assert data.num_outputs == classes and data.class_names == [str(k) for k in range(classes)]
    for y in (data.y_train, data.y_val, data.y_test):
        counts = torch.bincount(y, minlength=classes)
        assert counts.max() - counts.min() <= 1
    assert abs(float(data.x_train.mean())) < 1e-5  # standardised on the training split


def test_two_spirals_are_binary():
    data = build_spirals(seed=0, samples=50, classes=2)
    assert data.task == "binary" and data.num_outputs == 2 and data.class_names == ["0", "1"]


def test_spirals_without_noise_lie_on_their_arms():
    data = build_spirals(seed=0, samples=50, classes=3, turns=1.5, noise=0.0)
    x = _unscale(data.x_train, data.info["input_scaling"])
    radius = np.hypot(x[:, 0], x[:, 1])
    arm_angle = np.arctan2(x[:, 1], x[:, 0]) - 1.5 * 2 * np.pi * radius
    expected = 2 * np.pi * data.y_train.numpy() / 3
    away = np.angle(np.exp(1j * (arm_angle - expected)))  # wrapped to (-pi, pi]
    assert np.abs(away[radius > 1e-3]).max() < 1e-3


def test_chirp_split_is_chronological():
    data = build_chirp(seed=0, length=1000, window=20, horizon=3, val_fraction=0.2, test_fraction=0.1)
    positions = data.info["target_positions"]
    assert positions["train"][0] == 20 + 3 - 1 and positions["test"][1] == 999
    assert positions["train"][1] + 1 == positions["val"][0] and positions["val"][1] + 1 == positions["test"][0]
    for name, n in (("train", len(data.y_train)), ("val", len(data.y_val)), ("test", len(data.y_test))):
        assert positions[name][1] - positions[name][0] + 1 == n
    assert len(data.y_val) == round(978 * 0.2) and len(data.y_test) == round(978 * 0.1)
    # No shuffling: the first validation window is the last training window moved on by one.
    assert torch.equal(data.x_val[0, :-1], data.x_train[-1, 1:])
    assert torch.equal(data.x_test[0, :-1], data.x_val[-1, 1:])


@pytest.mark.parametrize("horizon", [1, 4])
def test_chirp_windows_overlap_and_targets_lie_horizon_steps_on(horizon):
    data = build_chirp(seed=0, length=500, window=16, horizon=horizon)
    x, y = _in_order(data)
    assert x.shape[1:] == (16, 1)
    assert torch.equal(x[1:, :-1], x[:-1, 1:])  # consecutive windows overlap
    # y_i = s[i + window + horizon - 1], the last input of example i + horizon.
    assert torch.equal(y[:-horizon], x[horizon:, -1, 0])


def test_chirp_is_the_documented_signal_scaled_with_the_training_part():
    length, window = 1000, 10
    data = build_chirp(seed=0, length=length, f0=0.5, f1=5.0, noise=0.0, window=window)
    x, y = _in_order(data)
    scaled = torch.cat([x[0, :, 0], y]).double().numpy()  # the whole signal, horizon 1
    mean, std = data.target_scale
    t = np.arange(length)
    np.testing.assert_allclose(scaled * std + mean, np.sin(2 * np.pi * (0.5 * t / 100 + 4.5 * t**2 / (200 * length))),
                               atol=1e-5)
    train = scaled[:len(data.y_train) + window]  # what the training examples read
    assert abs(train.mean()) < 1e-5 and abs(train.std() - 1) < 1e-5
    assert abs(scaled.mean()) > 1e-3 or abs(scaled.std() - 1) > 1e-3  # statistics of the whole signal differ
    assert data.info["signal_scaling"] == {"mean": round(mean, 6), "std": round(std, 6)}


@pytest.mark.parametrize("length, window, horizon", [(200, 200, 1), (200, 195, 4), (200, 400, 1)])
def test_chirp_refuses_a_window_too_long_for_the_signal(length, window, horizon):
    with pytest.raises(ConfigError, match=r"data\.window=.*data\.length=.*make data\.window smaller"):
        build_chirp(seed=0, length=length, window=window, horizon=horizon)

"""Generated datasets (``data=xor|sine|moons|spirals|chirp``): small, instant, and the same
for the same ``seed``, for trying models, losses and optimisers without any files."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dltrain.data import expression
from dltrain.data.preprocessing.points import Points
from dltrain.data.registry import DATASETS
from dltrain.data.splits import DataSplits, Standardizer, check_fractions, split_indices
from dltrain.errors import ConfigError, first_line

FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sin": np.sin,
    "cos": np.cos,
    "square": np.square,
    "cubic": lambda x: x**3,
    "abs": np.abs,
    "sinc": lambda x: np.sinc(x / np.pi),  # sin(x) / x, 1 at 0
    "step": lambda x: (x > 0).astype(np.float64),
    "exp": np.exp,
}
"""The functions ``data=sine`` knows by name (``data.function=NAME``)."""


class FunctionValuesError(ConfigError):
    """``data.function`` is valid, but its values on ``[data.x_min, data.x_max]`` are not all
    finite as float32. ``problem`` says so without advice, for a caller that knows where the
    function came from (a checkpoint) and gives its own."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"{problem}: use a function whose values stay finite there, or narrow "
                         "data.x_min and data.x_max")
        self.problem = problem


@DATASETS.register("xor", inputs="points")
def build_xor(seed: int = 0, copies: int = 100, noise: float = 0.1, val_fraction: float = 0.2,
              test_fraction: float = 0.2) -> DataSplits:
    """The four corners (0,0), (0,1), (1,0), (1,1), each repeated ``copies`` times.

    Every copy is jittered by Gaussian noise of standard deviation ``noise`` on each
    coordinate; its label is ``a XOR b`` of the corner it came from, so no straight line
    separates the classes. Split stratified; inputs standardised on the training split.

    Returns:
        Splits of shape ``(N, 2)`` (float32) with int64 labels, task ``binary``.
    """
    rng = np.random.default_rng(seed)
    corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    clean = np.repeat(corners, copies, axis=0)
    y = (clean[:, 0] != clean[:, 1]).astype(np.int64)
    x = clean + rng.normal(0.0, noise, clean.shape)
    return _classification(x, y, classes=2, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                           info={"copies": copies, "noise": noise})


@DATASETS.register("sine", inputs="points")
def build_sine(seed: int = 0, function: str = "sin", x_min: float = -np.pi, x_max: float = np.pi,
               samples: int = 1000, noise: float = 0.1, val_fraction: float = 0.2,
               test_fraction: float = 0.2) -> DataSplits:
    """Function approximation: ``y = f(x) + noise`` for ``x`` uniform on ``[x_min, x_max]``.

    ``function`` is a name from :data:`FUNCTIONS` or an expression in ``x`` (such as
    ``'sin(3*x) + 0.5*x'``) that may use numpy's sin, cos, tan, exp, log, log1p, sqrt, abs,
    tanh, sinh, cosh, arcsin, arccos, arctan, floor, ceil, sign, maximum, minimum, where,
    clip and the constants ``pi`` and ``e``; a bare function name such as ``tanh`` means
    ``tanh(x)``, and a constant is the same value for every ``x``. An expression is parsed
    into an allow-listed tree, never run as Python (see :mod:`dltrain.data.expression`). Split at random; ``x``
    is standardised on the training split, ``y`` stays in the function's own units.

    Returns:
        Splits of shape ``(N, 1)`` (float32) with float32 targets ``(N,)``, task ``regression``.

    Raises:
        ConfigError: naming ``data.x_min``/``data.x_max`` for an empty interval, or
            ``data.function`` for an unknown name or an expression that fails, and
            :class:`FunctionValuesError` for one whose values are not finite on the interval.
    """
    if x_min >= x_max:
        raise ConfigError(f"data.x_min={x_min:g} is not below data.x_max={x_max:g}: "
                          "make data.x_min smaller than data.x_max.")
    rng = np.random.default_rng(seed)
    x = rng.uniform(x_min, x_max, samples)
    y = _evaluate(function, x, (x_min, x_max)) + rng.normal(0.0, noise, samples)
    train, val, test = split_indices(samples, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    prep = Points.fit(x[train, None])

    def split(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return prep.apply(x[idx, None]), torch.from_numpy(y[idx].astype(np.float32))

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = split(train), split(val), split(test)
    return DataSplits(
        x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test,
        task="regression", num_outputs=1,
        info={"function": function, "x_min": x_min, "x_max": x_max, "samples": samples, "noise": noise,
              **prep.to_record()},
        preprocessing=prep,
    )


@DATASETS.register("moons", inputs="points")
def build_moons(seed: int = 0, samples: int = 1000, noise: float = 0.2, val_fraction: float = 0.2,
                test_fraction: float = 0.2) -> DataSplits:
    """Two interleaving half circles (scikit-learn's ``make_moons``), ``samples`` points in all.

    ``noise`` is the standard deviation of the Gaussian noise on each coordinate (the
    moons have radius 1). Split stratified; inputs standardised on the training split.

    Returns:
        Splits of shape ``(N, 2)`` (float32) with int64 labels, task ``binary``.
    """
    from sklearn.datasets import make_moons  # here: scikit-learn's datasets take a second to import

    x, y = make_moons(samples, noise=noise, random_state=seed)
    return _classification(x, y.astype(np.int64), classes=2, seed=seed, val_fraction=val_fraction,
                           test_fraction=test_fraction, info={"samples": samples, "noise": noise})


@DATASETS.register("spirals", inputs="points")
def build_spirals(seed: int = 0, samples: int = 300, classes: int = 3, turns: float = 1.0, noise: float = 0.2,
                  val_fraction: float = 0.2, test_fraction: float = 0.2) -> DataSplits:
    """``classes`` spiral arms of ``samples`` points each, one class per arm.

    Along arm ``k`` the point at ``t`` in ``[0, 1]`` lies at radius ``t`` and angle
    ``2*pi*k/classes + turns*2*pi*t``. Each point is moved by Gaussian noise of standard
    deviation ``noise * t / (classes * turns)`` on each coordinate: ``1 / (classes * turns)``
    is the gap between neighbouring arms along a ray from the centre, and the factor ``t``
    keeps the noise in proportion to their distance around the circle as well, which
    shrinks to nothing at the centre where every arm starts. At the default 0.2 an MLP with
    two hidden layers separates the arms almost perfectly (about 99% of held-out points
    after a few hundred Adam steps); at 0.5 about 93%; at 1 neighbouring arms overlap.
    Split stratified; inputs standardised on the training split.

    Returns:
        Splits of shape ``(N, 2)`` (float32) with int64 labels, task ``binary`` for two
        arms, else ``multiclass``.
    """
    rng = np.random.default_rng(seed)
    # Arms start a little off the centre, where they would otherwise share one point.
    t = np.tile(np.linspace(0.05, 1.0, samples), classes)
    y = np.repeat(np.arange(classes, dtype=np.int64), samples)
    angle = 2 * np.pi * y / classes + turns * 2 * np.pi * t
    std = noise * t / (classes * turns)
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1) + rng.normal(0.0, 1.0, (len(t), 2)) * std[:, None]
    return _classification(x, y, classes=classes, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                           info={"samples": samples, "classes": classes, "turns": turns, "noise": noise,
                                 "noise_std_at_edge": noise / (classes * turns)})


@DATASETS.register("chirp")
def build_chirp(seed: int = 0, length: int = 4000, f0: float = 1.0, f1: float = 4.0, noise: float = 0.1,
                window: int = 32, horizon: int = 1, val_fraction: float = 0.15,
                test_fraction: float = 0.15) -> DataSplits:
    """Forecasting a noisy chirp: from ``window`` past values, the value ``horizon`` steps on.

    The signal is ``s(t) = sin(phase(t)) + noise`` for ``t = 0 .. length-1``, with
    ``phase(t) = 2*pi*(f0*t/100 + (f1-f0)*t**2/(200*length))``: its frequency rises
    linearly from ``f0`` to ``f1`` cycles per 100 samples. Example ``i`` reads
    ``x = s[i : i+window]`` and predicts ``y = s[i+window+horizon-1]``.

    The split is chronological by the target's position, never shuffled: the first
    ``1 - val_fraction - test_fraction`` of the examples train, the next ``val_fraction``
    validate and the last ``test_fraction`` test. The first windows of validation (and of
    test) read inputs from the end of the split before them; that is the past, and no
    example reads a value after its own target. The signal is standardised with one mean
    and standard deviation (inputs and targets are the same signal), fitted on the part the
    training examples read; ``target_scale`` maps predictions back to signal units.

    Returns:
        Splits of shape ``(N, window, 1)`` (float32, a sequence of one feature) with
        float32 targets ``(N,)``, task ``regression``.

    Raises:
        ConfigError: naming ``data.window`` and ``data.length`` when the signal is too short
            for the window and horizon to leave every split an example.
    """
    check_fractions(val_fraction, test_fraction)
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)
    phase = 2 * np.pi * (f0 * t / 100 + (f1 - f0) * t**2 / (200 * length))
    signal = np.sin(phase) + rng.normal(0.0, noise, length)
    examples = max(length - window - horizon + 1, 0)
    num_val, num_test = round(examples * val_fraction), round(examples * test_fraction)
    num_train = examples - num_val - num_test
    if min(num_train, num_test) < 1 or (val_fraction > 0 and num_val < 1):  # val_fraction=0: no validation
        raise ConfigError(f"data.window={window} and data.horizon={horizon} leave {examples} examples in a signal of "
                          f"data.length={length}, too few for non-empty train/validation/test splits: "
                          "make data.window smaller or data.length larger.")
    train_end = num_train + window + horizon - 1  # the signal up to and including the last training target
    scaler = Standardizer.fit(signal[:train_end])
    scaled = scaler.transform(signal)
    x = np.lib.stride_tricks.sliding_window_view(scaled, window)[:examples, :, None]
    y = scaled[window + horizon - 1:]
    bounds = {"train": (0, num_train), "val": (num_train, num_train + num_val),
              "test": (num_train + num_val, examples)}

    def split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        start, stop = bounds[name]
        return torch.from_numpy(x[start:stop].copy()), torch.from_numpy(y[start:stop].copy())

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = split("train"), split("val"), split("test")
    mean, std = float(scaler.mean.item()), float(scaler.std.item())
    return DataSplits(
        x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test,
        task="regression", num_outputs=1, target_scale=(mean, std),
        info={"length": length, "f0": f0, "f1": f1, "noise": noise, "window": window, "horizon": horizon,
              "signal_scaling": {"mean": round(mean, 6), "std": round(std, 6)},
              # first and last signal position each split's targets come from
              "target_positions": {name: [start + window + horizon - 1, stop + window + horizon - 2]
                                   for name, (start, stop) in bounds.items() if stop > start}},
    )


def _classification(x: np.ndarray, y: np.ndarray, *, classes: int, seed: int, val_fraction: float,
                    test_fraction: float, info: dict[str, Any]) -> DataSplits:
    """Points ``x`` with class indices ``y``, split stratified and standardised on the training split."""
    train, val, test = split_indices(len(y), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                                     labels=y)
    prep = Points.fit(x[train])

    def split(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return prep.apply(x[idx]), torch.from_numpy(y[idx])

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = split(train), split(val), split(test)
    return DataSplits(
        x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test,
        task="binary" if classes == 2 else "multiclass", num_outputs=classes,
        class_names=[str(k) for k in range(classes)],
        info={**info, **prep.to_record()}, preprocessing=prep,
    )


def _evaluate(function: str, x: np.ndarray, interval: tuple[float, float]) -> np.ndarray:
    """``function`` (a name from :data:`FUNCTIONS` or an expression in ``x``) at every ``x``.

    Raises:
        ConfigError: naming ``data.function`` when it is neither.
        FunctionValuesError: when it is, but gives values that are not finite as float32.
    """
    try:
        if function in FUNCTIONS:
            with np.errstate(all="ignore"):
                value = FUNCTIONS[function](x)
        else:  # parsed and walked, never eval'd: the text may come from a checkpoint
            value = expression.evaluate(expression.parse(function), x)
        y = np.broadcast_to(np.asarray(value, dtype=np.float64), x.shape)
    except Exception as err:  # anything an expression can raise is the user's to fix
        reason = first_line(err) if isinstance(err, expression.ExpressionError) else \
            f"{type(err).__name__}: {err}".splitlines()[0]
        raise ConfigError(f"data.function={str(function)[:80]!r} is not a known function or a valid expression in x "
                          f"({reason}): use one of {', '.join(FUNCTIONS)} or an expression such as "
                          "'sin(3*x) + 0.5*x'.") from None
    # The targets are float32: a value beyond its range would become inf there.
    bad = int((~np.isfinite(y) | (np.abs(y) > np.finfo(np.float32).max)).sum())
    if bad:
        raise FunctionValuesError(
            f"data.function={str(function)[:80]!r} is valid, but its values are not finite as float32 (NaN, "
            f"infinite or beyond ±3.4e38) at {bad} of {len(x)} points of [data.x_min, data.x_max] = "
            f"[{interval[0]:g}, {interval[1]:g}]")
    return y

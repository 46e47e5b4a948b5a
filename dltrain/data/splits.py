"""The form every dataset is turned into (:class:`DataSplits`), and the helpers that every
builder uses to split and scale it the same way: seeded, stratified where possible, and
fitted on the training split only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dltrain.data.standardizer import Standardizer  # noqa: F401  (its old home)
from dltrain.errors import ConfigError

if TYPE_CHECKING:
    from dltrain.data.preprocessing import Preprocessing

TASKS = ("regression", "binary", "multiclass", "multilabel")


@dataclass
class DataSplits:
    """Train/validation/test examples plus what the model, loss and reports need to know.

    Attributes:
        x_train, x_val, x_test: the inputs, as tensors ``(N, *input_shape)`` for data held
            in memory, or, for data read from disk each epoch (``data.in_memory=false``),
            map-style datasets whose item ``i`` is ``(x_i, y_i)``.
        y_train, y_val, y_test: the targets, always tensors: int64 class indices ``(N,)``
            for binary and multi-class data, 0/1 floats ``(N, labels)`` for multi-label
            data, floats ``(N,)`` or ``(N, columns)`` for regression.
        task: ``regression``, ``binary``, ``multiclass`` or ``multilabel``; drives
            ``loss=auto`` and the metrics.
        num_outputs: classes (2 for binary), labels (multi-label) or target columns
            (regression). The loss decides the output layer's width from it.
        class_names: label of each class index (classification only); predictions are
            reported with these.
        vocab_size: tokens in the vocabulary when the inputs are token ids (text data,
            padding id 0); recurrent models then embed them.
        target_scale: ``(mean, std)`` a regression target was standardised with, so
            predictions can be mapped back to the target's units.
        num_workers: DataLoader processes that read datasets from disk (unused for tensors).
        info: a JSON-able description of the preprocessing (columns, encodings,
            normalisation statistics, vocabulary), written to the run's ``data.json``.
        warnings: what the data's reading noticed and the user should know (cells read as
            missing, a class too rare to stratify): logged and listed in ``summary.json``.
        preprocessing: what turned the raw inputs into ``x_*``, fitted on the training split
            (see :mod:`dltrain.data.preprocessing`); None for data whose inputs are not read
            from files. Its record is part of ``info``.
        input_shape: shape of one example, no batch dimension (``(1, 8, 8)`` for digits).
    """

    x_train: torch.Tensor | Dataset
    y_train: torch.Tensor
    x_val: torch.Tensor | Dataset
    y_val: torch.Tensor
    x_test: torch.Tensor | Dataset
    y_test: torch.Tensor
    task: str
    num_outputs: int
    class_names: list[str] | None = None
    vocab_size: int | None = None
    target_scale: tuple[float, float] | None = None
    num_workers: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    preprocessing: Preprocessing | None = None
    input_shape: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        self.input_shape = tuple(self.example(1).shape[1:])

    @property
    def in_memory(self) -> bool:
        """True when every split's inputs are tensors (batched by index)."""
        return all(torch.is_tensor(x) for x in (self.x_train, self.x_val, self.x_test))

    def example(self, n: int = 2) -> torch.Tensor:
        """The first ``n`` training inputs as one batch ``(n, *input_shape)``, on their
        device: what start-up checks and the model summary run the model on."""
        if torch.is_tensor(self.x_train):
            return self.x_train[:n]
        return torch.stack([self.x_train[i][0] for i in range(min(n, len(self.x_train)))])

    def class_counts(self) -> torch.Tensor | None:
        """Training examples per class (single-label classification), else None."""
        if self.task not in ("binary", "multiclass"):
            return None
        return torch.bincount(self.y_train.cpu(), minlength=self.num_outputs)

    @property
    def has_validation(self) -> bool:
        """False when no example is held out for validation (``data.val_fraction=0``)."""
        return len(self.y_val) > 0

    @property
    def sizes(self) -> dict[str, int]:
        return {"num_train": len(self.y_train), "num_val": len(self.y_val), "num_test": len(self.y_test)}

    def to(self, device: torch.device) -> DataSplits:
        """Move every tensor split to ``device`` (in place) and return self; datasets read
        from disk stay where they are (their batches are moved as they are read)."""
        for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
            value = getattr(self, name)
            if torch.is_tensor(value):
                setattr(self, name, value.to(device))
        return self


def check_fractions(val_fraction: float, test_fraction: float | None = None) -> None:
    """Refuse fractions that leave nothing to train on.

    Raises:
        ConfigError: naming ``data.val_fraction`` (and ``data.test_fraction``).
    """
    total = val_fraction + (test_fraction or 0.0)
    if total >= 1:
        keys = "data.val_fraction + data.test_fraction" if test_fraction is not None else "data.val_fraction"
        raise ConfigError(f"{keys} = {total:g} leaves nothing to train on: make it less than 1.")


def split_indices(
    n: int,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train/validation/test indices into ``n`` examples.

    Stratified by ``labels`` (class indices) when every class has enough examples for
    each split to hold it; random otherwise. Each index list is sorted, so the examples
    keep their file order within a split.

    Args:
        n: number of examples.
        val_fraction, test_fraction: shares of all ``n`` examples.
        seed: the run's seed; the same seed gives the same split.
        labels: class index of each example, for a stratified split.

    Raises:
        ConfigError: when the fractions leave a split empty.
    """
    check_fractions(val_fraction, test_fraction)
    rest, test = _split(np.arange(n), test_fraction, seed, labels, "data.test_fraction")
    # val_fraction is a share of all examples: of what is left after the test split, it is more.
    train, val = _split(rest, val_fraction / (1 - test_fraction), seed, None if labels is None else labels[rest],
                        "data.val_fraction")
    return np.sort(train), np.sort(val), np.sort(test)


def carve_validation(
    n: int, *, val_fraction: float, seed: int, labels: np.ndarray | None = None, key: str = "data.val_fraction",
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (kept, held-out) indices, for a source that has its own test split: the
    held-out share ``val_fraction`` becomes the validation split (or, with ``key``
    ``data.test_fraction``, a test split carved the same way).

    Raises:
        ConfigError: naming ``key`` when the fraction leaves a split empty.
    """
    if val_fraction >= 1:
        raise ConfigError(f"{key} = {val_fraction:g} leaves nothing to train on: make it less than 1.")
    train, val = _split(np.arange(n), val_fraction, seed, labels, key)
    return np.sort(train), np.sort(val)


def _split(idx: np.ndarray, fraction: float, seed: int, labels: np.ndarray | None,
           key: str) -> tuple[np.ndarray, np.ndarray]:
    """``idx`` cut into (kept, held out) with ``fraction`` held out (none at all for 0)."""
    if fraction == 0:  # data.val_fraction=0: every example trains, and no split is drawn
        return idx, idx[:0]
    held = int(round(len(idx) * fraction))
    if held < 1 or held >= len(idx):
        raise ConfigError(f"{key}={fraction:g} of {len(idx)} examples leaves a split empty: "
                          "use a fraction that keeps at least one example on each side, or more data.")
    rng = np.random.default_rng(seed)
    if labels is not None:
        classes, counts = np.unique(labels, return_counts=True)
        # Stratify only when every class can appear on both sides.
        if len(classes) <= held <= len(idx) - len(classes) and counts.min() >= 2:
            kept, out = stratified_split(labels, held, seed)
            return idx[kept], idx[out]
    order = rng.permutation(len(idx))
    return idx[order[held:]], idx[order[:held]]


def stratified_split(labels: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, test) positions into ``labels``, ``n_test`` of them held out with every
    class in the same proportion on both sides.

    The same split as scikit-learn's ``train_test_split(..., test_size=n_test,
    stratify=labels, random_state=seed)`` (its ``StratifiedShuffleSplit``, step for step,
    which a test checks), without importing scikit-learn, which takes over a second: each
    class gets its approximate hypergeometric mode of the draws (ties broken at random),
    its members are permuted, and each side is shuffled.

    Raises:
        ValueError: a class with fewer than 2 members, or a side smaller than the number of classes.
    """
    rng = np.random.RandomState(seed)
    classes, class_of, counts = np.unique(labels, return_inverse=True, return_counts=True)
    n_train = len(labels) - n_test
    if counts.min() < 2 or n_train < len(classes) or n_test < len(classes):
        raise ValueError(f"cannot stratify {len(labels)} examples of {len(classes)} classes "
                         f"(smallest class: {counts.min()}) into {n_train} and {n_test}")
    members = np.split(np.argsort(class_of, kind="stable"), np.cumsum(counts)[:-1])
    in_train = _approximate_mode(counts, n_train, rng)
    in_test = _approximate_mode(counts - in_train, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i, count in enumerate(counts):
        shuffled = members[i].take(rng.permutation(count), mode="clip")
        train.extend(shuffled[:in_train[i]])
        test.extend(shuffled[in_train[i]:in_train[i] + in_test[i]])
    return rng.permutation(train), rng.permutation(test)


def _approximate_mode(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of ``draws`` come from each class: the floor of the proportional share, then
    one more for the largest remainders, ties drawn at random."""
    share = counts / counts.sum() * draws
    floored = np.floor(share)
    missing = int(draws - floored.sum())
    if missing > 0:
        remainder = share - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            take = min(len(tied), missing)
            floored[rng.choice(tied, size=take, replace=False)] += 1
            missing -= take
            if missing == 0:
                break
    return floored.astype(int)

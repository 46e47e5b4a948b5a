"""``data=csv``: a table of numeric and categorical features with one target column.

Everything preprocessing learns from the data (values that fill gaps, scaling, one-hot
categories, the target's scale) is fitted on the training split only. The reading, task
inference and target encoding here are shared with ``data=text_csv``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dltrain.data.cells import (
    Stray,
    check_finite,
    check_standardised,
    check_target_scale,
    read_numbers,
    stray_warnings,
)
from dltrain.data.csv_file import describe_path, read_table
from dltrain.data.preprocessing.base import Preprocessing
from dltrain.data.preprocessing.table import Table
from dltrain.data.registry import DATASETS
from dltrain.data.splits import DataSplits, Standardizer, split_indices
from dltrain.errors import ConfigError

if TYPE_CHECKING:  # pandas and scikit-learn are imported where used: the other datasets never pay for them
    import pandas as pd

log = logging.getLogger("dltrain")

MAX_CLASS_VALUES = 20
"""A numeric target of integers with at most this many distinct values is read as classes."""


def _listing(columns: Iterable[Any], limit: int = 10) -> str:
    """The first ``limit`` column names, comma-separated, and how many there are in all."""
    names = [str(c) for c in columns]
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} columns)"


def require_column(table: pd.DataFrame, column: str, key: str, where: str) -> None:
    """Refuse a ``column`` that ``table`` lacks.

    Raises:
        ConfigError: naming ``key`` and listing the table's columns.
    """
    if column not in table.columns:
        hint = " (the file reads as one column: is data.delimiter right?)" if len(table.columns) == 1 else ""
        raise ConfigError(f"{key}={column} is not a column of {where}: choose one of {_listing(table.columns)}{hint}.")


def _is_number(y: pd.Series) -> bool:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    return is_numeric_dtype(y) and not is_bool_dtype(y)


def _integer_valued(values: np.ndarray) -> bool:
    return bool(np.all(np.mod(values, 1) == 0))


def _count_classes(y: pd.Series) -> int:
    """Distinct values of ``y``.

    Raises:
        ConfigError: when there is only one, naming ``data.target``.
    """
    count = y.nunique()
    if count < 2:
        raise ConfigError(f"data.target={y.name} holds a single value ({y.iloc[0]}): "
                          "choose a target column with at least two classes.")
    return count


def infer_task(y: pd.Series) -> tuple[str, str]:
    """The task a target column asks for, and why.

    Text, category and true/false values are classes; so are integers with at most
    ``MAX_CLASS_VALUES`` distinct values. Other numbers are a regression target.

    Args:
        y: the target, without missing values, named after its column.

    Returns:
        ``(task, reason)`` with task ``regression``, ``binary`` or ``multiclass``.

    Raises:
        ConfigError: for a class target with a single value.
    """
    from pandas.api.types import is_bool_dtype

    if not _is_number(y):
        reason = f"data.target={y.name} holds {'true/false' if is_bool_dtype(y) else 'non-numeric'} values"
    else:
        numbers = y.to_numpy(dtype=np.float64)
        distinct = len(np.unique(numbers))
        if not _integer_valued(numbers):
            return "regression", f"data.target={y.name} holds non-integer numbers"
        if distinct > MAX_CLASS_VALUES:
            return "regression", (f"data.target={y.name} holds {distinct} distinct integers "
                                  f"(more than {MAX_CLASS_VALUES})")
        reason = f"data.target={y.name} holds {distinct} distinct integers (at most {MAX_CLASS_VALUES})"
    return ("binary" if _count_classes(y) == 2 else "multiclass"), reason


def resolve_task(y: pd.Series, task: str) -> tuple[str, str]:
    """The task for ``data.task`` (``auto`` infers it) checked against the target, and why.

    Args:
        y: the target, without missing values, named after its column.
        task: ``auto``, ``regression``, ``binary`` or ``multiclass``.

    Raises:
        ConfigError: regression on a non-numeric target, binary without exactly two
            classes, or classes with a single value.
    """
    if task == "auto":
        task, reason = infer_task(y)
    else:
        reason = "set by data.task"
        if task == "regression" and not _is_number(y):
            raise ConfigError(f"data.task=regression needs a numeric target, but data.target={y.name} holds "
                              f"values such as {y.iloc[0]!r}: set data.task=auto to classify them.")
        classes = _count_classes(y) if task != "regression" else None
        if task == "binary" and classes != 2:
            labels = sorted(map(str, y.unique()))
            shown = ", ".join(labels[:5]) + (", ..." if len(labels) > 5 else "")
            raise ConfigError(f"data.task=binary needs exactly 2 classes, but data.target={y.name} holds "
                              f"{classes} ({shown}): set data.task=multiclass, or empty the cells that are no class.")
    log.info("data: task=%s (%s)", task, reason)
    return task, reason


def read_target(table: pd.DataFrame, target: str, task: str) -> tuple[dict[str, Stray], list[str]]:
    """Read a mostly numeric target column with a few other cells (``?``, ``other``), in place.

    A regression target (``data.task=regression``, or ``auto`` when its numbers alone are
    not classes: not all integers, or more than ``MAX_CLASS_VALUES`` distinct) becomes
    numbers and its other cells missing, as a feature column would. A class target keeps
    every cell as a label: ``other`` among ``0``, ``1``, ``2`` is a fourth class, said in a
    warning.

    Returns:
        the target's cells read as missing (see :func:`~dltrain.data.cells.read_numbers`),
        and the warnings.
    """
    probe = table[[target]].copy()
    strays = read_numbers(probe, [target])
    if not strays:
        return {}, []  # a column of numbers or of text alone is read as pandas read it
    numbers = probe[target].dropna().to_numpy()
    classes = len(numbers) > 0 and _integer_valued(numbers) and len(np.unique(numbers)) <= MAX_CLASS_VALUES
    if task == "regression" or (task == "auto" and not classes):
        table[target] = probe[target]
        return strays, []
    why = f"data.task={task}" if task != "auto" else \
        f"its numbers are integers with at most {MAX_CLASS_VALUES} distinct values"
    return {}, [f"data.target={target}: {strays[target].describe()}, read as labels of their own since the "
                f"target is classes ({why}): empty those cells if they mean a missing label"]


def class_indices(y: pd.Series, positive: str | None = None) -> tuple[np.ndarray, list[str]]:
    """Each value's class index and the class names.

    Classes are the distinct values, sorted (numbers numerically), named as text:
    ``fraud``/``ok`` stay as they are, and integer-valued numbers read as ``0``, ``1``.
    With two classes, index 1 is the positive class that precision, recall and f1 score:
    ``positive`` when given, else the larger number (``1``, ``True``), or for text labels
    the rarer one (``fraud`` among ``ok``s).

    Raises:
        ConfigError: ``positive`` is not one of the labels.
    """
    if _is_number(y):
        values = y.to_numpy(dtype=np.float64)
        if _integer_valued(values):
            values = values.astype(np.int64)
    else:
        values = y.astype(str).to_numpy(dtype=object)
    classes, codes = np.unique(values, return_inverse=True)
    names = [str(c) for c in classes]
    if positive is not None and str(positive) not in names:
        raise ConfigError(f"data.positive_class={positive} is not a label of data.target={y.name}: "
                          f"choose one of {_listing(names)}.")
    if len(names) == 2:
        counts = np.bincount(codes, minlength=2)
        if positive is not None:
            swap = names[0] == str(positive)
        else:
            swap = not _is_number(y) and counts[0] < counts[1]
        if swap:
            codes, names = 1 - codes, names[::-1]
    return codes.astype(np.int64), names


def check_classes(y: pd.Series, codes: np.ndarray, names: list[str]) -> list[str]:
    """Refuse a target whose classes are mostly single rows (an id, free text): more than
    two classes and either more classes than half the rows, or more than
    ``MAX_CLASS_VALUES`` classes most of which hold one row. Warn of a class with a single
    row: it cannot be in every split, so the split is not stratified.

    Returns:
        The warnings, for the log and ``summary.json``.

    Raises:
        ConfigError: naming ``data.target``.
    """
    counts = np.bincount(codes, minlength=len(names))
    single = [name for name, count in zip(names, counts, strict=True) if count == 1]
    if len(names) > 2 and (len(names) > len(codes) / 2
                           or (len(names) > MAX_CLASS_VALUES and len(single) > len(names) / 2)):
        hint = "set data.task=regression, or choose another data.target" if _is_number(y) else \
            "choose another data.target (a column of labels)"
        raise ConfigError(f"data.target={y.name} has {len(names)} classes in {len(codes)} rows, {len(single)} of them "
                          f"with a single row, too few examples to learn a class from: {hint}.")
    if not single:
        return []
    which = f"class {single[0]} has" if len(single) == 1 else f"classes {_listing(single, 5)} have"
    return [f"data.target={y.name}: {which} a single row, which is in one split only (so the splits are not "
            "stratified): it is either learned or evaluated, never both; add rows of it, or remove it"]


@dataclass
class Target:
    """An encoded target column and the rows of each split.

    Attributes:
        task: ``regression``, ``binary`` or ``multiclass``.
        values: int64 class indices, or float32 values standardised with the training
            split's mean and standard deviation, one per row.
        parts: sorted train, validation and test row indices.
        class_names: label of each class index (classification only).
        scale: ``(mean, std)`` of a regression target in the training split.
        warnings: what the user should know about the target (see :func:`check_classes`).
    """

    task: str
    values: np.ndarray
    parts: tuple[np.ndarray, np.ndarray, np.ndarray]
    class_names: list[str] | None = None
    scale: tuple[float, float] | None = None
    warnings: list[str] = field(default_factory=list)

    def splits(self, x: torch.Tensor, info: dict[str, Any], vocab_size: int | None = None,
               warnings: Sequence[str] = (), preprocessing: Preprocessing | None = None) -> DataSplits:
        """The :class:`DataSplits` of inputs ``x`` (one row per table row, made by
        ``preprocessing``) and this target, with ``warnings`` about the inputs added to the target's."""
        y = torch.from_numpy(self.values)
        train, val, test = (torch.from_numpy(p) for p in self.parts)
        return DataSplits(
            x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val], x_test=x[test], y_test=y[test],
            task=self.task, num_outputs=1 if self.class_names is None else len(self.class_names),
            class_names=self.class_names, vocab_size=vocab_size, target_scale=self.scale, info=info,
            warnings=[*warnings, *self.warnings], preprocessing=preprocessing,
        )


def split_target(y: pd.Series, task: str, *, seed: int, val_fraction: float, test_fraction: float,
                 positive_class: str | None = None) -> Target:
    """Split the rows (seeded, stratified by class for classification) and encode the target.

    Args:
        y: the target, without missing values.
        task: ``regression``, ``binary`` or ``multiclass`` (see :func:`resolve_task`).
        seed, val_fraction, test_fraction: as for :func:`~dltrain.data.splits.split_indices`.
        positive_class: the label scored by precision, recall and f1 (see :func:`class_indices`).

    Raises:
        ConfigError: a regression target too large to standardise, or a class target of
            mostly single rows (see :func:`check_classes`).
    """
    if task == "regression":
        values = y.to_numpy(dtype=np.float64)
        check_target_scale(values, str(y.name))
        parts = split_indices(len(y), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
        scaler = Standardizer.fit(values[parts[0]])
        return Target(task, scaler.transform(values), parts, scale=(float(scaler.mean[0]), float(scaler.std[0])))
    codes, names = class_indices(y, positive_class)
    warnings = check_classes(y, codes, names)
    parts = split_indices(len(y), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, labels=codes)
    return Target(task, codes, parts, class_names=names, warnings=warnings)


def _feature_columns(table: pd.DataFrame, target: str, features: Sequence[str] | None, where: str) -> list[str]:
    """The input columns: ``features`` checked against the table, or every column but the target."""
    require_column(table, target, "data.target", where)
    if features is None:
        columns = [c for c in table.columns if c != target]
    else:
        columns = list(dict.fromkeys(features))
        unknown = [str(c) for c in columns if c not in table.columns]
        if unknown:
            raise ConfigError(f"data.features names columns {where} does not have: {', '.join(unknown)}: "
                              f"choose from {_listing(table.columns)}.")
        if target in columns:
            raise ConfigError(f"data.features lists the target column data.target={target}: remove it from "
                              "data.features.")
    if not columns:
        raise ConfigError(f"{where} gives no feature columns besides data.target={target}: list some in "
                          "data.features, or use a file with more columns.")
    return columns


def _handle_missing(table: pd.DataFrame, target: str, missing: str, where: str,
                    strays: dict[str, Stray]) -> tuple[pd.DataFrame, int]:
    """Refuse missing values (``error``), or drop the rows with any (``drop``) or with a
    missing target (``mean``: features are filled after the split). ``strays`` are the
    cells of numeric columns that were not numbers, now missing too. Returns the table and
    the number of rows dropped."""
    counts = table.isna().sum()
    counts = counts[counts > 0]
    if counts.empty:
        return table, 0
    if missing == "error":
        listed = ", ".join(f"{column} ({count}{f'; {strays[column].describe()}' if column in strays else ''})"
                           for column, count in counts.items())
        raise ConfigError(f"{where} has missing values: {listed}: set data.missing=drop to drop those rows, "
                          "or data.missing=mean to fill them from the training split.")
    keep = table.notna().all(axis=1) if missing == "drop" else table[target].notna()
    what = "a missing value" if missing == "drop" else "a missing target"
    dropped = int((~keep).sum())
    if dropped:
        log.info("data: dropped %d of %d rows with %s (data.missing=%s)", dropped, len(table), what, missing)
    table = table[keep]  # the index keeps each row's position in the file, for predictions.csv
    if table.empty:
        raise ConfigError(f"{where} has no rows left after dropping those with {what}: fill in the file's gaps.")
    return table, dropped


def _fill_from_train(x: pd.DataFrame, train: np.ndarray) -> dict[str, Any]:
    """Fill the gaps in ``x`` in place: numbers with the training split's mean, other values
    with its most frequent one. Returns the value used per column."""
    fills: dict[str, Any] = {}
    for column in x.columns[x.isna().any()]:
        seen = x[column].iloc[train].dropna()
        if seen.empty:
            raise ConfigError(f"data.features: column {column} has no values in the training split: remove it "
                              "from data.features, or fill it in.")
        value = float(seen.mean()) if _is_number(x[column]) else seen.mode().iloc[0]
        x[column] = x[column].fillna(value)
        fills[str(column)] = value if isinstance(value, float) else str(value)
    if fills:
        log.info("data: filled missing values from the training split: %s",
                 ", ".join(f"{column}={value:.6g}" if isinstance(value, float) else f"{column}={value}"
                           for column, value in fills.items()))
    return fills


def _fills_for_new_rows(x: pd.DataFrame, train: np.ndarray, fills: dict[str, Any]) -> dict[str, Any]:
    """The fill value of every column of ``x`` (already filled): ``fills`` where a column had
    gaps, else the training split's mean, or most frequent value for non-numeric columns,
    as :func:`_fill_from_train` would have chosen."""
    from pandas.api.types import is_numeric_dtype

    out: dict[str, Any] = {}
    for column in x.columns:  # true/false columns are numbers (0/1) to the encoder, so they get a mean
        seen = x[column].iloc[train]
        out[str(column)] = float(seen.mean()) if is_numeric_dtype(x[column]) else str(seen.mode().iloc[0])
    return {**out, **fills}


def _encode_features(x: pd.DataFrame, parts: tuple[np.ndarray, np.ndarray, np.ndarray], max_categories: int,
                     where: str) -> tuple[torch.Tensor, Table]:
    """Fit the encoding of ``x`` on the training rows (numbers, true/false as 0/1, standardised;
    other columns one-hot encoded by scikit-learn's OneHotEncoder) and apply it to every row.
    Returns the float32 matrix ``(rows, encoded columns)`` and the fitted :class:`Table`
    (without its fill values).

    Raises:
        ConfigError: a numeric column of ``where`` too large to standardise."""
    from pandas.api.types import is_numeric_dtype
    from sklearn.preprocessing import OneHotEncoder

    train, val, test = parts
    numeric = [c for c in x.columns if is_numeric_dtype(x[c])]
    categorical = [c for c in x.columns if c not in numeric]
    scaler = Standardizer(np.zeros((1, 0)), np.ones((1, 0)))
    numeric_range = None
    if numeric:
        values = x[numeric].to_numpy(dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused below, naming the column
            scaler = Standardizer.fit(values[train])
        # The training range of each column: dltrain-predict flags new rows far beyond it.
        numeric_range = {str(c): [float(lo), float(hi)] for c, lo, hi in
                         zip(numeric, values[train].min(axis=0), values[train].max(axis=0), strict=True)}
    names, categories, unseen = [str(c) for c in numeric], {}, {}
    if categorical:
        values = x[categorical].astype(str).to_numpy(dtype=object)
        encoder = OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=max_categories,
                                sparse_output=False, dtype=np.float32).fit(values[train])
        names += encoder.get_feature_names_out([str(c) for c in categorical]).tolist()
        categories = {c: cats.tolist() for c, cats in zip(categorical, encoder.categories_, strict=True)}
        held_out = np.concatenate([val, test])
        unseen = {c: int((~np.isin(values[held_out, i], cats)).sum())
                  for i, (c, cats) in enumerate(zip(categorical, encoder.categories_, strict=True))}
    table = Table(list(x.columns), numeric, scaler.mean.ravel(), scaler.std.ravel(), categories, names, numeric_range)
    encoded = table.apply(x)
    if numeric:
        check_standardised(numeric, scaler.mean, scaler.std, encoded[:, :len(numeric)].numpy(), where)
    if any(unseen.values()):
        log.info("data: validation/test rows with categories not seen in training (encoded as the "
                 "infrequent column, or all zeros): %s", ", ".join(f"{c} ({n})" for c, n in unseen.items() if n))
    return encoded, table


@DATASETS.register("csv", inputs="table")
def build_csv(
    seed: int = 0,
    *,
    path: str,
    target: str = "target",
    features: Sequence[str] | None = None,
    task: str = "auto",
    missing: str = "error",
    max_categories: int = 50,
    positive_class: str | None = None,
    delimiter: str = ",",
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> DataSplits:
    """A CSV table as float32 feature rows and one target, split seeded (stratified for classes).

    Args:
        seed: the run's seed; the same seed gives the same split.
        path: the CSV file, with a header row.
        target: the column to predict.
        features: input columns; None: every column but the target.
        task: ``auto`` infers it from the target (see :func:`infer_task`).
        missing: rows with missing values: ``error``, ``drop`` them, or ``mean`` (rows
            without a target are dropped; features are filled with the training split's
            mean, or most frequent value for non-numeric columns).
        max_categories: one-hot columns per non-numeric column; rarer values share one.
        delimiter: the field separator.
        val_fraction, test_fraction: shares of all rows.

    Returns:
        Splits with inputs ``(N, encoded features)``: numbers standardised and other columns
        one-hot encoded, both fitted on the training split; targets as class indices, or
        standardised floats with ``target_scale`` set.

    Raises:
        ConfigError: for an unreadable file, unknown columns, missing values under
            ``missing=error``, or a target that does not fit the task.
    """
    table = read_table(path, delimiter)
    where = describe_path(path)
    columns = _feature_columns(table, target, features, where)
    table = table[[*columns, target]].copy()
    strays = read_numbers(table, columns)
    target_strays, label_warnings = read_target(table, target, task)
    strays.update(target_strays)
    check_finite(table, [*columns, target], where)
    table, dropped = _handle_missing(table, target, missing, where, strays)
    rows = table.index.to_numpy()  # position in the file (0 = first data row) of each row kept
    table = table.reset_index(drop=True)
    task, reason = resolve_task(table[target], task)
    encoded = split_target(table[target], task, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                           positive_class=positive_class)
    x = table[columns].copy()
    fills = _fill_from_train(x, encoded.parts[0]) if missing == "mean" else {}
    values, prep = _encode_features(x, encoded.parts, max_categories, where)
    # missing=mean: what an empty cell of any feature column gets in new rows (dltrain-predict).
    prep = replace(prep, missing=missing, fill_values=fills,
                   fill_values_new_rows=_fills_for_new_rows(x, encoded.parts[0], fills) if missing == "mean" else {})
    absolute = str(Path(path).expanduser().resolve())
    log.info("data: %s: %d rows, %d feature columns -> %d inputs", absolute, len(table), len(columns),
             values.shape[1])
    record = prep.to_record()
    missing_keys = {key: record.pop(key) for key in ("missing", "fill_values", "fill_values_new_rows")}
    info = {  # data.json's key order as it has always been: rows_dropped before the missing-cell keys
        "path": absolute, "target": target, "task": task, "task_reason": reason, **record,
        "rows_dropped": dropped, **missing_keys, "target_scale": None if encoded.scale is None else list(encoded.scale),
    }
    info["test_rows"] = rows[encoded.parts[2]].tolist()  # names the test rows in predictions.csv
    info["val_rows"] = rows[encoded.parts[1]].tolist()  # and the validation rows in dltrain-eval split=val
    warned = [*stray_warnings(strays, missing), *label_warnings]
    return encoded.splits(values, info, warnings=warned, preprocessing=prep)

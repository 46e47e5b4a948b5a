"""A checkpoint's test split twice: as dltrain's model inputs, and as the raw inputs an exported
graph reads (what a user has: pixels, table cells, token ids, points), to verify the export with.

Datasets keep their inputs preprocessed only; the raw inputs are the exact inverse of each
kind's ``apply`` where the preprocessing loses nothing (images back to their uint8 pixels, ink
counts back to whole counts, one-hot columns back to category indices) and its float inverse
where it is a standardisation (numbers and points, in float64).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dltrain.data.preprocessing import Images, InkCounts, Points, Preprocessing, Table
from dltrain.errors import UserError


@dataclass
class Examples:
    """The test split as dltrain reads it and as the exported graph reads it.

    Attributes:
        inputs: the model's inputs ``(N, *input_shape)``, as ``dltrain-eval`` gives them to it.
        raw: the same examples as raw inputs ``(N, ...)`` of the graph's dtype.
    """

    inputs: torch.Tensor
    raw: torch.Tensor


def held_out(restored: Any) -> Examples:
    """The test split of a checkpoint restored on the CPU, rebuilt from its config and seed as
    ``dltrain-eval`` rebuilds it.

    Raises:
        UserError: the data cannot be rebuilt (moved files), or holds no test examples.
    """
    from dltrain.build import load_data
    from dltrain.data.preprocessing import from_record
    from dltrain.training.rng import seed_everything

    cfg = restored.cfg
    cfg.trainer.fast_dev_run = False  # every example of the split
    seed_everything(cfg.seed)
    data = load_data(cfg, torch.device("cpu"), recorded=restored.data)
    inputs = _tensor(data.x_test)
    if not len(inputs):
        raise UserError(f"checkpoint {restored.path}: its run has no test examples (data.test_fraction=0) to verify "
                        "the export with: export a checkpoint of a run with a test split")
    prep = from_record(restored.data, cfg.data, restored.path)
    return Examples(inputs, RAW.get(prep.kind, _same)(prep, inputs))


def _tensor(x: Any) -> torch.Tensor:
    """A split's inputs as one tensor (a dataset read from disk stacked, example by example)."""
    if torch.is_tensor(x):
        return x
    items = [x[i][0] for i in range(len(x))]
    return torch.stack(items) if items else torch.empty(0)


def _same(prep: Preprocessing, x: torch.Tensor) -> torch.Tensor:
    """Inputs read as they are kept (token ids)."""
    return x


def _images(prep: Images, x: torch.Tensor) -> torch.Tensor:
    """The uint8 pixels the inputs were standardised from, as float32 0..255."""
    return torch.round(prep.pixels(x) * 255).clamp(0, 255)


def _ink(prep: InkCounts, x: torch.Tensor) -> torch.Tensor:
    """Whole ink counts as the pixels that give them: ``count * 255 / pixel_max``."""
    counts = torch.round(prep.pixels(x) * prep.pixel_max)
    return counts * 255 / prep.pixel_max


def _points(prep: Points, x: torch.Tensor) -> torch.Tensor:
    """Points back in their own units."""
    return torch.from_numpy((x.double().numpy() * prep.scaler.std + prep.scaler.mean).astype(np.float64))


def _table(prep: Table, x: torch.Tensor) -> torch.Tensor:
    """The feature columns in order: numbers in their units, categories as their index in the
    column's categories (-1 where the row's category is not one of them: all zeros)."""
    features = [str(c) for c in prep.features]
    values = x.double().numpy()
    raw = np.zeros((len(values), len(features)), dtype=np.float64)
    n = len(prep.numeric)
    for j, column in enumerate(prep.numeric):
        raw[:, features.index(str(column))] = values[:, j] * prep.std[j] + prep.mean[j]
    for column, columns, other in prep.one_hot_index():
        categories = [str(c) for c in prep.categorical[column]]
        # the first category of each one-hot column stands for it (infrequent ones share theirs)
        first = {position: categories.index(c) for c, position in reversed(list(columns.items()))}
        first.setdefault(other, -1)
        hot = values[:, n:]
        index = np.full(len(values), -1.0)
        for position, category in first.items():
            if position is not None:
                index[hot[:, position - n] > 0.5] = category
        raw[:, features.index(str(column))] = index
    return torch.from_numpy(raw)  # float64, as the graph reads them


#: Each kind's raw inputs from its model inputs; a kind not here is read as it is kept.
RAW: dict[str, Callable[[Any, torch.Tensor], torch.Tensor]] = {
    "images": _images, "ink_counts": _ink, "points": _points, "table": _table,
}

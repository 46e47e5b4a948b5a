"""The exported graph: raw inputs -> the fitted preprocessing -> the model -> probabilities or
values, as one ``nn.Module`` (:func:`export_graph`).

Each kind of preprocessing (:mod:`dltrain.data.preprocessing`) has an :class:`InputGraph`
that repeats its ``apply`` in tensor operations, its statistics held as float32 (float64 where
``apply`` computes in float64) buffers so that every format carries them. A kind registers its
input graph with :func:`input_kind`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from dltrain.data.preprocessing import Images, InkCounts, Points, Preprocessing, Table
from dltrain.errors import UserError

#: How images deeper than 8 bits become the graph's 0..255 (:func:`dltrain.data.pixel_depth.to_8bit`).
EIGHT_BIT = ("an image of more than 8 bits per pixel (16-bit PNG, TIFF, ...) scaled to 8 bits by its bit depth "
             "(round(v * 255 / 65535) for 16 bits; float pixels read as 0..1) before it is converted")
#: Builds the input graph of one kind of preprocessing from it and the checkpoint's data record.
InputBuilder = Callable[[Preprocessing, dict[str, Any]], "InputGraph"]
INPUTS: dict[str, InputBuilder] = {}


def input_kind(kind: str) -> Callable[[InputBuilder], InputBuilder]:
    """Register the input graph builder of a kind of preprocessing (``images``, ``table``, ...)."""
    def register(builder: InputBuilder) -> InputBuilder:
        INPUTS[kind] = builder
        return builder

    return register


class InputGraph(nn.Module):
    """Raw inputs ``(batch, *shape)`` -> the model's inputs, as the kind's ``apply`` computes them.

    Attributes:
        name: the graph's input name (``pixels``, ``features``, ``token_ids``, ``points``).
        dtype: the input's dtype.
        shape: one input's shape; a string names a dimension of any size (``length``).
        layout: one sentence a user can act on: what the input holds.
        outside: what the caller does before calling the graph (``nothing`` when nothing).
    """

    name: str
    dtype: torch.dtype = torch.float32
    shape: tuple[int | str, ...]
    layout: str
    outside: str = "nothing"

    def entries(self) -> dict[str, Any]:
        """The kind's own entries of ``model.json``'s ``input``."""
        return {}

    def files(self) -> dict[str, str]:
        """Files written beside the model file: name -> text (``vocab.txt`` for text)."""
        return {}

    def example(self, batch: int) -> torch.Tensor:
        """An input of ``batch`` examples to trace the graph with."""
        shape = [batch, *(4 if isinstance(n, str) else n for n in self.shape)]
        if not self.dtype.is_floating_point:
            return torch.zeros(shape, dtype=self.dtype)
        return (torch.rand(shape) * 255).to(self.dtype)


@input_kind("images")
class ImagesInput(InputGraph):
    """Pixels 0..255 ``(batch, C, H, W)`` -> ``(x / 255 - mean) / std``, grayscale repeated to the
    model's channels first (:meth:`Images.apply`)."""

    name = "pixels"

    def __init__(self, prep: Images, record: dict[str, Any]) -> None:
        super().__init__()
        own = 1 if prep.color == "grayscale" else 3
        self.repeat = (prep.channels or own) // own
        self.prep = prep
        self.shape = (own, *prep.image_size)
        self.register_buffer("mean", torch.tensor(prep.mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(prep.std, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.layout = (f"images decoded to {prep.color} at {prep.image_size[0]}x{prep.image_size[1]} pixels, "
                       f"channels first, values 0..255 as float32")
        self.outside = (f"decode each image file to {prep.color} and resize it to {prep.image_size[0]}x"
                        f"{prep.image_size[1]} (height x width) pixels as dltrain does (Pillow, bilinear), {EIGHT_BIT}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, channels, H, W)
        if self.repeat > 1:
            x = x.repeat(1, self.repeat, 1, 1)
        return (x / 255 - self.mean) / self.std

    def entries(self) -> dict[str, Any]:
        return {"image_size": list(self.prep.image_size), "color": self.prep.color, "value_range": [0, 255]}


@input_kind("ink_counts")
class InkCountsInput(InputGraph):
    """Pixels 0..255 ``(batch, 1, H, W)`` (bright = ink) -> ink counts ``round(x * pixel_max / 255)``
    standardised per pixel (:meth:`InkCounts.apply` of :meth:`InkCounts.counts`)."""

    name = "pixels"

    def __init__(self, prep: InkCounts, record: dict[str, Any]) -> None:
        super().__init__()
        self.prep = prep
        self.pixel_max = float(prep.pixel_max)
        self.shape = (1, *prep.image_size)
        self.register_buffer("mean", torch.from_numpy(prep.mean.astype(np.float32)).reshape(1, 1, *prep.image_size))
        self.register_buffer("std", torch.from_numpy(prep.std.astype(np.float32)).reshape(1, 1, *prep.image_size))
        self.layout = (f"grayscale images of {prep.image_size[0]}x{prep.image_size[1]} pixels, values 0..255 "
                       "as float32, bright = ink (the graph reads them as ink counts 0.."
                       f"{prep.pixel_max})")
        self.outside = (f"decode each image file to grayscale and resize it to {prep.image_size[0]}x"
                        f"{prep.image_size[1]} pixels as dltrain does (Pillow, bilinear), {EIGHT_BIT}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) -> (B, 1, H, W)
        counts = torch.round(x * self.pixel_max / 255)
        return (counts - self.mean) / self.std

    def entries(self) -> dict[str, Any]:
        return {"image_size": list(self.prep.image_size), "color": self.prep.color, "value_range": [0, 255]}


@input_kind("points")
class PointsInput(InputGraph):
    """Points ``(batch, D)`` in their own units, float64 -> ``(x - mean) / std`` (in float64, as
    :meth:`Points.apply`)."""

    name = "points"
    dtype = torch.float64  # float32 holds 7 digits: a coordinate near 1e9 would lose its units

    def __init__(self, prep: Points, record: dict[str, Any]) -> None:
        super().__init__()
        self.shape = (prep.width,)
        self.register_buffer("mean", torch.from_numpy(prep.scaler.mean.astype(np.float64)).reshape(1, -1))
        self.register_buffer("std", torch.from_numpy(prep.scaler.std.astype(np.float64)).reshape(1, -1))
        self.layout = f"{prep.width} numbers per row, the point's coordinates in their own units, as float64"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, D)
        return ((x.double() - self.mean) / self.std).float()

    def entries(self) -> dict[str, Any]:
        return {"columns": self.shape[0]}


@input_kind("table")
class TableInput(InputGraph):
    """Feature columns in training order ``(batch, F)`` -> the encoded row (:meth:`Table.apply`):
    numeric columns (NaN filled with their fill value under ``data.missing=mean``) standardised
    in float64, categorical columns (a category's index in its list, -1 for one not in it) one-hot
    encoded where training sends them. Float64: float32 holds 7 digits, and a column of
    timestamps (1.7e9 +- 300) would lose its seconds."""

    name = "features"
    dtype = torch.float64

    def __init__(self, prep: Table, record: dict[str, Any]) -> None:
        super().__init__()
        features = [str(c) for c in prep.features]
        self.prep = prep
        self.shape = (len(features),)
        self.width = len(prep.encoded_features)
        self.numeric = [features.index(str(c)) for c in prep.numeric]
        fills = self._fills()
        self.register_buffer("mean", torch.from_numpy(prep.mean.astype(np.float64)).reshape(1, -1))
        self.register_buffer("std", torch.from_numpy(prep.std.astype(np.float64)).reshape(1, -1))
        self.register_buffer("fill", torch.tensor([_number(fills.get(str(c))) for c in prep.numeric],
                                                  dtype=torch.float64).reshape(1, -1))
        self.categorical: list[tuple[int, int, float]] = []  # (input column, categories, fill index)
        for i, (column, columns, other) in enumerate(prep.one_hot_index()):
            categories = [str(c) for c in prep.categorical[column]]
            # position 0: where a category not in the list goes (-1: nowhere, all zeros)
            lookup = [-1 if other is None else other, *(columns.get(c, -1) for c in categories)]
            self.register_buffer(f"lookup_{i}", torch.tensor(lookup, dtype=torch.int64))
            fill = fills.get(str(column))
            self.categorical.append((features.index(str(column)), len(categories),
                                     float(categories.index(str(fill))) if str(fill) in categories else -1.0))
        gaps = ("; NaN for an empty cell, which the graph fills as training did (data.missing=mean)"
                if prep.missing == "mean" else "; no empty cells (the graph fills none)")
        self.outside = ("read each row's cells of input.columns, in that order: a numeric column's number as float64, "
                        "a categorical column's cell as its index in input.columns[j].categories (-1 for any other "
                        f"value){gaps}")
        self.layout = ("one row per example, the training feature columns in order (input.columns): a numeric "
                       "column's number, a categorical column's index in its categories (-1 for another), as "
                       f"float64{'; NaN for a missing value' if prep.missing == 'mean' else ''}")

    def _fills(self) -> dict[str, Any]:
        """What an empty cell of each column gets, as :meth:`Table.read` fills them (``data.missing=mean``)."""
        prep = self.prep
        if prep.missing != "mean":
            return {}
        means = {str(c): m for c, m in zip(prep.numeric, prep.mean.tolist(), strict=True)}
        return {**means, **{str(k): v for k, v in {**prep.fill_values_new_rows, **prep.fill_values}.items()}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B, encoded features)
        numbers = x[:, self.numeric].double()
        numbers = torch.where(torch.isnan(numbers), self.fill, numbers)
        parts = [((numbers - self.mean) / self.std).float()]
        hot = torch.zeros(x.shape[0], self.width, dtype=torch.float32)
        positions = torch.arange(self.width).reshape(1, -1)
        for i, (j, count, fill) in enumerate(self.categorical):
            index = torch.nan_to_num(x[:, j], nan=fill)
            index = torch.where((index >= 0) & (index < count), index, torch.full_like(index, -1))
            target = getattr(self, f"lookup_{i}")[(index + 1).long()]  # (B,): its one-hot column, -1 none
            hot = hot + (target.reshape(-1, 1) == positions).float()
        return torch.cat([parts[0], hot[:, len(self.numeric):]], dim=1)

    def entries(self) -> dict[str, Any]:
        fills = self._fills()
        columns = []
        for column in self.prep.features:
            if column in self.prep.categorical:
                columns.append({"name": str(column), "type": "categorical",
                                "categories": [str(c) for c in self.prep.categorical[column]]})
            else:
                fill = fills.get(str(column))
                columns.append({"name": str(column), "type": "numeric", "fill": None if fill is None else float(fill)})
        return {"columns": columns, "delimiter": self.prep.delimiter}


def _number(value: Any) -> float:
    """A fill value as a number; NaN for none (the gap stays a gap)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


class OutputHead(nn.Module):
    """The model's outputs ``(batch, width)`` -> what ``dltrain-predict`` reports
    (:func:`dltrain.inference.predict.output_rows`): probabilities per class or label, or values
    in the target's units.

    Attributes:
        name: ``probabilities`` or ``values``.
    """

    def __init__(self, task: str, width: int, target_scale: Any) -> None:
        super().__init__()
        self.task, self.binary_logit = task, task in ("binary", "multiclass") and width == 1
        self.name = {"regression": "values", "latents": "latents"}.get(task, "probabilities")  # latents: an encoder's
        mean, std = target_scale or (0.0, 1.0)
        self.data = {"task": task, "target_scale": (float(mean), float(std))}

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        from dltrain.inference.predict import model_result  # the one mapping dltrain-predict reports too

        return model_result(outputs.float(), self.data)


class ExportGraph(nn.Module):
    """Raw inputs -> probabilities or values: the input graph, the model, the output head."""

    def __init__(self, inputs: InputGraph, model: nn.Module, head: OutputHead, width: int) -> None:
        super().__init__()
        self.inputs, self.model, self.head = inputs, model, head
        self.width = 2 if head.binary_logit else width  # of the output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.model(self.inputs(x)))


@input_kind("text")
def text_input(prep: Preprocessing, record: dict[str, Any]) -> InputGraph:
    """Token ids (:class:`dltrain.export.text.TextInput`), imported when used: that module
    imports nothing of this one back."""
    from dltrain.export.text import TextInput

    return TextInput(prep, record)


def input_graph(prep: Preprocessing, record: dict[str, Any]) -> InputGraph:
    """The input graph of ``prep``.

    Raises:
        UserError: a kind of preprocessing no input graph is registered for.
    """
    if prep.kind not in INPUTS:
        raise UserError(f"inputs of kind {prep.kind} (data={record.get('dataset')}) cannot be exported yet: "
                        f"dltrain-export reads {', '.join(sorted(INPUTS))}")
    return INPUTS[prep.kind](prep, record)


def exportable_model(model: nn.Module) -> nn.Module:
    """``model`` with the layers exporters cannot trace replaced by equivalents that they can
    (recurrent layers over packed sequences, see :mod:`dltrain.export.recurrent`)."""
    from dltrain.export.recurrent import exportable

    return exportable(model)


def export_graph(restored: Any) -> ExportGraph:
    """The graph of a checkpoint restored with :func:`dltrain.inference.restore.load_model`
    (on the CPU), in eval mode.

    Raises:
        UserError: data whose inputs are not read from files (nothing a user has to feed it),
            or a kind of input no graph is registered for.
    """
    from dltrain.data.preprocessing import from_record

    record = dict(restored.data)
    prep = from_record(record, restored.cfg.data, restored.path)
    if prep is None:
        raise UserError(f"checkpoint {restored.path}: data={record.get('dataset')} has no recorded preprocessing of "
                        "inputs read from files, so there is nothing to export it with: export a model trained on "
                        "images, a CSV, text or points")
    width = int(restored.state["model_spec"]["output_width"])
    head = OutputHead(record["task"], width, record.get("target_scale"))
    return ExportGraph(input_graph(prep, record), exportable_model(restored.model), head, width).eval()

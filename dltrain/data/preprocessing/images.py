"""Images: uint8 pixels ``(N, C, H, W)`` scaled to [0, 1] and standardised per channel
(:class:`Images`), or, for ``data=digits``, read as ink counts standardised per pixel
(:class:`InkCounts`). New inputs are image files, decoded as training decodes them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dltrain.data.preprocessing import drift
from dltrain.data.preprocessing.base import Batch, Preprocessing, Warn
from dltrain.errors import ConfigError, UserError

if TYPE_CHECKING:  # torch is imported where tensors are made: an exported model reads its images without it
    import torch

    from dltrain.models.registry import InputNormalization


@dataclass(frozen=True)
class Images(Preprocessing):
    """Per-channel standardisation of images scaled to [0, 1]: ``(x / 255 - mean) / std``.

    Attributes:
        mean, std: per channel, of the training images scaled to [0, 1] (float64), or the
            ones the model declares (see :meth:`for_model`).
        image_size: ``(height, width)`` new images are resized to.
        color: ``rgb`` or ``grayscale``.
        native_sizes: the range of the training images' own sizes (``{min, max}`` of
            ``[height, width]``): new images outside it are flagged as resized.
        channels: the channels the model reads, when it declares its input (grayscale images
            are repeated to them); None: the images' own.
        source: where ``mean`` and ``std`` come from when the model declares its input (its
            weights' name, or ``fitted``); None when it declares none, and the record is as
            it has always been.
        brightness: the training images' mean value in [0, 1] when ``mean`` is the model's,
            not theirs: what new images are judged inverted against.
    """

    kind = "images"
    marks = ("normalization",)
    reads = "a folder of images (searched recursively; hidden and non-image files skipped) or one image"

    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: tuple[int, int]
    color: str
    native_sizes: dict[str, list[int]] | None = None
    channels: int | None = None
    source: str | None = None
    brightness: float | None = None

    @classmethod
    def fit(cls, sums: np.ndarray, squares: np.ndarray, count: int, image_size: Sequence[int], color: str,
            native_sizes: dict[str, list[int]] | None = None) -> Images:
        """Fit on the training images from their per-channel sums ``(C,)`` of uint8 values and
        of their squares, over ``count`` values per channel.

        The variance is taken in exact integer arithmetic, so a constant channel gets std 0
        (stored as 1) rather than a rounding error to divide by.
        """
        total, total_sq = [int(v) for v in sums], [int(v) for v in squares]
        mean = [s / (count * 255) for s in total]
        std = np.sqrt([(count * q - s * s) / (count * count * 255**2) for s, q in zip(total, total_sq, strict=True)])
        return cls(tuple(mean), tuple(float(s) if s > 1e-12 else 1.0 for s in std), tuple(image_size), color,
                   native_sizes)

    @classmethod
    def fit_images(cls, x: torch.Tensor, native_sizes: dict[str, list[int]] | None = None) -> Images:
        """Fit on uint8 images ``(N, C, H, W)`` held in memory, exactly, from each channel's
        histogram of the 256 byte values, so no float copy of the images is made (CIFAR-10's
        training split would take 1.1 GB in float64). Same statistics as per-channel
        ``mean`` and ``std`` of ``x / 255`` in float64."""
        import torch

        levels = np.arange(256, dtype=np.float64) / 255  # (256,)
        counts = np.stack([torch.bincount(x[:, c].reshape(-1), minlength=256).numpy()
                           for c in range(x.shape[1])]).astype(np.float64)  # (C, 256)
        n = counts.sum(axis=1, keepdims=True)  # (C, 1)
        mean = (counts * levels).sum(axis=1, keepdims=True) / n  # (C, 1)
        std = np.sqrt((counts * (levels - mean) ** 2).sum(axis=1, keepdims=True) / n)  # (C, 1)
        std = np.where(std > 1e-12, std, 1.0)
        return cls(tuple(mean.ravel().tolist()), tuple(std.ravel().tolist()), tuple(x.shape[2:]),
                   "grayscale" if x.shape[1] == 1 else "rgb", native_sizes)

    def for_model(self, model_inputs: InputNormalization | None) -> Images:
        """These fitted statistics made into the input the model declares: its ``mean`` and
        ``std`` in place of the fitted ones (kept when it gives none), grayscale images
        repeated to its ``channels``; ``self`` when it declares nothing.

        Raises:
            ConfigError: the model reads another number of channels than these colour images have.
            ValueError: the model declares statistics of another number of channels than it reads.
        """
        if model_inputs is None:
            return self
        own, given = len(self.mean), model_inputs.mean
        channels = model_inputs.channels or (len(given) if given is not None else own)
        if channels != own and own != 1:
            hint = ("use grayscale images (data=image_folder data.color=grayscale, mnist or fashion_mnist)"
                    if channels == 1 else f"use a model that reads {own}-channel images")
            raise ConfigError(f"the model reads {channels}-channel images and the data's have {own}: {hint}.")
        if given is None:  # a repeated channel has the one channel's statistics
            return replace(self, mean=self.mean * (channels // own), std=self.std * (channels // own),
                           channels=channels, source="fitted")
        if not len(given) == len(model_inputs.std) == channels:
            raise ValueError(f"the model declares a mean of {len(given)} and a std of {len(model_inputs.std)} "
                             f"channels for {channels}-channel inputs")
        # Named "fitted", dltrain-eval would fit them again: a model's own values are never called so.
        source = model_inputs.source if model_inputs.source not in ("", "fitted") else "model"
        return replace(self, mean=tuple(float(m) for m in given), std=tuple(float(s) for s in model_inputs.std),
                       channels=channels, source=source, brightness=round(float(np.mean(self.mean)), 6))

    @classmethod
    def declared(cls, record: Mapping[str, Any]) -> InputNormalization | None:
        """The input the model declared, as a data record holds it (``dltrain-eval`` rebuilds
        the data with it, without asking the model again: its weights may be gone), or None
        when it declared none. Fitted statistics are fitted again, exactly."""
        from dltrain.models.registry import InputNormalization

        source = record.get("normalization_source")
        if source is None:
            return None
        mean = std = None
        if source != "fitted":
            mean, std = tuple(record["normalization"]["mean"]), tuple(record["normalization"]["std"])
        size = record.get("image_size")
        return InputNormalization(mean=mean, std=std, size=tuple(size) if size else None,
                                  channels=record.get("channels"), source=source)

    @classmethod
    def from_record(cls, record: Mapping[str, Any], options: Mapping[str, Any], checkpoint: str | Path) -> Images:
        channels, *size = record["input_shape"]
        scaling = record["normalization"]
        if len(scaling["mean"]) != channels or record.get("channels", channels) != channels:
            raise UserError(f"checkpoint {checkpoint}: its data record's normalization has {len(scaling['mean'])} "
                            f"channels and its input shape {channels}: the file was changed after training; use the "
                            "checkpoint as dltrain wrote it")
        return cls(tuple(scaling["mean"]), tuple(scaling["std"]), tuple(record.get("image_size", size)),
                   record.get("color", "grayscale" if channels == 1 else "rgb"), record.get("native_sizes"),
                   record.get("channels"), record.get("normalization_source"), record.get("brightness"))

    def to_record(self) -> dict[str, Any]:
        given = self.source not in (None, "fitted")  # the model's values, kept as declared: eval applies them again
        mean, std = (list(self.mean), list(self.std)) if given else (np.round(self.mean, 6).tolist(),
                                                                     np.round(self.std, 6).tolist())
        record: dict[str, Any] = {"normalization": {"mean": mean, "std": std}}
        if self.native_sizes is not None:
            record["native_sizes"] = self.native_sizes
        if self.source is not None:  # the images' colour too: it no longer follows from the model's channels
            record.update(color=self.color, channels=self.channels, normalization_source=self.source)
        if self.brightness is not None:
            record["brightness"] = self.brightness
        return record

    @cached_property
    def _statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean`` and ``std`` as float32 ``(1, C, 1, 1)``, made once (files read from disk apply them per image)."""
        import torch

        return (torch.tensor(self.mean, dtype=torch.float32).reshape(1, -1, 1, 1),
                torch.tensor(self.std, dtype=torch.float32).reshape(1, -1, 1, 1))

    def apply(self, raw: torch.Tensor) -> torch.Tensor:
        """uint8 images ``(N, C, H, W)`` -> contiguous float32 ``(x / 255 - mean) / std``, one float32 copy;
        grayscale ones repeated to the model's ``channels`` first."""
        import torch

        mean, std = self._statistics
        if self.channels is not None and raw.shape[1] == 1:
            raw = raw.expand(-1, self.channels, -1, -1)  # a view: the float32 copy below is the only one
        x = raw.to(torch.float32, memory_format=torch.contiguous_format)
        return x.div_(255).sub_(mean.to(x.device)).div_(std.to(x.device))

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Model inputs ``(N, C, H, W)`` back to pixels in [0, 1] (unclipped), the inverse of
        :meth:`apply`: grayscale images repeated to the model's channels come back as one."""
        mean, std = self._statistics
        x = x.float() * std.to(x.device) + mean.to(x.device)
        return x[:, :1] if self.color == "grayscale" else x

    def read(self, path: Path, batch_size: int, warn: Warn) -> Iterator[Batch]:
        """A folder of images (or one image file), see :func:`read_images`."""
        yield from read_images(path, batch_size, self.image_size, self.color, self.apply, self.to_record(), warn)


@dataclass(frozen=True, eq=False)  # its statistics are arrays: objects compare by identity
class InkCounts(Preprocessing):
    """``data=digits``: pixels are ink counts ``0..pixel_max`` (bright = ink), standardised per
    pixel, row by row. An image file's pixel values map to the nearest count.

    Attributes:
        mean, std: per pixel, of the training split's counts (float64, ``(H * W,)``).
        pixel_max: the largest count.
        image_size: ``(height, width)``.
        color: ``grayscale``.
        native_sizes: as in :class:`Images`.
    """

    kind = "ink_counts"
    marks = ("pixel_scaling",)
    reads = "a folder of images (searched recursively; hidden and non-image files skipped) or one image"

    mean: np.ndarray
    std: np.ndarray
    pixel_max: float = 16
    image_size: tuple[int, int] = (8, 8)
    color: str = "grayscale"
    native_sizes: dict[str, list[int]] | None = None

    @classmethod
    def fit(cls, x: np.ndarray, pixel_max: float, image_size: Sequence[int]) -> InkCounts:
        """Each pixel's mean and standard deviation over the counts ``x`` ``(N, H * W)``,
        computed as scikit-learn's ``StandardScaler`` does (in float64), so the images come out
        bit for bit as they did through it; a constant pixel gets a scale of 1."""
        n = len(x)
        x64 = x.astype(np.float64)
        mean = x64.sum(axis=0) / n
        centred = x64 - mean
        var = ((centred ** 2).sum(axis=0) - centred.sum(axis=0) ** 2 / n) / n
        eps = np.finfo(np.float64).eps
        constant = var <= n * eps * var + (n * mean * eps) ** 2
        scale = np.sqrt(var)
        scale[constant] = 1.0
        size = [int(s) for s in image_size]
        return cls(mean, scale, pixel_max, tuple(size), "grayscale", {"min": size, "max": size})

    @classmethod
    def from_record(cls, record: Mapping[str, Any], options: Mapping[str, Any], checkpoint: str | Path) -> InkCounts:
        if "pixel_scaling" not in record:
            raise UserError(f"checkpoint {checkpoint} was written before dltrain recorded how data={record['dataset']} "
                            "scales its pixels: train it again to predict from images")
        scaling = record["pixel_scaling"]
        return cls(np.asarray(scaling["mean"], dtype=np.float64), np.asarray(scaling["std"], dtype=np.float64),
                   record["pixel_max"], tuple(record["image_size"]), record["color"], record.get("native_sizes"))

    def to_record(self) -> dict[str, Any]:
        record = {"image_size": list(self.image_size), "color": self.color, "pixel_max": self.pixel_max,
                  "pixel_scaling": {"mean": self.mean.round(6).tolist(), "std": self.std.round(6).tolist()}}
        return record | ({"native_sizes": self.native_sizes} if self.native_sizes is not None else {})

    def apply(self, raw: np.ndarray) -> torch.Tensor:
        """Ink counts ``(N, H * W)`` (or ``(N, 1, H, W)``) -> float32 ``(N, 1, H, W)``, in
        float32 with the statistics cast to it, as scikit-learn's StandardScaler does."""
        import torch

        counts = np.asarray(raw, dtype=np.float32).reshape(-1, self.mean.size)  # (N, H * W)
        scaled = (counts - self.mean.astype(np.float32)) / self.std.astype(np.float32)
        return torch.from_numpy(scaled).reshape(-1, 1, *self.image_size)

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Model inputs ``(N, 1, H, W)`` back to ink in [0, 1] (unclipped): counts over ``pixel_max``."""
        import torch

        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=x.device)  # (H * W,)
        std = torch.as_tensor(self.std, dtype=torch.float32, device=x.device)
        counts = x.float().reshape(len(x), -1) * std + mean  # (N, H * W)
        return (counts / self.pixel_max).reshape(len(x), 1, *self.image_size)

    def counts(self, images: torch.Tensor) -> np.ndarray:
        """uint8 images ``(N, 1, H, W)`` -> the nearest ink counts ``(N, H * W)``."""
        return np.rint(images.reshape(-1, self.mean.size).numpy().astype(np.float64) * self.pixel_max / 255)

    def read(self, path: Path, batch_size: int, warn: Warn) -> Iterator[Batch]:
        """A folder of images (or one image file), see :func:`read_images`."""
        def inputs(images: torch.Tensor) -> torch.Tensor:
            return self.apply(self.counts(images))

        yield from read_images(path, batch_size, self.image_size, self.color, inputs, self.to_record(), warn)


def read_images(path: Path, batch_size: int, size: Sequence[int], color: str,
                inputs: Callable[[torch.Tensor], torch.Tensor], record: dict[str, Any], warn: Warn) -> Iterator[Batch]:
    """Batches of the images under ``path`` decoded to uint8 ``(N, C, H, W)`` at ``size`` and
    turned into model inputs by ``inputs``, with their paths relative to ``path`` and their
    flags (see :mod:`dltrain.data.preprocessing.drift`, from the preprocessing's ``record``); files
    Pillow cannot decode are skipped with one warning at the end."""
    import torch

    for ids, images, flags in decoded_images(path, batch_size, size, color, record, warn):
        yield ids, inputs(torch.from_numpy(images)), flags


def decoded_images(path: Path, batch_size: int, size: Sequence[int], color: str, record: dict[str, Any],
                   warn: Warn) -> Iterator[tuple[list[str], np.ndarray, list[str]]]:
    """:func:`read_images` before the images become model inputs: batches of their paths, the
    images as uint8 ``(N, C, H, W)`` and their flags."""
    # Pillow is imported where images are read: an exported table or text model runs without it
    from dltrain.data.decode import DECODE_ERRORS, decode_pixels
    from dltrain.data.pixel_depth import describe_skipped, skip_reason

    brightness = drift.training_brightness(record)
    root, files = image_files(path)
    skipped, reasons = [], []
    for start in range(0, len(files), batch_size):
        ids, images, flags = [], [], []
        for file in files[start:start + batch_size]:
            try:
                image, _, _, native = decode_pixels(file, size, color)  # uint8 (C, H, W)
            except DECODE_ERRORS as err:
                skipped.append(file.relative_to(root).as_posix())
                reasons.append(skip_reason(err))
                continue
            ids.append(file.relative_to(root).as_posix())
            images.append(image)
            flags.append(drift.image_flags(native, image, record, brightness))
        if images:
            yield ids, np.stack(images), flags
    if skipped:
        warn(f"skipped {len(skipped)} unreadable image{'s' if len(skipped) > 1 else ''}: "
             f"{describe_skipped(skipped, reasons)}")


def image_files(path: Path) -> tuple[Path, list[Path]]:
    """The folder names are relative to, and the image files under ``path`` (or ``path`` itself,
    one image), sorted by relative path; hidden entries and non-image files are skipped.

    Raises:
        UserError: ``path`` is missing, not an image, or a folder without images.
    """
    from dltrain.data.decode import IMG_EXTENSIONS

    if path.is_file():
        if not path.name.lower().endswith(IMG_EXTENSIONS):
            raise UserError(f"input={path} is not an image ({', '.join(IMG_EXTENSIONS)}): give a folder of images "
                            "or one image")
        return path.parent, [path]
    if not path.is_dir():
        raise UserError(f"input={path} does not exist: give a folder of images or one image")
    files = []
    for parent, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files += [Path(parent, n) for n in names if not n.startswith(".") and n.lower().endswith(IMG_EXTENSIONS)]
    if not files:
        raise UserError(f"input={path} holds no image files ({', '.join(IMG_EXTENSIONS)}): give a folder of images")
    return path, sorted(files, key=lambda f: f.relative_to(path).as_posix())

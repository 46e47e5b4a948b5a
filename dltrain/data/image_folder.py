"""``data=image_folder``: images in one sub-folder per class, decoded with Pillow.

Layouts of ``data.path``:

* ``path/<class>/<images>``: split into train, validation and test, seeded and stratified,
  by ``data.val_fraction`` and ``data.test_fraction`` (shares of all images).
* ``path/train/<class>/...`` with optional ``path/test/<class>/...`` and ``path/val/``
  (or ``valid/``, ``validation/``): those splits as given. Without a test folder,
  ``data.test_fraction`` of the training images is carved out for the test; without a
  validation folder, ``data.val_fraction`` of the (remaining) training images is carved
  out for validation. The classes are the folders of all splits together; a class may be
  missing from a split.

Class names are the class folder names, sorted. Entries whose names start with ``.`` are
ignored, and so are files without an image extension (``Thumbs.db``, ``notes.txt``). Image
files are taken from the class folders and their sub-folders in sorted order, so the order,
and with the seed the split, is the same on every machine. Images Pillow cannot decode are
skipped, with one warning naming them, and listed in ``data.json`` (``skipped``).

Every image is decoded once, in ``data.num_workers`` processes: converted to RGB (or
grayscale; 16-bit, 32-bit and float pixels scaled to 8 bits by their bit depth, see
:mod:`dltrain.data.pixel_depth`; a folder whose deep images use under 1/16 of their range
is warned about), resized to
``data.image_size`` (height, width; null: the model's input size when it declares one, else
64x64), scaled to [0, 1] and standardised per channel with the mean and standard deviation of
the training split, or with those the model's weights expect (grayscale repeated to their
channels; see :meth:`Images.for_model`).
``data.in_memory=auto`` keeps the decoded images in memory when, as float32
(``N x C x H x W x 4`` bytes, ``N`` counting every image file found), they take at most a
quarter of the machine's RAM; otherwise they are read from disk again each epoch, by
``data.num_workers`` DataLoader workers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dltrain.data.decode import DECODE_ERRORS, IMG_EXTENSIONS, decode_image, decode_with_depth
from dltrain.data.pixel_depth import describe_skipped, low_range_warning, skip_reason
from dltrain.data.preprocessing.images import Images
from dltrain.data.registry import DATASETS
from dltrain.data.splits import DataSplits, carve_validation, split_indices
from dltrain.errors import ConfigError

if TYPE_CHECKING:
    from dltrain.models.registry import InputNormalization

log = logging.getLogger("dltrain")

VAL_FOLDERS = ("val", "valid", "validation")
#: ``(height, width)`` of the images when neither ``data.image_size`` nor the model says.
DEFAULT_IMAGE_SIZE = (64, 64)
SCAN_BATCH = 64
SCAN_BYTES = 2**28  # at most this much of uint8 images per decode batch: a few large images, not 64


class ImageFiles(Dataset):
    """Image files decoded on each access (``data.in_memory=false``); picklable for DataLoader workers.

    Item ``i`` is ``(x, y)``: ``x`` float32 ``(C, H, W)`` as ``preprocessing`` makes it of the
    decoded image, as for images held in memory, ``y`` the int64 label.

    Args:
        files: image paths.
        labels: class index of each file.
        preprocessing: the training split's, which also gives the size and colour to decode to.
    """

    def __init__(self, files: Sequence[str | Path], labels: Sequence[int] | np.ndarray,
                 preprocessing: Images) -> None:
        if len(files) != len(labels):
            raise ValueError(f"{len(files)} files but {len(labels)} labels")
        self.files = [str(f) for f in files]
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        prep = self.preprocessing
        image = decode_image(self.files[i], prep.image_size, prep.color)  # (C, H, W)
        return prep.apply(image[None])[0], self.labels[i]


class _ScanFiles(Dataset):
    """The decode pass over every file. Item ``i`` is ``(image, why, sums, squares, peak, top, native)``:
    the uint8 image ``(C, H, W)`` (empty unless ``keep``), why it did not decode (``""`` if it
    did; zeros then), the int64 per-channel sums of its values and of their squares ``(C,)``,
    its largest integer value and its depth's, and its own ``(height, width)`` (see
    :func:`decode_with_depth`)."""

    def __init__(self, files: Sequence[Path], image_size: Sequence[int], color: str, keep: bool) -> None:
        self.files = files
        self.image_size = image_size
        self.color = color
        self.keep = keep

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, torch.Tensor, torch.Tensor, int, int, torch.Tensor]:
        why = ""
        try:
            image, peak, top, native = decode_with_depth(self.files[i], self.image_size, self.color)
        except DECODE_ERRORS as err:
            channels = 1 if self.color == "grayscale" else 3
            image, peak, top, native = torch.zeros((channels, *self.image_size), dtype=torch.uint8), 0, 0, (0, 0)
            why = skip_reason(err)
        values = image.flatten(1).long()  # (C, H*W)
        kept = image if self.keep else torch.empty(0, dtype=torch.uint8)
        return kept, why, values.sum(1), values.square().sum(1), peak, top, torch.tensor(native)


def fits_in_memory(num_bytes: int, ram_bytes: int | None = None) -> bool:
    """The ``data.in_memory=auto`` rule: ``num_bytes`` is at most a quarter of ``ram_bytes``
    (default: this machine's physical RAM; False where that cannot be read)."""
    if ram_bytes is None:
        try:
            ram_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, OSError, ValueError):  # no sysconf (Windows)
            return False
    return num_bytes <= ram_bytes // 4


def parse_in_memory(value: bool | str) -> bool | str:
    """``data.in_memory`` as True, False or ``"auto"`` (strings in any case).

    Raises:
        ConfigError: naming ``data.in_memory`` for anything else.
    """
    if isinstance(value, bool):
        return value
    choice = {"auto": "auto", "true": True, "false": False}.get(str(value).strip().lower())
    if choice is None:
        raise ConfigError(f"data.in_memory={value!r} is not a choice: use auto, true or false.")
    return choice


def _subfolders(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` that are not hidden, sorted by name."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _class_files(folder: Path) -> tuple[list[Path], int]:
    """Image files under one class folder (sub-folders included, sorted by relative path) and
    the number of other files ignored."""
    images, ignored = [], 0
    for parent, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS):
                images.append(Path(parent, name))
            else:
                ignored += 1
    return sorted(images, key=lambda p: p.relative_to(folder).as_posix()), ignored


def _find_images(root: Path) -> tuple[str, list[str], dict[str, tuple[list[Path], list[int]]], int]:
    """The layout, class names, image files and labels of each split, and the count of ignored files.

    The splits are ``{"all": ...}`` for the ``folders`` layout, else ``train``, ``test`` and
    possibly ``val``, in that order.

    Raises:
        ConfigError: naming ``data.path`` when there are no class folders, fewer than 2
            classes, or no image files.
    """
    top = {p.name.lower(): p for p in _subfolders(root)}
    split_dirs = {"train": top.get("train"), "val": next((top[v] for v in VAL_FOLDERS if v in top), None),
                  "test": top.get("test")}
    if split_dirs["train"]:  # a test/ or val/ folder may be missing: carved from train/ then
        layout = "/".join(split for split, d in split_dirs.items() if d)
        class_dirs = {split: {p.name: p for p in _subfolders(d)} for split, d in split_dirs.items() if d}
    elif split_dirs["test"] or split_dirs["val"]:
        raise ConfigError(f"data.path={root} has split folders but no train/ folder: add train/ with "
                          "one sub-folder per class, or put the class folders directly in data.path.")
    else:
        layout = "folders"
        class_dirs = {"all": {p.name: p for p in top.values()}}
    classes = sorted(set().union(*class_dirs.values()))
    if not classes:
        raise ConfigError(f"data.path={root} has no class sub-folders: put the images in one sub-folder per class "
                          "(data.path/<class>/<image>), or in train/ and test/ folders of those.")
    if len(classes) < 2:
        raise ConfigError(f"data.path={root} has one class folder ({classes[0]}): classification needs at least 2, "
                          "one sub-folder of images per class.")
    splits, ignored = {}, 0
    for split in ("all", "train", "val", "test"):
        if split not in class_dirs:
            continue
        files, labels = [], []
        for label, name in enumerate(classes):
            if name in class_dirs[split]:
                found, skipped = _class_files(class_dirs[split][name])
                files += found
                labels += [label] * len(found)
                ignored += skipped
        splits[split] = (files, labels)
    if not any(files for files, _ in splits.values()):
        raise ConfigError(f"data.path={root} has no image files ({', '.join(IMG_EXTENSIONS)}) in its class "
                          "folders: put the images in data.path/<class>/.")
    return layout, classes, splits, ignored


class _Decoded(NamedTuple):
    """What the decode pass of :func:`_decode_all` found, one row per file."""

    images: torch.Tensor | None  # uint8 (N, C, H, W), None unless kept
    why: list[str]  # why each file did not decode; "" where it did
    sums: np.ndarray  # per-channel sums of the uint8 values (N, C)
    squares: np.ndarray  # and of their squares (N, C)
    peaks: np.ndarray  # largest integer value of each file deeper than 8 bits (N,), else 0
    tops: np.ndarray  # largest value of that file's bit depth (N,), else 0
    native: np.ndarray  # each file's own (height, width) (N, 2); 0 where it did not decode


def _decode_all(files: list[Path], image_size: Sequence[int], color: str, num_workers: int, keep: bool) -> _Decoded:
    """Decode every file once, in ``num_workers`` processes."""
    channels = 1 if color == "grayscale" else 3
    images = torch.empty((len(files), channels, *image_size), dtype=torch.uint8) if keep else None
    why, sums, squares, peaks, tops, native = [], [], [], [], [], []
    per_batch = max(1, min(SCAN_BATCH, SCAN_BYTES // (channels * int(np.prod(image_size)))))
    loader = DataLoader(_ScanFiles(files, image_size, color, keep), batch_size=per_batch, num_workers=num_workers)
    for i, (batch, batch_why, batch_sums, batch_squares, batch_peaks, batch_tops, batch_sizes) in enumerate(loader):
        if keep:
            images[i * per_batch:i * per_batch + len(batch)] = batch
        why += batch_why
        sums.append(batch_sums)
        squares.append(batch_squares)
        peaks.append(batch_peaks)
        tops.append(batch_tops)
        native.append(batch_sizes)
    return _Decoded(images, why, *(torch.cat(parts).numpy() for parts in (sums, squares, peaks, tops, native)))


def resolve_image_size(image_size: Sequence[int] | None,
                       model_inputs: InputNormalization | None) -> tuple[int, ...]:
    """``data.image_size`` when set; else the model's input size when it declares one (a
    pretrained backbone's), else :data:`DEFAULT_IMAGE_SIZE`."""
    if image_size is not None:
        return tuple(image_size)
    if model_inputs is not None and model_inputs.size is not None:
        return tuple(model_inputs.size)
    return DEFAULT_IMAGE_SIZE


@DATASETS.register("image_folder", inputs="images")
def build_image_folder(
    seed: int = 0,
    *,
    path: str,
    image_size: Sequence[int] | None = None,
    color: str = "rgb",
    in_memory: bool | str = "auto",
    num_workers: int = 2,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    model_inputs: InputNormalization | None = None,
) -> DataSplits:
    """Images in class folders (see the module docstring for the layouts), seeded splits.

    Args:
        seed: the run's seed; the same seed gives the same split.
        path: the folder of class folders, or of ``train/``, ``test/`` (and ``val/``) folders of those.
        image_size: ``(height, width)`` every image is resized to; None: the model's input size
            when it declares one (``model_inputs.size``), else :data:`DEFAULT_IMAGE_SIZE`.
        color: ``rgb`` (3 channels) or ``grayscale`` (1 channel).
        in_memory: ``auto``, True or False (or those as strings): hold the decoded images in memory,
            or read them from disk each epoch.
        num_workers: processes that decode images, in the decode pass and when reading from disk.
        val_fraction: share of all images for validation, or of the training images when the
            folder has its own test split.
        test_fraction: share of all images for the test split, or of the training images
            when the folder has train/ but no test/.
        model_inputs: the input the model declares: its statistics, channels and size (see
            :meth:`Images.for_model`); None: the training split's statistics.

    Returns:
        Splits of float32 images ``(N, C, H, W)`` (tensors, or :class:`ImageFiles` when read from
        disk) with int64 labels; task ``binary`` for 2 classes, else ``multiclass``.

    Raises:
        ConfigError: naming the key at fault (``data.path``, ``data.in_memory``, a fraction).
        ValueError: ``color`` is neither ``rgb`` nor ``grayscale`` (the schema's choices refuse it
            first on the config path).
    """
    root = Path(path).expanduser().absolute()
    if not root.is_dir():
        raise ConfigError(f"data.path={path} ({root}) is not a folder: give a folder with one sub-folder of "
                          "images per class.")
    memory = parse_in_memory(in_memory)
    if color not in ("rgb", "grayscale"):  # any other name would decode as RGB
        raise ValueError(f"color must be 'rgb' or 'grayscale', got {color!r}")
    image_size = resolve_image_size(image_size, model_inputs)
    layout, classes, splits, ignored = _find_images(root)
    if ignored:
        log.debug("data.path=%s: ignored %d non-image files (hidden or without an image extension)",
                  root, ignored)

    files = [f for split_files, _ in splits.values() for f in split_files]
    labels = np.array([y for _, split_labels in splits.values() for y in split_labels], dtype=np.int64)
    split_of = np.repeat(list(splits), [len(split_files) for split_files, _ in splits.values()])
    channels = 1 if color == "grayscale" else 3
    if model_inputs is not None and model_inputs.channels:
        channels = max(channels, model_inputs.channels)  # grayscale images repeated to the model's
    shape = (channels, *image_size)  # (C, H, W) of one input
    image_bytes = int(np.prod(shape)) * 4  # one float32 image
    # Decided before decoding, from every image file found, so the pass keeps the images only when they are used.
    keep = memory is True or (memory == "auto" and fits_in_memory(len(files) * image_bytes))
    log.info("data.path=%s: decoding %d images of %d classes with %d workers", root, len(files), len(classes),
             num_workers)
    decoded = _decode_all(files, image_size, color, num_workers, keep)
    images, sums, squares = decoded.images, decoded.sums, decoded.squares
    ok = np.array([not why for why in decoded.why], dtype=bool)

    skipped = [files[i].relative_to(root).as_posix() for i in np.flatnonzero(~ok)]
    reasons = [why for why in decoded.why if why]
    if not ok.any():
        raise ConfigError(f"data.path={root}: none of its {len(files)} image files could be decoded: "
                          f"{describe_skipped(skipped, reasons)}; give images Pillow can read, with pixel values "
                          "in their bit depth's range (floats in [0, 1]).")
    if skipped:
        log.warning("data.path=%s: skipped %d unreadable image%s of %d: %s", root, len(skipped),
                    "s" if len(skipped) > 1 else "", len(files), describe_skipped(skipped, reasons))
    warnings = [f"data.path={root}: {dark}" for dark in [low_range_warning(decoded.peaks, decoded.tops)] if dark]

    readable = {split: np.flatnonzero(ok & (split_of == split)) for split in splits}
    for split, idx in readable.items():
        if split != "all" and not len(idx):
            raise ConfigError(f"data.path={root}: {split}/ has no readable images: put images in its class folders.")
    if layout == "folders":
        idx = readable["all"]
        train, val, test = (idx[i] for i in split_indices(len(idx), val_fraction=val_fraction,
                                                           test_fraction=test_fraction, seed=seed, labels=labels[idx]))
    else:
        train = readable["train"]
        if "test" in readable:
            test = readable["test"]
        else:
            train_part, test_part = carve_validation(len(train), val_fraction=test_fraction, seed=seed,
                                                     labels=labels[train], key="data.test_fraction")
            train, test = train[train_part], train[test_part]
        if "val" in readable:
            val = readable["val"]
        else:
            train_part, val_part = carve_validation(len(train), val_fraction=val_fraction, seed=seed,
                                                    labels=labels[train])
            train, val = train[train_part], train[val_part]

    # The range of the training images' own sizes: dltrain-predict flags inputs outside it.
    native_sizes = {"min": decoded.native[train].min(0).tolist(), "max": decoded.native[train].max(0).tolist()}
    prep = Images.fit(sums[train].sum(0), squares[train].sum(0), len(train) * int(np.prod(image_size)), image_size,
                      color, native_sizes).for_model(model_inputs)
    num_readable = int(ok.sum())
    log.info("data.path=%s: %d images, %.1f MB as float32, %s", root, num_readable,
             num_readable * image_bytes / 2**20,
             "held in memory" if keep else f"read from disk each epoch by {num_workers} workers")
    if keep:
        x_train, x_val, x_test = (prep.apply(images[torch.from_numpy(idx)]) for idx in (train, val, test))
    else:
        x_train, x_val, x_test = (ImageFiles([files[i] for i in idx], labels[idx], prep) for idx in (train, val, test))
    record = prep.to_record()
    return DataSplits(
        x_train=x_train, y_train=torch.from_numpy(labels[train]),
        x_val=x_val, y_val=torch.from_numpy(labels[val]),
        x_test=x_test, y_test=torch.from_numpy(labels[test]),
        task="binary" if len(classes) == 2 else "multiclass", num_outputs=len(classes), class_names=classes,
        num_workers=0 if keep else num_workers, warnings=warnings, preprocessing=prep,
        info={"path": str(root), "layout": layout, "classes": classes, "image_size": list(image_size),
              # data.json's key order as it has always been: skipped between normalization and native_sizes.
              "color": color, "in_memory": keep, "normalization": record.pop("normalization"), "skipped": skipped,
              **record, "ignored_files": ignored,
              # name the examples in predictions.csv and the reports' worst_predictions.csv
              "test_rows": [files[i].relative_to(root).as_posix() for i in test],
              "val_rows": [files[i].relative_to(root).as_posix() for i in val]},
    )

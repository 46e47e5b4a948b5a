"""``data=mnist|fashion_mnist|cifar10|svhn``: torchvision's image datasets, held in memory.

* ``mnist``: 70,000 28x28 grey images of handwritten digits (60,000 train, 10,000 test).
* ``fashion_mnist``: the same shapes and sizes, of 10 kinds of clothing.
* ``cifar10``: 60,000 32x32 colour images of 10 classes (50,000 train, 10,000 test).
* ``svhn``: Street View House Numbers, 99,289 32x32 colour images of the digits 0-9 (73,257
  train, 26,032 test; the ``extra`` split is not read).

The files live under ``data.root`` where torchvision puts them:

* MNIST and Fashion-MNIST: ``ROOT/MNIST/raw`` and ``ROOT/FashionMNIST/raw``, holding
  ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
  ``t10k-labels-idx1-ubyte`` (or the same names with ``.gz``).
* CIFAR-10: ``ROOT/cifar-10-batches-py`` with ``data_batch_1`` .. ``data_batch_5``,
  ``test_batch`` and ``batches.meta`` (or ``ROOT/cifar-10-python.tar.gz``); torchvision checks
  these against the official MD5 sums.
* SVHN: ``ROOT/train_32x32.mat`` and ``ROOT/test_32x32.mat``, each fetched by itself and
  checked against its MD5 sum. SVHN's label 10 (the digit 0) is read as class ``0``.

With ``data.download=true`` missing files are fetched (and checked) by torchvision; with
``data.download=false`` archives found in those places are unpacked and nothing is fetched.
Validation is carved, stratified and seeded, from the official training set; the official
test set is the test split. Pixels are scaled to [0, 1] and standardised per channel with
statistics of the training split only, or with those a model's weights expect (a pretrained
backbone's, grayscale repeated to its 3 channels; see :meth:`Images.for_model`).
"""

from __future__ import annotations

import abc
import contextlib
import io
import logging
import os
import pickle
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dltrain.data.preprocessing.images import Images
from dltrain.data.registry import DATASETS
from dltrain.data.splits import DataSplits, carve_validation
from dltrain.errors import ConfigError

if TYPE_CHECKING:
    from dltrain.models.registry import InputNormalization

log = logging.getLogger("dltrain")

# What torchvision raises on a failed download (URLError is an OSError) or on files it cannot parse.
_LOAD_ERRORS = (OSError, RuntimeError, AssertionError, ValueError, TypeError, KeyError, EOFError,
                pickle.UnpicklingError)


@dataclass(frozen=True)
class _Source(abc.ABC):
    """One torchvision dataset: its names, where its files lie (each layout a subclass) and how
    its two sets are read.

    Attributes:
        key: the ``data=`` option.
        class_name: its class in ``torchvision.datasets``.
        title: its name in messages.
    """

    key: str
    class_name: str
    title: str

    @abc.abstractmethod
    def folder(self, cls: Any, root: str) -> str:
        """The folder torchvision reads the files from."""

    @abc.abstractmethod
    def holder(self, cls: Any) -> str:
        """That folder relative to ``root``, as a user would look for it."""

    @abc.abstractmethod
    def files(self, cls: Any) -> list[tuple[str, str | None]]:
        """``(file name, md5 or None)`` of every file torchvision reads, in the class's current attributes."""

    def archives(self, cls: Any, root: str) -> list[tuple[str, str]]:
        """``(archive, folder to unpack it into)`` for each archive the files come in (none by default)."""
        return []

    def alternative(self, cls: Any, root: str) -> str | None:
        """Where the archives may be put instead of the files, for messages; None when there are none."""
        return None

    def missing(self, cls: Any, root: str) -> list[str]:
        """Names of the files that are absent (or fail their MD5 check) in :meth:`folder`."""
        from torchvision.datasets.utils import check_integrity

        folder = self.folder(cls, root)
        return [name for name, md5 in self.files(cls) if not check_integrity(os.path.join(folder, name), md5)]

    def load(self, cls: Any, root: str, download: bool) -> tuple[Any, Any]:
        """The training and the test set, read by torchvision (which downloads what is missing
        when ``download``): ``cls(root, train=...)``."""
        return cls(root, train=True, download=download), cls(root, train=False)

    def arrays(self, dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """A set's uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)``."""
        return _images(dataset.data), torch.as_tensor(dataset.targets, dtype=torch.int64)

    def class_names(self, dataset: Any) -> list[str]:
        """The name of each class index."""
        return [str(name) for name in dataset.classes]


class _IdxFiles(_Source):
    """MNIST's layout: IDX files in ``ROOT/<ClassName>/raw``, each downloaded as its own ``.gz``."""

    def folder(self, cls: Any, root: str) -> str:
        return os.path.join(root, cls.__name__, "raw")

    def holder(self, cls: Any) -> str:
        return f"{cls.__name__}/raw"

    def files(self, cls: Any) -> list[tuple[str, str | None]]:
        # torchvision only checks that the unpacked files exist
        return [(os.path.splitext(name)[0], None) for name, _ in cls.resources]

    def archives(self, cls: Any, root: str) -> list[tuple[str, str]]:
        folder = self.folder(cls, root)
        return [(os.path.join(folder, name), folder) for name, _ in cls.resources]

    def alternative(self, cls: Any, root: str) -> str | None:
        return "their .gz"


class _PickledBatches(_Source):
    """CIFAR's layout: pickled batches in ``ROOT/<base_folder>``, downloaded as one ``.tar.gz`` into ``ROOT``."""

    def folder(self, cls: Any, root: str) -> str:
        return os.path.join(root, cls.base_folder)

    def holder(self, cls: Any) -> str:
        return cls.base_folder

    def files(self, cls: Any) -> list[tuple[str, str | None]]:
        return [(name, md5) for name, md5 in cls.train_list + cls.test_list] + [(cls.meta["filename"],
                                                                                 cls.meta["md5"])]

    def archives(self, cls: Any, root: str) -> list[tuple[str, str]]:
        return [(os.path.join(root, cls.filename), root)]

    def alternative(self, cls: Any, root: str) -> str | None:
        return f"{cls.filename} in {root}"


class _SplitFiles(_Source):
    """SVHN's layout and API: one MATLAB file per set right in ``ROOT``, each downloaded by itself,
    read with ``cls(root, split=...)``."""

    splits = ("train", "test")  # the training set and the test set; ``extra`` is not read

    def folder(self, cls: Any, root: str) -> str:
        return root

    def holder(self, cls: Any) -> str:
        return "them"  # the files lie in data.root itself

    def files(self, cls: Any) -> list[tuple[str, str | None]]:
        return [(cls.split_list[split][1], cls.split_list[split][2]) for split in self.splits]

    def load(self, cls: Any, root: str, download: bool) -> tuple[Any, Any]:
        train, test = (cls(root, split=split, download=download) for split in self.splits)
        return train, test

    def arrays(self, dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
        # torchvision has already put the images as (N, C, H, W) and read SVHN's label 10 as 0
        return torch.as_tensor(dataset.data), torch.as_tensor(dataset.labels, dtype=torch.int64)

    def class_names(self, dataset: Any) -> list[str]:
        return [str(digit) for digit in range(10)]  # class i is the digit i


_MNIST = _IdxFiles("mnist", "MNIST", "MNIST")
_FASHION_MNIST = _IdxFiles("fashion_mnist", "FashionMNIST", "Fashion-MNIST")
_CIFAR10 = _PickledBatches("cifar10", "CIFAR10", "CIFAR-10")
_SVHN = _SplitFiles("svhn", "SVHN", "SVHN")


def _builder(source: _Source, about: str, shape: str, train_size: str):
    """The registered builder of ``data=<source.key>``: :func:`_build` on ``source``."""

    def build(seed: int = 0, root: str = "data", download: bool = True, val_fraction: float = 0.1,
              model_inputs: InputNormalization | None = None) -> DataSplits:
        return _build(source, seed=seed, root=root, download=download, val_fraction=val_fraction,
                      model_inputs=model_inputs)

    build.__name__ = f"build_{source.key}"
    build.__doc__ = f"""{about}, read with ``torchvision.datasets.{source.class_name}``.

    Args:
        seed: seeds the validation split.
        root: folder that holds (or receives) the files.
        download: fetch the files when they are missing.
        val_fraction: share of the {train_size} training images held out for validation.
        model_inputs: the input the model declares (see :meth:`Images.for_model`); the images
            keep their size (the model resizes them).

    Returns:
        Splits of shape ``(N, {shape})`` (float32; the model's channels when it declares them)
        with int64 labels, task ``multiclass``.

    Raises:
        ConfigError: when the files are missing, cannot be downloaded or cannot be read.
    """
    return build


build_mnist = DATASETS.register("mnist", inputs="images")(
    _builder(_MNIST, "MNIST's handwritten digits 0-9", "1, 28, 28", "60,000"))
build_fashion_mnist = DATASETS.register("fashion_mnist", inputs="images")(
    _builder(_FASHION_MNIST, "Fashion-MNIST's 10 kinds of clothing", "1, 28, 28", "60,000"))
build_cifar10 = DATASETS.register("cifar10", inputs="images")(
    _builder(_CIFAR10, "CIFAR-10's colour images of 10 classes", "3, 32, 32", "50,000"))
build_svhn = DATASETS.register("svhn", inputs="images")(
    _builder(_SVHN, "SVHN's house-number digits 0-9", "3, 32, 32", "73,257"))


def _build(source: _Source, *, seed: int, root: str, download: bool, val_fraction: float,
           model_inputs: InputNormalization | None = None) -> DataSplits:
    """Load ``source`` with torchvision, carve validation from its training set and standardise."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, source.class_name)
    path = os.path.expanduser(root)  # as torchvision does
    folder = source.folder(cls, path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"data.root={root} is a file, not a folder: set data.root to a folder for the "
                          f"{source.title} files (it is created when missing).")
    missing = source.missing(cls, path)
    if missing and not download:
        _unpack_archives(source, cls, path)
        missing = source.missing(cls, path)
        if missing:
            raise ConfigError(_missing_message(source, cls, path, folder, missing))
    # A download that fails takes back what it wrote (partial files, the folders it made).
    with _undo_on_failure(_download_paths(source, cls, path) if missing else []):
        if missing:
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as err:
                raise ConfigError(f"data.root={root}: cannot create {folder} ({_reason(err)}): set data.root to a "
                                  "folder you can write to.") from err
            log.info("data=%s: downloading %s into %s", source.key, source.title, folder)
        try:
            with _quiet(f"data={source.key}"):
                train, test = source.load(cls, path, download)
        except _LOAD_ERRORS as err:
            names = _names(source.files(cls))
            if download and source.missing(cls, path):
                alternative = source.alternative(cls, path)
                raise ConfigError(f"data={source.key}: could not download {source.title} into {folder} "
                                  f"({_reason(err)}): put the files there by hand ({names}"
                                  f"{f', or {alternative}' if alternative else ''}) and set data.download=false, "
                                  "or check the network.") from err
            raise ConfigError(f"data={source.key}: could not read {source.title} from {folder} ({_reason(err)}): "
                              f"replace its files ({names}) with the original ones, or delete them and set "
                              "data.download=true.") from err

    return image_splits(*source.arrays(train), *source.arrays(test),
                        class_names=source.class_names(train), seed=seed, val_fraction=val_fraction,
                        info={"source": f"torchvision.datasets.{source.class_name}", "root": root},
                        model_inputs=model_inputs)


def image_splits(x_all: torch.Tensor, y_all: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *,
                 class_names: list[str], seed: int, val_fraction: float, info: dict[str, Any],
                 model_inputs: InputNormalization | None = None) -> DataSplits:
    """An image dataset of one image size held in memory: validation carved, stratified and
    seeded, from the training images; every split standardised per channel with the training
    split's statistics (:class:`~dltrain.data.preprocessing.Images`).

    Args:
        x_all, y_all: the training images, uint8 ``(N, C, H, W)``, and their int64 labels ``(N,)``.
        x_test, y_test: the test images and labels, alike.
        class_names: the name of each class index.
        seed: seeds the validation split.
        val_fraction: share of the training images held out for validation.
        info: what the data record says of the source; the preprocessing's record is added.
        model_inputs: the input the model declares, applied instead of the fitted statistics
            (see :meth:`Images.for_model`).
    """
    train_idx, val_idx = carve_validation(len(y_all), val_fraction=val_fraction, seed=seed, labels=y_all.numpy())
    train_idx, val_idx = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    x_train = x_all[train_idx]
    # Every image is of the dataset's one size; dltrain-predict flags inputs of another.
    prep = Images.fit_images(x_train, native_sizes={"min": list(x_all.shape[2:]), "max": list(x_all.shape[2:])})
    prep = prep.for_model(model_inputs)
    return DataSplits(
        x_train=prep.apply(x_train), y_train=y_all[train_idx],
        x_val=prep.apply(x_all[val_idx]), y_val=y_all[val_idx],
        x_test=prep.apply(x_test), y_test=y_test,
        task="multiclass", num_outputs=len(class_names), class_names=class_names,
        info=_record_info(info, prep.to_record()), preprocessing=prep,
    )


def _record_info(info: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """``info`` and the preprocessing's ``record``, in the key order ``data.json`` has always had."""
    return {**info, "normalization": record.pop("normalization"), "val_carved_from_train": True, **record}


def _download_paths(source: _Source, cls: Any, root: str) -> list[str]:
    """What a download of ``source`` into ``root`` may create: its files, its archives, and the
    outermost folder on the way to them that does not exist yet."""
    folder = source.folder(cls, root)
    paths = [os.path.join(folder, name) for name, _ in source.files(cls)]
    paths += [archive for archive, _ in source.archives(cls, root)]
    top, parent = None, os.path.abspath(folder)
    while not os.path.lexists(parent):
        top, parent = parent, os.path.dirname(parent)
    return paths + ([top] if top else [])


@contextlib.contextmanager
def _undo_on_failure(paths: list[str]) -> Iterator[None]:
    """When the block fails, remove those of ``paths`` (files, or folders with all they hold) that
    did not exist when it began; what existed before is never touched."""
    new = [path for path in paths if not os.path.lexists(path)]
    try:
        yield
    except BaseException:
        for path in new:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                with contextlib.suppress(OSError):  # the download's own error is the one to report
                    os.unlink(path)
        raise


def _unpack_archives(source: _Source, cls: Any, root: str) -> None:
    """Unpack the archives that lie where torchvision would have downloaded them.

    Raises:
        ConfigError: naming an archive that cannot be unpacked.
    """
    from torchvision.datasets.utils import extract_archive

    for archive, into in source.archives(cls, root):
        if not os.path.isfile(archive):
            continue
        try:
            extract_archive(archive, into)
        except (OSError, EOFError, tarfile.TarError) as err:
            raise ConfigError(f"data={source.key}: could not unpack {archive} ({_reason(err)}): unpack it into "
                              f"{into} by hand, or replace it with a complete copy.") from err


def _missing_message(source: _Source, cls: Any, root: str, folder: str, missing: list[str]) -> str:
    """One line saying which files are missing from ``folder`` and where they can come from."""
    files = source.files(cls)
    if len(missing) == len(files):
        what = f"no {source.title} files in {folder}"
    else:
        damaged = " or damaged" if any(md5 for _, md5 in files) else ""  # only MD5s tell a damaged file
        what = f"{source.title} files missing{damaged} in {folder} ({', '.join(missing)})"
    alternative = source.alternative(cls, root)
    return (f"data={source.key}: {what}: put {_names(files)} there{f' (or {alternative})' if alternative else ''}, "
            f"set data.root to a folder that holds {source.holder(cls)}, or set data.download=true on a machine "
            "with a network.")


def _names(files: list[tuple[str, str | None]]) -> str:
    """``a, b and c`` of the file names."""
    names = [name for name, _ in files]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _reason(err: BaseException) -> str:
    """A one-line summary of ``err``: its first and last lines (torchvision's are several)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:  # a bare assertion in torchvision's file parser
        return "unexpected file contents"
    return lines[0] if len(lines) == 1 else f"{lines[0].rstrip(':')}: {lines[-1]}"


@contextlib.contextmanager
def _quiet(what: str) -> Iterator[None]:
    """Send what torchvision prints (download progress, mirror retries) to the DEBUG log, not the console."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield
    finally:
        if text := buffer.getvalue().strip():
            log.debug("%s: torchvision printed:\n%s", what, text)


def _images(data: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 images as a ``(N, C, H, W)`` view: MNIST's ``(N, H, W)`` tensor or CIFAR's ``(N, H, W, C)`` array."""
    x = torch.as_tensor(data)  # shares the memory
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)

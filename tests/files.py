"""Small generated data files for the tests, in the layouts dltrain reads (no network).

* :func:`write_mnist`: IDX files in torchvision's MNIST layout (``ROOT/<folder>/raw``), plain or ``.gz``.
* :func:`write_cifar10`: CIFAR-10's python pickles (``ROOT/cifar-10-batches-py``) or their ``.tar.gz``,
  with :func:`cifar10_checksums` / :func:`patch_cifar10_checksums` to make torchvision accept them.
* :func:`write_svhn`: SVHN's MATLAB files (``ROOT/train_32x32.mat``, ``ROOT/test_32x32.mat``), with
  :func:`patch_svhn_checksums` to make torchvision accept them.
* :func:`write_image_folder`: an image folder of PNG/JPEG files, with a corrupt image and stray files.
* :func:`write_table_csv`: a table with numbers, a text column, string labels and optional gaps.
* :func:`write_text_csv`: a text-classification CSV.

The generators behind the writers (:func:`mnist_arrays`, :func:`cifar10_arrays`, :func:`svhn_arrays`,
:func:`people`, :func:`reviews`) are deterministic, so a test can rebuild what a file holds to compare with.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import shutil
import struct
import tarfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: The four MNIST files torchvision reads, in ``ROOT/<folder>/raw``.
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
#: The labels stored in :func:`write_cifar10`'s ``batches.meta``.
CIFAR10_NAMES = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
#: Classes of :func:`write_image_folder`, and the colour of each class's images (cycled past three).
IMAGE_CLASSES = ("cat", "dog", "fox")
IMAGE_COLORS = ((200, 40, 40), (40, 200, 40), (40, 40, 200))


def md5(path: Path) -> str:
    """The MD5 hex digest of a file (what torchvision checks files against)."""
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def write_csv(path: Path, table: pd.DataFrame | dict[str, Any]) -> Path:
    """``table`` (a frame or a dict of columns) as a CSV file with a header and no index column."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(table).to_csv(path, index=False)
    return path


# --- MNIST layout -----------------------------------------------------------------------------------------------


def gray_images(n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 uint8 images ``(n, 28, 28)`` with labels ``(n,)`` 0..9 cycling.

    Pixel (0, 0) holds the image's number ``offset + i`` (so a split's images can be traced
    back to the file); the rest is ``20 * label`` plus a small pattern.
    """
    labels = np.arange(n, dtype=np.uint8) % 10  # (n,)
    pattern = (np.arange(28 * 28) % 5).reshape(28, 28)  # (28, 28)
    images = (20 * labels[:, None, None] + pattern).astype(np.uint8)  # (n, 28, 28)
    images[:, 0, 0] = offset + np.arange(n)
    return images, labels


def mnist_arrays(n_train: int = 60, n_test: int = 20) -> dict[str, np.ndarray]:
    """What :func:`write_mnist` writes: ``x_train``, ``y_train``, ``x_test``, ``y_test``.

    Training images are numbered 0..n_train-1 in pixel (0, 0), test images n_train onwards
    (see :func:`gray_images`), so ``n_train + n_test`` must stay under 256.
    """
    x_train, y_train = gray_images(n_train, offset=0)
    x_test, y_test = gray_images(n_test, offset=n_train)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 60, n_test: int = 20, gz: bool = False) -> Path:
    """The four IDX files of :func:`mnist_arrays` in ``ROOT/<folder>/raw``, where torchvision's
    ``MNIST`` (``folder="MNIST"``) or ``FashionMNIST`` (``folder="FashionMNIST"``) reads them.

    Args:
        root: the ``data.root`` folder (created when missing).
        folder: the dataset's class name.
        n_train: images in the training files.
        n_test: images in the test files.
        gz: write only the gzipped files (``<name>.gz``, as downloaded) instead of the plain ones.

    Returns:
        The ``raw`` folder holding the files.
    """
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = mnist_arrays(n_train, n_test)
    for prefix, split in (("train", "train"), ("t10k", "test")):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        contents = {f"{prefix}-images-idx3-ubyte": struct.pack(">IIII", 2051, len(x), 28, 28) + x.tobytes(),
                    f"{prefix}-labels-idx1-ubyte": struct.pack(">II", 2049, len(y)) + y.tobytes()}
        for name, data in contents.items():
            if gz:
                (raw / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
            else:
                (raw / name).write_bytes(data)
    return raw


# --- CIFAR-10 layout --------------------------------------------------------------------------------------------


def cifar10_arrays(n_per_batch: int = 10, n_test: int = 10) -> dict[str, Any]:
    """What :func:`write_cifar10` writes: ``batches`` (file name -> ``(images (n, 3, 32, 32) uint8,
    labels)``, the five training batches then ``test_batch``) and ``x_train``, the training images
    concatenated ``(5 * n_per_batch, 3, 32, 32)``.

    Labels cycle 0..9; channel ``c`` lies around ``60 * c``, so each channel has its own statistics.
    """
    rng = np.random.default_rng(0)
    batches = {}
    for name, n in [(b, n_per_batch) for b in CIFAR10_BATCHES] + [("test_batch", n_test)]:
        images = (rng.integers(0, 60, (n, 3, 32, 32)) + 60 * np.arange(3)[None, :, None, None]).astype(np.uint8)
        batches[name] = (images, [int(v) for v in np.arange(n) % 10])
    return {"batches": batches, "x_train": np.concatenate([batches[b][0] for b in CIFAR10_BATCHES])}


def write_cifar10(root: Path, n_per_batch: int = 10, n_test: int = 10, archive: bool = False) -> Path:
    """CIFAR-10 python pickles (the keys torchvision reads) of :func:`cifar10_arrays`, in
    ``ROOT/cifar-10-batches-py``: ``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``.

    torchvision checks these files against the official MD5 sums: patch its class with
    :func:`patch_cifar10_checksums` before reading them.

    Args:
        root: the ``data.root`` folder (created when missing).
        n_per_batch: images in each of the five training batches.
        n_test: images in the test batch.
        archive: write only ``ROOT/cifar-10-python.tar.gz`` (the downloaded archive, which holds
            the folder) instead of the folder.

    Returns:
        The folder, or the archive with ``archive=True``.
    """
    folder = Path(root) / CIFAR10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in cifar10_arrays(n_per_batch, n_test)["batches"].items():
        with open(folder / name, "wb") as f:
            pickle.dump({"data": images.reshape(len(images), 3072), "labels": labels}, f)  # R, G, B planes
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_NAMES, "num_cases_per_batch": n_per_batch}, f)
    if not archive:
        return folder
    tgz = Path(root) / CIFAR10_ARCHIVE
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(folder, arcname=CIFAR10_FOLDER)
    shutil.rmtree(folder)
    return tgz


def cifar10_checksums(root: Path) -> dict[str, Any]:
    """torchvision ``CIFAR10`` class attributes that make it accept :func:`write_cifar10`'s files under ``root``.

    Returns:
        ``train_list``, ``test_list`` and ``meta`` with the MD5 sums of the files in
        ``ROOT/cifar-10-batches-py`` (or of the members of ``ROOT/cifar-10-python.tar.gz`` when
        only the archive is there), and ``tgz_md5`` when the archive is there.
    """
    from torchvision.datasets import CIFAR10

    root = Path(root)
    folder, tgz = root / CIFAR10_FOLDER, root / CIFAR10_ARCHIVE
    if folder.is_dir():
        sums = {path.name: md5(path) for path in folder.iterdir()}
    else:
        with tarfile.open(tgz, "r:gz") as tar:
            sums = {Path(m.name).name: hashlib.md5(tar.extractfile(m).read()).hexdigest()
                    for m in tar.getmembers() if m.isfile()}
    out: dict[str, Any] = {"train_list": [[name, sums[name]] for name in CIFAR10_BATCHES],
                           "test_list": [["test_batch", sums["test_batch"]]],
                           "meta": {**CIFAR10.meta, "md5": sums[CIFAR10.meta["filename"]]}}
    if tgz.is_file():
        out["tgz_md5"] = md5(tgz)
    return out


def patch_cifar10_checksums(monkeypatch: Any, root: Path) -> None:
    """Point torchvision ``CIFAR10``'s MD5 sums at the files under ``root`` (see :func:`cifar10_checksums`)."""
    from torchvision.datasets import CIFAR10

    for name, value in cifar10_checksums(root).items():
        monkeypatch.setattr(CIFAR10, name, value)


def allow_file_urls(monkeypatch: Any) -> None:
    """Give ``file://`` responses the ``length`` torchvision's downloader reads (HTTP responses have
    it), so downloads can be served from local files."""
    urlopen = urllib.request.urlopen

    def with_length(*args, **kwargs):
        response = urlopen(*args, **kwargs)
        if not hasattr(response, "length"):
            response.length = int(response.headers["Content-length"])
        return response

    monkeypatch.setattr(urllib.request, "urlopen", with_length)


# --- SVHN layout ------------------------------------------------------------------------------------------------


def svhn_arrays(n_train: int = 50, n_test: int = 10) -> dict[str, np.ndarray]:
    """What :func:`write_svhn` writes: ``x_train`` and ``x_test``, uint8 images ``(n, 3, 32, 32)``,
    and ``y_train`` and ``y_test``, SVHN's labels ``(n,)`` 1..10 cycling (10 is the digit 0).

    Channel ``c`` lies around ``60 * c``, so each channel has its own statistics; pixel (0, 0) of
    channel 0 holds the image's number (training images 0.., test images ``n_train``..), so
    ``n_train + n_test`` must stay under 256.
    """
    rng = np.random.default_rng(0)
    out = {}
    for split, n, offset in (("train", n_train, 0), ("test", n_test, n_train)):
        images = (rng.integers(0, 60, (n, 3, 32, 32)) + 60 * np.arange(3)[None, :, None, None]).astype(np.uint8)
        images[:, 0, 0, 0] = offset + np.arange(n)
        out[f"x_{split}"], out[f"y_{split}"] = images, (np.arange(n) % 10 + 1).astype(np.uint8)
    return out


def write_svhn(root: Path, n_train: int = 50, n_test: int = 10) -> Path:
    """SVHN's two MATLAB files of :func:`svhn_arrays` in ``ROOT``, where torchvision's ``SVHN``
    reads them: ``X`` of shape ``(32, 32, 3, n)`` and ``y`` of shape ``(n, 1)``, as the official files.

    torchvision checks these files against the official MD5 sums: patch its class with
    :func:`patch_svhn_checksums` before reading them.

    Returns:
        ``root`` (created when missing).
    """
    from scipy.io import savemat

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    arrays = svhn_arrays(n_train, n_test)
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        savemat(root / f"{split}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": y[:, None]})  # (H, W, C, n)
    return root


def patch_svhn_checksums(monkeypatch: Any, root: Path) -> None:
    """Point torchvision ``SVHN``'s MD5 sums at :func:`write_svhn`'s files under ``root`` (its URLs stay)."""
    from torchvision.datasets import SVHN

    split_list = {split: [url, name, md5(Path(root) / name) if split != "extra" else checksum]
                  for split, (url, name, checksum) in SVHN.split_list.items()}
    monkeypatch.setattr(SVHN, "split_list", split_list)


# --- Image folders ----------------------------------------------------------------------------------------------


def write_image_folder(path: Path, classes: Sequence[str] = IMAGE_CLASSES, per_class: int = 8, seed: int = 0,
                       corrupt: bool = True, strays: bool = True) -> Path:
    """``PATH/<class>/img<i>.<ext>``: ``per_class`` images of each class, of varying sizes (8-23 high,
    10-29 wide), coloured by class (:data:`IMAGE_COLORS`) with noise.

    Image 1 is greyscale and image 2 RGBA (other modes are converted); image 3 is ``.JPG``, other
    odd ones ``.jpg`` and even ones ``.png`` (extensions in any case).

    Args:
        path: the folder (created; its class folders must not exist yet).
        classes: one sub-folder each.
        per_class: images per class.
        seed: seeds the sizes and pixels.
        corrupt: also write ``bad.png``, random bytes that are not an image, into the second class's
            folder (the first's when there is one class).
        strays: also write three files that are not images (``Thumbs.db`` in the first class's folder,
            ``.DS_Store`` and ``notes.txt`` in the last's) and a hidden folder ``PATH/.cache``.

    Returns:
        ``path``.
    """
    from PIL import Image

    path = Path(path)
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (path / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = rng.integers(8, 24), rng.integers(10, 30)
            color = np.array(IMAGE_COLORS[k % len(IMAGE_COLORS)])
            pixels = np.clip(color + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)  # (h, w, 3)
            img = Image.fromarray(pixels)
            if i == 1:
                img = img.convert("L")
            elif i == 2:
                img = img.convert("RGBA")
            suffix = ".JPG" if i == 3 else (".jpg" if i % 2 else ".png")
            img.save(path / name / f"img{i}{suffix}")
    if corrupt:
        (path / classes[min(1, len(classes) - 1)] / "bad.png").write_bytes(np.random.default_rng(1).bytes(300))
    if strays:
        (path / classes[0] / "Thumbs.db").write_bytes(b"\x00" * 64)
        (path / classes[-1] / ".DS_Store").write_bytes(b"\x00" * 64)
        (path / classes[-1] / "notes.txt").write_text("not an image")
        (path / ".cache").mkdir()
    return path


# --- Tables and texts -------------------------------------------------------------------------------------------


def people(rows: int = 200, seed: int = 0, target: str = "label") -> pd.DataFrame:
    """A table of ``rows`` rows: ``id`` (0..rows-1, to find each row after a split), numbers ``age``
    and ``score``, a text column ``city`` (paris, rome, oslo) and string labels in ``target``:
    ``ok`` where ``score > 0``, else ``fraud``."""
    rng = np.random.default_rng(seed)
    score = rng.normal(0, 1, rows)
    return pd.DataFrame({
        "id": np.arange(rows),
        "age": rng.normal(40, 10, rows).round(1),
        "score": score,
        "city": rng.choice(["paris", "rome", "oslo"], rows),
        target: np.where(score > 0, "ok", "fraud"),
    })


def write_table_csv(path: Path, rows: int = 200, seed: int = 0, target: str = "label", missing: int = 0) -> Path:
    """The :func:`people` table as a CSV file.

    Args:
        path: the file to write.
        rows, seed, target: see :func:`people`.
        missing: leave this many ``age`` cells and this many ``city`` cells empty (every
            ``rows // missing``-th row, the ``city`` ones one row later), e.g. for ``data.missing=drop|mean``.

    Returns:
        ``path``.
    """
    table = people(rows, seed, target).astype({"city": object})
    if missing:
        gaps = np.arange(missing) * (rows // missing)
        table.loc[gaps, "age"] = np.nan
        table.loc[(gaps + 1) % rows, "city"] = np.nan
    return write_csv(path, table)


def reviews(rows: int = 100) -> dict[str, Any]:
    """Columns ``text`` and ``label`` (``neg``, ``pos`` alternating): each text starts with its label's
    word (Bad, Good), then ``movie,`` and a token of its own twice (``own<i>``) and one once (``once<i>``)."""
    labels = np.where(np.arange(rows) % 2, "pos", "neg")
    texts = [f"{'Good' if label == 'pos' else 'Bad'} movie, own{i} own{i} once{i}!" for i, label in enumerate(labels)]
    return {"text": texts, "label": labels}


def write_text_csv(path: Path, rows: int = 100) -> Path:
    """The :func:`reviews` texts as a CSV file (``data=text_csv``'s default columns); returns ``path``."""
    return write_csv(path, reviews(rows))


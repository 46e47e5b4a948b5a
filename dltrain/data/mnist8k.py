"""``mnist-8k``: the MNIST data of the README's MNIST results, made from an official MNIST download.

It is MNIST's official test set (``t10k``, 10,000 images) split in two: the first 8,000 images are the
training images, the last 2,000 the test images. The four files are stored uncompressed in torchvision's
layout, ``mnist-8k/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, so that::

    dltrain-samples --mnist-8k --from data      # after an MNIST download into data/
    dltrain experiment=mnist_cnn data.root=samples/mnist-8k data.download=false

trains on the same images as the README's table. Only a test set of exactly 10,000 images is accepted:
another count is not the official one, and its split would not be the README's.
"""

from __future__ import annotations

import gzip
import shlex
import struct
import zlib
from pathlib import Path
from dltrain.errors import UserError

NAME = "mnist-8k"
OFFICIAL_TEST_IMAGES = 10_000
"""Images in MNIST's official test set, the only input accepted."""
TRAIN_IMAGES = 8_000
"""The first this many become the training images; the rest the test images."""
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049  # IDX headers: unsigned bytes in 3 dimensions, and in 1
SIDE = 28
CLASSES = 10


def _read(raw: Path, name: str) -> tuple[Path, bytes]:
    """The file ``raw/name``, or its ``.gz`` as downloaded, and its (unpacked) bytes.

    Raises:
        UserError: neither exists, or the ``.gz`` cannot be unpacked.
    """
    plain, packed = raw / name, raw / f"{name}.gz"
    try:
        if plain.is_file():
            return plain, plain.read_bytes()
        if packed.is_file():
            return packed, gzip.decompress(packed.read_bytes())
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"cannot read {packed if packed.is_file() and not plain.is_file() else plain} "
                        f"({getattr(err, 'strerror', None) or err}): download MNIST again") from err
    raise UserError(f"no {name} (or {name}.gz) in {raw}: give --from the data.root of an MNIST download "
                    "(dltrain data=mnist trainer.fast_dev_run=true downloads it into data/)")


def _header(path: Path, data: bytes, magic: int, dims: int) -> tuple[int, ...]:
    """The sizes in an IDX header, checked against the file's magic number and length.

    Raises:
        UserError: naming ``path``, when it is not an IDX file of unsigned bytes with ``dims`` dimensions.
    """
    size = 4 + 4 * dims
    if len(data) < size or struct.unpack(">I", data[:4])[0] != magic:
        raise UserError(f"{path} is not an MNIST {'image' if dims == 3 else 'label'} file (its header is not "
                        "IDX's): download MNIST again")
    shape = struct.unpack(f">{dims}I", data[4:size])
    count = 1
    for n in shape:
        count *= n
    if len(data) != size + count:
        raise UserError(f"{path} holds {len(data) - size:,} bytes after its header, not the {count:,} its header "
                        f"gives ({' x '.join(map(str, shape))}): download MNIST again")
    return shape


def make(source: Path) -> tuple[dict[str, bytes], str]:
    """``mnist-8k`` from ``source/MNIST/raw``'s official test files (plain or ``.gz``).

    Args:
        source: the ``data.root`` of an MNIST download.

    Returns:
        The four files under ``MNIST/raw`` (path -> bytes) and a one-line summary of them.

    Raises:
        UserError: a file that is missing, is not IDX, or does not hold MNIST's official test set.
    """
    raw = source / "MNIST" / "raw"
    images_path, images = _read(raw, "t10k-images-idx3-ubyte")
    labels_path, labels = _read(raw, "t10k-labels-idx1-ubyte")
    n, rows, cols = _header(images_path, images, IMAGE_MAGIC, 3)
    (n_labels,) = _header(labels_path, labels, LABEL_MAGIC, 1)
    if (rows, cols) != (SIDE, SIDE):
        raise UserError(f"{images_path} holds {rows}x{cols} images, not MNIST's {SIDE}x{SIDE}: give --from the "
                        "data.root of an MNIST download")
    if n != OFFICIAL_TEST_IMAGES:
        raise UserError(f"{images_path} holds {n:,} images, not the {OFFICIAL_TEST_IMAGES:,} of MNIST's official "
                        "test set: give --from the data.root of an official MNIST download")
    if n_labels != n:
        raise UserError(f"{labels_path} holds {n_labels:,} labels for {n:,} images: download MNIST again")
    if max(labels[8:]) >= CLASSES:
        raise UserError(f"{labels_path} holds a label above {CLASSES - 1}: download MNIST again")
    pixels = images[16:]
    files = {}
    for prefix, part in (("train", slice(0, TRAIN_IMAGES)), ("t10k", slice(TRAIN_IMAGES, n))):
        count = len(range(n)[part])
        files[f"MNIST/raw/{prefix}-images-idx3-ubyte"] = (
            struct.pack(">IIII", IMAGE_MAGIC, count, SIDE, SIDE)
            + pixels[part.start * SIDE * SIDE:part.stop * SIDE * SIDE])
        files[f"MNIST/raw/{prefix}-labels-idx1-ubyte"] = struct.pack(">II", LABEL_MAGIC, count) + labels[8:][part]
    return files, (f"{TRAIN_IMAGES:,} training and {n - TRAIN_IMAGES:,} test images of MNIST's official test set "
                   f"({images_path.parent})")


def usage(out: Path) -> str:
    """The command that trains on ``out/mnist-8k``, for the line printed after writing it."""
    root = shlex.quote(str(out / NAME))
    return f"dltrain experiment=mnist_cnn data.root={root} data.download=false"

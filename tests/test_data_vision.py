"""torchvision's MNIST, Fashion-MNIST and CIFAR-10 builders, on tiny generated files (no network).

Downloads go through torchvision's real code with its URLs pointed at ``file://`` copies.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets

import dltrain.data.vision as vision
from dltrain.data.registry import DATASETS
from dltrain.errors import ConfigError
from tests.files import (
    CIFAR10_NAMES,
    MNIST_FILES,
    allow_file_urls,
    cifar10_arrays,
    md5,
    mnist_arrays,
    patch_cifar10_checksums,
    write_cifar10,
    write_mnist,
)


def _source_index(data, x: torch.Tensor) -> np.ndarray:
    """The number each standardised image ``(N, 1, H, W)`` carries in pixel (0, 0) (see ``tests.files.gray_images``)."""
    stats = data.info["normalization"]
    raw = (x[:, 0, 0, 0].double() * stats["std"][0] + stats["mean"][0]) * 255
    return raw.round().long().numpy()


def _serve_cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``cifar-10-python.tar.gz`` at a ``file://`` URL, and CIFAR10's URL and MD5s pointed at it."""
    allow_file_urls(monkeypatch)
    server = tmp_path / "server"
    tgz = write_cifar10(server, archive=True)
    patch_cifar10_checksums(monkeypatch, server)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", tgz.as_uri())


def test_builders_are_registered():
    assert {"mnist", "fashion_mnist", "cifar10"} <= set(DATASETS.names())
    assert DATASETS.get("mnist") is vision.build_mnist


def test_mnist_from_idx_files(tmp_path):
    write_mnist(tmp_path)
    arrays = mnist_arrays()
    data = vision.build_mnist(seed=0, root=str(tmp_path), download=False, val_fraction=0.2)

    assert data.sizes == {"num_train": 48, "num_val": 12, "num_test": 20}
    assert data.x_train.shape == (48, 1, 28, 28) and data.x_train.dtype == torch.float32
    assert data.input_shape == (1, 28, 28) and data.y_train.dtype == torch.int64
    assert data.task == "multiclass" and data.num_outputs == 10
    assert data.class_names == list(torchvision.datasets.MNIST.classes)
    assert data.info["source"] == "torchvision.datasets.MNIST" and data.info["val_carved_from_train"]
    per_class = torch.bincount(data.y_val, minlength=10)
    assert per_class.min() >= 1 and per_class.max() <= 2  # stratified: every class, none crowding validation

    # The test split is the official test file, in order.
    assert _source_index(data, data.x_test).tolist() == list(range(60, 80))
    assert data.y_test.tolist() == arrays["y_test"].tolist()
    stats = data.info["normalization"]
    expected = (arrays["x_test"] / 255 - stats["mean"][0]) / stats["std"][0]
    assert np.allclose(data.x_test[:, 0].numpy(), expected, atol=1e-5)

    # Train and validation partition the official training set.
    train_idx, val_idx = _source_index(data, data.x_train), _source_index(data, data.x_val)
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(60))
    assert data.y_train.tolist() == arrays["y_train"][train_idx].tolist()

    # Standardised with the training split's statistics only.
    assert abs(float(data.x_train.mean())) < 1e-5 and abs(float(data.x_train.std(unbiased=False)) - 1) < 1e-5
    raw_train = arrays["x_train"][train_idx] / 255
    assert stats["mean"][0] == pytest.approx(raw_train.mean(), abs=1e-6)
    assert stats["std"][0] == pytest.approx(raw_train.std(), abs=1e-6)


def test_mnist_split_is_seeded(tmp_path):
    write_mnist(tmp_path)
    a, b, c = (vision.build_mnist(seed=s, root=str(tmp_path), download=False, val_fraction=0.2) for s in (0, 0, 1))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_val, b.x_val) and torch.equal(a.y_val, b.y_val)
    assert set(_source_index(a, a.x_val)) != set(_source_index(c, c.x_val))


def test_fashion_mnist_reads_its_own_folder(tmp_path):
    write_mnist(tmp_path, folder="FashionMNIST", n_train=40, n_test=10)
    data = vision.build_fashion_mnist(seed=0, root=str(tmp_path), download=False, val_fraction=0.25)
    assert data.sizes == {"num_train": 30, "num_val": 10, "num_test": 10}
    assert data.x_test.shape == (10, 1, 28, 28)
    assert data.class_names[0] == "T-shirt/top" and data.class_names == list(torchvision.datasets.FashionMNIST.classes)
    assert data.info["source"] == "torchvision.datasets.FashionMNIST"


def test_mnist_unpacks_gz_files_without_downloading(tmp_path):
    raw = write_mnist(tmp_path, gz=True)
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{name}.gz" for name in MNIST_FILES)
    assert vision.build_mnist(root=str(tmp_path), download=False).sizes["num_test"] == 20


def test_cifar10_download_from_a_local_archive(tmp_path, monkeypatch, capsys, caplog):
    _serve_cifar(tmp_path, monkeypatch)
    caplog.set_level(logging.DEBUG, logger="dltrain")
    root = tmp_path / "root"
    data = vision.build_cifar10(seed=0, root=str(root), download=True, val_fraction=0.2)

    assert (root / "cifar-10-python.tar.gz").is_file() and (root / "cifar-10-batches-py" / "test_batch").is_file()
    assert data.sizes == {"num_train": 40, "num_val": 10, "num_test": 10}
    assert data.x_train.shape == (40, 3, 32, 32) and data.x_train.dtype == torch.float32
    assert data.x_train.is_contiguous()
    assert data.class_names == CIFAR10_NAMES and data.num_outputs == 10
    assert torch.allclose(data.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(data.x_train.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5)
    stats = data.info["normalization"]
    assert stats["mean"][0] < stats["mean"][1] < stats["mean"][2]  # one statistic per channel
    # Undo the scaling: the training split holds 40 of the 50 training images, and its statistics are theirs.
    mean, std = (np.array(stats[k])[None, :, None, None] for k in ("mean", "std"))
    raw = np.rint((data.x_train.double().numpy() * std + mean) * 255).astype(np.uint8)  # (40, 3, 32, 32)
    assert {image.tobytes() for image in raw} <= {image.tobytes() for image in cifar10_arrays()["x_train"]}
    assert np.allclose(stats["mean"], (raw / 255).mean(axis=(0, 2, 3)), atol=1e-6)
    assert np.allclose(stats["std"], (raw / 255).std(axis=(0, 2, 3)), atol=1e-6)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert "torchvision printed" in caplog.text  # its download progress went to the log instead

    # Already there: no second download is needed.
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", (tmp_path / "gone.tar.gz").as_uri())
    assert vision.build_cifar10(seed=0, root=str(root), download=True).sizes["num_test"] == 10


def test_cifar10_checksum_mismatch_is_a_download_error(tmp_path, monkeypatch):
    _serve_cifar(tmp_path, monkeypatch)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "tgz_md5", "0" * 32)
    with pytest.raises(ConfigError, match="could not download CIFAR-10") as info:
        vision.build_cifar10(root=str(tmp_path / "root"), download=True)
    assert "\n" not in str(info.value) and "data.download=false" in str(info.value)


def test_cifar10_unpacks_its_archive_without_downloading(tmp_path, monkeypatch):
    write_cifar10(tmp_path, archive=True)
    patch_cifar10_checksums(monkeypatch, tmp_path)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", (tmp_path / "gone.tar.gz").as_uri())
    data = vision.build_cifar10(seed=0, root=str(tmp_path), download=False)
    assert (tmp_path / "cifar-10-batches-py" / "test_batch").is_file()
    assert data.sizes == {"num_train": 45, "num_val": 5, "num_test": 10}


def test_mnist_download_from_local_mirror(tmp_path, monkeypatch):
    server = write_mnist(tmp_path / "server", gz=True)
    resources = [(f"{name}.gz", md5(server / f"{name}.gz")) for name in MNIST_FILES]
    allow_file_urls(monkeypatch)
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [server.as_uri() + "/"])
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources)

    root = tmp_path / "fresh"
    data = vision.build_mnist(seed=0, root=str(root), download=True)
    assert all((root / "MNIST" / "raw" / name).is_file() for name in MNIST_FILES)
    assert data.sizes == {"num_train": 54, "num_val": 6, "num_test": 20}
    assert data.y_test.tolist() == mnist_arrays()["y_test"].tolist()


def test_mnist_download_failure_is_one_quiet_line(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ConfigError) as info:
        vision.build_mnist(root=str(tmp_path), download=True)
    message = str(info.value)
    assert "could not download" in message and "no network" in message and "\n" not in message
    assert str(tmp_path / "MNIST" / "raw") in message and "data.download=false" in message
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize("builder, folder, names", [
    (vision.build_mnist, "MNIST/raw", MNIST_FILES),
    (vision.build_fashion_mnist, "FashionMNIST/raw", MNIST_FILES),
    (vision.build_cifar10, "cifar-10-batches-py", ("data_batch_1", "data_batch_5", "test_batch", "batches.meta",
                                                   "cifar-10-python.tar.gz")),
])
def test_missing_files_without_download(tmp_path, builder, folder, names):
    with pytest.raises(ConfigError) as info:
        builder(root=str(tmp_path), download=False)
    message = str(info.value)
    assert str(tmp_path / folder) in message and "data.download=true" in message and "\n" not in message
    assert all(name in message for name in names)


def test_root_that_is_a_file(tmp_path):
    root = tmp_path / "data"
    root.write_text("not a folder")
    with pytest.raises(ConfigError, match="data.root="):
        vision.build_mnist(root=str(root), download=True)


def test_unreadable_mnist_file(tmp_path):
    raw = write_mnist(tmp_path)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00")
    with pytest.raises(ConfigError, match="could not read MNIST") as info:
        vision.build_mnist(root=str(tmp_path), download=False)
    assert "\n" not in str(info.value)

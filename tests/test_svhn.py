"""``data=svhn``: torchvision's SVHN read from small generated MATLAB files (no network), trained
through the config, downloaded through torchvision's own download call, and predicted from
image files through the checkpoint's fitted preprocessing."""

from __future__ import annotations

import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.datasets.svhn
from PIL import Image
from torchvision.datasets.utils import check_integrity

import dltrain.data.vision as vision
from dltrain import compose, train
from dltrain.data.registry import DATASETS
from dltrain.errors import ConfigError
from dltrain.inference.predict import predict_file
from dltrain.inference.restore import load_model
from tests.files import patch_svhn_checksums, svhn_arrays, write_svhn

#: Where torchvision fetches each file from.
URLS = {"train_32x32.mat": "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
        "test_32x32.mat": "http://ufldl.stanford.edu/housenumbers/test_32x32.mat"}


@pytest.fixture
def svhn_root(tmp_path, monkeypatch) -> Path:
    """A folder with the two generated files (50 training and 10 test images), accepted by torchvision."""
    root = write_svhn(tmp_path / "svhn")
    patch_svhn_checksums(monkeypatch, root)
    return root


def raw_images(data, x: torch.Tensor) -> np.ndarray:
    """Standardised images ``(N, 3, 32, 32)`` back as uint8 pixels, with the statistics the data recorded."""
    stats = data.info["normalization"]
    mean, std = (np.array(stats[key])[None, :, None, None] for key in ("mean", "std"))
    return np.rint((x.double().numpy() * std + mean) * 255).astype(np.uint8)


def test_registered_as_an_image_dataset():
    assert DATASETS.get("svhn") is vision.build_svhn
    assert DATASETS.facts("svhn").inputs == "images"


def test_splits_labels_and_standardisation(svhn_root):
    arrays = svhn_arrays()
    data = vision.build_svhn(seed=0, root=str(svhn_root), download=False, val_fraction=0.2)

    assert data.sizes == {"num_train": 40, "num_val": 10, "num_test": 10}
    assert data.x_train.shape == (40, 3, 32, 32) and data.x_train.dtype == torch.float32
    assert data.task == "multiclass" and data.num_outputs == 10
    assert data.class_names == [str(digit) for digit in range(10)]
    assert data.info["source"] == "torchvision.datasets.SVHN" and data.info["val_carved_from_train"]

    # SVHN's label 10 is the digit 0; the test split is the test file, in order.
    assert data.y_test.tolist() == (arrays["y_test"] % 10).tolist()
    assert np.array_equal(raw_images(data, data.x_test), arrays["x_test"])

    # Train and validation partition the training file, labels kept with their images.
    train_idx = raw_images(data, data.x_train)[:, 0, 0, 0].astype(int)
    val_idx = raw_images(data, data.x_val)[:, 0, 0, 0].astype(int)
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(50))
    assert data.y_train.tolist() == (arrays["y_train"][train_idx] % 10).tolist()
    assert data.y_val.tolist() == (arrays["y_train"][val_idx] % 10).tolist()
    # Stratified: one of each digit's five training images is held out.
    assert torch.bincount(data.y_val, minlength=10).tolist() == [1] * 10

    # Standardised per channel with the training split's statistics only (not the held-out images').
    stats = data.info["normalization"]
    kept = arrays["x_train"][train_idx] / 255  # (40, 3, 32, 32)
    assert np.allclose(stats["mean"], kept.mean(axis=(0, 2, 3)), atol=1e-6)
    assert np.allclose(stats["std"], kept.std(axis=(0, 2, 3)), atol=1e-6)
    assert not np.allclose(stats["mean"], (arrays["x_train"] / 255).mean(axis=(0, 2, 3)), atol=1e-6)
    assert stats["mean"][0] < stats["mean"][1] < stats["mean"][2]
    assert torch.allclose(data.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(data.x_train.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5)


def test_split_is_seeded(svhn_root):
    a, b, c = (vision.build_svhn(seed=s, root=str(svhn_root), download=False, val_fraction=0.2) for s in (0, 0, 1))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_val, b.x_val) and torch.equal(a.y_val, b.y_val)
    held_out = [set(raw_images(d, d.x_val)[:, 0, 0, 0].tolist()) for d in (a, c)]
    assert held_out[0] != held_out[1]


def test_trains_from_the_config(svhn_root, tmp_path):
    cfg = compose(["data=svhn", f"data.root={svhn_root}", "trainer.fast_dev_run=true", "device=cpu"])
    summary = train(cfg, run_dir=tmp_path / "run")
    assert summary["status"] == "completed" and summary["task"] == "multiclass"
    data = pd.read_json(tmp_path / "run" / "data.json", typ="series")
    assert data["dataset"] == "svhn" and data["class_names"] == [str(digit) for digit in range(10)]


def test_missing_files_without_download(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("data.download=false fetched a file")

    monkeypatch.setattr(torchvision.datasets.svhn, "download_url", no_network)
    with pytest.raises(ConfigError) as info:
        vision.build_svhn(root=str(tmp_path), download=False)
    message = str(info.value)
    assert message.startswith(f"data=svhn: no SVHN files in {tmp_path}: put train_32x32.mat and test_32x32.mat")
    assert "data.download=true" in message and "\n" not in message


def test_one_missing_file_is_named(svhn_root, monkeypatch):
    (svhn_root / "test_32x32.mat").unlink()
    with pytest.raises(ConfigError) as info:
        vision.build_svhn(root=str(svhn_root), download=False)
    message = str(info.value)
    assert f"SVHN files missing or damaged in {svhn_root} (test_32x32.mat)" in message and "\n" not in message


def fake_download(server: Path, calls: list[tuple[str, str, str]], fail: str | None = None):
    """A stand-in for torchvision's ``download_url(url, root, filename, md5)`` that copies the file
    from ``server`` (and checks it as torchvision does), or fails for the file named ``fail``."""

    def download_url(url: str, root: str, filename: str, md5: str) -> None:
        calls.append((url, root, filename))
        target = Path(root) / filename
        if check_integrity(str(target), md5):
            return
        if filename == fail:
            target.write_bytes(b"partial")
            raise urllib.error.URLError("no network")
        Path(root).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(server / filename, target)
        if not check_integrity(str(target), md5):
            raise RuntimeError("File not found or corrupted.")

    return download_url


def test_download_fetches_each_file_from_its_url(svhn_root, tmp_path, monkeypatch):
    calls: list[tuple[str, str, str]] = []
    monkeypatch.setattr(torchvision.datasets.svhn, "download_url", fake_download(svhn_root, calls))
    root = tmp_path / "fresh" / "data"
    data = vision.build_svhn(seed=0, root=str(root), download=True, val_fraction=0.2)

    assert calls == [(URLS[name], str(root), name) for name in ("train_32x32.mat", "test_32x32.mat")]
    assert all((root / name).read_bytes() == (svhn_root / name).read_bytes() for name in URLS)
    assert data.sizes == {"num_train": 40, "num_val": 10, "num_test": 10}


def test_failed_download_is_one_line_and_takes_back_its_files(svhn_root, tmp_path, monkeypatch):
    calls: list[tuple[str, str, str]] = []
    monkeypatch.setattr(torchvision.datasets.svhn, "download_url",
                        fake_download(svhn_root, calls, fail="test_32x32.mat"))
    root = tmp_path / "fresh" / "data"
    with pytest.raises(ConfigError) as info:
        vision.build_svhn(root=str(root), download=True)
    message = str(info.value)
    assert message.startswith(f"data=svhn: could not download SVHN into {root} (") and "no network" in message
    assert "train_32x32.mat and test_32x32.mat" in message and "data.download=false" in message
    assert "\n" not in message
    assert len(calls) == 2 and not (tmp_path / "fresh").exists()  # the folders it made, with the first file


def test_predict_reads_svhn_images(svhn_root, tmp_path):
    run = tmp_path / "run"
    cfg = compose(["data=svhn", f"data.root={svhn_root}", "data.download=false", "model=cnn",
                   "trainer.fast_dev_run=true", "device=cpu"])
    train(cfg, run_dir=run)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(svhn_arrays()["x_test"][:2]):
        Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{i}.png")  # (H, W, C)

    predict_file(run / "checkpoints" / "best.pt", folder, tmp_path / "out.csv", device="cpu")
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False, dtype={"prediction": str})

    # What the model gives for the same two images as the run's test tensors.
    restored = load_model(run / "checkpoints" / "best.pt")
    x_test = vision.build_svhn(seed=cfg.seed, root=str(svhn_root), download=False).x_test[:2]
    with torch.no_grad():
        probs = torch.softmax(restored.model(x_test), dim=1)
    assert out["input"].tolist() == ["0.png", "1.png"]
    assert out["prediction"].tolist() == [str(int(k)) for k in probs.argmax(dim=1)]
    assert out["confidence"].to_numpy() == pytest.approx(probs.max(dim=1).values.numpy(), abs=1e-5)
    assert out["input_warnings"].tolist() == ["", ""]

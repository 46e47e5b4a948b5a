"""data=image_folder: layouts, skipped files, seeded splits, train-only scaling, memory or disk."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dltrain.data.batches import LoaderBatches, TensorBatches
from dltrain.data.image_folder import ImageFiles, build_image_folder, fits_in_memory, parse_in_memory
from dltrain.errors import ConfigError
from tests.files import IMAGE_CLASSES as CLASSES
from tests.files import write_image_folder

SIZE = [12, 16]  # height, width; every generated image is under twice this, so JPEG draft mode does not apply


def write_images(path: Path, classes: tuple[str, ...], per_class: int, seed: int) -> Path:
    """A clean image folder: no corrupt image, no stray files."""
    return write_image_folder(path, classes, per_class, seed=seed, corrupt=False, strays=False)


@pytest.fixture(scope="module")
def flowers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 8 images, a corrupt ``dog/bad.png`` and files that are not images."""
    return write_image_folder(tmp_path_factory.mktemp("flowers"), CLASSES, 8, seed=0)


def build(path: Path, **options: object):
    options = {"image_size": SIZE, "num_workers": 0, "in_memory": True, **options}
    return build_image_folder(path=str(path), **options)


def raw_images(files: list[str], color: str = "RGB") -> np.ndarray:
    """The files decoded independently of the module: (N, C, H, W) floats in [0, 1]."""
    arrays = [np.asarray(Image.open(f).convert(color).resize((SIZE[1], SIZE[0]), Image.BILINEAR)) for f in files]
    return np.stack(arrays).reshape(len(files), SIZE[0], SIZE[1], -1).transpose(0, 3, 1, 2) / 255.0


def test_folders_layout_loads_readable_images_and_names_the_bad_one(flowers, caplog):
    with caplog.at_level(logging.DEBUG, logger="dltrain"):
        data = build(flowers)
    assert sum(data.sizes.values()) == 24
    assert data.x_train.shape[1:] == (3, 12, 16) and data.input_shape == (3, 12, 16)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.class_names == list(CLASSES) and data.num_outputs == 3 and data.task == "multiclass"
    assert data.in_memory and data.num_workers == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 1 unreadable image of 25: dog/bad.png" in warnings[0]
    assert "Thumbs.db" not in caplog.text and ".DS_Store" not in caplog.text
    info = data.info
    assert info["skipped"] == ["dog/bad.png"] and info["ignored_files"] == 3
    assert info["layout"] == "folders" and info["classes"] == list(CLASSES) and info["in_memory"] is True
    assert info["path"] == str(flowers) and info["image_size"] == SIZE and info["color"] == "rgb"


def test_split_is_seeded_and_stratified(flowers):
    a, b, c = build(flowers, seed=0), build(flowers, seed=0), build(flowers, seed=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_test, c.x_test)
    assert a.sizes == {"num_train": 16, "num_val": 4, "num_test": 4}
    for split in (a.y_train, a.y_val, a.y_test):
        counts = torch.bincount(split, minlength=3)
        assert counts.min() >= 1 and counts.max() - counts.min() <= 1


def test_scaling_is_fitted_on_the_training_split_only(flowers):
    data = build(flowers)
    assert data.x_train.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert torch.allclose(data.x_train.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    assert data.x_val.mean(dim=(0, 2, 3)).abs().max() > 1e-3  # validation statistics were not used
    train_files = build(flowers, in_memory=False).x_train.files
    raw = raw_images(train_files)
    norm = data.info["normalization"]
    np.testing.assert_allclose(norm["mean"], raw.mean(axis=(0, 2, 3)), atol=2e-6)
    np.testing.assert_allclose(norm["std"], raw.std(axis=(0, 2, 3)), atol=2e-6)


def test_images_read_from_disk_equal_the_images_in_memory(flowers):
    memory = build(flowers, seed=3)
    disk = build(flowers, seed=3, in_memory=False, num_workers=2)  # the decode pass in 2 processes too
    assert not disk.in_memory and disk.num_workers == 2 and disk.info["in_memory"] is False
    assert disk.input_shape == memory.input_shape and disk.info["normalization"] == memory.info["normalization"]
    for split in ("train", "val", "test"):
        x_disk, x_mem = getattr(disk, f"x_{split}"), getattr(memory, f"x_{split}")
        y_disk, y_mem = getattr(disk, f"y_{split}"), getattr(memory, f"y_{split}")
        assert isinstance(x_disk, ImageFiles) and len(x_disk) == len(x_mem)
        assert torch.equal(y_disk, y_mem)
        assert torch.equal(torch.stack([x_disk[i][0] for i in range(len(x_disk))]), x_mem)
        assert [int(x_disk[i][1]) for i in range(len(x_disk))] == y_mem.tolist()
    expected = list(TensorBatches(memory.x_train, memory.y_train, batch_size=5))
    for workers in (0, 2):
        batches = list(LoaderBatches(disk.x_train, 5, device=torch.device("cpu"), num_workers=workers))
        for (x, y), (x_ref, y_ref) in zip(batches, expected, strict=True):
            assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


@pytest.mark.parametrize("value, held", [("true", True), ("FALSE", False), (True, True), ("auto", True)])
def test_in_memory_choices(flowers, value, held):
    data = build(flowers, in_memory=value)
    assert data.in_memory is held and data.info["in_memory"] is held


def test_in_memory_refuses_other_values_and_auto_rule():
    assert parse_in_memory(" Auto ") == "auto" and parse_in_memory(False) is False
    with pytest.raises(ConfigError, match=r"data\.in_memory='maybe'"):
        parse_in_memory("maybe")
    assert fits_in_memory(1000, ram_bytes=4000) and not fits_in_memory(1001, ram_bytes=4000)
    assert fits_in_memory(1)  # this machine's RAM


def test_train_test_layout_uses_the_given_splits(tmp_path):
    write_images(tmp_path / "train", CLASSES, 6, seed=2)
    write_images(tmp_path / "test", CLASSES[:2], 3, seed=3)  # a class missing from a split is fine
    data = build(tmp_path, in_memory=False)
    assert data.info["layout"] == "train/test" and data.class_names == list(CLASSES)
    test_files = sorted(str(p) for p in (tmp_path / "test").rglob("*.*"))
    assert data.x_test.files == test_files and data.y_test.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.sizes == {"num_train": 15, "num_val": 3, "num_test": 6}  # validation: 15% of the 18 training images
    train_folder = str(tmp_path / "train")
    assert all(f.startswith(train_folder) for f in data.x_train.files + data.x_val.files)
    assert torch.bincount(data.y_val, minlength=3).tolist() == [1, 1, 1]  # stratified

    write_images(tmp_path / "valid", CLASSES, 2, seed=4)
    data = build(tmp_path)
    assert data.sizes == {"num_train": 18, "num_val": 6, "num_test": 6}
    assert torch.equal(data.x_test, build(tmp_path, seed=5).x_test)  # the given test split whatever the seed


def test_grayscale_has_one_channel(flowers):
    data = build(flowers, color="grayscale")
    assert data.input_shape == (1, 12, 16)
    disk = build(flowers, color="grayscale", in_memory=False)
    assert disk.x_train[0][0].shape == (1, 12, 16)
    assert torch.equal(torch.stack([disk.x_val[i][0] for i in range(len(disk.x_val))]), data.x_val)


def test_two_classes_are_binary(tmp_path):
    write_images(tmp_path, CLASSES[:2], 10, seed=6)
    data = build(tmp_path)
    assert data.task == "binary" and data.num_outputs == 2


def test_errors_name_the_path(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.path=.*missing.*is not a folder"):
        build(tmp_path / "missing")
    write_images(tmp_path / "one", CLASSES[:1], 4, seed=7)
    with pytest.raises(ConfigError, match=r"data\.path=.*one class folder \(cat\)"):
        build(tmp_path / "one")
    for name in CLASSES:
        (tmp_path / "empty" / name).mkdir(parents=True)
        (tmp_path / "empty" / name / "notes.txt").write_text("no images here")
    with pytest.raises(ConfigError, match=r"data\.path=.*no image files"):
        build(tmp_path / "empty")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ConfigError, match=r"data\.path=.*no class sub-folders"):
        build(tmp_path / "nothing")
    write_images(tmp_path / "half" / "test", CLASSES, 2, seed=8)
    with pytest.raises(ConfigError, match=r"data\.path=.*has split folders but no train/ folder"):
        build(tmp_path / "half")


def test_train_and_val_folders_without_test_carve_the_test_split(tmp_path):
    write_images(tmp_path / "train", CLASSES, 10, seed=9)
    write_images(tmp_path / "val", CLASSES, 2, seed=10)
    data = build(tmp_path, in_memory=False, test_fraction=0.2)
    assert data.info["layout"] == "train/val" and data.sizes == {"num_train": 24, "num_val": 6, "num_test": 6}
    train_folder = str(tmp_path / "train")
    assert all(f.startswith(train_folder) for f in data.x_train.files + data.x_test.files)
    assert not set(data.x_train.files) & set(data.x_test.files)
    assert data.info["test_rows"] == [str(Path(f).relative_to(tmp_path).as_posix()) for f in data.x_test.files]

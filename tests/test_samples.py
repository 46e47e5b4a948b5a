"""Sample data: ``dltrain-samples``, samples written on a training run's first use, the mnist-8k
maker, and downloads that fail without leaving anything behind."""

from __future__ import annotations

import gzip
import logging
import os
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torchvision.datasets.mnist
from omegaconf import OmegaConf
from PIL import Image

from dltrain import compose, files, train
from dltrain.config.validation import validate
from dltrain.data import mnist8k, samples, vision
from dltrain.errors import ConfigError, UserError
from dltrain.inference.evaluate import evaluate_checkpoint
from tests.conftest import tool_error
from tests.files import gray_images


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its relative path, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- dltrain-samples ---------------------------------------------------------------------------------------------


def test_the_same_seed_writes_the_same_files(tmp_path, capsys):
    samples.main([str(tmp_path / "a")])
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == [str(tmp_path / "a" / name)
                                                   for name in ("fraud.csv", "reviews.csv", "shapes")]
    samples.main([str(tmp_path / "b"), "--only", "fraud", "--only", "reviews"])
    samples.main([str(tmp_path / "c"), "--only", "fraud", "--seed", "1"])
    a, b, c = (_tree(tmp_path / x) for x in "abc")
    assert a["fraud.csv"] == b["fraud.csv"] != c["fraud.csv"] and a["reviews.csv"] == b["reviews.csv"]
    assert set(b) == {"fraud.csv", "reviews.csv"} and set(c) == {"fraud.csv"}

    fraud = pd.read_csv(tmp_path / "a" / "fraud.csv")
    assert list(fraud.columns) == ["Time", *(f"V{i}" for i in range(1, 11)), "Amount", "merchant", "Class"]
    assert len(fraud) == samples.FRAUD_ROWS and 0.01 < fraud["Class"].mean() < 0.04
    reviews = pd.read_csv(tmp_path / "a" / "reviews.csv")
    assert set(reviews["label"]) == {"positive", "negative"} and len(reviews) == samples.REVIEW_ROWS
    images = [name for name in a if name.startswith("shapes/")]
    assert len(images) == 3 * samples.IMAGES_PER_SHAPE
    assert {name.split("/")[1] for name in images} == set(samples.SHAPES)
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no temporary file left
    with Image.open(tmp_path / "a" / images[0]) as image:
        assert image.mode == "RGB" and 48 <= image.size[0] <= 80


def test_a_sample_already_there_is_left_alone(tmp_path, capsys):
    samples.main([str(tmp_path), "--only", "reviews"])
    before = (tmp_path / "reviews.csv").stat()
    capsys.readouterr()
    samples.main([str(tmp_path), "--only", "reviews"])
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'reviews.csv'}: already there (")
    after = (tmp_path / "reviews.csv").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_file_that_is_not_the_sample_is_refused(tmp_path, capsys):
    mine = tmp_path / "fraud.csv"
    mine.write_text("a,b\n1,2\n")
    err = tool_error(capsys, samples.main, "dltrain-samples", [str(tmp_path), "--only", "fraud"])
    assert f"{mine} exists and is not dltrain's fraud sample of seed 0" in err
    assert mine.read_text() == "a,b\n1,2\n" and sorted(p.name for p in tmp_path.iterdir()) == ["fraud.csv"]
    # The sample of another seed is not this seed's either.
    samples.main([str(tmp_path / "s"), "--only", "fraud", "--seed", "3"])
    capsys.readouterr()
    assert "sample of seed 0" in tool_error(capsys, samples.main, "dltrain-samples",
                                            [str(tmp_path / "s"), "--only", "fraud"])


def test_a_folder_with_other_files_is_refused(tmp_path, capsys):
    content = {"circle/a.png": samples._png(Image.new("RGB", (4, 4), (200, 10, 10))),
               "square/b.png": samples._png(Image.new("RGB", (4, 4), (10, 200, 10)))}
    target = tmp_path / "shapes"
    assert files.publish(target, content) and samples.holds(target, content)
    (target / "square" / "mine.png").write_bytes(b"x")
    assert not samples.holds(target, content)
    with pytest.raises(UserError, match="exists and is not"):
        samples.write_sample(target, samples.Made(content, ""), "the sample")
    assert (target / "square" / "mine.png").read_bytes() == b"x"


def test_png_files_compare_by_their_pixels(tmp_path):
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    content = {"x/a.png": samples._png(image)}
    files.publish(tmp_path / "s", content)
    image.save(tmp_path / "s" / "x" / "a.png", compress_level=0)  # another encoder's bytes, same pixels
    assert (tmp_path / "s" / "x" / "a.png").read_bytes() != content["x/a.png"]
    assert samples.holds(tmp_path / "s", content)
    image.putpixel((0, 0), (255, 255, 255))
    image.save(tmp_path / "s" / "x" / "a.png")
    assert not samples.holds(tmp_path / "s", content)


def test_a_png_pillow_cannot_decode_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    samples.main([str(tmp_path), "--only", "shapes"])
    capsys.readouterr()
    hostile = tmp_path / "shapes" / "circle" / "circle_000.png"
    hostile.write_bytes(samples._png(Image.new("L", (64, 64))))  # a different image under an expected name
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # now over twice the limit: DecompressionBombError
    err = tool_error(capsys, samples.main, "dltrain-samples", [str(tmp_path), "--only", "shapes"])
    assert f"{tmp_path / 'shapes'} exists and is not dltrain's shapes sample of seed 0" in err
    assert hostile.read_bytes() == samples._png(Image.new("L", (64, 64)))


def test_a_sample_written_meanwhile_by_another_process_is_kept(tmp_path, monkeypatch):
    theirs = tmp_path / "fraud.csv"
    theirs.write_bytes(b"theirs")  # appeared after the check, before the link
    assert not files.publish(theirs, b"mine") and theirs.read_bytes() == b"theirs"

    rename = os.rename

    def racing_rename(src, dst):
        Path(dst, "circle").mkdir(parents=True)  # another process's folder lands first
        Path(dst, "circle", "theirs.png").write_bytes(b"theirs")
        rename(src, dst)

    monkeypatch.setattr(samples.os, "rename", racing_rename)
    assert not files.publish(tmp_path / "shapes", {"circle/mine.png": b"mine"})
    assert _tree(tmp_path / "shapes") == {"circle/theirs.png": b"theirs"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fraud.csv", "shapes"]  # no temporary left


# --- first use in a training run ---------------------------------------------------------------------------------


def test_training_writes_a_missing_sample_and_evaluation_does_not(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="dltrain"):
        summary = train(compose(["device=cpu", "experiment=fraud", "data.path=samples/fraud.csv",
                                 "trainer.fast_dev_run=true"]), run_dir=tmp_path / "run")
    assert summary["status"] == "completed"
    assert (tmp_path / "samples" / "fraud.csv").read_bytes() == samples.fraud_sample(0).content
    lines = [r.getMessage() for r in caplog.records if "wrote the sample data" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("data.path=samples/fraud.csv (") and "dltrain-samples" in lines[0]

    (tmp_path / "samples" / "fraud.csv").unlink()
    with pytest.raises(UserError) as info:
        evaluate_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", device="cpu")
    assert "dltrain-samples samples --only fraud" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "samples" / "fraud.csv").exists()


def test_a_resumed_run_never_writes_a_missing_sample(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    samples.main(["samples", "--seed", "3", "--only", "fraud"])
    fraud = ["device=cpu", "experiment=fraud", "data.path=samples/fraud.csv"]
    train(compose([*fraud, "trainer.max_epochs=1"]), run_dir=tmp_path / "s3")
    (tmp_path / "samples" / "fraud.csv").unlink()
    last = tmp_path / "s3" / "checkpoints" / "last.pt"
    for resume in (f"resume={last}", "resume=auto"):
        run_dir = tmp_path / "s3" if resume == "resume=auto" else tmp_path / "more"
        with pytest.raises(ConfigError) as info:
            train(compose([*fraud, "trainer.max_epochs=2", resume]), run_dir=run_dir)
        message = str(info.value)
        assert "write the sample data again with dltrain-samples samples --only fraud" in message, message
        assert "\n" not in message and not (tmp_path / "samples" / "fraud.csv").exists()


@pytest.mark.parametrize("name", ["reviews.csv", "shapes"])
def test_each_sample_is_written_on_first_use(tmp_path, name):
    target = tmp_path / "deep" / "samples" / name
    samples.provide(str(target), create=True)  # absolute, in a folder that does not exist yet
    assert samples.holds(target, samples.BY_NAME[name].make(samples.FIRST_USE_SEED).content)
    assert sorted(p.name for p in target.parent.iterdir()) == [name]


def test_a_sample_name_elsewhere_is_an_error_naming_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        train(compose(["device=cpu", "experiment=fraud", "data.path=other/fraud.csv", "trainer.fast_dev_run=true"]),
              run_dir=tmp_path / "run")
    message = str(info.value)
    assert message.startswith(f"data.path=other/fraud.csv ({tmp_path / 'other' / 'fraud.csv'}) does not exist")
    assert "dltrain-samples other --only fraud" in message and "\n" not in message
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("sample", samples.SAMPLES, ids=lambda s: s.experiment)
def test_a_sample_experiment_without_data_path_names_its_sample(sample):
    from omegaconf import open_dict

    from dltrain import compose

    cfg = compose([f"experiment={sample.experiment}"], check=False)  # data.path is ??? in the experiment
    with open_dict(cfg):  # what the command line's check sees
        cfg.hydra = {"runtime": {"choices": {"experiment": sample.experiment}}}
    assert OmegaConf.is_missing(cfg.data, "path")
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert str(info.value).endswith(f"or try dltrain's sample data with data.path=samples/{sample.name}.")
    assert (Path(__file__).parents[1] / "conf" / "experiment" / f"{sample.experiment}.yaml").is_file()
    cfg.hydra.runtime.choices.experiment = "mine"
    with pytest.raises(ConfigError, match=r"^data.path has no value: set it on the command line \(data.path=...\).$"):
        validate(cfg)


def test_other_missing_paths_keep_their_own_error(tmp_path):
    samples.provide(str(tmp_path / "samples" / "mine.csv"), create=True)
    assert not (tmp_path / "samples").exists()


# --- mnist-8k ----------------------------------------------------------------------------------------------------


def _t10k(root: Path, n: int, gz: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """An MNIST test set of ``n`` images in ``root/MNIST/raw`` as a download leaves it (images gzipped)."""
    x, y = gray_images(n)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = struct.pack(">IIII", 2051, n, 28, 28) + x.tobytes()
    if gz:
        (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
    else:
        (raw / "t10k-images-idx3-ubyte").write_bytes(images)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + y.tobytes())
    return x, y


def test_mnist_8k_splits_the_official_test_set(tmp_path, monkeypatch, capsys):
    x, y = _t10k(tmp_path / "data", 12)
    monkeypatch.setattr(mnist8k, "OFFICIAL_TEST_IMAGES", 12)
    monkeypatch.setattr(mnist8k, "TRAIN_IMAGES", 8)
    samples.main([str(tmp_path / "samples"), "--mnist-8k", "--from", str(tmp_path / "data")])
    out = capsys.readouterr().out
    assert f"data.root={tmp_path / 'samples' / 'mnist-8k'} data.download=false" in out
    data = vision.build_mnist(root=str(tmp_path / "samples" / "mnist-8k"), download=False, val_fraction=0.25)
    assert data.sizes == {"num_train": 6, "num_val": 2, "num_test": 4}
    assert data.y_test.tolist() == y[8:].tolist()
    raw = tmp_path / "samples" / "mnist-8k" / "MNIST" / "raw"
    assert (raw / "train-images-idx3-ubyte").read_bytes()[16:] == x[:8].tobytes()
    assert (raw / "t10k-images-idx3-ubyte").read_bytes()[16:] == x[8:].tobytes()


@pytest.mark.parametrize("damage, expected", [
    (None, "holds 12 images, not the 10,000 of MNIST's official test set"),
    ("header", "is not an MNIST image file"),
    ("short", "bytes after its header"),
])
def test_mnist_8k_refuses_other_files_in_one_line(tmp_path, capsys, damage, expected):
    _t10k(tmp_path / "data", 12, gz=False)
    images = tmp_path / "data" / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    if damage == "header":
        images.write_bytes(b"\x00\x00\x08\x01" + images.read_bytes()[4:])
    elif damage == "short":
        images.write_bytes(images.read_bytes()[:-5])
    err = tool_error(capsys, samples.main, "dltrain-samples",
                     [str(tmp_path / "samples"), "--mnist-8k", "--from", str(tmp_path / "data")])
    assert expected in err and not (tmp_path / "samples").exists()


# --- failed downloads --------------------------------------------------------------------------------------------


def test_a_failed_download_leaves_nothing(tmp_path, monkeypatch):
    def half_a_download(url, download_root, filename, md5):
        Path(download_root, filename).write_bytes(b"\x1f\x8b partial")
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", half_a_download)
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["https://example.invalid/"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="could not download MNIST"):
        vision.build_mnist(root="data", download=True)
    assert list(tmp_path.iterdir()) == []

    # What was there before stays, partial files of this attempt go.
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (tmp_path / "data" / "notes.txt").write_text("mine")
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"mine")
    with pytest.raises(ConfigError, match="could not download MNIST"):
        vision.build_mnist(root="data", download=True)
    assert _tree(tmp_path / "data") == {"notes.txt": b"mine", "MNIST/raw/t10k-labels-idx1-ubyte": b"mine"}

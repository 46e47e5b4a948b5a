"""Images and checkpoints as they really are on disk: 16-bit, 32-bit and float pixels scaled by
their bit depth in training and prediction alike; a bit-rotted checkpoint or one of non-finite
weights refused with one line; an image size too large to decode refused before any decoding."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dltrain import compose, train
from dltrain.data.decode import DECODE_ERRORS, decode_image
from dltrain.data.image_folder import build_image_folder
from dltrain.errors import ConfigError, UserError
from dltrain.inference.evaluate import main as eval_main
from dltrain.inference.predict import main as predict_main
from dltrain.training.checkpoint import load_checkpoint
from tests.conftest import run_cli, tool_error

SIZE = [12, 12]
TOP_32 = 2**31 - 1  # the largest value of a 32-bit integer (mode I) image


def _gray_pixels(seed: int, shape: tuple[int, int] = (20, 30)) -> np.ndarray:
    """8-bit grayscale pixels ``(H, W)`` covering the whole range 0..255."""
    pixels = np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)
    pixels[0, :2] = (0, 255)
    return pixels


def write_twin_folders(root: Path, per_class: int = 6) -> tuple[Path, Path]:
    """The same grayscale images in two image folders: as 8-bit PNGs, and as 16-bit PNGs
    (mode ``I;16``) of the values ``v * 257`` (the exact 16-bit version of ``v``)."""
    rng = np.random.default_rng(0)
    eight, sixteen = root / "8bit", root / "16bit"
    for k, name in enumerate(("dark", "light")):
        (eight / name).mkdir(parents=True)
        (sixteen / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = rng.integers(10, 24, 2)
            pixels = np.clip(70 + 110 * k + rng.normal(0, 45, (h, w)), 0, 255).astype(np.uint8)  # (h, w)
            Image.fromarray(pixels).save(eight / name / f"img{i}.png")
            Image.fromarray(pixels.astype(np.uint16) * 257).save(sixteen / name / f"img{i}.png")
    return eight, sixteen


# Each writes the 8-bit pixels ``v`` at a higher bit depth, as scientific and medical files hold them.
HIGH_DEPTH = {
    "png_I;16": lambda v, path: Image.fromarray(v.astype(np.uint16) * 257).save(path.with_suffix(".png")),
    "tiff_I;16B": lambda v, path: Image.frombytes(
        "I;16B", v.shape[::-1], (v.astype(">u2") * 257).tobytes()).save(path.with_suffix(".tif")),
    "pgm_16": lambda v, path: Image.fromarray(v.astype(np.uint16) * 257).save(path.with_suffix(".pgm")),
    "tiff_I_32": lambda v, path: Image.fromarray(
        np.round(v.astype(np.float64) * TOP_32 / 255).astype(np.int32)).save(path.with_suffix(".tif")),
    "tiff_F": lambda v, path: Image.fromarray(v.astype(np.float32) / 255).save(path.with_suffix(".tif")),
}


@pytest.mark.parametrize("color", ["rgb", "grayscale"])
@pytest.mark.parametrize("kind", list(HIGH_DEPTH))
def test_high_bit_depth_pixels_decode_as_the_8bit_image_they_came_from(tmp_path, kind, color):
    pixels = _gray_pixels(seed=1)
    Image.fromarray(pixels).save(tmp_path / "eight.png")
    HIGH_DEPTH[kind](pixels, tmp_path / "deep")
    deep = next(tmp_path.glob("deep.*"))
    with Image.open(deep) as img:
        assert img.mode in ("I;16", "I;16B", "I", "F")  # what convert("L") used to clip at 255
    expected = decode_image(tmp_path / "eight.png", SIZE, color)
    assert torch.equal(decode_image(deep, SIZE, color), expected)


@pytest.mark.parametrize("values", [np.full((8, 8), 2.0), np.full((8, 8), np.nan), np.full((8, 8), -0.5)])
def test_float_pixels_of_unknown_scale_are_unreadable_not_clipped(tmp_path, values):
    Image.fromarray(values.astype(np.float32)).save(tmp_path / "odd.tif")
    with pytest.raises(DECODE_ERRORS):  # skipped with a warning naming the file, in training and prediction
        decode_image(tmp_path / "odd.tif", SIZE, "grayscale")


def test_a_16bit_folder_gives_the_training_data_of_its_8bit_original(tmp_path):
    eight, sixteen = write_twin_folders(tmp_path)
    data = {bits: build_image_folder(path=str(folder), image_size=SIZE, num_workers=0, in_memory=True)
            for bits, folder in (("8", eight), ("16", sixteen))}
    assert data["16"].info["normalization"] == data["8"].info["normalization"]
    for split in ("x_train", "x_val", "x_test"):
        assert torch.equal(getattr(data["16"], split), getattr(data["8"], split))
    assert data["8"].x_train.std() > 0.5  # standardised images, not a constant white


def test_a_16bit_folder_trains_and_predicts_like_its_8bit_original(tmp_path, capsys):
    eight, sixteen = write_twin_folders(tmp_path)
    run = tmp_path / "run"
    train(compose(["device=cpu", "data=image_folder", f"data.path={sixteen}", f"data.image_size={SIZE}",
                   "data.num_workers=0", "model=cnn", "model.channels=[4]", "model.hidden=[8]",
                   "trainer.fast_dev_run=true"]), run_dir=run)
    ckpt = run / "checkpoints" / "best.pt"
    predicted = {}
    for bits, folder in (("8", eight), ("16", sixteen)):
        predict_main([f"ckpt={ckpt}", f"input={folder}", f"output={tmp_path / bits}.csv", "device=cpu"])
        predicted[bits] = pd.read_csv(tmp_path / f"{bits}.csv")
    assert len(predicted["16"]) == 12
    pd.testing.assert_frame_equal(predicted["16"], predicted["8"])
    assert predicted["16"]["p_dark"].nunique() > 1  # the images differ, so do their probabilities


def test_an_image_size_too_large_to_decode_is_refused_at_once(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.image_size\[0\]=100000 is out of range: it must be <= 4096"):
        compose(["data=image_folder", f"data.path={tmp_path}", "data.image_size=[100000,100000]"])
    # A folder that does not exist: the size must be refused before the data is even looked at.
    proc = run_cli(["data=image_folder", f"data.path={tmp_path / 'nowhere'}", "data.image_size=[100000,100000]",
                    "hydra.run.dir=run"], cwd=tmp_path)
    message = proc.stderr.strip()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "\n" not in message
    assert message.startswith("dltrain: error: data.image_size[0]=100000 is out of range: it must be <= 4096")


# --- checkpoints ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("digits") / "run"
    train(compose(["device=cpu", "trainer.max_epochs=1"]), run_dir=run)
    return run


@pytest.fixture
def image(tmp_path) -> Path:
    Image.fromarray(_gray_pixels(seed=2, shape=(8, 8))).save(tmp_path / "digit.png")
    return tmp_path / "digit.png"


def _member_data_offset(path: Path, name: str) -> int:
    """Where the bytes of the archive member ``name`` start in the file (after its local header)."""
    with zipfile.ZipFile(path) as archive:
        start = archive.getinfo(name).header_offset
    header = path.read_bytes()[start:start + 30]
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return start + 30 + name_length + extra_length


def _bit_rot(source: Path, target: Path) -> str:
    """A copy of ``source`` with one bit flipped in the middle of its largest tensor; the member's name."""
    with zipfile.ZipFile(source) as archive:
        member = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(source.read_bytes())
    raw[_member_data_offset(source, member.filename) + member.file_size // 2] ^= 0x10
    target.write_bytes(raw)
    return member.filename


def test_a_bit_rotted_checkpoint_is_refused_everywhere(digits_run, image, tmp_path, capsys):
    rotten = tmp_path / "rotten.pt"
    member = _bit_rot(digits_run / "checkpoints" / "last.pt", rotten)
    # torch.load alone takes it: one weight silently differs.
    original = torch.load(digits_run / "checkpoints" / "last.pt", weights_only=True)["model"]
    loaded = torch.load(rotten, weights_only=True)["model"]
    assert any(not torch.equal(loaded[k], original[k]) for k in original)

    expected = f"checkpoint {rotten} is damaged (member {member} fails its checksum)"
    with pytest.raises(UserError, match=r"is damaged \(member .* fails its checksum\).*use another copy"):
        load_checkpoint(rotten)
    assert expected in tool_error(capsys, eval_main, "dltrain-eval", [f"ckpt={rotten}", "device=cpu"])
    out = tmp_path / "predictions.csv"
    assert expected in tool_error(capsys, predict_main, "dltrain-predict",
                                  [f"ckpt={rotten}", f"input={image}", f"output={out}", "device=cpu"])
    assert not out.exists()
    with pytest.raises(UserError, match=r"is damaged \(member"):
        train(compose(["device=cpu", "trainer.max_epochs=2", f"resume={rotten}"]), run_dir=tmp_path / "resumed")


def test_resume_auto_names_a_bit_rotted_last_checkpoint_it_passes_over(digits_run, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs" / "old" / "checkpoints").mkdir(parents=True)
    rotten = Path("outputs/old/checkpoints/last.pt")
    _bit_rot(digits_run / "checkpoints" / "last.pt", rotten)
    with caplog.at_level("WARNING", logger="dltrain"):
        summary = train(compose(["device=cpu", "trainer.max_epochs=1", "resume=auto"]), run_dir=tmp_path / "new")
    assert summary["resumed_from"] is None  # trained from scratch, not from the damaged weights
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(f"resume=auto passed over an unreadable checkpoint: checkpoint {rotten} is damaged" in w
               for w in warnings)


def test_a_checkpoint_with_a_broken_member_header_is_refused(digits_run, tmp_path):
    source = digits_run / "checkpoints" / "best.pt"
    with zipfile.ZipFile(source) as archive:
        member = next(i for i in archive.infolist() if "/data/" in i.filename)
    raw = bytearray(source.read_bytes())
    raw[member.header_offset] ^= 0xFF  # the local header's signature
    (tmp_path / "broken.pt").write_bytes(raw)
    with pytest.raises(UserError, match=r"broken\.pt is damaged \(member .* cannot be read: .*use another copy"):
        load_checkpoint(tmp_path / "broken.pt")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_by_eval_and_predict(digits_run, image, tmp_path, capsys, value):
    state = torch.load(digits_run / "checkpoints" / "best.pt", weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = torch.full_like(state["model"][name], value)
    torch.save(state, tmp_path / "bad.pt")

    expected = f"checkpoint {tmp_path / 'bad.pt'}: its weights hold NaN or infinite values ({name})"
    assert expected in tool_error(capsys, eval_main, "dltrain-eval", [f"ckpt={tmp_path / 'bad.pt'}", "device=cpu"])
    out = tmp_path / "predictions.csv"
    assert expected in tool_error(capsys, predict_main, "dltrain-predict",
                                  [f"ckpt={tmp_path / 'bad.pt'}", f"input={image}", f"output={out}", "device=cpu"])
    assert not out.exists()


@pytest.mark.parametrize("data", [{"input_shape": [1, 100000, 100000], "image_size": [100000, 100000]},
                                  {"image_size": [100000, 100000]}, {"input_shape": ["8", 8]}])
def test_a_stored_input_size_no_config_allows_is_refused_before_building(digits_run, image, tmp_path, capsys, data):
    state = torch.load(digits_run / "checkpoints" / "best.pt", weights_only=True)
    state["data"].update(data)
    torch.save(state, tmp_path / "huge.pt")

    expected = f"checkpoint {tmp_path / 'huge.pt'}: its input shape"
    assert expected in tool_error(capsys, eval_main, "dltrain-eval", [f"ckpt={tmp_path / 'huge.pt'}", "device=cpu"])
    assert expected in tool_error(capsys, predict_main, "dltrain-predict", [f"ckpt={tmp_path / 'huge.pt'}",
                                  f"input={image}", f"output={tmp_path / 'out.csv'}", "device=cpu"])


# --- bit depths the file does not state, and deep images that use little of it ----------------------------------


def _as_int32_tiff(pixels: np.ndarray, path: Path, scale: int) -> None:
    """``pixels * scale`` saved as a PNG, then converted to Pillow's 32-bit mode ``I`` and saved
    as a TIFF: the usual way such files are made."""
    png = path.with_suffix(".png")
    Image.fromarray(pixels.astype(np.uint16) * scale if scale > 1 else pixels).save(png)
    with Image.open(png) as img:
        img.convert("I").save(path)
    png.unlink()


@pytest.mark.parametrize("scale", [1, 257], ids=["from_8bit", "from_16bit"])
def test_32bit_tiffs_converted_from_8_or_16_bits_decode_as_their_original(tmp_path, scale):
    pixels = _gray_pixels(seed=3)
    Image.fromarray(pixels).save(tmp_path / "eight.png")
    _as_int32_tiff(pixels, tmp_path / "deep.tif", scale)
    with Image.open(tmp_path / "deep.tif") as img:
        assert img.mode == "I" and img.tag_v2[258] == (32,)  # nothing in the file says 8 or 16 bits
    expected = decode_image(tmp_path / "eight.png", SIZE, "grayscale")
    assert expected.float().mean() > 100  # the original is far from black
    assert torch.equal(decode_image(tmp_path / "deep.tif", SIZE, "grayscale"), expected)


def test_a_folder_of_32bit_tiffs_from_8bit_images_gives_the_training_data_of_the_originals(tmp_path):
    eight, _ = write_twin_folders(tmp_path)
    deep = tmp_path / "tiff32"
    for png in eight.rglob("*.png"):
        target = deep / png.relative_to(eight).with_suffix(".tif")
        target.parent.mkdir(parents=True, exist_ok=True)
        _as_int32_tiff(np.asarray(Image.open(png)), target, 1)
    data = {name: build_image_folder(path=str(folder), image_size=SIZE, num_workers=0, in_memory=True)
            for name, folder in (("png", eight), ("tiff", deep))}
    assert data["tiff"].info["normalization"] == data["png"].info["normalization"]
    assert torch.equal(data["tiff"].x_train, data["png"].x_train)


def write_12bit_folder(root: Path, per_class: int = 5) -> Path:
    """Two classes of 16-bit PNGs holding 12-bit values (0..4095), as medical scanners write them."""
    rng = np.random.default_rng(4)
    for k, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            values = rng.integers(0, 2048 + 2047 * k, (10, 14)).astype(np.uint16)
            values[0, 0] = 4095 if (k, i) == (1, 0) else values[0, 0]  # the largest value of the folder
            Image.fromarray(values).save(root / name / f"scan{i}.png")
    return root


def test_12bit_values_in_16bit_files_are_scaled_by_the_depth_and_named_in_the_log_and_summary(tmp_path, caplog):
    folder = write_12bit_folder(tmp_path / "scans")
    png = folder / "b" / "scan0.png"
    values = np.asarray(Image.open(png)).astype(np.int64)
    by_depth = Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))
    by_depth.save(tmp_path / "by_depth.png")
    assert torch.equal(decode_image(png, SIZE, "grayscale"), decode_image(tmp_path / "by_depth.png", SIZE, "grayscale"))

    expected = (f"data.path={folder}: its 10 images deeper than 8 bits use only values up to 4095 of their range "
                "0..65535 (under 1/16), so they decode dark, in few grey levels: dltrain scales pixels by the file's "
                "bit depth; if they hold 12-bit values, scale the files to the full range (multiply by 16)")
    assert build_image_folder(path=str(folder), image_size=SIZE, num_workers=0).warnings == [expected]
    with caplog.at_level("WARNING", logger="dltrain"):
        summary = train(compose(["device=cpu", "data=image_folder", f"data.path={folder}", f"data.image_size={SIZE}",
                                 "data.num_workers=0", "model=mlp", "trainer.fast_dev_run=true"]),
                        run_dir=tmp_path / "run")
    assert expected in summary["warnings"]
    assert [r.getMessage() for r in caplog.records].count(f"warning: {expected}.") == 1


def test_16bit_images_using_their_range_get_no_warning(tmp_path):
    _, sixteen = write_twin_folders(tmp_path)
    assert build_image_folder(path=str(sixteen), image_size=SIZE, num_workers=0).warnings == []


# --- why an image was skipped ---------------------------------------------------------------------------------------


def write_odd_floats(folder: Path) -> Path:
    """A folder of two readable classes, two float TIFFs of values beyond [0, 1] and a broken PNG."""
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(_gray_pixels(seed=10 + i, shape=(8, 8))).save(folder / name / f"ok{i}.png")
    for i in range(2):
        Image.fromarray(np.full((8, 8), 3.0 + i, dtype=np.float32)).save(folder / "a" / f"hdr{i}.tif")
    (folder / "b" / "broken.png").write_bytes(b"not a png")
    return folder


def test_the_warning_of_skipped_images_names_each_reason_with_its_count_and_first_file(tmp_path, caplog):
    folder = write_odd_floats(tmp_path / "images")
    with caplog.at_level("WARNING", logger="dltrain"):
        build_image_folder(path=str(folder), image_size=SIZE, num_workers=0)
    assert [r.getMessage() for r in caplog.records] == [
        f"data.path={folder}: skipped 3 unreadable images of 11: a/hdr0.tif, a/hdr1.tif, b/broken.png "
        "(float pixel values are not all in [0, 1]: 2, the first a/hdr0.tif; "
        "not an image Pillow can read: 1, the first b/broken.png)"]


def test_a_folder_of_only_out_of_range_floats_is_refused_with_the_reason(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for i, name in enumerate(("a", "b")):
        Image.fromarray(np.full((8, 8), -1.0 - i, dtype=np.float32)).save(tmp_path / name / "x.tif")
    with pytest.raises(ConfigError, match=r"none of its 2 image files could be decoded: a/x\.tif, b/x\.tif \(float "
                                          r"pixel values are not all in \[0, 1\]: 2, the first a/x\.tif\)"):
        build_image_folder(path=str(tmp_path), image_size=SIZE, num_workers=0)


def test_predict_names_why_it_skipped_an_image(tmp_path, capsys):
    folder = write_odd_floats(tmp_path / "images")
    run = tmp_path / "run"
    train(compose(["device=cpu", "data=image_folder", f"data.path={folder}", f"data.image_size={SIZE}",
                   "data.num_workers=0", "model=mlp", "trainer.fast_dev_run=true"]), run_dir=run)
    capsys.readouterr()
    predict_main([f"ckpt={run / 'checkpoints' / 'best.pt'}", f"input={folder / 'a'}",
                  f"output={tmp_path / 'out.csv'}", "device=cpu"])
    assert ("dltrain-predict: warning: skipped 2 unreadable images: hdr0.tif, hdr1.tif "
            "(float pixel values are not all in [0, 1]: 2, the first hdr0.tif)\n") in capsys.readouterr().err
    assert len(pd.read_csv(tmp_path / "out.csv")) == 4

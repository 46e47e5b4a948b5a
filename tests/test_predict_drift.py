"""dltrain-predict flags the inputs that do not look like the training data (images of
another size, of the other polarity, numbers far outside the training range, texts of
unknown words) in its input_warnings column, with one warning for them all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dltrain import compose, train
from dltrain.config.trust import check_data_record
from dltrain.data.digits import _load_digits
from dltrain.data.preprocessing.drift import is_inverted
from dltrain.errors import UserError
from dltrain.inference.predict import main
from tests.conftest import tool_error
from tests.files import people, write_csv, write_text_csv

WARNING = ("dltrain-predict: warning: {} of {} inputs do not look like the training data ({}): see the "
           "input_warnings column; predictions on them may be unreliable.\n")


def _train(folder: Path, overrides: list[str]) -> Path:
    train(compose(["device=cpu", "trainer.fast_dev_run=true", *overrides]), run_dir=folder / "run")
    return folder / "run" / "checkpoints" / "best.pt"


def _predict(capsys, ckpt: Path, source: Path, out: Path) -> tuple[pd.DataFrame, str]:
    """The output table and what dltrain-predict printed on stderr."""
    capsys.readouterr()
    main([f"ckpt={ckpt}", f"input={source}", f"output={out}", "device=cpu"])
    return pd.read_csv(out, keep_default_na=False, dtype={"input": str}), capsys.readouterr().err


def _without(ckpt: Path, key: str, dest: Path) -> Path:
    """``ckpt`` as written before its data record held ``key``."""
    state = torch.load(ckpt, weights_only=True)
    del state["data"][key]
    torch.save(state, dest)
    return dest


def _png_folder(folder: Path, images: np.ndarray) -> Path:
    """uint8 images ``(N, H, W)`` as ``folder/NNN.png``."""
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return folder


# --- tables ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> tuple[Path, Path]:
    """A data=csv checkpoint trained on the people table, and that table."""
    folder = tmp_path_factory.mktemp("table")
    path = write_csv(folder / "people.csv", people(60))
    return _train(folder, ["data=csv", f"data.path={path}", "data.target=label"]), path


def test_table_rows_in_range_are_not_flagged(table, tmp_path, capsys):
    ckpt, path = table
    out, err = _predict(capsys, ckpt, path, tmp_path / "out.csv")
    assert out["input_warnings"].tolist() == [""] * 60
    assert "warning" not in err


def test_table_rows_far_outside_the_training_range_are_flagged(table, tmp_path, capsys):
    ckpt, path = table
    rows = people(60)
    rows.loc[[3, 7], "age"] = rows["age"].max() + 3 * (rows["age"].max() - rows["age"].min())
    rows.loc[7, "score"] = -1e6
    out, err = _predict(capsys, ckpt, write_csv(tmp_path / "far.csv", rows), tmp_path / "out.csv")
    flagged = out[out["input_warnings"] != ""]
    assert flagged["input"].tolist() == ["3", "7"]
    assert flagged["input_warnings"].tolist() == ["out_of_range: age", "out_of_range: age, score"]
    assert err.endswith(WARNING.format(2, 60, "2 out_of_range"))


def test_a_checkpoint_without_training_ranges_predicts_without_range_flags(table, tmp_path, capsys):
    ckpt, path = table
    old = _without(ckpt, "numeric_range", tmp_path / "old.pt")
    rows = people(60)
    rows.loc[3, "age"] = 1e4
    far = write_csv(tmp_path / "far.csv", rows)
    before, err = _predict(capsys, old, far, tmp_path / "old.csv")
    assert before["input_warnings"].tolist() == [""] * 60 and "warning" not in err
    now, _ = _predict(capsys, ckpt, far, tmp_path / "now.csv")
    assert now["input_warnings"].iloc[3] == "out_of_range: age"
    assert before.drop(columns="input_warnings").equals(now.drop(columns="input_warnings"))


def test_points_far_outside_the_training_range_are_flagged(tmp_path, capsys):
    ckpt = _train(tmp_path, ["data=moons"])
    points = write_csv(tmp_path / "points.csv", {"a": [0.5, 0.0, 40.0, -1.0], "b": [0.2, 0.5, 0.0, -30.0]})
    out, err = _predict(capsys, ckpt, points, tmp_path / "out.csv")
    assert out["input_warnings"].tolist() == ["", "", "out_of_range: a", "out_of_range: b"]
    assert err.endswith(WARNING.format(2, 4, "2 out_of_range"))


# --- images ------------------------------------------------------------------------------------------------------


def _squares(n: int, seed: int, shape: tuple[int, int] | None = None) -> np.ndarray:
    """``n`` white-on-black grayscale images ``(n, H, W)`` of ``shape`` (default: a random
    one of 18-22 pixels a side): a bright square of varying size, place and brightness on a
    dark noisy background."""
    rng = np.random.default_rng(seed)
    h, w = shape or rng.integers(18, 23, 2)
    images = rng.integers(0, 40, (n, h, w))
    for image in images:
        side = rng.integers(4, 9)
        top, left = rng.integers(0, h - side), rng.integers(0, w - side)
        image[top:top + side, left:left + side] = rng.integers(150, 256)
    return images.astype(np.uint8)


@pytest.fixture(scope="module")
def squares(tmp_path_factory) -> Path:
    """A data=image_folder checkpoint trained on white-on-black squares of 18-22 pixels a side."""
    folder = tmp_path_factory.mktemp("squares")
    for k, name in enumerate(["a", "b"]):
        for size in (18, 20, 22):
            _png_folder(folder / "images" / name / str(size), _squares(5, 10 * k + size, (size, size)))
    return _train(folder, ["data=image_folder", f"data.path={folder / 'images'}", "data.image_size=[12,12]",
                           "data.num_workers=0", "model=cnn"])


def test_images_like_the_training_images_are_not_flagged(squares, tmp_path, capsys):
    out, err = _predict(capsys, squares, _png_folder(tmp_path / "new", _squares(20, 99)), tmp_path / "out.csv")
    assert out["input_warnings"].tolist() == [""] * 20 and "warning" not in err


def test_images_of_another_size_or_polarity_are_flagged(squares, tmp_path, capsys):
    folder = _png_folder(tmp_path / "new" / "big", _squares(3, 1, (40, 40)))
    _png_folder(tmp_path / "new" / "inverted", 255 - _squares(4, 2))
    _png_folder(tmp_path / "new" / "plain", _squares(2, 3))
    _png_folder(tmp_path / "new" / "wide_inverted", 255 - _squares(1, 4, (20, 60)))
    out, err = _predict(capsys, squares, folder.parent, tmp_path / "out.csv")
    flags = dict(zip(out["input"], out["input_warnings"], strict=True))
    assert {flags[f"big/{i:03d}.png"] for i in range(3)} == {"resized 40x40->12x12"}
    assert {flags[f"inverted/{i:03d}.png"] for i in range(4)} == {"inverted"}
    assert {flags[f"plain/{i:03d}.png"] for i in range(2)} == {""}
    assert flags["wide_inverted/000.png"] == "resized 60x20->12x12; inverted"
    assert err.endswith(WARNING.format(8, 10, "5 inverted, 4 resized"))


def _digits_as_pngs() -> np.ndarray:
    """All 1,797 bundled digits as 8-bit images (white ink on black) ``(N, 8, 8)``."""
    counts, _ = _load_digits()
    return np.rint(counts * 255 / 16).astype(np.uint8).reshape(-1, 8, 8)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("digits"), [])


def test_every_bundled_digit_passes_and_every_inverted_one_is_flagged(digits, tmp_path, capsys):
    """The rule holds over all the real data: no digit is flagged, and each one inverted is."""
    images = _digits_as_pngs()
    out, err = _predict(capsys, digits, _png_folder(tmp_path / "plain", images), tmp_path / "plain.csv")
    assert (out["input_warnings"] == "").all() and "warning" not in err
    out, err = _predict(capsys, digits, _png_folder(tmp_path / "inverted", 255 - images), tmp_path / "inv.csv")
    assert (out["input_warnings"] == "inverted").all()
    assert err.endswith(WARNING.format(1797, 1797, "1797 inverted"))


def test_digits_of_another_size_are_flagged_unless_the_checkpoint_records_no_sizes(digits, tmp_path, capsys):
    big = np.kron(_digits_as_pngs()[:5], np.ones((2, 2), dtype=np.uint8))  # (5, 16, 16)
    folder = _png_folder(tmp_path / "big", big)
    out, err = _predict(capsys, digits, folder, tmp_path / "out.csv")
    assert out["input_warnings"].tolist() == ["resized 16x16->8x8"] * 5
    assert err.endswith(WARNING.format(5, 5, "5 resized"))
    old = _without(digits, "native_sizes", tmp_path / "old.pt")
    out, err = _predict(capsys, old, folder, tmp_path / "old.csv")
    assert out["input_warnings"].tolist() == [""] * 5 and "warning" not in err


@pytest.mark.parametrize("m", [0.05, 0.13, 0.3, 0.4, 0.5, 0.6, 0.7, 0.95])
def test_the_inversion_rule_is_symmetric_and_needs_a_polarity(m):
    brightness = np.linspace(0, 1, 101)
    flagged = [is_inverted(b, m) for b in brightness]
    assert flagged == [is_inverted(1 - b, 1 - m) for b in brightness]  # the same rule for light images
    assert not is_inverted(m, m)
    assert is_inverted(1 - m, m) == (abs(m - 0.5) >= 1 / 6)  # photos of middling brightness never are


# --- texts, the output file, the record --------------------------------------------------------------------------


def test_texts_of_mostly_unknown_words_are_flagged(tmp_path, capsys):
    ckpt = _train(tmp_path, ["data=text_csv", f"data.path={write_text_csv(tmp_path / 'texts.csv', 40)}",
                             "model=gru"])
    texts = write_csv(tmp_path / "new.csv", {"text": ["Good movie!", "zork quux blargh movie", "", "bad"]})
    out, err = _predict(capsys, ckpt, texts, tmp_path / "out.csv")
    assert out["input_warnings"].tolist() == ["", "unknown_words", "unknown_words", ""]
    assert err.endswith(WARNING.format(2, 4, "2 unknown_words"))


def test_earlier_outputs_with_or_without_the_column_are_replaced_others_refused(table, tmp_path, capsys):
    ckpt, path = table
    out = tmp_path / "out.csv"
    for earlier in ("input,prediction,confidence,p_fraud,p_ok\n0,ok,0.9,0.1,0.9\n",  # before input_warnings
                    "input,prediction,confidence,p_fraud,p_ok,input_warnings\n0,ok,0.9,0.1,0.9,out_of_range: a\n"):
        out.write_text(earlier)
        assert len(_predict(capsys, ckpt, path, out)[0]) == 60
    mine = "input,prediction,confidence,p_fraud,p_ok,input_warnings\n0,ok,0.9,0.1,0.9,call Bob\n"
    out.write_text(mine)
    line = tool_error(capsys, main, "dltrain-predict", [f"ckpt={ckpt}", f"input={path}", f"output={out}",
                                                        "device=cpu"])
    assert f"output={out} exists and is not a predictions file of dltrain-predict" in line
    assert out.read_text() == mine


@pytest.mark.parametrize(("key", "value"), [
    ("numeric_range", {"age": [50.0, 20.0]}),
    ("numeric_range", {"age": [20.0, float("inf")]}),
    ("numeric_range", {"age": [20.0]}),
    ("input_range", {"min": [0.0, 1.0], "max": [1.0, 0.0]}),
    ("input_range", {"min": [0.0], "max": [1.0, 2.0]}),
    ("native_sizes", {"min": [8, 8]}),
    ("native_sizes", {"min": [8, 0], "max": [8, 8]}),
    ("native_sizes", {"min": [8, 8], "max": [8, 8.5]}),
])
def test_a_damaged_record_of_the_training_data_is_one_line(key, value):
    with pytest.raises(UserError, match=rf"checkpoint best.pt: its data record's {key}=.* is not \{{"):
        check_data_record("best.pt", {key: value})

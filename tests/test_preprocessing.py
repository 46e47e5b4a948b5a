"""The fitted preprocessing objects: a dataset's tensors are its preprocessing applied to the
raw inputs (so training, evaluation and prediction share the code), a checkpoint's data record
rebuilds them, and a dataset registered with its kind of inputs predicts from files with no
edit to dltrain-predict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dltrain import compose, train
from dltrain.config.schemas import GROUP_SCHEMAS
from dltrain.data import DATASETS
from dltrain.data.preprocessing import Images, InkCounts, Points, Table, Text, from_record, kind_of
from dltrain.data.splits import carve_validation, split_indices
from dltrain.data.vision import image_splits
from dltrain.errors import UserError
from dltrain.inference.predict import main as predict_main
from tests.files import write_csv, write_table_csv, write_text_csv


def _raw_images(n: int, seed: int) -> torch.Tensor:
    """uint8 images ``(n, 3, 6, 5)``, as a channels-last view as CIFAR's arrive."""
    pixels = torch.randint(0, 256, (n, 6, 5, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    return pixels.permute(0, 3, 1, 2)


def _tiny_images(seed: int = 0, root: str = "data", download: bool = True, val_fraction: float = 0.1):
    """A throwaway image dataset through the torchvision datasets' code path: 40 training and
    12 test images of 2 classes, the second class brighter."""
    (x_all, y_all), (x_test, y_test) = _two_classes(40, 1), _two_classes(12, 2)
    return image_splits(x_all, y_all, x_test, y_test, class_names=["dark", "light"], seed=seed,
                        val_fraction=val_fraction, info={"source": "generated"})


def _two_classes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` uint8 images, dark ones of class 0 and light ones of class 1, and their labels."""
    x, y = _raw_images(n, seed), torch.arange(n) % 2
    return torch.where(y[:, None, None, None] == 1, x // 2 + 128, x // 2), y


def test_image_splits_are_the_fitted_images_applied():
    """Every split is ``prep.apply`` of its uint8 images; the statistics are the training split's
    per-channel mean and std of the pixels scaled to [0, 1]."""
    x_all, x_test = _raw_images(50, 0), _raw_images(10, 1)
    y_all = torch.arange(50) % 5
    data = image_splits(x_all, y_all, x_test, torch.arange(10) % 5, class_names=list("abcde"), seed=3,
                        val_fraction=0.2, info={})
    prep = data.preprocessing
    train_idx, val_idx = carve_validation(50, val_fraction=0.2, seed=3, labels=y_all.numpy())
    for x, raw in ((data.x_train, x_all[train_idx]), (data.x_val, x_all[val_idx]), (data.x_test, x_test)):
        assert x.is_contiguous() and torch.equal(x, prep.apply(raw))
    scaled = x_all[train_idx].double() / 255
    assert prep.mean == pytest.approx(scaled.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert prep.std == pytest.approx(scaled.std(dim=(0, 2, 3), correction=0).tolist(), abs=1e-12)
    assert data.info["normalization"] == prep.to_record()["normalization"]


def test_image_folder_splits_are_the_fitted_images_applied(tmp_path):
    from dltrain.data.decode import decode_image
    from tests.files import write_image_folder

    root = write_image_folder(tmp_path / "images", per_class=6, strays=False, corrupt=False)
    for in_memory in (True, False):
        data = DATASETS.build("image_folder", path=str(root), image_size=[9, 7], in_memory=in_memory, num_workers=0)
        raw = torch.stack([decode_image(root / name, [9, 7], "rgb") for name in data.info["test_rows"]])
        x_test = data.x_test if in_memory else torch.stack([x for x, _ in data.x_test])
        assert torch.equal(x_test, data.preprocessing.apply(raw))


def test_digits_are_their_ink_counts_applied():
    data = DATASETS.build("digits", seed=0)
    prep = data.preprocessing
    assert isinstance(prep, InkCounts) and data.info == prep.to_record()
    counts = np.rint(data.x_train.reshape(len(data.x_train), 64).double().numpy() * prep.std + prep.mean)  # (N, 64)
    assert set(np.unique(counts)) <= set(range(17))
    assert torch.equal(data.x_train, prep.apply(counts))
    # An image file's pixel values map back to the nearest count.
    pixels = torch.from_numpy(np.rint(counts * 255 / 16).astype(np.uint8)).reshape(-1, 1, 8, 8)
    assert np.array_equal(prep.counts(pixels), counts)


def test_points_are_the_fitted_points_applied():
    from sklearn.datasets import make_moons

    data = DATASETS.build("moons", seed=2, samples=300)
    x, y = make_moons(300, noise=0.2, random_state=2)
    parts = split_indices(300, val_fraction=0.2, test_fraction=0.2, seed=2, labels=y)
    prep = data.preprocessing
    for split, idx in zip((data.x_train, data.x_val, data.x_test), parts, strict=True):
        assert torch.equal(split, prep.apply(x[idx]))
    assert prep.scaler.mean.ravel() == pytest.approx(x[parts[0]].mean(axis=0), abs=1e-12)
    lows, highs = x[parts[0]].min(axis=0), x[parts[0]].max(axis=0)
    assert data.info["input_range"] == {"min": lows.tolist(), "max": highs.tolist()}


def test_table_rows_are_the_fitted_table_applied(tmp_path):
    """The rows are ``prep.apply`` of their feature columns: numbers (true/false as 0/1)
    standardised with the training statistics, then the one-hot columns."""
    table = pd.DataFrame({"age": np.arange(90) % 37 * 1.5, "member": np.arange(90) % 3 == 0,
                          "city": ["oslo"] * 40 + ["rome"] * 30 + ["lima"] * 15 + ["nuuk"] * 4 + ["apia"],
                          "label": np.arange(90) % 2})
    path = write_csv(tmp_path / "t.csv", table)
    data = DATASETS.build("csv", seed=0, path=str(path), target="label", max_categories=3)
    prep = data.preprocessing
    assert isinstance(prep, Table) and prep.encoded_features[-1] == "city_infrequent_sklearn"
    test = table.iloc[data.info["test_rows"]][["age", "member", "city"]]
    assert torch.equal(data.x_test, prep.apply(test))
    numbers = test[["age", "member"]].to_numpy(dtype=np.float64)
    assert np.array_equal(data.x_test[:, :2].numpy(), ((numbers - prep.mean) / prep.std).astype(np.float32))
    assert data.x_test[:, 2:].sum(dim=1).tolist() == [1.0] * len(test)  # every city has one column


def test_table_one_hot_equals_the_encoder(tmp_path):
    """Against scikit-learn's own transform, for frequent, infrequent and unseen categories."""
    from sklearn.preprocessing import OneHotEncoder

    cities = ["oslo"] * 30 + ["rome"] * 20 + ["lima"] * 6 + ["nuuk"] * 3 + ["apia"]
    fit = pd.DataFrame({"city": cities})
    encoder = OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=3, sparse_output=False,
                            dtype=np.float32).fit(fit.to_numpy())
    prep = Table(["city"], [], np.zeros(0), np.ones(0), {"city": encoder.categories_[0].tolist()},
                 encoder.get_feature_names_out(["city"]).tolist())
    new = pd.DataFrame({"city": ["oslo", "rome", "lima", "nuuk", "apia", "atlantis"]})
    assert np.array_equal(prep.apply(new).numpy(), encoder.transform(new.to_numpy()))


def test_texts_are_the_fitted_vocabulary_applied(tmp_path):
    path = write_text_csv(tmp_path / "texts.csv", rows=60)
    data = DATASETS.build("text_csv", seed=0, path=str(path), min_freq=1, max_length=4)
    prep = data.preprocessing
    assert isinstance(prep, Text) and prep.padded_length == data.x_train.shape[1] == 4
    texts = pd.read_csv(path)["text"].fillna("").astype(str)
    assert torch.equal(data.x_test, prep.apply(texts.iloc[data.info["test_rows"]]))
    assert prep.apply(["", "a b c d e f"]).shape == (2, 4)  # an empty text is one <unk>; long ones are cut


def test_records_rebuild_the_preprocessing(tmp_path):
    """``from_record`` of the data record written by training reads inputs as the fitted one,
    up to the record's 6 decimals."""
    table = write_table_csv(tmp_path / "t.csv", rows=60)
    for name, options, raw in (("moons", {}, np.array([[0.5, -0.25], [2.0, 1.0]])),
                               ("csv", {"path": str(table), "target": "label"}, pd.read_csv(table).iloc[:5]),
                               ("digits", {}, np.arange(128).reshape(2, 64) % 17)):
        data = DATASETS.build(name, seed=0, **options)
        record = {"dataset": name, "input_shape": list(data.input_shape), **data.info}
        rebuilt = from_record(record, {}, "run/best.pt")
        assert type(rebuilt) is type(data.preprocessing)
        assert rebuilt.apply(raw).numpy() == pytest.approx(data.preprocessing.apply(raw).numpy(), rel=1e-4, abs=1e-4)
        assert rebuilt.to_record() == data.preprocessing.to_record()


@pytest.mark.parametrize(("record", "message"), [
    ({"dataset": "moons", "input_shape": [2], "input_scaling": {"mean": [0.0], "std": [1.0]}},
     "checkpoint run/best.pt: its input_scaling does not hold 2 means"),
    ({"dataset": "csv", "features": ["a", "c"], "numeric_scaling": {"a": {"mean": 0.0, "std": 1.0}},
      "categorical": {"c": ["x", "y"]}, "encoded_features": ["a", "c_x", "c_z"]},
     "checkpoint run/best.pt: its encoded_features do not match"),
    ({"dataset": "digits", "input_shape": [1, 8, 8]},
     "checkpoint run/best.pt was written before dltrain recorded how data=digits scales its pixels"),
])
def test_a_record_that_cannot_be_used_is_one_line(record, message):
    with pytest.raises(UserError, match="^" + message) as err:
        from_record(record, {}, "run/best.pt")
    assert "\n" not in str(err.value)


def test_the_kind_is_the_datasets_registered_one():
    """A registered dataset's kind decides (data=chirp's inputs are not read from files, even
    from a record holding point scaling); a dataset not registered here is known by its record."""
    scaling = {"mean": [0.0], "std": [1.0]}
    assert kind_of({"dataset": "chirp", "input_scaling": scaling}) is None
    assert kind_of({"dataset": "sine", "input_scaling": scaling}) == "points"
    assert kind_of({"dataset": "digits"}) == "ink_counts"
    assert [kind_of({"dataset": "gone", key: {}}) for key in
            ("normalization", "pixel_scaling", "vocabulary", "encoded_features", "input_scaling")] == \
        ["images", "ink_counts", "text", "table", "points"]
    assert kind_of({"dataset": "gone"}) is None
    assert {cls.kind for cls in (Images, InkCounts, Points, Table, Text)} == \
        {DATASETS.facts(name).inputs for name in DATASETS.names()} - {None}


@pytest.fixture
def tiny_images(monkeypatch):
    """``data=tiny_images`` registered as a new image dataset would be: its builder with its
    kind of inputs, and a schema (data=mnist's, whose keys it takes)."""
    monkeypatch.setitem(GROUP_SCHEMAS["data"], "tiny_images", GROUP_SCHEMAS["data"]["mnist"])
    with DATASETS.registered("tiny_images", _tiny_images, inputs="images"):
        yield


def test_a_new_image_dataset_predicts_from_image_files(tiny_images, tmp_path, capsys):
    cfg = compose(["device=cpu", "data=mnist", "model=mlp", "trainer.fast_dev_run=true"])
    cfg.data.name = "tiny_images"
    run = tmp_path / "run"
    train(cfg, run_dir=run)
    folder = tmp_path / "pngs"
    folder.mkdir()
    x_test, _ = _two_classes(12, 2)
    for i, image in enumerate(x_test):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    out = tmp_path / "out.csv"
    predict_main([f"ckpt={run / 'checkpoints' / 'best.pt'}", f"input={folder}", f"output={out}", "device=cpu"])
    assert "wrote 12 predictions" in capsys.readouterr().out
    predicted = pd.read_csv(out, keep_default_na=False).set_index("input")
    expected = pd.read_csv(run / "predictions.csv")
    assert len(expected) == 12
    for row in expected.itertuples():
        got = predicted.loc[f"{row.row:03d}.png"]
        assert (got["prediction"], got["confidence"]) == (row.prediction, pytest.approx(row.confidence, abs=2e-5))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        predict_main(["--help"])
    assert "tiny_images" in capsys.readouterr().out


def test_a_table_without_numeric_columns_predicts(tmp_path, capsys):
    """Rows of text columns only get no out_of_range flag, and one prediction each."""
    path = write_csv(tmp_path / "t.csv", {"city": ["oslo", "rome", "lima"] * 20, "label": ["x", "y"] * 30})
    run = tmp_path / "run"
    train(compose(["device=cpu", "data=csv", f"data.path={path}", "data.target=label", "trainer.fast_dev_run=true"]),
          run_dir=run)
    out = tmp_path / "out.csv"
    predict_main([f"ckpt={run / 'checkpoints' / 'best.pt'}", f"input={path}", f"output={out}", "device=cpu"])
    predicted = pd.read_csv(out, keep_default_na=False)
    assert len(predicted) == 60 and set(predicted["input_warnings"]) == {""}

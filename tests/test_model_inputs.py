"""A model that declares the input its weights expect (``ModelFacts.input_normalization``: a
pretrained backbone's mean, std, size and channels) gets it from the one preprocessing object,
in training, ``dltrain-eval`` and ``dltrain-predict``; the latter two read it from the
checkpoint's record, never from the model again. Throwaway models registered here stand for
the backbones."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dltrain import compose, train
from dltrain.build import build_experiment, load_data
from dltrain.config.schemas import GROUP_SCHEMAS
from dltrain.data.preprocessing import Images
from dltrain.errors import ConfigError, UserError
from dltrain.inference.evaluate import evaluate_checkpoint
from dltrain.inference.predict import read_inputs
from dltrain.inference.restore import load_model
from dltrain.models import MODELS
from dltrain.models.registry import InputNormalization
from dltrain.training.checkpoint import load_checkpoint
from tests.files import mnist_arrays

CPU = torch.device("cpu")
#: What ``model=backbone`` declares: statistics of its own, 3 channels, 20x20 images.
GIVEN = InputNormalization(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), size=(20, 20), channels=3,
                           source="Fake_Weights.V1")
#: What ``model=fitted_backbone`` declares: 3 channels, statistics fitted on the training split.
FITTED = InputNormalization(channels=3)
#: The options each declaring model was asked about, in order.
ASKED: list[dict] = []


def linear(input_shape, num_outputs, **_):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_outputs))


def declares(inputs: InputNormalization):
    def input_normalization(options):
        ASKED.append(dict(options))
        return inputs

    return input_normalization


@pytest.fixture(scope="module", autouse=True)
def backbones():
    """``model=backbone`` and ``model=fitted_backbone``: a linear model, with the keys of model=mlp."""
    with pytest.MonkeyPatch.context() as patch, \
            MODELS.registered("backbone", linear, input_normalization=declares(GIVEN)), \
            MODELS.registered("fitted_backbone", linear, input_normalization=declares(FITTED)):
        for name in ("backbone", "fitted_backbone"):
            patch.setitem(GROUP_SCHEMAS["model"], name, GROUP_SCHEMAS["model"]["mlp"])
        yield


def config(model: str, overrides: list[str]):
    cfg = compose(["device=cpu", "model=mlp", "trainer.fast_dev_run=true", *overrides])
    cfg.model.name = model
    return cfg


def expected(raw: np.ndarray, inputs: InputNormalization = GIVEN) -> torch.Tensor:
    """Grayscale uint8 images ``(N, H, W)`` as the model's inputs: ``(x / 255 repeated to 3 - mean) / std``."""
    mean = torch.tensor(inputs.mean, dtype=torch.float32).reshape(1, 3, 1, 1)
    std = torch.tensor(inputs.std, dtype=torch.float32).reshape(1, 3, 1, 1)
    return ((torch.from_numpy(raw)[:, None].float() / 255).repeat(1, 3, 1, 1) - mean) / std  # (N, 3, H, W)


def image_numbers(x: torch.Tensor) -> list[int]:
    """Which of :func:`mnist_arrays`' training images the inputs ``x`` are: each holds its number in pixel (0, 0)."""
    return [round((float(v) * GIVEN.std[0] + GIVEN.mean[0]) * 255) for v in x[:, 0, 0, 0]]


def png_folder(folder: Path, images: np.ndarray) -> Path:
    """Grayscale uint8 images ``(N, H, W)`` as ``folder/NNN.png``."""
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return folder


def class_folders(root: Path, per_class: int = 5) -> Path:
    """Two class folders of grayscale 10x14 images."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(("dark", "light")):
        png_folder(root / name, rng.integers(100 * k, 100 * k + 150, (per_class, 10, 14), dtype=np.uint8))
    return root


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, data_files) -> Path:
    """A run of model=backbone on the grayscale MNIST files: its folder."""
    run = tmp_path_factory.mktemp("backbone") / "run"
    train(config("backbone", ["data=mnist", *data_files.overrides["mnist"]]), run_dir=run)
    return run


# --- training ------------------------------------------------------------------------------------------------


def test_grayscale_images_become_the_input_the_model_declares(data_files):
    exp = build_experiment(config("backbone", ["data=mnist", *data_files.overrides["mnist"], "model.hidden=[7]"]), CPU)
    raw = mnist_arrays(60, 20)["x_train"]  # (60, 28, 28)
    assert exp.data.input_shape == (3, 28, 28)  # the model's channels; in-memory images keep their size
    for x in (exp.data.x_train, exp.data.x_val):
        assert torch.equal(x, expected(raw[image_numbers(x)]))
    assert ASKED[-1]["name"] == "backbone" and ASKED[-1]["hidden"] == [7]  # asked with its options


def test_the_data_record_holds_the_declared_input(mnist_run, data_files):
    record = json.loads((mnist_run / "data.json").read_text())
    assert record["input_shape"] == [3, 28, 28]
    assert record["normalization"] == {"mean": list(GIVEN.mean), "std": list(GIVEN.std)}  # as declared, not rounded
    assert (record["channels"], record["color"], record["normalization_source"]) == (3, "grayscale", "Fake_Weights.V1")
    # What dltrain-predict judges an inverted image by stays the training images' brightness.
    plain = load_data(config("mlp", ["data=mnist", *data_files.overrides["mnist"]]), CPU)
    assert record["brightness"] == pytest.approx(plain.preprocessing.mean[0], abs=1e-6)


def test_statistics_left_to_fit_are_fitted_on_the_repeated_channels(data_files):
    overrides = ["data=mnist", *data_files.overrides["mnist"]]
    plain = load_data(config("mlp", overrides), CPU)
    fitted = load_data(config("fitted_backbone", overrides), CPU)
    assert fitted.preprocessing.mean == plain.preprocessing.mean * 3
    assert fitted.preprocessing.std == plain.preprocessing.std * 3
    assert torch.equal(fitted.x_train, plain.x_train.repeat(1, 3, 1, 1))
    assert fitted.info["normalization_source"] == "fitted" and fitted.info["channels"] == 3
    assert "brightness" not in fitted.info  # the normalisation is the training images' own
    # A model that declares nothing: the record is as it always was.
    assert not {"channels", "normalization_source", "brightness", "color"} & set(plain.info)


@pytest.mark.parametrize("data", ["digits", "moons", "chirp"])
def test_a_model_that_reads_images_is_refused_other_data_before_it_loads(data, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr("dltrain.build.load_data", no_data)
    with pytest.raises(ConfigError, match=rf"^model=backbone reads images, which data={data} does not give: use "
                                          r"data=cifar10, fashion_mnist, image_folder, mnist or svhn\.$"):
        build_experiment(config("backbone", [f"data={data}"]), CPU)


def test_a_model_that_reads_one_channel_is_refused_colour_images():
    colour = Images((0.5, 0.5, 0.5), (0.2, 0.2, 0.2), (8, 8), "rgb")
    with pytest.raises(ConfigError, match=r"^the model reads 1-channel images and the data's have 3: use grayscale "):
        colour.for_model(InputNormalization(mean=(0.5,), std=(0.2,), channels=1))


# --- image folders: the model's size ---------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "size", "shape"), [("backbone", [], (3, 20, 20)),
                                                      ("backbone", ["data.image_size=[12,12]"], (3, 12, 12)),
                                                      ("mlp", [], (1, 64, 64))])
def test_an_image_folder_takes_the_models_size_unless_one_is_set(tmp_path, model, size, shape):
    folder = class_folders(tmp_path / "images")
    data = load_data(config(model, ["data=image_folder", f"data.path={folder}", "data.color=grayscale",
                                    "data.num_workers=0", *size]), CPU)
    assert data.input_shape == shape and data.info["image_size"] == list(shape[1:])


def test_images_read_from_disk_get_the_same_input(tmp_path):
    folder = class_folders(tmp_path / "images")
    common = ["data=image_folder", f"data.path={folder}", "data.color=grayscale", "data.num_workers=0"]
    held, read = (load_data(config("backbone", [*common, f"data.in_memory={keep}"]), CPU) for keep in (True, False))
    assert not torch.is_tensor(read.x_train) and read.input_shape == (3, 20, 20)
    assert torch.equal(read.example(4), held.x_train[:4])


# --- dltrain-eval and dltrain-predict: from the record ---------------------------------------------------------


def test_predict_gives_an_image_the_input_training_gave_it(mnist_run, tmp_path):
    raw = mnist_arrays(60, 20)["x_train"][:12]
    folder = png_folder(tmp_path / "pngs", raw)
    asked = len(ASKED)
    restored = load_model(mnist_run / "checkpoints" / "best.pt", CPU)
    (ids, x), = read_inputs(restored, folder, batch_size=64)
    assert ids == [f"{i:03d}.png" for i in range(12)]
    assert torch.equal(x, expected(raw))
    assert len(ASKED) == asked  # from the record: the model was not asked again


def test_eval_rebuilds_the_data_from_the_record(mnist_run, capsys):
    asked = len(ASKED)
    result = evaluate_checkpoint(mnist_run / "checkpoints" / "best.pt", device="cpu")
    summary = json.loads((mnist_run / "summary.json").read_text())
    assert result["metrics"] == pytest.approx(summary["test"], rel=1e-6)
    assert len(ASKED) == asked


def test_eval_and_predict_of_an_image_folder_use_the_recorded_size(tmp_path, capsys):
    folder = class_folders(tmp_path / "images")
    run = tmp_path / "run"
    train(config("backbone", ["data=image_folder", f"data.path={folder}", "data.color=grayscale",
                              "data.num_workers=0"]), run_dir=run)
    ckpt = run / "checkpoints" / "best.pt"
    assert evaluate_checkpoint(ckpt, device="cpu")["num_examples"] > 0
    (ids, x), = read_inputs(load_model(ckpt, CPU), folder / "dark", batch_size=64)
    assert x.shape == (5, 3, 20, 20)


def test_a_resumed_run_reads_the_declared_input_from_its_checkpoint(mnist_run, data_files):
    recorded = load_checkpoint(mnist_run / "checkpoints" / "last.pt")["data"]
    cfg = config("backbone", ["data=mnist", *data_files.overrides["mnist"]])
    asked = len(ASKED)
    exp = build_experiment(cfg, CPU, recorded=recorded)
    assert len(ASKED) == asked  # its start weights' file may be gone: the record says what they expect
    assert torch.equal(exp.data.x_train, build_experiment(cfg, CPU).data.x_train)


@pytest.mark.parametrize("edit", [{"channels": 1}, {"normalization": {"mean": [0.5], "std": [0.2]}}])
def test_a_record_whose_channels_disagree_is_refused_in_one_line(mnist_run, tmp_path, edit):
    state = load_checkpoint(mnist_run / "checkpoints" / "best.pt")
    state["data"].update(edit)
    torch.save(state, tmp_path / "edited.pt")
    with pytest.raises(UserError, match=r"its data record's channels=\d are not those of its input shape and "
                                        r"normalization: the file was changed after training"):
        load_model(tmp_path / "edited.pt", CPU)

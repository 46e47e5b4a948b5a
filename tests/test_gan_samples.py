"""A GAN's samples (``samples/epoch-NNN.png``), its classifier-based sample score (``task.scorer``),
early stopping and ``best.pt`` by that score, and that neither changes the training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dltrain import compose, train
from dltrain.errors import ConfigError
from dltrain.report.gan_samples import epoch_file, grid, to_pixels, write_grid
from dltrain.tasks.sample_score import load_scorer, score_probabilities

CPU = torch.device("cpu")


# --- the score ----------------------------------------------------------------------------------------------------

def test_the_score_is_the_hand_computed_one() -> None:
    """Four images over two classes, each number computed by hand from its formula."""
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [1.0, 0.0]])
    got = score_probabilities(probs, confidence=0.9)
    # max probability >= 0.9: the first (0.9) and the last (1.0) of four
    assert got["sample_confident"] == pytest.approx(0.5)
    # predicted classes 0, 1, 0, 0: shares 3/4 and 1/4; their entropy over log 2
    assert got["sample_classes"] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2))
    # p(y) = (0.675, 0.325); exp of the mean KL(p(y|x) || p(y)), 0 log 0 = 0
    kl = [0.9 * math.log(0.9 / 0.675) + 0.1 * math.log(0.1 / 0.325),
          0.2 * math.log(0.2 / 0.675) + 0.8 * math.log(0.8 / 0.325),
          0.6 * math.log(0.6 / 0.675) + 0.4 * math.log(0.4 / 0.325),
          1.0 * math.log(1.0 / 0.675)]
    assert got["sample_score"] == pytest.approx(math.exp(sum(kl) / 4))
    assert got["sample_score"] == pytest.approx(1.2917, abs=1e-4)  # the same: KLs 0.1410, 0.4774, 0.0124, 0.3930


def test_the_score_spans_one_to_the_number_of_classes() -> None:
    """Every image confidently one class, every class equally often: K (here 4), spread 1;
    every image the same distribution: 1, spread 0."""
    best = score_probabilities(torch.eye(4).repeat(3, 1), confidence=0.9)
    assert best == pytest.approx({"sample_score": 4.0, "sample_confident": 1.0, "sample_classes": 1.0})
    collapsed = score_probabilities(torch.tensor([[0.7, 0.1, 0.1, 0.1]]).repeat(5, 1), confidence=0.9)
    assert collapsed == pytest.approx({"sample_score": 1.0, "sample_confident": 0.0, "sample_classes": 0.0})


# --- the grid -----------------------------------------------------------------------------------------------------

def test_the_grid_is_eight_images_a_row_with_two_pixels_between(tmp_path: Path) -> None:
    generated = torch.full((10, 1, 8, 6), -1.0)
    generated[9] = 1.0  # the last image white, the others black
    path = write_grid(epoch_file(tmp_path, 3), to_pixels(generated))
    assert path == tmp_path / "samples" / "epoch-003.png"
    image = Image.open(path)
    assert image.mode == "L" and image.size == (8 * (6 + 2) + 2, 2 * (8 + 2) + 2)  # 8 across, 2 rows
    pixels = torch.from_numpy(np.asarray(image).copy())  # (22, 66)
    assert pixels[2:10, 2:8].eq(0).all() and pixels[12:20, 12:18].eq(255).all()  # image 1 black, image 10 white
    assert pixels[0:2].eq(255).all() and pixels[10:12].eq(255).all()  # the padding white
    assert grid(to_pixels(torch.zeros(3, 3, 4, 4))).shape == (4 + 4, 3 * 6 + 2, 3)  # colour: one row of three


# --- the scorer ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN trained by dltrain on data=digits (8x8 grayscale, 10 classes): its best.pt."""
    run_dir = tmp_path_factory.mktemp("scorer") / "run"
    train(compose(["data=digits", "model=cnn", "trainer.max_epochs=2", "trainer.batch_size=64", "device=cpu"]),
          run_dir=run_dir)
    return run_dir / "checkpoints" / "best.pt"


def test_the_scorer_reads_generated_images_as_its_training_read_the_real_ones(digits_classifier: Path) -> None:
    """Real test images as a generator would make them (in [-1, 1]) get the probabilities the
    classifier gives the run's own preprocessed inputs: the mapping to the scorer's inputs is its
    recorded preprocessing."""
    from dltrain.build import load_data
    from dltrain.inference.restore import load_model

    restored = load_model(digits_classifier, "cpu")
    data = load_data(restored.cfg, CPU)
    x = data.x_test[:50]
    generated = data.preprocessing.pixels(x) * 2 - 1  # ink in [0, 1] -> Tanh's range
    scorer = load_scorer(digits_classifier, (1, 8, 8), 10, device=CPU)
    with torch.no_grad():
        expected = torch.softmax(restored.model(x), dim=1)
    torch.testing.assert_close(scorer.probabilities(generated), expected)


@pytest.mark.parametrize(("shape", "classes", "words"), [
    ((1, 16, 16), 10, "reads 8x8 grayscale images and the GAN makes 16x16 grayscale ones"),
    ((3, 8, 8), 10, "reads 8x8 grayscale images and the GAN makes 8x8 3-channel ones"),
    ((1, 8, 8), 3, "tells 10 classes apart and the GAN's data has 3"),
])
def test_a_scorer_of_other_images_or_classes_is_one_line(digits_classifier: Path, shape: tuple[int, ...],
                                                         classes: int, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_scorer(digits_classifier, shape, classes, device=CPU)
    message = str(err.value)
    assert message.startswith(f"task.scorer={digits_classifier} {words}") and "\n" not in message


def test_a_scorer_that_is_no_image_classifier_or_no_checkpoint_is_one_line(tmp_path: Path) -> None:
    train(compose(["data=xor", "model.hidden=[4]", "trainer.fast_dev_run=true", "device=cpu"]), run_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match=r"^task.scorer=\S+ is not a classifier of images \(data=xor"):
        load_scorer(tmp_path / "x" / "checkpoints" / "last.pt", (1, 8, 8), 10, device=CPU)
    with pytest.raises(ConfigError, match=r"^task.scorer=\S+missing.pt: ") as err:
        load_scorer(tmp_path / "missing.pt", (1, 8, 8), 10, device=CPU)
    assert "\n" not in str(err.value)

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
    # a few batches: the tests read how it scores, not how well (any classifier's score lies in [1, 10])
    train(compose(["data=digits", "model=cnn", "trainer.max_epochs=1", "trainer.batch_size=64",
                   "trainer.limit_train_batches=3", "trainer.diagnostics=false", "device=cpu"]), run_dir=run_dir)
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


def test_a_scorer_that_is_no_image_classifier_custom_code_or_no_checkpoint_is_one_line(tmp_path: Path) -> None:
    train(compose(["data=xor", "model.hidden=[4]", "trainer.fast_dev_run=true", "device=cpu"]), run_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match=r"^task.scorer=\S+ is not a classifier of images \(data=xor"):
        load_scorer(tmp_path / "x" / "checkpoints" / "last.pt", (1, 8, 8), 10, device=CPU)
    train(compose(["model=custom", "model._target_=tests.nets.TinyNet", "+model.width=8", "trainer.fast_dev_run=true",
                   "device=cpu"]), run_dir=tmp_path / "custom")
    with pytest.raises(ConfigError, match=r"^task.scorer=\S+ is a model=custom classifier, whose code dltrain never "):
        load_scorer(tmp_path / "custom" / "checkpoints" / "last.pt", (1, 8, 8), 10, device=CPU)
    with pytest.raises(ConfigError, match=r"^task.scorer=\S+missing.pt: ") as err:
        load_scorer(tmp_path / "missing.pt", (1, 8, 8), 10, device=CPU)
    assert "\n" not in str(err.value)


# --- a GAN run ----------------------------------------------------------------------------------------------------

#: A small DCGAN on data=digits (8x8): a few seconds an epoch with its score.
GAN = ["task=gan", "data=digits", "device=cpu", "trainer.batch_size=32", "task.num_samples=10",
       "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.diagnostics=false",
       "task.score_samples=200", "model.latent_size=16", "model.generator.channels=[16,8]",
       "model.discriminator.channels=[8,16]"]


def gan_run(run_dir: Path, *overrides: str) -> dict:
    return train(compose([*GAN, *overrides]), run_dir=run_dir)


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    import csv

    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(f)]


def checkpoint(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_each_epoch_writes_its_grid_of_the_fixed_batch(tmp_path: Path) -> None:
    summary = gan_run(tmp_path / "run", "trainer.max_epochs=2")
    shown = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert shown == ["epoch-001.png", "epoch-002.png"]
    for name in shown:  # task.num_samples=10 images of 8x8: a row of 8 and a row of 2
        assert Image.open(tmp_path / "run" / "samples" / name).size == (8 * 10 + 2, 2 * 10 + 2)
    first, second = (np.asarray(Image.open(tmp_path / "run" / "samples" / n)) for n in shown)
    assert not np.array_equal(first, second)  # the generator learned between them
    # No scorer: nothing to stop on, no best.pt, the last epoch tested, said once
    assert summary["monitor"] is None and summary["test_weights"] == "last epoch 2"
    assert not (tmp_path / "run" / "checkpoints" / "best.pt").exists()
    assert [w for w in summary["warnings"] if "without task.scorer" in w] == [
        "task=gan without task.scorer: no sample score to follow, so no early stopping and no best.pt; the last "
        "epoch's weights are tested (give task.scorer=<a dltrain classifier's best.pt trained on the real images> "
        "to follow the score)"]
    assert "val_sample_score" not in csv_rows(tmp_path / "run")[0]


def test_early_stopping_and_best_pt_follow_the_sample_score(tmp_path: Path, digits_classifier: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake score sequence through the epoch-end hook: best at epoch 2, patience 2 stops after
    epoch 4, best.pt holds epoch 2 and the test scores its weights."""
    from dltrain.tasks.sample_watch import SampleWatch

    values = iter([1.0, 3.0, 2.0, 2.5, 1.5, 9.9])
    monkeypatch.setattr(SampleWatch, "score", lambda self, model: {
        "sample_score": next(values), "sample_confident": 0.5, "sample_classes": 0.25})
    summary = gan_run(tmp_path / "run", f"task.scorer={digits_classifier}", "trainer.max_epochs=10",
                      "trainer.early_stopping.patience=2")
    assert [row["val_sample_score"] for row in csv_rows(tmp_path / "run")] == ["1", "3", "2", "2.5"]
    assert summary["monitor"] == "val_sample_score" and summary["mode"] == "max"
    assert (summary["status"], summary["best_epoch"], summary["best_value"]) == ("early_stopped", 2, 3.0)
    assert summary["stopped_epoch"] == 4 and summary["test_weights"] == "best epoch 2"
    assert checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["epoch"] == 2
    assert summary["test"]["sample_score"] == 1.5  # the fifth call: the tested (best) weights after training


def test_a_scorer_that_is_not_there_is_one_line_from_the_command_line(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    proc = run_cli(["task=gan", "task.scorer=missing.pt", "hydra.run.dir=run"], cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("dltrain: error: task.scorer=missing.pt: checkpoint missing.pt does not exist: "
                                   "check the path.")


def test_a_sample_monitor_without_a_scorer_is_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        gan_run(Path("never"), "trainer.early_stopping.monitor=val_sample_classes")
    assert str(err.value) == ("trainer.early_stopping.monitor=val_sample_classes needs task.scorer (a dltrain "
                              "classifier of the real images scores the samples): give task.scorer=<its "
                              "checkpoints/best.pt>, or monitor another metric.")


def test_samples_and_scores_change_nothing_in_training(tmp_path: Path, digits_classifier: Path) -> None:
    """The same weights, latent batch, optimizers and random state with and without a scorer, bit for bit."""
    gan_run(tmp_path / "plain", "trainer.max_epochs=2")
    gan_run(tmp_path / "scored", "trainer.max_epochs=2", f"task.scorer={digits_classifier}")
    plain, scored = (checkpoint(tmp_path / run / "checkpoints" / "last.pt") for run in ("plain", "scored"))
    assert same_tensors(plain["model"], scored["model"])
    assert torch.equal(plain["task"]["latents"], scored["task"]["latents"])
    assert plain["optimizer"]["state"].keys() == scored["optimizer"]["state"].keys()
    assert all(same_tensors(plain["optimizer"]["state"][k], scored["optimizer"]["state"][k])
               for k in plain["optimizer"]["state"])
    assert torch.equal(plain["rng"]["torch"], scored["rng"]["torch"])
    trained = [{k: v for k, v in row.items() if not k.startswith("val_sample")}
               for row in csv_rows(tmp_path / "scored")]
    assert trained == csv_rows(tmp_path / "plain")
    scores = [float(row["val_sample_score"]) for row in csv_rows(tmp_path / "scored")]
    assert all(1 <= s <= 10 for s in scores)  # between 1 and the number of classes


def test_dltrain_eval_scores_a_gan_checkpoint_with_its_scorer(tmp_path: Path, digits_classifier: Path) -> None:
    """The tested weights (best.pt) scored again by dltrain-eval: the run's own numbers."""
    from dltrain.inference.evaluate import evaluate_checkpoint

    summary = gan_run(tmp_path / "run", "trainer.max_epochs=1", f"task.scorer={digits_classifier}")
    metrics = evaluate_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt", device="cpu")["metrics"]
    assert {k: metrics[k] for k in ("sample_score", "sample_confident", "sample_classes")} == {
        k: summary["test"][k] for k in ("sample_score", "sample_confident", "sample_classes")}


def test_a_scored_run_resumed_equals_it_straight(tmp_path: Path, digits_classifier: Path) -> None:
    scorer = f"task.scorer={digits_classifier}"
    straight = gan_run(tmp_path / "straight", "trainer.max_epochs=2", scorer)
    gan_run(tmp_path / "first", "trainer.max_epochs=1", scorer)
    resumed = gan_run(tmp_path / "resumed", "trainer.max_epochs=2", scorer,
                      f"resume={tmp_path / 'first' / 'checkpoints' / 'last.pt'}")
    assert csv_rows(tmp_path / "resumed") == csv_rows(tmp_path / "straight")
    for name in ("last.pt", "best.pt"):
        assert same_tensors(checkpoint(tmp_path / "resumed" / "checkpoints" / name)["model"],
                            checkpoint(tmp_path / "straight" / "checkpoints" / name)["model"])
    assert resumed["test"] == straight["test"] and resumed["best_epoch"] == straight["best_epoch"]
    for name in ("epoch-001.png", "epoch-002.png"):  # the first carried over from the run it continues
        assert (tmp_path / "resumed" / "samples" / name).read_bytes() == \
            (tmp_path / "straight" / "samples" / name).read_bytes()

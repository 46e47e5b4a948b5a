"""samples.png: the first training images after augmentation, drawn as a run starts, changing nothing in the run."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from dltrain import compose, train
from dltrain.report import train_samples
from dltrain.report.train_samples import SAMPLES_PNG, augmented_samples, sample_positions, write_samples

#: Rotation and shift draw random numbers for every batch: drawing them for the picture from the
#: run's own streams would move every later draw, and the run with them.
AUGMENTED = ["trainer.fast_dev_run=true", "device=cpu", "regularization.augment=[rotate,shift,brightness]"]


def state(run_dir: Path) -> dict[str, Any]:
    """What a run computed: last.pt's weights, optimizer, random states and data order, and metrics.csv
    without its timings."""
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(f)]
    return {"metrics": rows, **{k: last[k] for k in ("model", "optimizer", "rng", "data_order", "global_step")}}


def assert_same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.pictures
def test_a_digits_run_draws_samples_and_drawing_them_changes_nothing_in_the_run(tmp_path, monkeypatch):
    train(compose(AUGMENTED), run_dir=tmp_path / "drawn")
    with Image.open(tmp_path / "drawn" / SAMPLES_PNG) as img:  # 4 rows of 8 images
        assert img.format == "PNG" and img.width > 600 and img.height > 300
    monkeypatch.setattr("dltrain.training.run.write_samples", lambda *args: None)
    train(compose(AUGMENTED), run_dir=tmp_path / "not_drawn")
    assert not (tmp_path / "not_drawn" / SAMPLES_PNG).exists()
    assert_same(state(tmp_path / "drawn"), state(tmp_path / "not_drawn"))


@pytest.mark.pictures
def test_a_run_on_points_draws_no_samples(tmp_path):
    train(compose(["trainer.fast_dev_run=true", "device=cpu", "data=moons", "data.samples=200"]),
          run_dir=tmp_path / "run")
    assert (tmp_path / "run" / "summary.json").exists() and not (tmp_path / "run" / SAMPLES_PNG).exists()


def test_samples_come_from_the_seed_and_leave_the_random_state_alone(tmp_path):
    from dltrain.build import build_experiment

    cfg = compose(AUGMENTED)
    exp = build_experiment(cfg, torch.device("cpu"))
    before = torch.get_rng_state()
    x, captions = augmented_samples(exp.data, exp.augment, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    again, _ = augmented_samples(exp.data, exp.augment, seed=3)
    other, _ = augmented_samples(exp.data, exp.augment, seed=4)
    plain, _ = augmented_samples(exp.data, None, seed=3)
    assert torch.equal(x, again) and not torch.equal(x, other)
    positions = sample_positions(len(exp.data.y_train), 32, seed=3)
    assert torch.equal(plain, exp.data.x_train[positions]) and not torch.equal(x, plain)  # the augmentation shows
    assert captions == [exp.data.class_names[int(y)] for y in exp.data.y_train[positions]]


def test_samples_are_a_seeded_choice_across_the_training_split():
    positions = sample_positions(1000, 32, seed=0)
    assert len(set(positions.tolist())) == 32 and positions.tolist() == sorted(positions.tolist())
    assert positions.max() > 500  # not the first 32: data stored class by class shows its classes
    assert torch.equal(sample_positions(1000, 32, seed=0), positions)
    assert not torch.equal(sample_positions(1000, 32, seed=1), positions)
    assert sample_positions(5, 32, seed=0).tolist() == [0, 1, 2, 3, 4]  # a small split: all of it


def test_a_picture_already_there_is_kept(tmp_path):
    """A run continued in place keeps the picture it started with."""
    from dltrain.build import build_experiment

    exp = build_experiment(compose(AUGMENTED), torch.device("cpu"))
    (tmp_path / SAMPLES_PNG).write_bytes(b"earlier")
    assert write_samples(tmp_path, exp.data, exp.augment, seed=0) is None
    assert (tmp_path / SAMPLES_PNG).read_bytes() == b"earlier"


@pytest.mark.pictures
def test_a_failure_to_draw_is_one_warning_and_the_run_goes_on(tmp_path, monkeypatch, caplog):
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no canvas\nsecond line")

    monkeypatch.setattr("dltrain.report.report_plots.plot_image_grid", broken)
    with caplog.at_level(logging.WARNING, logger="dltrain"):
        summary = train(compose(["trainer.fast_dev_run=true", "device=cpu"]), run_dir=tmp_path / "run")
    assert summary["status"] == "completed" and not (tmp_path / "run" / SAMPLES_PNG).exists()
    warnings = [r.getMessage() for r in caplog.records if SAMPLES_PNG in r.getMessage()]
    assert warnings == [f"warning: could not draw {SAMPLES_PNG}: no canvas"]


@pytest.mark.pictures
@pytest.mark.parametrize("in_memory", ["true", "false"])
def test_images_read_from_disk_are_drawn_without_the_run_s_loader(tmp_path, data_overrides, monkeypatch, in_memory):
    """data=image_folder read each epoch: the examples come from the dataset, item by item."""
    drawn: list[list[str]] = []
    plot = train_samples.write_samples

    def spy(run_dir: Path, data: Any, augment: Any, seed: int) -> Path | None:
        drawn.append(augmented_samples(data, augment, seed)[1])
        return plot(run_dir, data, augment, seed)

    monkeypatch.setattr("dltrain.training.run.write_samples", spy)
    overrides = ["data=image_folder", *data_overrides("image_folder"), f"data.in_memory={in_memory}",
                 "data.image_size=[16,16]", "trainer.fast_dev_run=true", "device=cpu", "model=cnn"]
    train(compose(overrides), run_dir=tmp_path / "run")
    assert (tmp_path / "run" / SAMPLES_PNG).exists()
    assert drawn and set(drawn[0]) == {"cat", "dog", "fox"}  # the files are stored class by class

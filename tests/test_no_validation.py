"""``data.val_fraction=0``: every example outside the test split trains, no ``val_*`` metric is
logged, early stopping is off unless it monitors a training metric, and the run says so.

Runs train a small MLP in-process (on digits, or on xor where epochs matter) for a second or two each.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from dltrain import train
from dltrain.build import load_data
from dltrain.data import DATASETS
from dltrain.data.batches import TensorBatches
from dltrain.errors import ConfigError
from dltrain.inference.evaluate import main as eval_main
from dltrain.training.callbacks import EarlyStopping
from dltrain.training.checks import NO_VALIDATION
from dltrain.training.distributed import Environment, Ranks
from dltrain.training.trainer import Trainer
from tests.conftest import tool_error
from tests.files import write_image_folder

NO_VAL = ["data.val_fraction=0", "model.hidden=[16]"]
#: Weights that never change (lr 0): the training loss stays put, so a train_loss monitor plateaus.
FROZEN = ["optim=sgd", "optim.lr=0"]
#: Dropout and a cosine schedule: a resume that lost the RNG, the data order or the schedule's
#: position would not repeat the uninterrupted run.
EXACT = [*NO_VAL, "data=xor", "regularization.dropout=0.3", "scheduler=cosine", "scheduler.T_max=4"]
#: The data options dltrain generates; every other registered option reads files (the data_files fixture's).
GENERATED = ["digits", "xor", "sine", "moons", "spirals", "chirp"]
#: Keys the fixture's table needs besides its path.
FILE_KEYS = {"csv": ["data.target=Class", "data.missing=mean"]}


def header(run_dir: Path) -> list[str]:
    with (run_dir / "metrics.csv").open() as f:
        return next(csv.reader(f))


def rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(f)]


def model_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def unscaled(y: torch.Tensor, data: Any) -> torch.Tensor:
    """Regression targets in their own units (each split standardises them with its training split's statistics)."""
    mean, std = data.target_scale or (0.0, 1.0)
    return y.double() * std + mean


def splits(compose, overrides: list[str]) -> tuple[Any, Any]:
    """The data of ``overrides`` as held out by default, and with ``data.val_fraction=0``."""
    return (load_data(compose(overrides), torch.device("cpu")),
            load_data(compose([*overrides, "data.val_fraction=0"]), torch.device("cpu")))


@pytest.mark.parametrize("option", GENERATED)
def test_training_split_takes_the_former_validation_examples(compose, option):
    held, every = splits(compose, [f"data={option}"])
    assert held.sizes["num_val"] > 0 and every.sizes["num_val"] == 0 and not every.has_validation
    assert every.sizes["num_train"] == held.sizes["num_train"] + held.sizes["num_val"]
    assert torch.allclose(unscaled(every.y_test, every), unscaled(held.y_test, held))  # the same test examples
    assert every.x_val.shape == (0, *every.input_shape)


@pytest.mark.parametrize("option", [name for name in DATASETS.names() if name not in GENERATED])
def test_datasets_read_from_files_train_on_every_example(compose, data_overrides, option):
    held, every = splits(compose, [f"data={option}", *FILE_KEYS.get(option, []), *data_overrides(option)])
    assert every.sizes["num_val"] == 0 and every.sizes["num_test"] == held.sizes["num_test"]
    assert every.sizes["num_train"] == held.sizes["num_train"] + held.sizes["num_val"]


def test_digits_scaling_comes_from_the_larger_training_split(compose):
    held, every = splits(compose, ["data=digits"])
    # Standardised with the training split's own statistics: each pixel's mean over it is 0.
    assert every.x_train.mean(dim=0).abs().max() < 1e-5
    assert every.info["pixel_scaling"] != held.info["pixel_scaling"]


def test_image_folder_with_a_val_folder_keeps_it(tmp_path, compose):
    write_image_folder(tmp_path / "train", per_class=6, corrupt=False, strays=False)
    write_image_folder(tmp_path / "val", per_class=2, seed=1, corrupt=False, strays=False)
    data = load_data(compose(["data=image_folder", f"data.path={tmp_path}", "data.val_fraction=0"]),
                     torch.device("cpu"))
    assert data.has_validation and data.sizes["num_val"] == 2 * len(data.class_names)


@pytest.mark.pictures
def test_run_without_validation_trains_every_epoch_and_says_so(compose, tmp_path, capsys):
    # Frozen weights with patience 0 would stop at epoch 2 on val_loss; without validation nothing stops.
    summary = train(compose([*NO_VAL, *FROZEN, "trainer.max_epochs=3", "trainer.early_stopping.patience=0"]),
                    run_dir=tmp_path)
    assert summary["status"] == "completed" and summary["epochs_run"] == 3
    assert summary["data"]["num_val"] == 0 and summary["data"]["num_train"] == 1437
    assert summary["validation"] == "none (data.val_fraction=0)"
    assert summary["monitor"] is None and summary["best_epoch"] is None and summary["best_value"] is None
    assert summary["test_weights"] == "last epoch 3" and summary["test"]["accuracy"] >= 0
    assert NO_VALIDATION in summary["warnings"]
    assert json.loads((tmp_path / "summary.json").read_text())["validation"] == summary["validation"]
    columns = header(tmp_path)
    assert "train_loss" in columns and not [c for c in columns if c.startswith("val_")]
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt"]  # no best epoch, no best.pt
    assert "none (data.val_fraction=0); tested: last epoch 3" in capsys.readouterr().out


def test_train_loss_monitor_stops_on_the_training_loss(compose, tmp_path):
    summary = train(compose([*NO_VAL, *FROZEN, "data=xor", "trainer.max_epochs=5",
                             "trainer.early_stopping.monitor=train_loss",
                             "trainer.early_stopping.patience=2", "trainer.early_stopping.min_delta=1e-4"]),
                    run_dir=tmp_path)
    # Epoch 1 is the best; epochs 2 and 3 do not improve on it: patience 2 stops after epoch 3.
    assert summary["status"] == "early_stopped" and summary["stopped_epoch"] == 3
    assert summary["monitor"] == "train_loss" and summary["best_epoch"] == 1
    assert summary["stop_reason"] == "no improvement in train_loss for 2 epochs (patience 2)"
    assert summary["test_weights"] == "best epoch 1" and NO_VALIDATION not in summary["warnings"]
    assert torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize(("override", "message"), [
    ("trainer.early_stopping.monitor=val_accuracy",
     "trainer.early_stopping.monitor=val_accuracy needs a validation split, but data.val_fraction=0 leaves none: "
     "set trainer.early_stopping.monitor=train_accuracy"),
    ("scheduler=plateau",
     "scheduler.monitor=val_loss needs a validation split, but data.val_fraction=0 leaves none: "
     "set scheduler.monitor=train_loss"),
])
def test_validation_monitor_is_refused_in_one_line(compose, tmp_path, override, message):
    with pytest.raises(ConfigError) as err:
        train(compose([*NO_VAL, override, "trainer.max_epochs=1"]), run_dir=tmp_path / "run")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_plateau_schedule_follows_a_training_monitor(compose, tmp_path):
    summary = train(compose([*NO_VAL, "scheduler=plateau", "scheduler.monitor=train_loss", "trainer.max_epochs=2"]),
                    run_dir=tmp_path)
    assert summary["status"] == "completed" and summary["epochs_run"] == 2


@pytest.mark.pictures
def test_resume_equals_the_uninterrupted_run(compose, tmp_path):
    straight = train(compose([*EXACT, "trainer.max_epochs=4"]), run_dir=tmp_path / "straight")
    train(compose([*EXACT, "trainer.max_epochs=2"]), run_dir=tmp_path / "first")
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    resumed = train(compose([*EXACT, "trainer.max_epochs=4", f"resume={last}"]), run_dir=tmp_path / "resumed")
    assert len(rows(tmp_path / "straight")) == 4
    assert rows(tmp_path / "resumed") == rows(tmp_path / "straight")
    a, b = (model_weights(tmp_path / run / "checkpoints" / "last.pt") for run in ("resumed", "straight"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test"] == straight["test"] and resumed["validation"] == "none (data.val_fraction=0)"
    done = tmp_path / "resumed" / "checkpoints" / "last.pt"
    again = train(compose([*EXACT, "trainer.max_epochs=4", f"resume={done}"]), run_dir=tmp_path / "again")
    assert again["status"] == "already_finished" and again["monitor"] is None


def test_eval_of_the_validation_split_is_refused(compose, tmp_path, capsys):
    train(compose([*NO_VAL, "trainer.max_epochs=1"]), run_dir=tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    err = tool_error(capsys, eval_main, "dltrain-eval", [f"ckpt={last}", "split=val", "device=cpu"])
    assert "its run had no validation split (data.val_fraction=0), so split=val has nothing to evaluate: " \
           "use split=test" in err
    eval_main([f"ckpt={last}", "split=test", "device=cpu"])
    assert json.loads((last.parent / "eval.json").read_text())["num_examples"] == 360


class RecordingRanks(Ranks):
    """Rank 0 of 2, alone in this process: each collective is recorded and returns what one
    rank would, so the sequence every rank must call in step can be read."""

    def __init__(self) -> None:
        super().__init__(Environment(0, 2, 0, 2))
        self.calls: list[str] = []

    def broadcast(self, obj: Any) -> Any:
        self.calls.append("broadcast")
        return obj

    def all_gather(self, obj: Any) -> list[Any]:
        self.calls.append("all_gather")
        return [obj]

    def vote(self, *values: int) -> list[int]:
        self.calls.append("vote")
        return list(values)

    def sync_buffers(self, model: nn.Module) -> None:
        self.calls.append("sync_buffers")


def _collectives(val_batches: TensorBatches | None) -> list[str]:
    torch.manual_seed(0)
    x, y = torch.randn(24, 4), torch.randint(0, 3, (24,))
    model = nn.Linear(4, 3)
    ranks = RecordingRanks()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), "multiclass",
                      max_epochs=2, stopper=EarlyStopping("train_loss"), ranks=ranks)
    trainer.fit(TensorBatches(x, y, 8, shuffle=True, generator=torch.Generator().manual_seed(0)), val_batches)
    assert all(not k.startswith("val_") for k in trainer.history[-1]) is (val_batches is None)
    return ranks.calls


def test_no_rank_waits_on_a_validation_collective():
    """Without a validation split no rank validates: each epoch's collectives are its training
    steps' votes and the epoch's reductions, the same on every rank whatever its data shard."""
    epoch = ["vote"] * 3 + ["all_gather", "broadcast"]
    assert _collectives(None) == epoch * 2
    validated = _collectives(TensorBatches(torch.randn(6, 4), torch.randint(0, 3, (6,)), 8))
    assert "sync_buffers" in validated and len(validated) > len(epoch) * 2  # what is skipped

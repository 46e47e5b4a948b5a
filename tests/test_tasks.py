"""The ``task=`` group: supervised by default and unchanged, a task's model picked by its preset
(a command-line ``model=`` still wins), a model and a task that cannot go together refused in one
line, and the hooks a task has (its step, metrics, state, epoch row, files) called by the loop."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import torch

from dltrain import train
from dltrain.errors import ConfigError
from dltrain.models import MODELS
from dltrain.tasks import TASKS, Task
from dltrain.tasks.base import BadTaskState
from dltrain.training.checkpoint import load_checkpoint
from dltrain.training.step import OptimizerStep

QUICK = ["trainer.fast_dev_run=true", "device=cpu"]


def test_supervised_is_the_default_and_its_run_holds_no_task_state(compose, tmp_path):
    cfg = compose(QUICK)
    assert cfg.task.name == "supervised" and cfg.model.name == "mlp"
    train(cfg, run_dir=tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["task"] is None  # nothing besides what a supervised run always saved
    assert (tmp_path / "run" / "predictions.csv").is_file()


def test_a_task_picks_its_model_and_a_command_line_model_still_wins(compose):
    assert compose(["task=autoencoder"]).model.name == "autoencoder"
    assert compose(["model=cnn", "task=autoencoder"], check=False).model.name == "cnn"  # order does not matter
    assert compose(["task=autoencoder", "model=mlp"], check=False).model.name == "mlp"


@pytest.mark.parametrize(("overrides", "words"), [
    (["task=autoencoder", "model=mlp"], ["model=mlp", "task=autoencoder", "use model=autoencoder"]),
    (["model=autoencoder"], ["model=autoencoder", "task=supervised", "use task=autoencoder"]),
])
def test_a_model_and_a_task_that_cannot_go_together_are_one_line(compose, tmp_path, overrides, words):
    with pytest.raises(ConfigError) as err:
        train(compose([*QUICK, *overrides]), run_dir=tmp_path / "run")
    assert "\n" not in str(err.value) and all(w in str(err.value) for w in words)


class Counting(Task):
    """A task that watches the loop: its step counts batches, it adds a column to each epoch's
    row, keeps a counter in checkpoints and reports a test metric."""

    name = "counting"

    def __init__(self) -> None:
        super().__init__()
        self.steps = torch.zeros((), dtype=torch.int64)
        self.loaded: Any = "never"

    def make_step(self, model, optimizer, loss_fn, options, profiler=None) -> OptimizerStep:
        task = self

        class Step(OptimizerStep):
            def __call__(self, x, y):
                task.steps += 1
                return super().__call__(x, y)

        return Step(model, optimizer, loss_fn, options, profiler)

    def end_epoch(self, trainer, row) -> None:
        row["steps_so_far"] = float(self.steps)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps.clone()}

    def load_state_dict(self, state) -> None:
        if state is not None and not torch.is_tensor(state.get("steps")):
            raise BadTaskState("task entry holds no step count")
        self.loaded = state

    def after_test(self, trainer, data, batches, outputs) -> dict[str, float]:
        return {"outputs_seen": float(sum(len(o) for o in outputs))}


@pytest.fixture
def counting(monkeypatch):
    """``task=counting`` for one test: the supervised schema, this registered task."""
    from dltrain.config.schemas import GROUP_SCHEMAS, SupervisedTaskConfig

    monkeypatch.setitem(GROUP_SCHEMAS["task"], "counting", SupervisedTaskConfig)
    mlp = MODELS.facts("mlp")  # model=mlp serves it
    monkeypatch.setitem(MODELS._facts, "mlp", dataclasses.replace(mlp, tasks=(*mlp.tasks, "counting")))
    with TASKS.registered("counting", Counting):
        yield


def test_the_loop_calls_a_task_s_step_epoch_row_state_and_test_hooks(compose, tmp_path, counting):
    cfg = compose(["trainer.max_epochs=2", "trainer.limit_train_batches=3", "device=cpu"])
    cfg.task.name = "counting"
    summary = train(cfg, run_dir=tmp_path / "run")
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",").count("steps_so_far") == 1
    assert [float(r.split(",")[rows[0].split(",").index("steps_so_far")]) for r in rows[1:]] == [3.0, 6.0]
    assert summary["test"]["outputs_seen"] == summary["data"]["num_test"]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["task"]["steps"] == 6


def test_a_damaged_task_entry_is_one_line_naming_the_checkpoint(compose, tmp_path, counting):
    cfg = compose(["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.diagnostics=false", "device=cpu"])
    cfg.task.name = "counting"
    train(cfg, run_dir=tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["task"] = {"steps": "many"}
    torch.save(state, last)
    resumed = compose(["trainer.max_epochs=2", f"resume={last}", "device=cpu"])
    with pytest.raises(ConfigError) as err:
        train(resumed, run_dir=tmp_path / "resumed")
    assert str(err.value).startswith(f"resume={last}: the checkpoint's task entry holds no step count")
    assert "\n" not in str(err.value)


def test_a_checkpoint_from_before_tasks_resumes_as_supervised(compose, tmp_path):
    train(compose(["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.diagnostics=false", "device=cpu"]),
          run_dir=tmp_path / "old")
    last = tmp_path / "old" / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    del state["task"], state["config"]["task"]  # what a checkpoint written before task= holds
    torch.save(state, last)
    summary = train(compose(["trainer.max_epochs=2", f"resume={last}", "device=cpu"]), run_dir=tmp_path / "new")
    assert summary["status"] == "completed" and summary["epochs_run"] == 2
    assert json.loads((tmp_path / "new" / "summary.json").read_text())["resumed_from"] == str(last)

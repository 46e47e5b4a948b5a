"""Weight averaging (``regularization.ema_*``, ``swa_*``): the EMA against a hand-computed
average, SWA against ``torch.optim.swa_utils`` on the same run, exact resume with either,
and the averaged weights as what ``best.pt``, ``dltrain-eval``, ``dltrain-predict`` and
``dltrain-export`` use."""

from __future__ import annotations

import csv
import math
import signal

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

from dltrain import compose, train
from dltrain.build import build_experiment
from dltrain.errors import ConfigError
from dltrain.inference.restore import load_model
from dltrain.training.averaging import WeightAverage, weights_to_use
from dltrain.training.rng import seed_everything
from dltrain.training.signals import Interrupted
from dltrain.training.trainer import Trainer

SMALL = ["device=cpu", "model.hidden=[16]", "trainer.diagnostics=false"]


def _set(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        model[0].weight.fill_(value)
        model[1].running_mean.fill_(value)


@pytest.mark.parametrize(("warmup", "expected"), [
    (False, [1.5, 2.25, 3.125]),  # 0.5 * ema + 0.5 * w, from 1 with w = 2, 3, 4
    # decays min(0.5, (1 + t) / (10 + t)) = 2/11, 1/4, 4/13: 2/11 + 18/11, 5/11 + 9/4, (4 * 119/44 + 36) / 13
    (True, [20 / 11, 119 / 44, 3.6013986]),
])
def test_ema_equals_the_hand_computed_average_over_three_steps(warmup, expected):
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    _set(model, 1.0)
    ema = WeightAverage(model, ema_decay=0.5, ema_warmup=warmup)
    for value, want in zip([2.0, 3.0, 4.0], expected, strict=True):
        _set(model, value)
        model[1].num_batches_tracked.fill_(int(value))
        ema.after_step()
        averaged = ema.module
        assert averaged[0].weight.item() == pytest.approx(want, abs=1e-6)
        assert averaged[1].running_mean.item() == pytest.approx(want, abs=1e-6)  # floating buffers averaged too
        assert averaged[1].num_batches_tracked.item() == int(value)  # integer buffers copied
    assert model[0].weight.item() == 4.0 and ema.updates == 3


def test_a_tied_weight_is_averaged_once():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    model[1].weight = model[0].weight  # one tensor under two names
    nn.init.constant_(model[0].weight, 1.0)
    for averaging in (WeightAverage(model, ema_decay=0.5), WeightAverage(model, swa_start=1)):
        nn.init.constant_(model[0].weight, 3.0)
        averaging.after_step()
        averaging.end_epoch(1, [])
        assert averaging.module[1].weight is averaging.module[0].weight
        assert averaging.module[0].weight.unique().tolist() == [2.0 if averaging.method == "ema" else 3.0]
        nn.init.constant_(model[0].weight, 1.0)


def _swa_config(extra: list[str] = ()):
    return compose([*SMALL, "regularization.batch_norm=true", "trainer.max_epochs=3", "optim=sgd", "optim.lr=0.1",
                    "scheduler=cosine", "trainer.batch_size=256", "trainer.limit_train_batches=6", *extra])


def test_swa_equals_torch_swa_utils_on_the_same_run(tmp_path):
    swa = ["regularization.swa_start=2", "regularization.swa_lr=0.02", "regularization.swa_anneal_epochs=2"]
    summary = train(_swa_config(swa), run_dir=tmp_path / "run")
    assert summary["averaging"]["method"] == "swa" and summary["averaging"]["updates"] == 2
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["averaged_model"]

    # By hand, torch.optim.swa_utils' documented recipe: the same seed, data order and steps,
    # SWALR built beside the configured schedule, and after each epoch `if epoch > swa_start:
    # update_parameters; swa_scheduler.step() else: scheduler.step()`, update_bn at the end.
    # That recipe's swa_start is the last 0-based epoch not averaged: 1-based swa_start=2 is 0.
    cfg = _swa_config()
    seed_everything(cfg.seed)
    exp = build_experiment(cfg, torch.device("cpu"))
    model, optimizer, batches, scheduler = exp.model, exp.optimizer, exp.batches[0], exp.scheduler
    averaged = AveragedModel(model)
    swa_scheduler = SWALR(optimizer, swa_lr=0.02, anneal_epochs=2, anneal_strategy="cos")
    swa_start, lrs = 0, []
    for epoch in range(3):
        lrs.append(optimizer.param_groups[0]["lr"])
        model.train()
        for x, y in batches:
            optimizer.zero_grad(set_to_none=True)
            exp.loss_fn(model(x), y).backward()
            optimizer.step()
        if epoch > swa_start:
            averaged.update_parameters(model)
            swa_scheduler.step()
        else:
            scheduler.step_epoch({})
    update_bn(batches, averaged)
    # cosine over 3 epochs, then SWALR's cosine from 0.1 * (1 + cos(pi/3)) / 2 to 0.02 over 2 epochs
    start = 0.1 * (1 + math.cos(math.pi / 3)) / 2
    assert lrs == pytest.approx([0.1, start, (start + 0.02) / 2])
    with open(tmp_path / "run" / "metrics.csv") as f:
        assert [float(row["lr"]) for row in csv.DictReader(f)] == pytest.approx(lrs)
    mine = saved["weights"]
    for name, value in averaged.module.state_dict().items():
        torch.testing.assert_close(mine[name], value, msg=name)
    assert int(averaged.n_averaged) == saved["updates"] == 2


def _rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(f)]


@pytest.mark.parametrize("averaging", [
    ["regularization.ema_decay=0.9", "regularization.ema_warmup=true"],
    ["regularization.swa_start=2", "regularization.swa_lr=0.05", "regularization.batch_norm=true"],
], ids=["ema", "swa"])
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, monkeypatch, averaging):
    overrides = [*SMALL, "regularization.dropout=0.3", "trainer.max_epochs=2", "trainer.batch_size=128",
                 "trainer.limit_train_batches=6", *averaging]
    straight = train(compose(overrides), run_dir=tmp_path / "straight")
    step = Trainer.train_step

    def interrupt_in_epoch_2(self, x, y):
        out = step(self, x, y)
        if self.global_step == 9:  # epoch 2, step 3 of 6
            self.stop.signum = signal.SIGTERM
        return out

    monkeypatch.setattr(Trainer, "train_step", interrupt_in_epoch_2)
    with pytest.raises(Interrupted):
        train(compose(overrides), run_dir=tmp_path / "first")
    monkeypatch.undo()
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    resumed = train(compose([*overrides, f"resume={last}"]), run_dir=tmp_path / "resumed")
    assert _rows(tmp_path / "resumed") == _rows(tmp_path / "straight")
    assert resumed["test"] == straight["test"]
    a, b = (torch.load(d / "checkpoints" / "last.pt", weights_only=True) for d in (tmp_path / "resumed",
                                                                                    tmp_path / "straight"))
    assert a["averaged_model"]["updates"] == b["averaged_model"]["updates"] > 0
    for key in ("model", "averaged_model"):
        weights_a, weights_b = (s[key] if key == "model" else s[key]["weights"] for s in (a, b))
        assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_b), key


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ema") / "run"
    summary = train(compose([*SMALL, "trainer.max_epochs=3", "regularization.ema_decay=0.9", "trainer.batch_size=256",
                             "trainer.limit_train_batches=6"]), run_dir=run_dir)
    return run_dir, summary


def test_best_pt_and_dltrain_eval_use_the_averaged_weights(ema_run):
    from dltrain.inference.evaluate import evaluate_checkpoint

    run_dir, summary = ema_run
    best = run_dir / "checkpoints" / "best.pt"
    state = torch.load(best, weights_only=True)
    restored = load_model(best).model.state_dict()
    averaged, raw = state["averaged_model"]["weights"], state["model"]
    assert all(torch.equal(restored[k], averaged[k]) for k in averaged)
    assert not all(torch.equal(averaged[k], raw[k]) for k in raw)
    assert summary["test_weights"] == f"best epoch {summary['best_epoch']}"
    assert summary["averaging"]["evaluated"] == "averaged weights"
    result = evaluate_checkpoint(best, "test", "cpu")
    assert result["metrics"] == pytest.approx(summary["test"], rel=1e-6)


def test_dltrain_predict_uses_the_averaged_weights(ema_run, tmp_path):
    from dltrain.data import DATASETS
    from dltrain.inference.predict import main

    run_dir, _ = ema_run
    data = DATASETS.build("digits", seed=0)
    scale = data.info["pixel_scaling"]
    counts = np.rint(data.x_test[:30].reshape(30, 64).numpy() * scale["std"] + scale["mean"])  # (30, 64)
    (tmp_path / "pngs").mkdir()
    for i, image in enumerate(np.rint(counts * 255 / 16).astype(np.uint8).reshape(30, 8, 8)):
        Image.fromarray(image).save(tmp_path / "pngs" / f"{i:03d}.png")
    main([f"ckpt={run_dir / 'checkpoints' / 'best.pt'}", f"input={tmp_path / 'pngs'}",
          f"output={tmp_path / 'out.csv'}", "device=cpu"])
    out = pd.read_csv(tmp_path / "out.csv")
    run = pd.read_csv(run_dir / "predictions.csv").iloc[:30]  # the test of the averaged weights
    assert out["confidence"].to_numpy() == pytest.approx(run["confidence"].to_numpy(), abs=2e-5)


def test_the_onnx_export_computes_with_the_averaged_weights(ema_run, capsys):
    pytest.importorskip("onnxruntime")
    from dltrain.export import formats
    from dltrain.export.cli import export_checkpoint
    from dltrain.export.raw import held_out
    from dltrain.export.verify import verify

    best = ema_run[0] / "checkpoints" / "best.pt"
    folder = export_checkpoint(best, "onnx", batch_size=50)
    exported = formats.load_model_file("onnx", folder / "model.onnx")
    restored = load_model(best)
    examples = held_out(restored)
    assert verify(exported, restored.model, examples, restored.data, 50)["max_abs_diff"] < 1e-4
    restored.model.load_state_dict(restored.state["model"])  # the raw weights compute something else
    assert verify(exported, restored.model, examples, restored.data, 50)["max_abs_diff"] > 1e-3


def test_evaluate_averaged_false_evaluates_both(tmp_path):
    summary = train(compose([*SMALL, "trainer.max_epochs=3", "regularization.swa_start=2",
                             "regularization.evaluate_averaged=false"]), run_dir=tmp_path / "run")
    rows = _rows(tmp_path / "run")
    assert math.isnan(float(rows[0]["val_avg_loss"]))  # no average before swa_start
    assert rows[1]["val_avg_loss"] == rows[1]["val_loss"]  # the average of one epoch's weights: those weights
    assert float(rows[2]["val_avg_loss"]) != float(rows[2]["val_loss"])
    assert set(summary["test_averaged"]) == set(summary["test"]) and summary["test_averaged"] != summary["test"]
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert load_model(tmp_path / "run" / "checkpoints" / "last.pt").model.state_dict().keys() == state["model"].keys()
    assert all(torch.equal(v, weights_to_use(state, False)[k]) for k, v in state["model"].items())


def test_a_checkpoint_without_averaged_weights_restores_its_model():
    state = {"model": {"w": torch.ones(1)}}
    assert weights_to_use(state) is state["model"]
    model = nn.Sequential(nn.Linear(1, 1))
    averaging = WeightAverage(model, swa_start=1)
    with torch.no_grad():
        model[0].weight.fill_(3.0)
    averaging.load_state_dict(None)  # a checkpoint written before averaging: it starts from the weights
    assert averaging.module[0].weight.item() == 3.0 and averaging.updates == 0 and not averaging.active


@pytest.mark.parametrize(("overrides", "message"), [
    (["regularization.ema_decay=0.99", "regularization.swa_start=1"], "both average the weights: choose one"),
    (["regularization.swa_start=5", "trainer.max_epochs=3"], "regularization.swa_start=5 is after the last epoch"),
    (["regularization.swa_lr=0.01"], "regularization.swa_lr=0.01 is the LR of SWA's epochs"),
    (["regularization.ema_warmup=true"], "regularization.ema_warmup=true warms up an EMA"),
])
def test_bad_combinations_are_one_line(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        train(compose([*SMALL, *overrides]), run_dir=tmp_path / "run")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_a_checkpoint_written_before_the_averaging_keys_resumes(tmp_path):
    overrides = [*SMALL, "trainer.max_epochs=1"]
    train(compose(overrides), run_dir=tmp_path / "first")
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    for key in ("ema_decay", "ema_warmup", "swa_start", "swa_lr", "swa_anneal_epochs", "evaluate_averaged"):
        del state["config"]["regularization"][key]
    del state["averaged_model"]
    torch.save(state, last)
    summary = train(compose([*overrides, "trainer.max_epochs=2", f"resume={last}"]), run_dir=tmp_path / "resumed")
    assert summary["status"] == "completed" and summary["epochs_run"] == 2 and "averaging" not in summary

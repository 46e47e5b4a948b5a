"""Checkpoints hold the whole training state; ``resume=`` continues a run exactly.

Every run here trains the digits MLP in-process (``train(compose(overrides), run_dir)``), a
second or two each. Exactness is checked the strict way: metrics.csv rows equal except for
timings, and every weight tensor ``torch.equal``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dltrain import train
from dltrain.errors import ConfigError, UserError
from dltrain.training.checkpoint import load_checkpoint
from dltrain.training.signals import Interrupted
from dltrain.training.trainer import Trainer, TrainingDiverged

# Dropout and a cosine schedule: a resume that lost the RNG, the data order or the
# schedule's position would not repeat the uninterrupted run.
EXACT = ["regularization.dropout=0.3", "scheduler=cosine", "scheduler.T_max=7", "model.hidden=[32]",
         "trainer.early_stopping.patience=2"]


def rows(run_dir) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(f)]


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def same_weights(a, b) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted 7-epoch run every resume is compared with."""
    from dltrain import compose

    run_dir = tmp_path_factory.mktemp("straight")
    summary = train(compose([*EXACT, "trainer.max_epochs=7"]), run_dir=run_dir)
    return run_dir, summary


def test_three_epochs_then_resume_equals_seven_straight(compose, tmp_path, straight, caplog):
    straight_dir, straight_summary = straight
    train(compose([*EXACT, "trainer.max_epochs=3"]), run_dir=tmp_path / "first")
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    with caplog.at_level(logging.INFO, logger="dltrain"):
        summary = train(compose([*EXACT, "trainer.max_epochs=7", f"resume={last}"]), run_dir=tmp_path / "resumed")
    assert "resume: override trainer.max_epochs: 3 -> 7" in caplog.text
    assert len(rows(straight_dir)) == 7
    assert rows(tmp_path / "resumed") == rows(straight_dir)
    for name in ("last.pt", "best.pt"):
        assert same_weights(tmp_path / "resumed" / "checkpoints" / name, straight_dir / "checkpoints" / name)
    assert summary["test"] == straight_summary["test"]
    assert summary["resumed_from"] == str(last) and summary["epochs_run"] == 7


def test_checkpoint_holds_the_full_state_as_plain_data(straight):
    state = torch.load(straight[0] / "checkpoints" / "last.pt", weights_only=True)
    assert state["format"] == "dltrain-checkpoint" and state["epoch"] == 7 and state["global_step"] == 7 * 20
    for key in ("model", "optimizer", "scheduler", "grad_scaler", "early_stopping", "best_value", "best_model",
                "history", "rng", "data_order", "config", "versions", "data", "model_spec"):
        assert key in state, key
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert isinstance(state["data_order"]["generator"], torch.Tensor) and state["data_order"]["skip"] == 0
    assert [row["epoch"] for row in state["history"]] == list(range(1, 8))
    assert state["config"]["regularization"]["dropout"] == 0.3 and state["partial_epoch"] is None


def stop_in_step(monkeypatch, global_step: int) -> None:
    """Make ``Trainer.train_step`` ask for a SIGTERM stop (as the signal handler would) in the
    step whose call returns with the trainer's ``global_step`` at ``global_step`` (it is counted
    after the call): the run stops at the next step boundary, saving ``last.pt``."""
    step = Trainer.train_step

    def stopping(self, x, y):
        out = step(self, x, y)
        if self.global_step == global_step:
            self.stop.signum = signal.SIGTERM
        return out

    monkeypatch.setattr(Trainer, "train_step", stopping)


def test_interrupt_mid_epoch_then_resume_equals_straight(compose, tmp_path, straight, monkeypatch):
    stop_in_step(monkeypatch, 46)  # step 47: epoch 3, step 7 of 20
    with pytest.raises(Interrupted, match="interrupted by SIGTERM in epoch 3 after batch 7 of 20: saved"):
        train(compose([*EXACT, "trainer.max_epochs=7"]), run_dir=tmp_path / "first")
    monkeypatch.undo()
    summary = json.loads((tmp_path / "first" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_run"] == 2
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    assert state["epoch"] == 2 and state["partial_epoch"]["step"] == 7 and state["data_order"]["skip"] == 7
    train(compose([*EXACT, "trainer.max_epochs=7", f"resume={last}"]), run_dir=tmp_path / "resumed")
    assert rows(tmp_path / "resumed") == rows(straight[0])
    assert same_weights(tmp_path / "resumed" / "checkpoints" / "last.pt", straight[0] / "checkpoints" / "last.pt")


def same_state(a, b) -> bool:
    """Whether two checkpoint entries (nested dicts, lists, tensors, plain values) are equal, bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same_state, a, b))
    return a == b


#: The new architectures and tasks, tiny, with what a lost state would change: dropout, the denoising
#: noise, the GAN's label smoothing, fixed latent batch and second optimizer.
NEW_KINDS = {
    "transformer": ["model=transformer", "model.d_model=16", "model.num_heads=2", "model.num_layers=1",
                    "model.ff_dim=16", "model.dropout=0.2", "model.positional=learned", "model.max_length=8"],
    "autoencoder": ["task=autoencoder", "task.denoise=gaussian", "regularization.dropout=0.2", "model.hidden=[16]",
                    "model.bottleneck=4"],
    "gan": ["task=gan", "task.label_smoothing=0.1", "model.latent_size=8", "model.generator.channels=[16,8]",
            "model.discriminator.channels=[8,16]"],
}


@pytest.mark.parametrize("kind", list(NEW_KINDS))
def test_each_new_kind_interrupted_mid_epoch_then_resumed_equals_straight(compose, tmp_path, monkeypatch, kind):
    keys = [*NEW_KINDS[kind], "trainer.batch_size=64", "trainer.limit_train_batches=4", "trainer.limit_val_batches=1",
            "trainer.max_epochs=2", "trainer.diagnostics=false", "device=cpu"]
    train(compose(keys), run_dir=tmp_path / "straight")
    stop_in_step(monkeypatch, 6)  # step 7: epoch 2, batch 3 of 4
    with pytest.raises(Interrupted, match="in epoch 2 after batch 3 of 4: saved"):
        train(compose(keys), run_dir=tmp_path / "first")
    monkeypatch.undo()
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    assert load_checkpoint(last)["partial_epoch"]["step"] == 3
    summary = train(compose([*keys, f"resume={last}"]), run_dir=tmp_path / "resumed")
    assert len(rows(tmp_path / "straight")) == 2 and rows(tmp_path / "resumed") == rows(tmp_path / "straight")
    resumed, straight_ = (torch.load(run / "checkpoints" / "last.pt", weights_only=True)
                          for run in (tmp_path / "resumed", tmp_path / "straight"))
    assert same_weights(tmp_path / "resumed" / "checkpoints" / "last.pt",
                        tmp_path / "straight" / "checkpoints" / "last.pt")
    assert same_state(resumed.get("task"), straight_.get("task"))  # the GAN's latents and D's optimizer
    assert summary["test"] == json.loads((tmp_path / "straight" / "summary.json").read_text())["test"]


def test_resuming_a_finished_run_trains_nothing(compose, tmp_path, straight):
    last = straight[0] / "checkpoints" / "last.pt"
    (tmp_path / "again").mkdir()
    summary = train(compose([*EXACT, "trainer.max_epochs=7", f"resume={last}"]), run_dir=tmp_path / "again")
    assert summary["status"] == "already_finished" and "completed 7 epochs" in summary["stop_reason"]
    assert summary["mode"] == "min"  # so a sweep of finished runs still ranks them
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["status"] == "already_finished"
    assert not (tmp_path / "again" / "metrics.csv").exists()


@pytest.mark.pictures
def test_early_stopped_run_continues_with_more_patience(compose, tmp_path):
    lr0 = ["optim=sgd", "optim.lr=0", "model.hidden=[16]"]
    first = train(compose([*lr0, "trainer.early_stopping.patience=1"]), run_dir=tmp_path / "a")
    assert first["status"] == "early_stopped" and first["stopped_epoch"] == 2
    last = tmp_path / "a" / "checkpoints" / "last.pt"
    again = train(compose([*lr0, "trainer.early_stopping.patience=1", f"resume={last}"]), run_dir=tmp_path / "b")
    assert again["status"] == "already_finished" and "stopped early after epoch 2" in again["stop_reason"]
    more = train(compose([*lr0, "trainer.early_stopping.patience=3", f"resume={last}"]), run_dir=tmp_path / "c")
    assert more["status"] == "early_stopped" and more["stopped_epoch"] == 4 and more["best_epoch"] == 1
    assert [r["epoch"] for r in rows(tmp_path / "c")] == ["1", "2", "3", "4"]
    # Its best epoch came before the resume: the first run's best.pt is carried over.
    assert load_checkpoint(tmp_path / "c" / "checkpoints" / "best.pt")["epoch"] == 1


@pytest.mark.parametrize(("override", "message"), [
    ("model.hidden=[64]", r"model.hidden=\[64\] \(checkpoint: \[32\]\): the model's architecture"),
    ("regularization.dropout=0.5", "regularization.dropout=0.5 .*architecture"),
    ("optim.lr=0.5", r"optim.lr=0.5 \(checkpoint: 0.001\): a resumed run continues the same experiment"),
    ("seed=4", "seed=4 .*continues the same experiment"),
])
def test_changes_a_resume_cannot_make_are_refused(compose, tmp_path, straight, override, message):
    last = straight[0] / "checkpoints" / "last.pt"
    with pytest.raises(ConfigError, match=message):
        train(compose([*EXACT, "trainer.max_epochs=9", override, f"resume={last}"]), run_dir=tmp_path)
    assert not (tmp_path / "metrics.csv").exists()


def test_resume_from_a_directory_and_auto(compose, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fast = ["trainer.max_epochs=2", "model.hidden=[16]"]
    auto = train(compose([*fast, "resume=auto"]), run_dir=tmp_path / "outputs" / "x")  # nothing to resume yet
    assert auto["resumed_from"] is None and auto["epochs_run"] == 2
    train(compose([*fast, "optim.lr=0.01"]), run_dir=tmp_path / "outputs" / "y")  # newer, another config
    summary = train(compose(["trainer.max_epochs=3", "model.hidden=[16]", "resume=auto"]),
                    run_dir=tmp_path / "resumed")
    assert summary["resumed_from"] == "outputs/x/checkpoints/last.pt" and summary["epochs_run"] == 3
    from_dir = train(compose(["trainer.max_epochs=3", "model.hidden=[16]", "optim.lr=0.01", "resume=outputs"]),
                     run_dir=tmp_path / "from_dir")
    assert from_dir["resumed_from"] == "outputs/y/checkpoints/last.pt"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="the directory holds no last.pt"):
        train(compose([*fast, f"resume={tmp_path / 'empty'}"]), run_dir=tmp_path / "z")


def test_leftover_temp_files_are_removed_on_resume(compose, tmp_path):
    train(compose(["trainer.max_epochs=1", "model.hidden=[16]"]), run_dir=tmp_path / "a")
    folder = tmp_path / "a" / "checkpoints"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = folder / f".tmp-last.pt.{int(dead.stdout)}.abc12345"
    stale.write_bytes(b"half a checkpoint")
    mine = folder / ".tmp-notes.txt"  # not a name dltrain gives its temp files: never touched
    mine.write_text("the user's")
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = folder / f".tmp-best.pt.{writer.pid}.def45678"  # another process is still writing it
        live.write_bytes(b"being written")
        train(compose(["trainer.max_epochs=2", "model.hidden=[16]", f"resume={folder / 'last.pt'}"]),
              run_dir=tmp_path / "b")
        assert not stale.exists() and live.exists() and mine.exists()
    finally:
        writer.kill()


class _CreatesFile:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_resume_refuses_a_checkpoint_holding_code(compose, tmp_path):
    marker = tmp_path / "created-by-unpickling"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "rng": _CreatesFile(str(marker))}, evil, pickle_module=pickle)
    with pytest.raises(UserError, match=r"checkpoint .*evil.pt cannot be loaded: .*refused"):
        train(compose([f"resume={evil}"]), run_dir=tmp_path / "run")
    assert not marker.exists()


def test_truncated_checkpoint_is_a_clear_error(compose, tmp_path):
    train(compose(["trainer.fast_dev_run=true"]), run_dir=tmp_path / "a")
    last = tmp_path / "a" / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(UserError, match=r"checkpoint .*last.pt cannot be loaded"):
        train(compose(["trainer.fast_dev_run=true", f"resume={last}"]), run_dir=tmp_path / "b")


def test_periodic_checkpoints_keep_the_newest(compose, tmp_path):
    train(compose(["trainer.max_epochs=7", "model.hidden=[16]", "trainer.early_stopping.enabled=false",
                   "trainer.checkpoint.every_n_epochs=2", "trainer.checkpoint.keep_last=2"]), run_dir=tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best.pt", "epoch-0004.pt", "epoch-0006.pt", "last.pt"]
    assert load_checkpoint(tmp_path / "checkpoints" / "epoch-0004.pt")["epoch"] == 4


def test_divergence_keeps_checkpoints_finite_and_tests_the_best_epoch(compose, tmp_path, monkeypatch):
    step = Trainer.train_step

    def poison_at_step_45(self, x, y):  # epoch 3, step 5: the weights become NaN
        out = step(self, x, y)
        if self.global_step == 44:
            with torch.no_grad():
                next(self.model.parameters()).fill_(math.nan)
        return out

    monkeypatch.setattr(Trainer, "train_step", poison_at_step_45)
    with pytest.raises(TrainingDiverged, match=r"became nan in epoch 3 at step 6 of 20 \(global step 46\)$"):
        train(compose(["model.hidden=[16]", "trainer.log_every_n_steps=1"]), run_dir=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["epochs_run"] == 2 and summary["best_epoch"] == 2
    assert re.search(r"became nan in epoch 3 at step 6 of 20 \(global step 46\): lower optim.lr .*grad_clip",
                     summary["stop_reason"])
    assert summary["test_weights"] == "best epoch 2" and summary["test"]["accuracy"] > 0.3  # NaN weights: 0.1
    for name in ("best.pt", "last.pt"):
        state = load_checkpoint(tmp_path / "checkpoints" / name)
        assert state["epoch"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert [r["epoch"] for r in rows(tmp_path)] == ["1", "2", "3"] and rows(tmp_path)[2]["train_loss"] == "nan"


def test_baseline_never_beaten_stops_and_tests_the_last_weights(compose, tmp_path):
    summary = train(compose(["model.hidden=[16]", "trainer.early_stopping.baseline=0.0001",
                             "trainer.early_stopping.patience=2"]), run_dir=tmp_path)
    assert summary["status"] == "early_stopped" and summary["stopped_epoch"] == 2 and summary["best_epoch"] is None
    assert summary["stop_reason"] == "val_loss did not beat the baseline 0.0001 in 2 epochs (patience 2)"
    assert summary["test_weights"] == "last epoch 2" and not (tmp_path / "checkpoints" / "best.pt").exists()


def test_restore_best_weights_off_tests_the_last_epoch(compose, tmp_path):
    summary = train(compose(["optim=sgd", "optim.lr=0", "trainer.early_stopping.patience=2",
                             "trainer.early_stopping.restore_best_weights=false"]), run_dir=tmp_path)
    assert summary["test_weights"] == "last epoch 3" and summary["best_epoch"] == 1


def test_start_from_epoch_ignores_the_first_epochs(compose, tmp_path):
    summary = train(compose(["optim=sgd", "optim.lr=0", "trainer.early_stopping.patience=1",
                             "trainer.early_stopping.start_from_epoch=3"]), run_dir=tmp_path)
    assert summary["best_epoch"] == 4 and summary["stopped_epoch"] == 5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["32", "16"])
def test_resume_on_cuda_equals_straight(compose, tmp_path, precision):
    # On CUDA the CUDA generator (dropout) and, for float16, the gradient scaler's state
    # travel in the checkpoint too. cuBLAS picks the same kernels for the same shapes, so
    # the runs agree to the bit on one GPU.
    cuda = [*EXACT, "device=cuda", f"trainer.precision={precision}"]
    train(compose([*cuda, "trainer.max_epochs=7"]), run_dir=tmp_path / "straight")
    train(compose([*cuda, "trainer.max_epochs=3"]), run_dir=tmp_path / "first")
    state = load_checkpoint(tmp_path / "first" / "checkpoints" / "last.pt")
    assert len(state["rng"]["cuda"]) == torch.cuda.device_count()
    assert (state["grad_scaler"] is not None) == (precision == "16")
    train(compose([*cuda, "trainer.max_epochs=7", f"resume={tmp_path / 'first' / 'checkpoints' / 'last.pt'}"]),
          run_dir=tmp_path / "resumed")
    assert rows(tmp_path / "resumed") == rows(tmp_path / "straight")
    assert same_weights(tmp_path / "resumed" / "checkpoints" / "last.pt",
                        tmp_path / "straight" / "checkpoints" / "last.pt")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_checkpoint_resumes_on_cpu(compose, tmp_path):
    train(compose(["model.hidden=[16]", "device=cuda", "trainer.max_epochs=2"]), run_dir=tmp_path / "gpu")
    summary = train(compose(["model.hidden=[16]", "device=cpu", "trainer.max_epochs=3",
                             f"resume={tmp_path / 'gpu' / 'checkpoints' / 'last.pt'}"]), run_dir=tmp_path / "cpu")
    assert summary["device"] == "cpu" and summary["epochs_run"] == 3


def test_disk_full_mid_run_keeps_the_previous_checkpoint(compose, tmp_path, monkeypatch):
    import errno

    import dltrain.training.checkpoint

    real_save, calls, before = torch.save, [], {}
    folder = tmp_path / "run" / "checkpoints"

    def fills_the_disk(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # epoch 3's last.pt (epochs 1 and 2 wrote last.pt and best.pt)
            before["last.pt"] = (folder / "last.pt").read_bytes()
            f.write(b"the first bytes")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(dltrain.training.checkpoint.torch, "save", fills_the_disk)
    with pytest.raises(UserError, match=r"could not write checkpoint .*last.pt: No space left on device; "
                                        "the previous checkpoint is unchanged"):
        train(compose(["model.hidden=[16]", "trainer.max_epochs=5"]), run_dir=tmp_path / "run")
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "last.pt"]  # no partial temp file
    assert (folder / "last.pt").read_bytes() == before["last.pt"]
    assert load_checkpoint(folder / "last.pt")["epoch"] == 2
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left on device" in summary["stop_reason"]


def test_a_stop_during_the_test_evaluation_is_recorded(compose, tmp_path, monkeypatch):
    evaluate = Trainer.evaluate

    def stopped_while_testing(self, batches, outputs=None, stoppable=False):
        if outputs is not None:  # the test split (validation passes no outputs)
            raise Interrupted(signal.SIGTERM, "aborted by SIGTERM")
        return evaluate(self, batches, outputs=outputs, stoppable=stoppable)

    monkeypatch.setattr(Trainer, "evaluate", stopped_while_testing)
    with pytest.raises(Interrupted):
        train(compose(["model.hidden=[16]", "trainer.max_epochs=2"]), run_dir=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_run"] == 2
    assert summary["stop_reason"] == ("training completed (reached trainer.max_epochs=2), then the test evaluation "
                                      "was stopped: aborted by SIGTERM")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_checkpoints_of_a_cuda_run_hold_cpu_tensors(compose, tmp_path):
    train(compose(["model.hidden=[16]", "device=cuda", "trainer.max_epochs=1"]), run_dir=tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)  # no map_location needed

    def devices(obj):
        if isinstance(obj, torch.Tensor):
            yield obj.device.type
        elif isinstance(obj, dict):
            for value in obj.values():
                yield from devices(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                yield from devices(value)

    assert set(devices(state)) == {"cpu"}


def test_resume_takes_the_checkpoints_config_and_only_the_keys_given(compose, tmp_path, straight):
    # Nothing of EXACT is repeated: the checkpoint's config is continued, max_epochs on top.
    train(compose([*EXACT, "trainer.max_epochs=3"]), run_dir=tmp_path / "first")
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    summary = train(compose(["trainer.max_epochs=7", f"resume={last}"]), run_dir=tmp_path / "resumed")
    assert rows(tmp_path / "resumed") == rows(straight[0]) and summary["epochs_run"] == 7
    assert same_weights(tmp_path / "resumed" / "checkpoints" / "last.pt", straight[0] / "checkpoints" / "last.pt")
    config = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["config"]
    assert config["regularization"]["dropout"] == 0.3 and config["scheduler"]["name"] == "cosine"


def test_restore_best_weights_cannot_change_on_resume(compose, tmp_path, straight):
    last = straight[0] / "checkpoints" / "last.pt"
    with pytest.raises(ConfigError, match="trainer.early_stopping.restore_best_weights=False"):
        train(compose(["trainer.max_epochs=9", "trainer.early_stopping.restore_best_weights=false",
                       f"resume={last}"]), run_dir=tmp_path)


def test_auto_matches_the_data_and_ignores_run_control_keys(tmp_path, monkeypatch):
    from dltrain.training.checkpoint import save_checkpoint
    from dltrain.training.resume import find_checkpoint

    def config(path, epochs):
        return {"data": {"name": "csv", "path": path}, "trainer": {"max_epochs": epochs}, "seed": 0}

    monkeypatch.chdir(tmp_path)
    save_checkpoint({"model": {}, "config": config("a.csv", 5)}, tmp_path / "outputs" / "a" / "checkpoints" / "last.pt")
    save_checkpoint({"model": {}, "config": config("b.csv", 5)}, tmp_path / "outputs" / "b" / "checkpoints" / "last.pt")
    assert find_checkpoint("auto", config("a.csv", 50)) == Path("outputs/a/checkpoints/last.pt")
    assert find_checkpoint("auto", config("b.csv", 50)) == Path("outputs/b/checkpoints/last.pt")
    assert find_checkpoint("auto", config("c.csv", 5)) is None


def test_resuming_onto_weights_of_another_shape_is_one_clear_error(compose, tmp_path, data_files):
    import pandas as pd

    table = data_files.overrides["csv"][0].split("=", 1)[1]
    train(compose(["data=csv", f"data.path={table}", "data.target=Class", "data.missing=mean", "trainer.max_epochs=1"]),
          run_dir=tmp_path / "a")
    fewer = tmp_path / "fewer.csv"
    frame = pd.read_csv(table)
    frame.drop(columns=["age"]).to_csv(fewer, index=False)
    with pytest.raises(ConfigError, match=r"the checkpoint's weights do not fit the model this config builds "
                                          r"\(Error\(s\) in loading state_dict.*point data.\* at the data"):
        train(compose(["trainer.max_epochs=2", "data=csv", f"data.path={fewer}",
                       f"resume={tmp_path / 'a' / 'checkpoints' / 'last.pt'}"]), run_dir=tmp_path / "b")
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["status"] == "failed"


def test_a_second_signal_mid_step_keeps_the_last_good_checkpoint(compose, tmp_path, monkeypatch):
    step = Trainer.train_step

    def aborted_in_step_47(self, x, y):  # the handler raises wherever the program is
        out = step(self, x, y)
        if self.global_step == 46:
            raise Interrupted(signal.SIGINT, "aborted by SIGINT", aborted=True)
        return out

    monkeypatch.setattr(Trainer, "train_step", aborted_in_step_47)
    with pytest.raises(Interrupted, match="^aborted by SIGINT$"):
        train(compose(["model.hidden=[16]"]), run_dir=tmp_path)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and state["partial_epoch"] is None  # the end of epoch 2, not a torn step
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "checkpoint" not in summary and summary["stopped_epoch"] == 3


def test_an_interrupt_after_the_loss_went_nan_is_a_divergence(compose, tmp_path, monkeypatch):
    step = Trainer.train_step

    def poison_then_stop(self, x, y):
        out = step(self, x, y)
        if self.global_step == 44:  # epoch 3: weights NaN, and a SIGTERM two steps later
            with torch.no_grad():
                next(self.model.parameters()).fill_(math.nan)
        if self.global_step == 46:
            self.stop.signum = signal.SIGTERM
        return out

    monkeypatch.setattr(Trainer, "train_step", poison_then_stop)
    with pytest.raises(TrainingDiverged, match="became nan in epoch 3 at step 6 of 20"):
        train(compose(["model.hidden=[16]", "trainer.log_every_n_steps=1000"]), run_dir=tmp_path)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "diverged"


def test_a_signal_after_the_last_step_finishes_the_run_and_exits_with_it(compose, tmp_path, monkeypatch):
    fit = Trainer.fit

    def signalled_while_saving_the_last_epoch(self, *args):
        result = fit(self, *args)
        self.stop.signum = signal.SIGTERM
        return result

    monkeypatch.setattr(Trainer, "fit", signalled_while_saving_the_last_epoch)
    with pytest.raises(Interrupted, match="SIGTERM arrived after the last training step: the run completed") as err:
        train(compose(["model.hidden=[16]", "trainer.max_epochs=2"]), run_dir=tmp_path)
    assert err.value.exit_code == 143
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["signal"] == "SIGTERM" and summary["test"]


def test_memory_layout_and_cudnn_switches_may_change_on_resume(compose, tmp_path, caplog, monkeypatch):
    """trainer.channels_last and trainer.cudnn_benchmark change how fast a run goes, not what it
    trains: a resume may turn them on (or off), and so may a resume of a checkpoint written
    before the keys existed."""
    from dltrain.training.checkpoint import save_checkpoint
    from dltrain.training.resume import find_checkpoint

    cnn = ["model=cnn", "model.channels=[8]", "model.hidden=[16]", "regularization.batch_norm=true",
           "trainer.batch_size=512"]  # 3 steps an epoch: convolutions are slow on some CPUs
    train(compose([*cnn, "trainer.max_epochs=1"]), run_dir=tmp_path / "first")
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    fast = ["trainer.channels_last=true", "trainer.cudnn_benchmark=true", "trainer.max_epochs=2"]
    with caplog.at_level(logging.INFO, logger="dltrain"):
        summary = train(compose([*fast, f"resume={last}"]), run_dir=tmp_path / "resumed")
    assert summary["epochs_run"] == 2 and not summary["warnings"]
    assert "resume: override trainer.channels_last: False -> True" in caplog.text
    assert "resume: override trainer.cudnn_benchmark: False -> True" in caplog.text
    state = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert state["config"]["trainer"]["channels_last"] is True

    old = load_checkpoint(last)  # as an older dltrain wrote it: no such keys
    del old["config"]["trainer"]["channels_last"], old["config"]["trainer"]["cudnn_benchmark"]
    monkeypatch.chdir(tmp_path)
    save_checkpoint(old, Path("outputs/old/checkpoints/last.pt"))
    again = train(compose(["trainer.max_epochs=2", "resume=outputs/old/checkpoints/last.pt"]), run_dir=tmp_path / "b")
    assert again["epochs_run"] == 2
    # resume=auto finds a checkpoint whatever these keys say
    current = {**old["config"], "trainer": {**old["config"]["trainer"], "channels_last": True,
                                            "cudnn_benchmark": False}}
    assert find_checkpoint("auto", current) == Path("outputs/old/checkpoints/last.pt")

"""The fine-tune schedule (``model.freeze_epochs``): the backbone trains from epoch K + 1, a resume
across the unfreeze (between epochs or inside one) repeats the uninterrupted run bit for bit, and
nothing after training (resume, ``dltrain-eval``, ``dltrain-predict``) reads the start weights again."""

from __future__ import annotations

import logging
import re
import shutil
import signal

import pytest
import torch

from dltrain import train
from dltrain.inference.evaluate import evaluate_checkpoint
from dltrain.training.signals import Interrupted
from dltrain.training.trainer import Trainer

from .test_resume import rows, same_weights
from .test_transfer import BACKBONE, CNN, start_file, under

# Dropout and a cosine schedule over both phases; a checkpoint every epoch to look at each.
SCHEDULE = [*CNN, "model.freeze=backbone", "model.freeze_epochs=2", "model.backbone_lr=0.5", "optim=adamw",
            "regularization.dropout=0.2", "scheduler=cosine", "scheduler.T_max=4",
            "trainer.checkpoint.every_n_epochs=1",
            "trainer.checkpoint.keep_last=null",
            "trainer.early_stopping.enabled=false"]
EPOCHS = 4


def weights_of(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


class Lines(logging.Handler):
    """The messages of the ``dltrain`` logger, while attached."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run: 2 epochs frozen, then 2 with everything trainable."""
    folder = tmp_path_factory.mktemp("fine_tune")
    start = start_file(folder / "start.pt")
    from dltrain import compose

    logger, lines = logging.getLogger("dltrain"), Lines()
    logger.addHandler(lines)
    level = logger.level
    logger.setLevel(logging.INFO)  # setLevel, not the attribute: it clears the logger's cached answers
    try:
        train(compose([*SCHEDULE, f"model.weights={folder / 'start.pt'}", f"trainer.max_epochs={EPOCHS}"]),
              run_dir=folder / "run")
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    return folder / "run", start, lines.messages


def test_the_backbone_is_frozen_for_k_epochs_then_trains(straight):
    run_dir, start, messages = straight
    epochs = [weights_of(run_dir / "checkpoints" / f"epoch-{n:04d}.pt") for n in range(1, EPOCHS + 1)]
    for n, state in enumerate(epochs, start=1):
        frozen = all(torch.equal(state[k], v) for k, v in under(BACKBONE, start).items())
        assert frozen == (n <= 2), n
    assert not torch.equal(epochs[3]["conv1.weight"], epochs[2]["conv1.weight"])  # still training
    heads = [state["out.weight"] for state in [start, *epochs]]
    assert all(not torch.equal(a, b) for a, b in zip(heads[:-1], heads[1:], strict=True))  # the head trains throughout
    parameters = sum(v.numel() for k, v in under(BACKBONE, start).items() if not k.split(".")[-1].startswith(
        ("running_", "num_batches")))
    unfreezing = [m for m in messages if "unfreezing" in m]
    assert unfreezing == [f"epoch 3: unfreezing the backbone ({parameters:,} parameters)"]
    summary = (run_dir / "model_summary.txt").read_text()
    assert re.search(r"^conv1 +Conv2d \(frozen\) ", summary, re.MULTILINE)
    assert "everything trains from epoch 3" in summary
    assert summary.count("Init pretrained: loaded from model.weights, not drawn\n") == 1


def test_the_learning_rate_per_group_follows_the_schedule(straight):
    run_dir = straight[0]
    groups = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["optimizer"]["param_groups"]
    head, backbone = groups[0]["lr"], groups[-1]["lr"]
    assert not groups[0].get("backbone") and groups[-1]["backbone"]
    assert backbone == pytest.approx(0.5 * head) and head < 1e-3  # the cosine's last step, below optim.lr


def test_resume_across_the_unfreeze_without_the_start_weights_equals_straight(compose, tmp_path, straight):
    run_dir = straight[0]
    shutil.copy(straight[0].parent / "start.pt", tmp_path / "start.pt")
    first = [*SCHEDULE, f"model.weights={tmp_path / 'start.pt'}"]
    train(compose([*first, "trainer.max_epochs=1"]), run_dir=tmp_path / "first")
    (tmp_path / "start.pt").unlink()  # a resume and the tools take the weights from the checkpoint
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    assert evaluate_checkpoint(last, device="cpu")["metrics"]["loss"] > 0
    train(compose([*first, f"trainer.max_epochs={EPOCHS}", f"resume={last}"]), run_dir=tmp_path / "resumed")
    assert rows(tmp_path / "resumed") == rows(run_dir)
    assert same_weights(tmp_path / "resumed" / "checkpoints" / "last.pt", run_dir / "checkpoints" / "last.pt")


def test_a_stop_inside_the_first_unfrozen_epoch_resumes_exactly(compose, tmp_path, monkeypatch, straight):
    run_dir = straight[0]
    step = Trainer.train_step
    steps = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["global_step"] // EPOCHS

    def stop_in_epoch_3(self, x, y):
        out = step(self, x, y)
        if self.global_step == 2 * steps + 1:  # the steps done before this one
            self.stop.signum = signal.SIGTERM
        return out

    shutil.copy(straight[0].parent / "start.pt", tmp_path / "start.pt")
    cfg = [*SCHEDULE, f"model.weights={tmp_path / 'start.pt'}", f"trainer.max_epochs={EPOCHS}"]
    monkeypatch.setattr(Trainer, "train_step", stop_in_epoch_3)
    with pytest.raises(Interrupted, match=f"in epoch 3 after batch 2 of {steps}"):
        train(compose(cfg), run_dir=tmp_path / "first")
    monkeypatch.undo()
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    train(compose([*cfg, f"resume={last}"]), run_dir=tmp_path / "resumed")
    assert rows(tmp_path / "resumed") == rows(run_dir)
    assert same_weights(tmp_path / "resumed" / "checkpoints" / "last.pt", run_dir / "checkpoints" / "last.pt")


@pytest.mark.slow
def test_a_compiled_model_unfreezes_too(compose, tmp_path):
    """torch.compile's graphs follow what requires a gradient: the backbone trains after the unfreeze."""
    start = start_file(tmp_path / "start.pt")
    train(compose([*CNN, f"model.weights={tmp_path / 'start.pt'}", "model.freeze=backbone", "model.freeze_epochs=1",
                   "trainer.max_epochs=2", "trainer.compile=true", "trainer.checkpoint.every_n_epochs=1",
                   "trainer.early_stopping.enabled=false"]), run_dir=tmp_path / "run")
    first, second = (weights_of(tmp_path / "run" / "checkpoints" / f"epoch-{n:04d}.pt") for n in (1, 2))
    assert all(torch.equal(first[k], v) for k, v in under(BACKBONE, start).items())
    assert all(not torch.equal(second[k], v) for k, v in under(BACKBONE, start).items() if k.endswith("weight"))


def test_a_run_resumed_after_the_unfreeze_starts_unfrozen_and_says_nothing_of_it(compose, tmp_path, straight):
    run_dir = straight[0]
    logger, lines = logging.getLogger("dltrain"), Lines()
    logger.addHandler(lines)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        train(compose([*SCHEDULE, f"model.weights={run_dir.parent / 'start.pt'}", f"trainer.max_epochs={EPOCHS}",
                       f"resume={run_dir / 'checkpoints' / 'epoch-0003.pt'}"]), run_dir=tmp_path / "resumed")
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    assert not [m for m in lines.messages if "unfreezing" in m]
    summary = (tmp_path / "resumed" / "model_summary.txt").read_text()
    total = re.search(r"^Total params: ([\d,]+)$", summary, re.MULTILINE)[1]
    assert "(frozen)" not in summary and f"Trainable params: {total}\nNon-trainable params: 0\n" in summary
    assert rows(tmp_path / "resumed") == rows(run_dir)
    assert same_weights(tmp_path / "resumed" / "checkpoints" / "last.pt", run_dir / "checkpoints" / "last.pt")

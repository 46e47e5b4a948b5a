"""A mid-epoch ``last.pt`` is written as a stopped run's is: rank 0 saves finite weights, and
the ranks agree that it worked, so a failed write stops every rank instead of leaving the
others waiting."""

from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dltrain.training.checkpoint import load_checkpoint, save_last
from dltrain.training.step_checkpoints import StepCheckpoints


class AgreeingRanks:
    """One rank that records what the ranks agree on."""

    is_main = True

    def __init__(self) -> None:
        self.agreed_on: list[str] = []

    def agreed(self, what, fn, *args):  # noqa: ANN001, ANN201 - Ranks.agreed's signature
        self.agreed_on.append(what)
        return fn(*args)


def fake_trainer(ranks: AgreeingRanks, weight: float = 1.0) -> SimpleNamespace:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(weight)
    return SimpleNamespace(model=model, ranks=ranks, profiler=SimpleNamespace(phase=lambda _: nullcontext()),
                           checkpoint=lambda: {"model": model.state_dict()})


def test_a_mid_epoch_last_pt_is_agreed_on_as_a_stopped_runs_is(tmp_path):
    ranks = AgreeingRanks()
    StepCheckpoints(tmp_path, every_n_steps=1).write(fake_trainer(ranks))
    (tmp_path / "stopped").mkdir()
    save_last(fake_trainer(ranks), tmp_path / "stopped", ranks)
    assert ranks.agreed_on == ["saving last.pt", "saving last.pt"]
    assert load_checkpoint(tmp_path / "last.pt")["model"]["weight"].eq(1).all()


def test_non_finite_weights_leave_the_last_good_file(tmp_path):
    ranks = AgreeingRanks()
    StepCheckpoints(tmp_path, every_n_steps=1).write(fake_trainer(ranks))
    StepCheckpoints(tmp_path, every_n_steps=1).write(fake_trainer(ranks, float("nan")))
    assert load_checkpoint(tmp_path / "last.pt")["model"]["weight"].eq(1).all()


def test_a_failed_write_raises_through_the_agreement(tmp_path):
    ranks = AgreeingRanks()
    (tmp_path / "last.pt").mkdir()  # a directory where the file goes
    with pytest.raises(Exception):  # noqa: B017, PT011 - whichever error the write raises
        StepCheckpoints(tmp_path, every_n_steps=1).write(fake_trainer(ranks))
    assert ranks.agreed_on == ["saving last.pt"]


def test_save_last_false_with_step_checkpoints_keeps_last_pt_at_each_epoch_end(compose, tmp_path):
    """Mid-epoch last.pt files asked for: the epoch's end writes one too, so a resume never
    trains again from the epoch's last mid-epoch one."""
    from dltrain import train

    train(compose(["model.hidden=[16]", "trainer.batch_size=256", "trainer.diagnostics=false",
                   "trainer.max_epochs=2", "trainer.checkpoint.save_last=false",
                   "trainer.checkpoint.every_n_steps=3"]), run_dir=tmp_path)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and not state.get("partial_epoch") and state["global_step"] % 3

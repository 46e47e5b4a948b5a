"""CheckpointPolicy: which checkpoints an epoch's end writes, and the pruning of periodic ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dltrain.training.callbacks import CheckpointPolicy
from dltrain.training.checkpoint import load_checkpoint


def _names(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def _state(epoch: int) -> dict[str, object]:
    """A checkpoint's state of ``epoch``: what load_checkpoint accepts."""
    return {"model": {"weight": torch.full((3,), float(epoch))}, "epoch": epoch}


def test_last_after_every_epoch_and_best_only_after_an_improvement(tmp_path):
    policy = CheckpointPolicy(tmp_path)
    assert _names(policy.files(1, improved=True)) == ["last.pt", "best.pt"]
    assert _names(policy.files(2, improved=False)) == ["last.pt"]
    assert all(p.parent == tmp_path for p in policy.files(3, improved=True))


@pytest.mark.parametrize(("every", "epochs"), [(1, [1, 2, 3, 4, 5, 6]), (2, [2, 4, 6]), (3, [3, 6]), (0, [])])
def test_a_periodic_checkpoint_every_n_epochs(tmp_path, every, epochs):
    policy = CheckpointPolicy(tmp_path, save_last=False, save_best=False, every_n_epochs=every)
    written = {epoch: _names(policy.files(epoch, improved=True)) for epoch in range(1, 7)}
    assert written == {e: [f"epoch-{e:04d}.pt"] if e in epochs else [] for e in range(1, 7)}


def test_each_file_can_be_switched_off(tmp_path):
    assert policy_files(tmp_path, save_last=False) == ["best.pt", "epoch-0004.pt"]
    assert policy_files(tmp_path, save_best=False) == ["last.pt", "epoch-0004.pt"]
    assert policy_files(tmp_path, save_last=False, save_best=False, every_n_epochs=0) == []


def policy_files(folder: Path, **settings: object) -> list[str]:
    """The files epoch 4, an improvement, writes with every file on (periodic every 2) but ``settings``."""
    return _names(CheckpointPolicy(folder, **{"every_n_epochs": 2, **settings}).files(4, improved=True))


def test_an_epoch_whose_monitored_value_is_not_finite_writes_nothing(tmp_path):
    policy = CheckpointPolicy(tmp_path, every_n_epochs=1)
    assert policy.files(3, improved=True, healthy=False) == []
    assert _names(policy.files(3, improved=True, healthy=True)) == ["last.pt", "best.pt", "epoch-0003.pt"]


def test_write_saves_the_state_to_each_file(tmp_path):
    policy = CheckpointPolicy(tmp_path / "checkpoints", every_n_epochs=1)
    policy.write(_state(1), policy.files(1, improved=True))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.pt", "epoch-0001.pt", "last.pt"]
    for name in ("best.pt", "epoch-0001.pt", "last.pt"):
        loaded = load_checkpoint(tmp_path / "checkpoints" / name)
        assert loaded["epoch"] == 1 and torch.equal(loaded["model"]["weight"], torch.ones(3))


@pytest.mark.parametrize(("keep_last", "kept"), [(2, [5, 6]), (1, [6]), (None, [2, 4, 5, 6])])
def test_periodic_checkpoints_beyond_keep_last_are_pruned(tmp_path, keep_last, kept):
    policy = CheckpointPolicy(tmp_path, save_last=False, save_best=False, every_n_epochs=1, keep_last=keep_last)
    for epoch in (2, 4, 5, 6):
        policy.write(_state(epoch), policy.files(epoch, improved=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"epoch-{e:04d}.pt" for e in kept]
    assert [load_checkpoint(tmp_path / f"epoch-{e:04d}.pt")["epoch"] for e in kept] == kept


def test_an_epoch_without_a_periodic_checkpoint_prunes_nothing(tmp_path):
    """Pruning follows a periodic write: a run resumed with a smaller keep_last keeps what it
    has until its next periodic checkpoint."""
    for epoch in (1, 2, 3):
        CheckpointPolicy(tmp_path, save_best=False, every_n_epochs=1).write(
            _state(epoch), [tmp_path / f"epoch-{epoch:04d}.pt"])
    policy = CheckpointPolicy(tmp_path, save_best=False, every_n_epochs=2, keep_last=1)
    policy.write(_state(5), policy.files(5, improved=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0001.pt", "epoch-0002.pt", "epoch-0003.pt",
                                                          "last.pt"]


def test_a_run_writes_the_files_of_its_checkpoint_settings(compose, tmp_path):
    """Through train(): every_n_epochs=2 with keep_last=1 leaves the last periodic checkpoint
    only, beside last.pt and best.pt."""
    from dltrain import train

    train(compose(["data=xor", "trainer.max_epochs=5", "trainer.checkpoint.every_n_epochs=2",
                   "trainer.checkpoint.keep_last=1", "device=cpu"]), run_dir=tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.pt", "epoch-0004.pt", "last.pt"]
    assert load_checkpoint(tmp_path / "checkpoints" / "epoch-0004.pt")["epoch"] == 4

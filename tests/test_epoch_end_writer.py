"""The end-of-epoch writes: rank 0 writes the metrics row, the logger's record and the
checkpoints; every rank gathers the checkpoint's state, once per epoch."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from dltrain.training.callbacks import CheckpointPolicy, EpochEndWriter


class Recorder:
    """Stands in for metrics.csv and the logger: keeps the rows it is given."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    log_epoch = write


class FakeTrainer:
    def __init__(self, epoch: int, healthy: bool = True) -> None:
        self.epoch, self.healthy, self.gathered = epoch, healthy, 0

    def checkpoint(self) -> dict[str, Any]:
        self.gathered += 1
        return {"epoch": self.epoch, "w": torch.ones(2)}


@pytest.mark.parametrize("main", [True, False])
def test_rank0_writes_and_every_rank_gathers_once(tmp_path, main):
    csv, logger = Recorder(), Recorder()
    writer = EpochEndWriter(csv, logger, CheckpointPolicy(tmp_path / "checkpoints"), main)
    trainer, row = FakeTrainer(epoch=3), {"epoch": 3, "train_loss": 0.5}
    writer(trainer, row, True)
    assert trainer.gathered == 1  # last.pt and best.pt from one gathered state
    written = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt")) if main else []
    assert written == (["best.pt", "last.pt"] if main else [])
    assert csv.rows == logger.rows == ([row] if main else [])
    if main:
        assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 3


def test_unhealthy_epoch_writes_its_row_but_no_checkpoint(tmp_path):
    csv, logger = Recorder(), Recorder()
    writer = EpochEndWriter(csv, logger, CheckpointPolicy(tmp_path / "checkpoints"), True)
    trainer = FakeTrainer(epoch=1, healthy=False)
    writer(trainer, {"epoch": 1}, False)
    assert trainer.gathered == 0 and csv.rows == [{"epoch": 1}]
    assert not (tmp_path / "checkpoints").exists()

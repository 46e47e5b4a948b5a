"""The run's last lines count what they name: one epoch is an epoch, and inside an epoch the
place a run stopped at is a batch (with accumulation, optimizer steps count several)."""

from __future__ import annotations

import logging

from dltrain import train
from dltrain.training.budget import TimeLimitReached


def test_a_one_epoch_run_ends_after_1_epoch(compose, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="dltrain"):
        train(compose(["model.hidden=[16]", "trainer.batch_size=256", "trainer.diagnostics=false",
                       "trainer.max_epochs=1"]), run_dir=tmp_path)
    assert "completed after 1 epoch (" in caplog.text


def test_a_time_limit_names_the_batch_it_stopped_after():
    assert str(TimeLimitReached(2, 11, 20)) == "in epoch 2 after batch 11 of 20"

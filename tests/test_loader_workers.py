"""A run that reads its data through DataLoader worker processes leaves none behind.

The workers ignore SIGTERM (the training process stops them cleanly), so a persistent
worker that outlived its run would leave multiprocessing's exit handler waiting on it
forever: the process that ran the training could never exit."""

from __future__ import annotations

import gc
import multiprocessing

from dltrain import train


def test_a_run_with_worker_processes_stops_them_when_it_ends(compose, tmp_path, data_overrides):
    gc.disable()  # the run's objects must not need a garbage collection to let their workers go
    try:
        summary = train(compose(["trainer.fast_dev_run=true", "device=cpu", "data=image_folder",
                                 *data_overrides("image_folder"), "data.in_memory=false", "data.num_workers=2"]),
                        run_dir=tmp_path / "run")
        assert summary["status"] == "completed"
        assert multiprocessing.active_children() == []
    finally:
        gc.enable()

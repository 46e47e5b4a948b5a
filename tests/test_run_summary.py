"""summary.json as one typed object: the keys each outcome writes, in their order, and the
one function that writes it."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from dltrain.report.summary import RunSummary, read_summary, write_summary

#: The keys of a run that trained, in the order summary.json lists them.
TRAINED = ["status", "stop_reason", "epochs_run", "stopped_epoch", "best_epoch", "monitor", "mode", "best_value",
           "test", "test_weights", "num_params", "train_seconds", "task", "objective", "loss", "data", "device",
           "world_size", "resumed_from", "validation", "warnings", "run_dir", "started_at", "versions"]
NOT_STARTED = ["status", "stop_reason", "epochs_run", "stopped_epoch", "best_epoch", "resumed_from", "world_size",
               "started_at"]
ALREADY_FINISHED = ["status", "stop_reason", "resumed_from", "epochs_run", "stopped_epoch", "best_epoch", "monitor",
                    "mode", "best_value", "world_size", "run_dir"]


def _written(run_dir: Path) -> dict[str, object]:
    return json.loads((run_dir / "summary.json").read_text())


# The object.

def test_a_run_that_did_not_start_says_why_and_nothing_of_training():
    summary = RunSummary.not_started("interrupted", "aborted by SIGTERM", resumed_from="a/last.pt", world_size=2,
                                     started_at="2026-01-02T03:04:05")
    assert summary.to_dict() == {"status": "interrupted", "stop_reason": "aborted by SIGTERM", "epochs_run": 0,
                                 "stopped_epoch": None, "best_epoch": None, "resumed_from": "a/last.pt",
                                 "world_size": 2, "started_at": "2026-01-02T03:04:05"}
    assert list(summary.to_dict()) == NOT_STARTED


def test_a_finished_run_resumed_again_names_its_epochs_and_best():
    summary = RunSummary.already_finished("it completed 7 epochs", resumed_from="r/checkpoints/last.pt", epochs=7,
                                          best_epoch=5, monitor="val_loss", mode="min", best_value=0.25,
                                          world_size=1, run_dir="again")
    written = summary.to_dict()
    assert list(written) == ALREADY_FINISHED
    assert written["status"] == "already_finished"
    assert written["stop_reason"] == "nothing to train: it completed 7 epochs"
    assert (written["epochs_run"], written["stopped_epoch"], written["best_epoch"], written["best_value"]) == (7, 7, 5,
                                                                                                              0.25)


def test_a_sweep_job_that_failed_before_its_run_says_failed():
    assert RunSummary.job_failed("trainer.max_epochs=0 is below 1").to_dict() == {
        "status": "failed", "stop_reason": "trainer.max_epochs=0 is below 1", "epochs_run": 0, "stopped_epoch": None,
        "best_epoch": None, "best_value": None}


def test_a_trained_run_adds_the_later_keys_once_they_apply_after_the_others():
    summary = RunSummary("completed")
    assert list(summary.to_dict()) == TRAINED
    summary.finished_at, summary.segment_seconds = "2026-01-02T03:04:05", 1.5
    assert list(summary.to_dict()) == [*TRAINED, "segment_seconds", "finished_at"]
    summary.signal, summary.checkpoint = "SIGTERM", "run/checkpoints/last.pt"
    assert list(summary.to_dict()) == [*TRAINED, "checkpoint", "segment_seconds", "signal", "finished_at"]


def test_the_other_outcomes_never_gain_the_later_keys():
    summary = RunSummary.not_started("failed", "no data", resumed_from=None, world_size=1, started_at="t")
    summary.finished_at = "later"
    assert list(summary.to_dict()) == NOT_STARTED


# Reading and writing.

def test_a_summary_read_back_is_written_as_it_was(tmp_path):
    """Keys in the file's order, a key this version does not know kept as it was."""
    original = {"status": "completed", "stop_reason": "reached trainer.max_epochs=2", "test": {"accuracy": 0.5},
                "a_key_of_another_version": [1, 2], "epochs_run": 2}
    (tmp_path / "summary.json").write_text(json.dumps(original))
    summary = read_summary(tmp_path)
    assert summary is not None and summary.finished and summary.test == {"accuracy": 0.5}
    assert summary.to_dict() == original and list(summary.to_dict()) == list(original)


@pytest.mark.parametrize("content", [None, "", "{not json", "[1, 2]", '{"epochs_run": 3}'])
def test_no_summary_or_one_that_does_not_read_is_none(tmp_path, content):
    if content is not None:
        (tmp_path / "summary.json").write_text(content)
    assert read_summary(tmp_path) is None


def test_only_rank_0_writes_and_the_write_is_atomic(tmp_path):
    summary = RunSummary.job_failed("boom")
    write_summary(tmp_path, summary, main=False)
    assert not (tmp_path / "summary.json").exists()
    write_summary(tmp_path, summary)
    assert _written(tmp_path) == summary.to_dict()
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left


# Every outcome of train() writes its layout.

def test_a_completed_run_writes_the_keys_of_a_trained_run(compose, tmp_path):
    from dltrain import train

    returned = train(compose(["data=xor", "trainer.fast_dev_run=true", "device=cpu"]), run_dir=tmp_path)
    written = _written(tmp_path)
    assert list(written) == [*TRAINED, "segment_seconds", "finished_at", "report"]
    assert returned == written and written["status"] == "completed" and written["test"]


def test_an_interrupted_run_names_the_checkpoint_it_saved(compose, tmp_path, monkeypatch):
    from dltrain import train
    from dltrain.training.signals import Interrupted
    from dltrain.training.trainer import Trainer

    def stopped(*args, **kwargs):
        raise Interrupted(signal.SIGTERM, "interrupted by SIGTERM")

    monkeypatch.setattr(Trainer, "fit", stopped)
    with pytest.raises(Interrupted, match="continue with resume="):
        train(compose(["data=xor", "trainer.max_epochs=2", "device=cpu"]), run_dir=tmp_path)
    written = _written(tmp_path)
    assert list(written) == [*TRAINED, "checkpoint", "segment_seconds"]
    assert written["status"] == "interrupted" and Path(written["checkpoint"]) == tmp_path / "checkpoints" / "last.pt"


def test_a_run_that_fails_before_its_first_epoch_writes_why(compose, tmp_path, monkeypatch):
    from dltrain import train
    from dltrain.errors import UserError

    (tmp_path / "run").mkdir()
    with pytest.raises(UserError):
        train(compose(["data=csv", f"data.path={tmp_path / 'missing.csv'}", "device=cpu"]), run_dir=tmp_path / "run")
    written = _written(tmp_path / "run")
    assert list(written) == NOT_STARTED
    assert written["status"] == "failed" and "missing.csv" in written["stop_reason"]


@pytest.mark.pictures
def test_resuming_a_finished_run_writes_already_finished(compose, tmp_path):
    from dltrain import train

    train(compose(["data=xor", "trainer.max_epochs=2", "device=cpu"]), run_dir=tmp_path / "done")
    last = tmp_path / "done" / "checkpoints" / "last.pt"
    (tmp_path / "again").mkdir()  # as Hydra makes it: train() writes into a directory that exists
    returned = train(compose(["data=xor", "trainer.max_epochs=2", "device=cpu", f"resume={last}"]),
                     run_dir=tmp_path / "again")
    written = _written(tmp_path / "again")
    assert list(written) == ALREADY_FINISHED and returned == written
    assert written["status"] == "already_finished" and written["resumed_from"] == str(last)

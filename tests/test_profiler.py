"""``trainer.profiler``: ``simple`` times the phases of the loop into summary.json and profile.txt;
``pytorch`` writes a trace; ``none`` makes nothing per step."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from dltrain import train
from dltrain.training.checkpoint import load_checkpoint
from dltrain.training.profiler import PHASES, Profiler, SimpleProfiler, TorchProfiler, format_profile

TINY = ["model.hidden=[16]", "trainer.batch_size=256", "trainer.diagnostics=false"]


def test_off_makes_nothing_per_step():
    profiler = Profiler()
    batches = [(torch.zeros(1), torch.zeros(1))]
    assert profiler.batches(batches) is batches  # the loop iterates the batches themselves
    assert profiler.phase("forward") is profiler.phase("backward")  # one shared context that does nothing
    assert profiler.finish(None) is None


def test_nested_phases_count_once():
    profiler = SimpleProfiler(torch.device("cpu"))
    profiler.start()
    with profiler.phase("optimizer"):  # an LBFGS step, whose closure runs forward and backward
        with profiler.phase("forward"):
            sum(range(10_000))
        sum(range(10_000))
    profiler.stop()
    report = profiler.report()
    assert report["optimizer"]["calls"] == report["forward"]["calls"] == 1
    timed = report["optimizer"]["seconds"] + report["forward"]["seconds"] + report["other"]["seconds"]
    assert timed == pytest.approx(report["total"]["seconds"], abs=1e-5)
    assert "backward" not in report  # a phase that never ran is not listed


def test_cuda_phases_are_synchronised(monkeypatch):
    """On CUDA each phase waits for the queued kernels as it starts and as it ends."""
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: calls.append(1))
    profiler = SimpleProfiler(torch.device("cuda"))
    with profiler.phase("forward"):
        assert len(calls) == 1
    assert len(calls) == 2
    with SimpleProfiler(torch.device("cpu")).phase("forward"):
        pass
    assert len(calls) == 2


def test_simple_times_every_phase_of_a_run(compose, tmp_path):
    run = tmp_path / "run"
    summary = train(compose([*TINY, "trainer.max_epochs=2", "trainer.profiler=simple", "regularization.ema_decay=0.9",
                             "regularization.evaluate_averaged=false"]), run_dir=run)
    profile = summary["profile"]
    assert json.loads((run / "summary.json").read_text())["profile"] == profile
    steps = load_checkpoint(run / "checkpoints" / "last.pt")["global_step"]
    # one of each per training step; the EMA's update after each step and at each epoch's end;
    # per epoch a validation of the weights and one of the averaged weights, a checkpoint write
    for phase in ("data", "augment", "forward", "backward", "optimizer"):
        assert profile[phase]["calls"] == steps, phase
    assert profile["averaging"]["calls"] == steps + 2
    assert profile["evaluation"]["calls"] == 4 and profile["checkpointing"]["calls"] == 2
    assert list(profile) == [*PHASES, "other", "total"]
    assert all(profile[phase]["seconds"] > 0 for phase in ("data", "forward", "backward", "optimizer", "averaging",
                                                           "evaluation", "checkpointing"))
    assert sum(row["share"] for row in profile.values() if "share" in row) == pytest.approx(1.0, abs=1e-3)
    text = (run / "profile.txt").read_text()
    assert text == format_profile(profile)
    assert [line.split()[0] for line in text.splitlines()] == ["phase", *PHASES, "other", "total", "calls:"]


def test_lbfgs_counts_the_closures_passes(compose, tmp_path):
    summary = train(compose([*TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "optim=lbfgs",
                             "trainer.profiler=simple"]),
                    run_dir=tmp_path / "run")
    profile = summary["profile"]
    steps = profile["optimizer"]["calls"]
    assert profile["forward"]["calls"] == profile["backward"]["calls"] >= steps  # its line search re-evaluates
    phases = sum(row["seconds"] for name, row in profile.items() if name != "total")
    assert phases == pytest.approx(profile["total"]["seconds"], abs=1e-4)


def test_off_writes_no_profile(compose, tmp_path):
    summary = train(compose([*TINY, "trainer.fast_dev_run=true"]), run_dir=tmp_path / "run")
    assert "profile" not in summary and not (tmp_path / "run" / "profile.txt").exists()


def test_pytorch_writes_a_trace_of_the_phases(compose, tmp_path, caplog):
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="dltrain"):
        summary = train(compose([*TINY, "trainer.max_epochs=1", "trainer.profiler=pytorch"]), run_dir=run)
    assert summary["profile"] == {"trace": "profiler/trace.json", "steps": 3}
    events = json.loads((run / "profiler" / "trace.json").read_text())["traceEvents"]
    names = {event.get("name") for event in events}
    assert {"forward", "backward", "optimizer", "data"} <= names
    assert "profiler/trace.json holds 3 training steps; open it in https://ui.perfetto.dev" in caplog.text


def test_pytorch_in_a_run_shorter_than_its_schedule_ends_cleanly(compose, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="dltrain"):
        summary = train(compose([*TINY, "trainer.fast_dev_run=true", "trainer.profiler=pytorch"]),
                        run_dir=tmp_path / "run")
    assert summary["status"] == "completed"
    assert summary["profile"]["steps"] == 0  # 2 batches: one skipped, one of warm-up
    assert "holds 0 training steps, not trainer.profiler_steps=3" in caplog.text


def test_pytorch_steps_are_optimizer_steps(compose, tmp_path, caplog):
    """With accumulation of 4 batches, each step of the trace is one optimizer step: the 3
    recorded hold 3 optimizer steps of 4 forward and backward passes each."""
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="dltrain"):
        summary = train(compose([*TINY, "trainer.batch_size=16", "trainer.accumulate_grad_batches=4",
                                 "trainer.max_steps=5", "trainer.profiler=pytorch"]), run_dir=run)
    assert summary["profile"] == {"trace": "profiler/trace.json", "steps": 3}
    events = json.loads((run / "profiler" / "trace.json").read_text())["traceEvents"]
    ranges = [e["name"] for e in events if e.get("cat") == "user_annotation"]
    assert [ranges.count(name) for name in ("forward", "backward", "optimizer")] == [12, 12, 3]
    assert len({e["name"] for e in events if e.get("name", "").startswith("ProfilerStep#")}) == 3
    assert "profiler/trace.json holds 3 training steps" in caplog.text


class _Trace:
    """A stand-in for torch's profiler: its export writes ``text``, or fails part way."""

    step_num = 5

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.paths = fail, []

    def export_chrome_trace(self, path: str) -> None:
        self.paths.append(path)
        Path(path).write_text("{half")
        if self.fail:
            raise OSError("No space left on device")
        Path(path).write_text("{}")


def test_trace_is_replaced_atomically(tmp_path):
    """The trace is exported beside its place and moved there whole; a failed export leaves
    the earlier trace and no temporary file."""
    profiler = TorchProfiler(torch.device("cpu"), 3, tmp_path)
    profiler._write(_Trace())
    folder = tmp_path / "profiler"
    assert (folder / "trace.json").read_text() == "{}" and [p.name for p in folder.iterdir()] == ["trace.json"]
    failing = _Trace(fail=True)
    with pytest.raises(OSError):
        profiler._write(failing)
    assert Path(failing.paths[0]).parent == folder and failing.paths[0] != str(folder / "trace.json")
    assert (folder / "trace.json").read_text() == "{}" and [p.name for p in folder.iterdir()] == ["trace.json"]


def test_profiling_leaves_the_results_unchanged(compose, tmp_path):
    """none, simple and pytorch train the same weights and test to the same loss."""
    losses, weights = [], []
    for kind in ("none", "simple", "pytorch"):
        run = tmp_path / kind
        summary = train(compose([*TINY, "trainer.max_steps=4", f"trainer.profiler={kind}"]), run_dir=run)
        losses.append(summary["test"]["loss"])
        weights.append(load_checkpoint(run / "checkpoints" / "last.pt")["model"])
    assert losses[0] == losses[1] == losses[2]
    for other in weights[1:]:
        assert all(torch.equal(weights[0][k], other[k]) for k in weights[0])

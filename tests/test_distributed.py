"""Training on several ranks (torchrun, DistributedDataParallel): a DDP step, metrics over
every rank's shard, the agreements that keep ranks in step, and checkpoints across world sizes.

Starting a process costs seconds (importing torch), so the tests that need ranks share ONE
session of two CPU processes (gloo), started once for the module: ``tests/ddp_workers.py``
runs every scenario in turn and saves what each rank saw, and the tests here compare that
with the same computation in this single process. The other tests need no process at all.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from dltrain import train
from dltrain.build import check_options
from dltrain.data.batches import TensorBatches
from dltrain.errors import ConfigError
from dltrain.training.checkpoint import load_checkpoint
from dltrain.training.distributed import Environment, Ranks, _set_by_torchrun, environment, route_logs, set_threads
from dltrain.training.metrics import MetricAccumulator
from dltrain.training.trainer import Trainer
from tests import ddp_workers as workers

from .conftest import ROOT, run_cli

WORLD = 2
#: What a launcher sets; the ranks get their own, the rest of the suite none of it.
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK",
               "TORCHELASTIC_RUN_ID", "SUBMITIT_FOLDER", "HYDRA_FULL_ERROR")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Session:
    """What the ranks of one session saved in ``out`` (see ``tests/ddp_workers.py``)."""

    out: Path
    exit_codes: list[int | None]  # None: killed at the time limit

    def result(self, scenario: str, rank: int) -> dict[str, Any]:
        """What ``rank`` saw in ``scenario``; fails the test, with the rank's output, if it saved nothing."""
        path = self.out / f"{scenario}.rank{rank}.pt"
        if not path.is_file():
            log = (self.out / f"rank{rank}.out").read_text()[-3000:]
            pytest.fail(f"rank {rank} saved no {path.name} (exit codes {self.exit_codes}, None: timed out):\n{log}")
        result = torch.load(path, weights_only=True)
        if "unexpected" in result:
            pytest.fail(f"rank {rank} failed in {scenario}:\n{result['unexpected']}")
        return result

    def both(self, scenario: str) -> list[dict[str, Any]]:
        return [self.result(scenario, rank) for rank in range(WORLD)]


def start_ranks(out: Path, timeout: float = 120) -> Session:
    """Run ``python -m tests.ddp_workers OUT`` as ranks 0 and 1 of one gloo group, in ``out``
    (so a rank that made a directory of its own would make it there); kill both at ``timeout``."""
    base = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(WORLD),
                LOCAL_WORLD_SIZE=str(WORLD), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
                PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    procs = []
    for rank in range(WORLD):
        with (out / f"rank{rank}.out").open("w") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "tests.ddp_workers", str(out)], cwd=out,
                                          env={**base, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                                          stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + timeout
    codes: list[int | None] = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            codes.append(None)
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Session(out, codes)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> Session:
    """The one 2-rank session of this module: every scenario of ``tests/ddp_workers.py``."""
    return start_ranks(tmp_path_factory.mktemp("ranks"))


def close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    try:
        for k in a:
            torch.testing.assert_close(a[k], b[k])
    except AssertionError:
        return False
    return a.keys() == b.keys()


def rows(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv without its timings."""
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(f)]


# ---- the 2-rank session ----------------------------------------------------------------


@pytest.mark.parametrize("optimizer", list(workers.OPTIMIZERS))
def test_ddp_step_equals_single_process_step_on_twice_the_batch(ranks, optimizer):
    """Acceptance: after one step, DDP with per-rank batch b gives the same weights as a
    single process with batch 2b on the same samples (within float tolerance); and a
    single process with batch b does not, so the comparison can tell."""
    rank0, rank1 = (r[optimizer] for r in ranks.both("equivalence"))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # DDP keeps the replicas identical
    single = workers.weights_after_one_step(optimizer, 2 * workers.B)
    for k in single:
        torch.testing.assert_close(rank0[k], single[k])
    assert not close(rank0, workers.weights_after_one_step(optimizer, workers.B))
    assert not close(rank0, workers.mlp().state_dict())  # the step moved the weights


def test_metrics_are_over_the_whole_split_across_uneven_shards(ranks):
    """Each rank evaluates its contiguous part (10 and 11 of 21 examples, 2 and 3 batches):
    both return the metrics of the whole split, as one process computes them."""
    rank0, rank1 = ranks.both("evaluation")
    assert (rank0["batches"], rank1["batches"]) == (2, 3)
    assert rank0["metrics"] == rank1["metrics"]
    x, y = workers.dataset(21, seed=3)
    whole = workers.trainer_for(workers.mlp()).evaluate(TensorBatches(x, y, 5))
    assert rank0["metrics"].keys() == whole.keys() == {"loss", "accuracy"}
    for k in whole:
        assert rank0["metrics"][k] == pytest.approx(whole[k], abs=1e-6)


def test_stop_request_on_one_rank_stops_both_after_the_same_step(ranks):
    """A signal that reaches rank 1 alone in its 3rd of 10 steps stops both ranks after step 3,
    with that signal; one that reaches it while validating (its shard has a batch more than
    rank 0's) stops both once the validation is done."""
    for rank, seen in enumerate(ranks.both("stop")):
        assert seen["num_batches"] == 10, rank
        assert seen["train"]["error"] == "Interrupted" and seen["train"]["signum"] == signal.SIGTERM, rank
        assert seen["train"]["message"] == "interrupted by SIGTERM in epoch 1 after batch 3 of 10", rank
        assert seen["step_in_epoch"] == seen["global_step"] == 3, rank
        assert seen["val_batches"] == 2 + rank
        assert seen["validate"]["error"] == "Interrupted" and seen["validate"]["signum"] == signal.SIGUSR1, rank
        assert seen["validate"]["message"] == "interrupted by SIGUSR1 while validating epoch 1", rank


def test_time_limit_on_rank_0s_clock_stops_both_after_the_same_step(ranks):
    """trainer.max_time: rank 0's clock alone decides (rank 1's, already past the budget, is
    never read), and both ranks stop after the step rank 0's ran out at."""
    for rank, seen in enumerate(ranks.both("time_limit")):
        assert seen["clock"] == (rank == 0), rank
        assert seen["train"]["error"] == "TimeLimitReached", (rank, seen)
        assert seen["train"]["message"] == "in epoch 1 after batch 3 of 10", rank
        assert seen["global_step"] == 3, rank


def test_diverged_loss_on_one_rank_stops_both_at_the_same_step(ranks):
    """Rank 1's loss alone becomes NaN at step 2: both raise TrainingDiverged after step 2, and
    rank 0, whose own loss is finite, says it was another rank's."""
    rank0, rank1 = ranks.both("divergence")
    assert rank0["error"] == rank1["error"] == "TrainingDiverged"
    assert rank0["step_in_epoch"] == rank1["step_in_epoch"] == 2
    assert rank0["message"].startswith("the training loss of another rank became NaN or infinite in epoch 1 by "
                                       "step 2 of 10")
    assert rank1["message"].startswith("the training loss became nan in epoch 1 at step 2 of 10")


def test_setup_error_on_one_rank_is_reported_on_every_rank(ranks):
    """``Ranks.check``: the rank that failed raises its own error, the other a PeerFailed that
    names the rank, the step and the error, instead of waiting for it."""
    rank0, rank1 = ranks.both("setup_error")
    assert rank1 == {"error": "FileNotFoundError", "message": "no such file: data/rank1.csv", "signum": None}
    assert rank0["error"] == "PeerFailed"
    assert rank0["message"] == "rank 1 failed while loading the data: no such file: data/rank1.csv"


def test_two_rank_run_writes_one_run_directory(ranks):
    """``train()`` on 2 ranks given one run_dir: both complete, rank 0 writes that directory
    and no rank makes another; the checkpoint holds both ranks' random states."""
    results = ranks.both("runs")
    run_dir = ranks.out / "straight"
    for rank, result in enumerate(results):
        assert result["straight"]["status"] == "completed" and result["straight"]["world_size"] == WORLD, rank
    assert results[0]["straight"]["test"] == results[1]["straight"]["test"]
    made = sorted(p.name for p in ranks.out.iterdir() if p.is_dir())
    assert made == ["autoencoder", "fast", "interrupted", "resumed", "straight"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == WORLD and summary["status"] == "completed"
    assert summary["run_dir"] == str(run_dir)
    assert len(rows(run_dir)) == 2
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["world_size"] == WORLD and len(state["rng_ranks"]) == WORLD
    assert state["rng_ranks"][0]["torch"].shape == state["rng"]["torch"].shape
    assert not torch.equal(state["rng_ranks"][0]["torch"], state["rng_ranks"][1]["torch"])  # seeded per rank
    # rank1.log: train() called from Python has no log file for route_logs to redirect, so it is
    # checked under torchrun (test_torchrun_two_ranks_end_to_end) and by test_route_logs_*.


@pytest.mark.pictures
def test_two_rank_run_writes_the_report_of_the_whole_test_split_once(ranks):
    """The report reads every rank's test outputs, and rank 0 alone writes its files and diagnostics.csv."""
    ranks.both("runs")
    run_dir = ranks.out / "straight"
    summary = json.loads((run_dir / "summary.json").read_text())
    supports = [row["support"] for row in summary["report"]["per_class"].values()]
    assert sum(supports) == summary["report"]["macro_avg"]["support"] == summary["data"]["num_test"] == 360
    names = {p.name for p in run_dir.iterdir()}
    assert {"worst_predictions.csv", "confusion_matrix.png", "worst_predictions.png", "diagnostics.csv",
            "gradients.png", "samples.png"} <= names
    assert not [name for name in names if name.startswith(".tmp") or "rank" in name]  # no second writer's files
    with (run_dir / "worst_predictions.csv").open(newline="") as f:
        assert [row["rank"] for row in csv.DictReader(f)] == [str(k) for k in range(1, 21)]  # one table, once
    with (run_dir / "diagnostics.csv").open(newline="") as f:
        measured = [(row["epoch"], row["layer"]) for row in csv.DictReader(f)]
    assert len(measured) == len(set(measured)) and {epoch for epoch, _ in measured} == {"1", "2"}  # one writer


def test_two_rank_autoencoder_trains_and_both_ranks_agree_on_its_test(ranks):
    results = ranks.both("autoencoder")
    assert all(r["status"] == "completed" and r["world_size"] == WORLD for r in results)
    assert results[0]["test"] == results[1]["test"] and set(results[0]["test"]) == {"loss", "noisy_loss"}


def test_checkpoint_of_a_two_rank_run_resumes_in_a_single_process(ranks, compose, tmp_path):
    """Acceptance: a checkpoint written by a 2-rank run resumes in a single process."""
    ranks.result("runs", 0)
    last = ranks.out / "straight" / "checkpoints" / "last.pt"
    summary = train(compose(["device=cpu", f"resume={last}", "trainer.max_epochs=3"]), run_dir=tmp_path / "single")
    assert summary["status"] == "completed" and summary["world_size"] == 1
    assert summary["resumed_from"] == str(last) and summary["epochs_run"] == 3
    resumed = rows(tmp_path / "single")
    assert len(resumed) == 3 and resumed[:2] == rows(ranks.out / "straight")
    assert load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")["global_step"] == 3 * 20


def test_two_rank_run_interrupted_then_resumed_equals_the_uninterrupted_one(ranks):
    """A signal reaching rank 1 alone stops both ranks after step 5 of epoch 2, and the
    checkpoint they saved, resumed on 2 ranks, repeats the uninterrupted run exactly
    (dropout draws from each rank's own random state)."""
    results = ranks.both("runs")
    for rank, result in enumerate(results):
        assert result["interrupted"]["error"] == "Interrupted", rank
        message = result["interrupted"]["message"]
        assert message.startswith("interrupted by SIGTERM in epoch 2 after batch 5 of 20"), rank
        assert result["resumed"]["status"] == "completed", rank
    summary = json.loads((ranks.out / "interrupted" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["world_size"] == WORLD and summary["epochs_run"] == 1
    state = load_checkpoint(ranks.out / "interrupted" / "checkpoints" / "last.pt")
    assert state["global_step"] == workers.INTERRUPT_AT and state["world_size"] == WORLD
    assert state["partial_epoch"]["step"] == 5 and state["data_order"]["skip"] == 5
    assert rows(ranks.out / "resumed") == rows(ranks.out / "straight")
    straight = load_checkpoint(ranks.out / "straight" / "checkpoints" / "last.pt")["model"]
    resumed = load_checkpoint(ranks.out / "resumed" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert results[0]["resumed"]["test"] == results[0]["straight"]["test"]


def test_mid_epoch_checkpoint_of_two_ranks_resumes_in_a_single_process(ranks, compose, tmp_path, monkeypatch):
    """The 2-rank checkpoint saved after step 5 of epoch 2, resumed in one process, trains
    steps 6 to 20 of that epoch: a step is one global batch on any number of ranks."""
    ranks.result("runs", 0)
    last = ranks.out / "interrupted" / "checkpoints" / "last.pt"
    steps: list[int] = []
    step = Trainer.train_step

    def count(self, x, y):
        steps.append(self.step_in_epoch + 1)
        return step(self, x, y)

    monkeypatch.setattr(Trainer, "train_step", count)
    summary = train(compose([*workers.RUN, f"resume={last}"]), run_dir=tmp_path / "single")
    assert summary["status"] == "completed" and summary["world_size"] == 1
    assert steps == list(range(6, 21))
    assert load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")["global_step"] == 2 * 20


# ---- without processes -----------------------------------------------------------------


@pytest.mark.parametrize("variables,expected", [
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}, Environment(3, 4, 1, 2)),
    ({"RANK": "3", "WORLD_SIZE": "4"}, Environment(3, 4, 3, 4)),  # one node: local = global
    ({}, Environment()),
    ({"RANK": "0", "WORLD_SIZE": "1"}, Environment()),
])
def test_environment_reads_torchruns_variables(monkeypatch, variables, expected):
    """torchrun's variables give the rank and sizes; none, or a world of one, is one process."""
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    env = environment()
    assert env == expected and env.distributed == (expected.world_size > 1)


def test_one_process_ranks_collectives_return_their_input():
    """``Ranks()``: rank 0 of 1, whose collectives need no process group."""
    one = Ranks()
    box = object()
    assert one.rank == 0 and one.world_size == 1 and one.is_main and not one.distributed
    assert one.broadcast(box) is box and one.all_gather(box) == [box] and one.vote(3, 0) == [3, 0]
    one.check(None, "loading the data")
    error = ValueError("bad value")
    with pytest.raises(ValueError) as raised:
        one.check(error, "loading the data")
    assert raised.value is error


@pytest.fixture
def threads():
    """Restores torch's thread count and OMP_NUM_THREADS, which set_threads changes."""
    before, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    yield
    torch.set_num_threads(before)
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = omp


def test_set_threads_shares_the_cpus_when_unset(monkeypatch, threads):
    """No OMP_NUM_THREADS: each of a node's 2 ranks takes half of its CPUs (at least one)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    expected = max(1, len(os.sched_getaffinity(0)) // 2)
    assert set_threads(Environment(0, 2, 0, 2)) == expected
    assert torch.get_num_threads() == expected and os.environ["OMP_NUM_THREADS"] == str(expected)


def test_set_threads_leaves_the_users_choice(monkeypatch, threads):
    """OMP_NUM_THREADS set by the user (not torchrun's default) is left alone."""
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    before = torch.get_num_threads()
    assert set_threads(Environment(0, 2, 0, 2)) is None and torch.get_num_threads() == before
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert not _set_by_torchrun()  # no torchrun: a 1 is the user's
    assert set_threads(Environment(0, 2, 0, 2)) is None and torch.get_num_threads() == before


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads a process's start environment in /proc")
@pytest.mark.parametrize("launcher_has_it", [False, True])
def test_set_threads_replaces_torchruns_default_of_one(monkeypatch, threads, launcher_has_it):
    """Under torchrun, OMP_NUM_THREADS=1 is torchrun's own unless the launcher (the parent
    process) started with it: only then is it the user's and kept."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if launcher_has_it:
        env["OMP_NUM_THREADS"] = "1"
    launcher = subprocess.Popen(["sleep", "60"], env=env)
    # Until the child has exec'd sleep, /proc shows the forked interpreter's environment, not env.
    deadline = time.monotonic() + 10
    while Path(f"/proc/{launcher.pid}/cmdline").read_bytes() != b"sleep\x0060\x00" and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        monkeypatch.setattr(os, "getppid", lambda: launcher.pid)
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert _set_by_torchrun() is not launcher_has_it
        result = set_threads(Environment(0, 2, 0, 2))
    finally:
        launcher.kill()
        launcher.wait()
    assert result == (None if launcher_has_it else max(1, len(os.sched_getaffinity(0)) // 2))


def test_route_logs_gives_other_ranks_a_log_file_of_their_own(tmp_path):
    """Rank 1 writes rank1.log instead of the run's log file, and prints errors only."""
    import logging

    root = logging.getLogger()
    saved = list(root.handlers)
    run_log, console = logging.FileHandler(tmp_path / "dltrain.log"), logging.StreamHandler(sys.stdout)
    root.handlers[:] = [run_log, console]
    try:
        route_logs(Ranks(Environment(0, 2, 0, 2)), tmp_path)
        assert root.handlers == [run_log, console] and console.level == logging.NOTSET  # rank 0: as it was
        route_logs(Ranks(Environment(1, 2, 1, 2)), tmp_path)
        files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
        assert [Path(h.baseFilename) for h in files] == [(tmp_path / "rank1.log").resolve()]
        assert console in root.handlers and console.level == logging.ERROR
    finally:
        for handler in root.handlers:
            if handler not in saved:
                handler.close()
        root.handlers[:] = saved
        run_log.close()


def test_check_world_refuses_what_several_ranks_cannot_run(compose):
    """trainer.batch_size is the global batch: it must split evenly over the ranks; and
    sync_batchnorm needs CUDA. One process is never refused."""
    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match=r"trainer.batch_size=64 is the global batch, split evenly over the 3 "
                                          r"ranks: make it a multiple of 3 \(e.g. 63\)"):
        check_options(compose(["device=cpu"]), Ranks(Environment(0, 3, 0, 3)), cpu)
    check_options(compose(["device=cpu"]), Ranks(Environment(0, 2, 0, 2)), cpu)
    sync = compose(["device=cpu", "trainer.sync_batchnorm=true"])
    with pytest.raises(ConfigError, match=r"trainer.sync_batchnorm=true needs CUDA .* set trainer.sync_batchnorm="
                                          r"false"):
        check_options(sync, Ranks(Environment(0, 2, 0, 2)), cpu)
    check_options(sync, Ranks(), cpu)
    lbfgs = compose(["device=cpu", "optim=lbfgs"])  # its line search follows each rank's own loss
    with pytest.raises(ConfigError, match=r"optim=lbfgs cannot train across ranks"):
        check_options(lbfgs, Ranks(Environment(0, 2, 0, 2)), cpu)
    check_options(lbfgs, Ranks(), cpu)
    with pytest.raises(ConfigError, match=r"device=mps gave mps, which DistributedDataParallel cannot train on"):
        check_options(compose(["device=mps"]), Ranks(Environment(0, 2, 0, 2)), torch.device("mps"))


def test_sweep_is_refused_under_torchrun(tmp_path):
    """``dltrain -m`` under torchrun would launch every job on every rank: one line, exit 2,
    and no sweep directory."""
    result = run_cli(["-m", "seed=1,2"], cwd=tmp_path, env={"WORLD_SIZE": "2", "RANK": "0"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("dltrain: error: a sweep (-m) cannot run under torchrun")
    assert "cluster=slurm_ddp" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())


def _batches(task: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Outputs, targets and a mean loss of ``n`` examples of ``task``."""
    g = torch.Generator().manual_seed(seed)
    loss = torch.rand((), generator=g)
    if task == "regression":
        return torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g), loss
    if task == "multilabel":
        return torch.randn(n, 4, generator=g), torch.randint(0, 2, (n, 4), generator=g).float(), loss
    classes = 2 if task == "binary" else 3
    return torch.randn(n, classes, generator=g), torch.randint(0, classes, (n,), generator=g), loss


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel", "regression"])
def test_merged_states_equal_one_accumulator_fed_every_batch(task):
    """``MetricAccumulator.merged`` of each rank's sums is the accumulator of all their
    batches (per output column for regression); a rank that saw nothing adds nothing."""
    first, second = _batches(task, 7, seed=0), _batches(task, 5, seed=1)
    every, a, b = MetricAccumulator(task), MetricAccumulator(task), MetricAccumulator(task)
    for acc, batches in ((every, (first, second)), (a, (first,)), (b, (second,))):
        for batch in batches:
            acc.update(*batch)
    merged = MetricAccumulator.merged(task, [a.state_dict(), MetricAccumulator(task).state_dict(), b.state_dict()])
    assert merged.count == every.count == 12 and merged.sums.keys() == every.sums.keys()
    for k, total in every.sums.items():
        assert merged.sums[k].shape == total.shape, k  # (2,) per column for regression
        torch.testing.assert_close(merged.sums[k], total.double(), rtol=1e-6, atol=1e-6)
    assert merged.compute() == pytest.approx(every.compute(), rel=1e-6)
    assert MetricAccumulator.merged(task, [MetricAccumulator(task).state_dict()]).compute() == {}


# ---- end to end under torchrun ---------------------------------------------------------


@pytest.mark.slow
def test_torchrun_two_ranks_end_to_end(tmp_path):
    """``torchrun --nproc_per_node=2 -m dltrain``: one run directory, claimed and written by rank 0
    (.hydra, summary, one results table), rank 1 logging to rank1.log in it."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "dltrain", "device=cpu", "trainer.max_epochs=2"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dirs = list(tmp_path.glob("outputs/*/*"))
    assert len(run_dirs) == 1, run_dirs
    run_dir = run_dirs[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "completed"
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "rank1.log").is_file()
    assert result.stdout.count("dltrain results") == 1
    # Rank 0 alone names the files and gives the test result.
    wrote = [line for line in result.stdout.splitlines() if line.startswith("wrote ")]
    assert len(wrote) == 1 and "rank1.log" in wrote[0] and result.stdout.count("test accuracy:") == 1
    # Each rank logs once, to its own file.
    assert (run_dir / "dltrain.log").read_text().count("2 ranks (gloo)") == 1
    assert (run_dir / "rank1.log").read_text().count("2 ranks (gloo)") == 1
    assert len(rows(run_dir)) == 2


def test_fast_dev_run_predictions_pair_each_output_with_its_own_example(ranks):
    """fast_dev_run tests a prefix of each rank's part of the test split: predictions.csv
    names those examples and pairs each prediction with its own target."""
    from dltrain.data import DATASETS

    ranks.result("runs", 0)
    with (ranks.out / "fast" / "predictions.csv").open() as f:
        predictions = list(csv.DictReader(f))
    assert [int(p["row"]) for p in predictions] == [*range(32), *range(180, 212)]
    data = DATASETS.build("digits", seed=0, **{k: v for k, v in _digits_options().items()})
    names = data.class_names
    assert all(p["target"] == str(names[int(data.y_test[int(p["row"])])] if names else int(data.y_test[int(p["row"])]))
               for p in predictions)


def _digits_options() -> dict[str, Any]:
    from omegaconf import OmegaConf

    from dltrain import compose

    options = OmegaConf.to_container(compose(workers.RUN).data, resolve=True)
    options.pop("name")
    return options


def test_a_rank_that_leaves_is_noticed_at_the_next_vote(ranks):
    """A rank whose process ends (an error of its own, a kill) does not leave the others
    waiting: the next vote (taken after every training step) fails with one line."""
    result = ranks.result("peer_left", 0)
    assert result["error"] == "PeerFailed", result
    assert result["message"].startswith("another rank left the run")

"""Performance properties that can be checked without a clock (timings live in benchmarks/):
the training loop reads nothing from the device between logging steps, and the jobs of a
sweep share one process's imports and config store."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from dltrain.data import TensorBatches
from dltrain.training.callbacks import EarlyStopping
from dltrain.training.trainer import Hooks, Trainer
from tests.conftest import ROOT

#: Tensor methods that copy a value to the host, waiting for the device (a sync on a GPU).
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


@contextmanager
def counting_host_reads() -> Iterator[list[str]]:
    """Record every host read of a tensor's value while the block runs."""
    calls: list[str] = []
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def spy(name):
        original = originals[name]

        def read(self, *args, **kwargs):
            calls.append(name)
            return original(self, *args, **kwargs)

        return read

    for name in HOST_READS:
        setattr(torch.Tensor, name, spy(name))
    try:
        yield calls
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def reads_in_one_epoch(steps: int, log_every_n_steps: int, task: str = "multiclass") -> int:
    """Host reads during one training epoch of ``steps`` batches (plain SGD, which keeps no
    step counters of its own to read)."""
    torch.manual_seed(0)
    x = torch.randn(steps * 8, 5)
    if task == "multiclass":
        y, model, loss_fn = torch.randint(0, 3, (steps * 8,)), nn.Linear(5, 3), nn.CrossEntropyLoss()
    else:
        y, model, loss_fn = torch.randn(steps * 8, 1), nn.Linear(5, 1), nn.MSELoss()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn, task, max_epochs=1,
                      stopper=EarlyStopping("val_loss"), hooks=Hooks(log_every_n_steps=log_every_n_steps))
    batches = TensorBatches(x, y, 8, shuffle=True, generator=torch.Generator().manual_seed(0))
    with counting_host_reads() as calls:
        trainer.train_epoch(batches)
    return len(calls)


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_training_steps_read_nothing_from_the_device_between_logging_steps(task):
    """The loss and metric sums stay on the device: an epoch of 40 steps reads exactly as
    often as an epoch of 10 (once, at its end), and each logging step adds its one read."""
    ten, forty = reads_in_one_epoch(10, 1000, task), reads_in_one_epoch(40, 1000, task)
    assert ten == forty > 0
    every_tenth = reads_in_one_epoch(40, 10, task)  # logging steps 10, 20, 30 and the epoch's end at 40
    assert every_tenth == forty + 3  # one finiteness check of the loss sum per logging step


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_steps_do_not_synchronise():
    """On a GPU, steps between logging steps run without a single host-device sync."""
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).to(device)
    x, y = torch.randn(640, 16, device=device), torch.randint(0, 4, (640,), device=device)
    trainer = Trainer(model, torch.optim.Adam(model.parameters()), nn.CrossEntropyLoss(), "multiclass",
                      max_epochs=1, stopper=EarlyStopping("val_loss"), hooks=Hooks(log_every_n_steps=1000))
    batches = TensorBatches(x, y, 8, shuffle=True, generator=torch.Generator().manual_seed(0))
    trainer.train_epoch(batches)  # warm-up: the first steps allocate optimizer state
    steps = iter(batches)
    first = next(steps)
    trainer.train_step(*first)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x_b, y_b in list(steps)[:20]:
            output, loss = trainer.train_step(x_b, y_b)
            trainer._epoch_acc.update(output, y_b, loss)
    finally:
        torch.cuda.set_sync_debug_mode("default")


SWEEP_DRIVER = textwrap.dedent("""
    import json, sys
    from hydra.core.config_store import ConfigStore
    import dltrain.cli.app, dltrain.training.run

    jobs, stores = [], []
    original_store, original_train = ConfigStore.store, dltrain.training.run.train

    def counting_store(self, *args, **kwargs):
        stores.append(kwargs.get("name"))
        return original_store(self, *args, **kwargs)

    def recording_train(cfg, run_dir=None):
        summary = original_train(cfg, run_dir)
        jobs.append({"modules": sorted(sys.modules), "torch": id(sys.modules["torch"]),
                     "store": id(ConfigStore.instance()), "stored": len(stores),
                     "status": summary["status"]})
        return summary

    ConfigStore.store = counting_store
    dltrain.training.run.train = recording_train
    sys.argv = ["dltrain", "-m", "trainer.fast_dev_run=true", "seed=0,1,2", "hydra.sweep.dir=" + sys.argv[1]]
    try:
        dltrain.cli.app.main()
    except SystemExit as exit:
        code = exit.code
    else:
        code = 0
    print("RESULT " + json.dumps({"code": code, "jobs": jobs, "stores": stores}))
""")


@pytest.mark.slow  # a process start of its own: kept out of the default suite
def test_sweep_jobs_share_one_process_imports_and_config_store(tmp_path):
    """Under the basic launcher the jobs of ``dltrain -m`` run in one process: torch and
    every other module are imported once (jobs after the first import nothing new), and
    no schema is stored in Hydra's ConfigStore again."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    out = subprocess.run([sys.executable, "-c", SWEEP_DRIVER, str(tmp_path / "sweep")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env={**env, "PYTHONPATH": str(ROOT)})
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, out.stderr[-2000:]
    result = json.loads(line[-1][len("RESULT "):])
    assert result["code"] == 0
    jobs = result["jobs"]
    assert [job["status"] for job in jobs] == ["completed"] * 3
    assert len({job["torch"] for job in jobs}) == 1 and len({job["store"] for job in jobs}) == 1
    first = set(jobs[0]["modules"])
    for job in jobs[1:]:
        assert set(job["modules"]) - first == set()
    # dltrain's schemas were stored once, when dltrain.config.validation was imported; Hydra stores its
    # plugins' configs when the sweep starts, and nothing is stored from one job to the next.
    assert not [name for name in result["stores"] if "schema" in str(name)]
    assert len({job["stored"] for job in jobs}) == 1


def test_without_weight_decay_the_parameters_form_one_group():
    """An optimizer step costs per parameter group: decay-free training uses one."""
    from dltrain.regularization import param_groups

    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    (group,) = param_groups(model, 0.0)
    assert group["params"] == list(model.parameters()) and group["weight_decay"] == 0.0
    decayed = param_groups(model, 0.1)
    assert [len(g["params"]) for g in decayed] == [2, 4] and [g["weight_decay"] for g in decayed] == [0.1, 0.0]
    assert [len(g["params"]) for g in param_groups(model, 0.0, split=True)] == [2, 4]


def test_a_checkpoint_from_before_one_group_and_fused_steps_resumes_exactly(compose, tmp_path, monkeypatch):
    """A checkpoint saved with weights and biases in two groups and torch's default Adam (as
    every run was before one group and fused steps) resumes with both, and continues
    exactly as if never stopped."""
    import csv

    import dltrain.optim
    from dltrain import train

    split = dltrain.optim.param_groups
    overrides = ["model.hidden=[16]", "regularization.dropout=0.2", "trainer.early_stopping.enabled=false"]

    def rows(run_dir):
        with (run_dir / "metrics.csv").open() as f:
            return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(f)]

    with monkeypatch.context() as patch:  # the optimizer as it was built then
        patch.setattr(dltrain.optim, "param_groups", lambda model, decay, _split=None: split(model, decay, True))
        patch.setattr(dltrain.optim, "_fused_supported", lambda name, model: False)
        train(compose([*overrides, "trainer.max_epochs=4"]), run_dir=tmp_path / "straight")
        train(compose([*overrides, "trainer.max_epochs=2"]), run_dir=tmp_path / "first")
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    saved = torch.load(last, weights_only=True)["optimizer"]["param_groups"]
    assert len(saved) == 2 and not saved[0]["fused"]
    train(compose([*overrides, "trainer.max_epochs=4", f"resume={last}"]), run_dir=tmp_path / "resumed")
    assert rows(tmp_path / "resumed") == rows(tmp_path / "straight")  # exact: the same arithmetic
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)
    assert len(resumed["optimizer"]["param_groups"]) == 2 and not resumed["optimizer"]["param_groups"][0]["fused"]
    fresh = torch.load(tmp_path / "first" / "checkpoints" / "best.pt", weights_only=True)  # sanity: old layout
    assert len(fresh["optimizer"]["param_groups"]) == 2


def test_optimizer_state_follows_a_change_of_memory_layout():
    """Resuming with trainer.channels_last switched: the fused step pairs each weight with its
    own moments (the state is put in the weights' layout), as torch's loop would."""
    from dltrain.optim import match_state_layouts

    def steps(model, optimizer, n, seed):
        generator = torch.Generator().manual_seed(seed)
        for _ in range(n):
            x = torch.randn(4, 8, 6, 6, generator=generator).contiguous(
                memory_format=next(model.parameters()).is_contiguous() and torch.contiguous_format
                or torch.channels_last)
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()

    torch.manual_seed(0)
    model = nn.Conv2d(8, 16, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, fused=True)
    steps(model, optimizer, 3, seed=1)
    saved_model, saved_optimizer = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    steps(model, optimizer, 3, seed=2)  # continuing in the default layout

    resumed = nn.Conv2d(8, 16, 3).to(memory_format=torch.channels_last)
    resumed.load_state_dict(saved_model)
    resumed_optimizer = torch.optim.Adam(resumed.parameters(), lr=0.01, fused=True)
    resumed_optimizer.load_state_dict(saved_optimizer)
    match_state_layouts(resumed_optimizer)
    assert resumed_optimizer.state[resumed.weight]["exp_avg"].stride() == resumed.weight.stride()
    steps(resumed, resumed_optimizer, 3, seed=2)
    torch.testing.assert_close(resumed.weight, model.weight, rtol=1e-5, atol=1e-6)


class FakeClock:
    """A clock that moves only when the test says time passes: ``sleep`` advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_epoch_seconds_is_the_wall_time_of_training_and_validation(monkeypatch):
    """metrics.csv's epoch_seconds spans the epoch's training and its validation (what an
    outside script times around its own loop), not the checkpoint writes after it. The
    trainer's clock (time.perf_counter) is replaced by one that moves only by the time
    each phase is said to take, so the number is exact whatever the machine's load."""
    import time

    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    written: list[dict] = []

    def slow_writes(trainer, row, improved):
        written.append(row)
        clock.sleep(0.4)

    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), "multiclass",
                      max_epochs=2, stopper=EarlyStopping("val_loss"), hooks=Hooks(on_epoch_end=slow_writes))
    train_epoch, evaluate = trainer.train_epoch, trainer.evaluate

    def slow_train(batches):
        clock.sleep(0.2)
        return train_epoch(batches)

    def slow_validation(batches, **kwargs):
        clock.sleep(0.1)
        return evaluate(batches, **kwargs)

    trainer.train_epoch, trainer.evaluate = slow_train, slow_validation
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    trainer.fit(TensorBatches(x, y, 16), TensorBatches(x, y, 32))
    # 0.2 s of training + 0.1 s of validation in each epoch; the 0.4 s of writes after the
    # first epoch's row is taken do not count toward the second epoch either.
    assert [row["epoch_seconds"] for row in written] == [pytest.approx(0.3), pytest.approx(0.3)]

"""The rank processes of ``tests/test_distributed.py``: ``python -m tests.ddp_workers OUT``.

Started twice by the test module, with torchrun's variables (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ...), each process joins one gloo group (``dltrain.training.distributed.init``,
once) and runs every scenario below in turn. A scenario returns what it saw, which is
written to ``OUT/<scenario>.rank<r>.pt``; the test module asserts on those files. An
unexpected exception is written there too (as ``unexpected``), and the next scenario runs.

The small model, data and training step are functions here, so the single-process
reference the tests compute in pytest's own process is built by the same code.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dltrain.data.batches import TensorBatches
from dltrain.training.budget import Budget, TimeLimitReached
from dltrain.training.callbacks import EarlyStopping
from dltrain.training.distributed import PeerFailed, Ranks, init
from dltrain.training.signals import Interrupted, StopRequest
from dltrain.training.trainer import Hooks, StepOptions, Trainer, TrainingDiverged

B = 4  # per-rank training batch of the equivalence scenario; the single process takes 2 * B
OPTIMIZERS = {"sgd": lambda params: torch.optim.SGD(params, lr=0.1),
              "adam": lambda params: torch.optim.Adam(params, lr=0.01)}
#: The 2-rank train() runs: dropout, so a resume that lost a rank's random state would not repeat them.
RUN = ["device=cpu", "model.hidden=[32]", "regularization.dropout=0.3", "trainer.max_epochs=2"]
INTERRUPT_AT = 25  # the 2-rank run is stopped after global step 25: epoch 2, step 5 of 20


def mlp() -> nn.Module:
    """The same 8 -> 16 -> 3 MLP in every process."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def dataset(n: int, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random examples of 8 features and 3 classes, the same in every process."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def trainer_for(model: nn.Module, ranks: Ranks | None = None, optimizer: str = "sgd",
                loss_fn: nn.Module | None = None, hooks: Hooks | None = None) -> Trainer:
    """A multiclass trainer of ``model``; with several ranks its training steps go through DDP."""
    ddp = nn.parallel.DistributedDataParallel(model) if ranks is not None and ranks.distributed else None
    loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
    return Trainer(model, OPTIMIZERS[optimizer](model.parameters()), loss_fn, "multiclass", max_epochs=1,
                   stopper=EarlyStopping("val_loss"),
                   options=StepOptions(train_forward=ddp), hooks=hooks, ranks=ranks)


def weights_after_one_step(optimizer: str, batch_size: int, rank: int = 0, world_size: int = 1,
                           ranks: Ranks | None = None) -> dict[str, torch.Tensor]:
    """The MLP's weights after one training step on the first batch of a shuffled 40-example
    split (this rank's shard of it, ``batch_size`` examples)."""
    model = mlp()
    x, y = dataset(40)
    batches = TensorBatches(x, y, batch_size, shuffle=True, generator=torch.Generator().manual_seed(1),
                            rank=rank, world_size=world_size)
    xb, yb = next(iter(batches))
    trainer_for(model, ranks, optimizer).train_step(xb, yb)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def raised(fn: Callable[[], Any], *expected: type[BaseException]) -> dict[str, Any]:
    """What ``fn()`` raised: its type's name and message (and a signal's number)."""
    try:
        fn()
    except expected as err:
        return {"error": type(err).__name__, "message": str(err), "signum": getattr(err, "signum", None)}
    return {"error": None}


# The scenarios: each takes the Ranks and returns what the test module asserts on.


def equivalence(ranks: Ranks) -> dict[str, Any]:
    """Weights after one DDP step on this rank's batch of B, with SGD and with Adam."""
    return {name: weights_after_one_step(name, B, ranks.rank, ranks.world_size, ranks) for name in OPTIMIZERS}


def evaluation(ranks: Ranks) -> dict[str, Any]:
    """The metrics of 21 examples, each rank evaluating its contiguous part in batches of 5."""
    x, y = dataset(21, seed=3)
    batches = TensorBatches(x, y, 5, rank=ranks.rank, world_size=ranks.world_size)
    return {"batches": len(batches), "metrics": trainer_for(mlp(), ranks).evaluate(batches)}


def stop_agreement(ranks: Ranks) -> dict[str, Any]:
    """Rank 1 alone is asked to stop during its 3rd training step, then (a new request) while
    validating its shard; rank 0 never is."""
    x, y = dataset(40)
    stop = StopRequest()  # never entered: no signal handlers, only its ``signum``
    trainer = trainer_for(mlp(), ranks, hooks=Hooks(stop=stop))
    step = trainer.train_step

    def train_step(xb: torch.Tensor, yb: torch.Tensor) -> Any:
        out = step(xb, yb)
        if ranks.rank == 1 and trainer.global_step == 2:  # this is its 3rd step
            stop.signum = signal.SIGTERM
        return out

    trainer.train_step = train_step
    batches = TensorBatches(x, y, 2, shuffle=True, generator=torch.Generator().manual_seed(1),
                            rank=ranks.rank, world_size=ranks.world_size)
    result = {"num_batches": len(batches), "train": raised(lambda: trainer.train_epoch(batches), Interrupted),
              "step_in_epoch": trainer.step_in_epoch, "global_step": trainer.global_step}
    stop.signum = signal.SIGUSR1 if ranks.rank == 1 else None
    val = TensorBatches(*dataset(21, seed=3), 5, rank=ranks.rank, world_size=ranks.world_size)
    result["val_batches"] = len(val)
    result["validate"] = raised(lambda: trainer.evaluate(val, stoppable=True), Interrupted)
    return result


def time_agreement(ranks: Ranks) -> dict[str, Any]:
    """trainer.max_time: rank 0's clock runs out after its 3rd of 10 steps; rank 1's clock says
    it ran out before its first (it is not read: rank 0's decides for both)."""
    model = mlp()
    ddp = nn.parallel.DistributedDataParallel(model)
    trainer = Trainer(model, OPTIMIZERS["sgd"](model.parameters()), nn.CrossEntropyLoss(), "multiclass", max_epochs=1,
                      stopper=EarlyStopping("val_loss"), options=StepOptions(train_forward=ddp), ranks=ranks,
                      budget=Budget(max_seconds=60.0))
    clock = trainer.guard.out_of_time  # rank 0's only
    if ranks.rank == 0:
        trainer.guard.out_of_time = lambda: trainer.global_step >= 3
    else:
        trainer._seconds_before = 3600.0
    batches = TensorBatches(*dataset(40), 2, shuffle=True, generator=torch.Generator().manual_seed(1),
                            rank=ranks.rank, world_size=ranks.world_size)
    return {"clock": clock is not None, "train": raised(lambda: trainer.train_epoch(batches), TimeLimitReached),
            "global_step": trainer.global_step}


class NaNOnRank1(nn.Module):
    """Cross-entropy, but NaN on rank 1 at its 2nd call."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank, self.calls = rank, 0

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = nn.functional.cross_entropy(output, target)
        return loss * float("nan") if self.rank == 1 and self.calls == 2 else loss


def divergence_agreement(ranks: Ranks) -> dict[str, Any]:
    """Rank 1's loss alone becomes NaN at step 2 of 10, checked at every step."""
    x, y = dataset(40)
    trainer = trainer_for(mlp(), ranks, loss_fn=NaNOnRank1(ranks.rank), hooks=Hooks(log_every_n_steps=1))
    batches = TensorBatches(x, y, 2, shuffle=True, generator=torch.Generator().manual_seed(1),
                            rank=ranks.rank, world_size=ranks.world_size)
    result = raised(lambda: trainer.train_epoch(batches), TrainingDiverged)
    return {**result, "step_in_epoch": trainer.step_in_epoch}


def setup_error_agreement(ranks: Ranks) -> dict[str, Any]:
    """Rank 1 alone fails while loading the data; both check it with the other."""
    error = FileNotFoundError("no such file: data/rank1.csv") if ranks.rank == 1 else None
    return raised(lambda: ranks.check(error, "loading the data"), FileNotFoundError, PeerFailed)


def run_two_ranks(ranks: Ranks, out: Path) -> dict[str, Any]:
    """train() on both ranks: a 2-epoch run; the same run stopped by a signal that reaches rank
    1 alone after global step 25 (epoch 2, step 5); and that run resumed on 2 ranks."""
    from dltrain import compose, train

    result: dict[str, Any] = {"straight": train(compose(RUN), run_dir=out / "straight")}
    step = Trainer.train_step

    def stop_rank1(self: Trainer, x: torch.Tensor, y: torch.Tensor) -> Any:
        result_ = step(self, x, y)
        if ranks.rank == 1 and self.global_step + 1 == INTERRUPT_AT:  # counted once this returns
            self.stop.signum = signal.SIGTERM
        return result_

    Trainer.train_step = stop_rank1
    try:
        result["interrupted"] = raised(lambda: train(compose(RUN), run_dir=out / "interrupted"), Interrupted)
    finally:
        Trainer.train_step = step
    last = out / "interrupted" / "checkpoints" / "last.pt"
    result["resumed"] = train(compose([*RUN, f"resume={last}"]), run_dir=out / "resumed")
    # fast_dev_run tests 2 batches of 16 of each rank's part (0-179 and 180-359): 0-31, 180-211.
    result["fast"] = train(compose([*RUN, "trainer.fast_dev_run=true", "trainer.eval_batch_size=16"]),
                           run_dir=out / "fast")
    return result


def autoencoder_run(out: Path) -> dict[str, Any]:
    """train() on both ranks: a denoising autoencoder's fast run (its step, metrics and noisy test loss)."""
    from dltrain import compose, train

    return train(compose([*RUN, "task=autoencoder", "task.denoise=gaussian", "model.bottleneck=4",
                          "trainer.fast_dev_run=true"]), run_dir=out / "autoencoder")


def peer_left(ranks: Ranks) -> dict[str, Any]:
    """Rank 1 leaves the run (its process ends); rank 0's next vote finds out. Last: the
    group is broken afterwards."""
    if ranks.rank == 1:
        return {}
    return raised(lambda: ranks.vote(0), PeerFailed)


def main(out: Path) -> None:
    ranks = init("cpu")
    scenarios: dict[str, Callable[[Ranks], dict[str, Any]]] = {
        "equivalence": equivalence, "evaluation": evaluation, "stop": stop_agreement,
        "divergence": divergence_agreement, "setup_error": setup_error_agreement, "time_limit": time_agreement,
        "runs": lambda r: run_two_ranks(r, out), "autoencoder": lambda r: autoencoder_run(out),
        "peer_left": peer_left,
    }
    for name, scenario in scenarios.items():
        try:
            result = scenario(ranks)
        except BaseException:  # noqa: BLE001 - recorded for the test, and the next scenario still runs
            result = {"unexpected": traceback.format_exc()}
        torch.save(result, out / f"{name}.rank{ranks.rank}.pt")
    if ranks.rank == 1:
        os._exit(0)  # leaves without a word to rank 0 (peer_left): as a killed or failed rank does


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""One experiment on several processes: torchrun's ranks, or the tasks of a Slurm job.

``torchrun --nproc_per_node=N -m dltrain ...`` starts N copies of dltrain with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT`` in their environment; a
submitit job with several tasks (``hydra.launcher.tasks_per_node``) has the same facts in
its Slurm (or local) job environment, which :func:`environment` exports the same way. Each
rank then joins one process group (``nccl`` for CUDA, ``gloo`` for the CPU), trains a
DistributedDataParallel copy of the model on its own shard of each batch, and agrees with
the others on everything that decides what happens next (stop signals, a diverged loss,
errors while setting up), so no rank is left waiting in a collective for one that left.

A single process (no such variables) gets :class:`Ranks` of one, whose collectives return
their input: the trainer and the run code are the same either way.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dltrain.errors import ConfigError, UserError, first_line
from dltrain.training.signals import Interrupted

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger("dltrain")


@dataclass(frozen=True)
class Environment:
    """Where this process stands in the job (from the environment; no torch needed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def environment() -> Environment:
    """This process's rank and the job's size: torchrun's variables, else a submitit job's
    tasks (exported as torchrun's, so ``init_process_group`` reads them), else one process."""
    if "RANK" not in os.environ and "WORLD_SIZE" not in os.environ and os.environ.get("SUBMITIT_FOLDER"):
        _export_submitit()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Environment()
    rank = int(os.environ.get("RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return Environment(rank, world, int(os.environ.get("LOCAL_RANK", str(rank % local_world))), local_world)


def _export_submitit() -> None:
    """Inside a submitit job of several tasks, set the variables torchrun would have set."""
    try:
        import submitit
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError:
        return
    if submitit.JobEnvironment().num_tasks > 1:
        # The CUDA devices stay as Slurm gave them: each rank takes cuda:<local rank>.
        # overwrite: a site-wide MASTER_ADDR/PORT is not this job's (the port is kept if set).
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


class PeerFailed(UserError):
    """Another rank failed: this one stops too, instead of waiting for it."""


class Ranks:
    """The processes of one run, and the few collectives dltrain needs besides DDP's own.

    A single process is ``Ranks()``: rank 0 of 1, every collective returns its input.
    Object collectives and votes go through a CPU (gloo) group even when DDP uses NCCL, so
    they never wait for the GPU.
    """

    def __init__(self, env: Environment | None = None, group: Any = None, backend: str | None = None) -> None:
        self.env = env or Environment()
        self.group = group  # the CPU group for objects and votes
        self.backend = backend

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world_size(self) -> int:
        return self.env.world_size

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run directory and prints."""
        return self.env.rank == 0

    @property
    def distributed(self) -> bool:
        return self.env.world_size > 1

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        with _peers_left():
            dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        with _peers_left():
            dist.all_gather_object(out, obj, group=self.group)
        return out

    def vote(self, *values: int) -> list[int]:
        """The largest of each value over the ranks (one small all-reduce on the CPU). Taken
        after every training step, it is also how a rank learns, within a step, that another
        one has left the run."""
        if not self.distributed:
            return list(values)
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.int64)
        with _peers_left():
            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return t.tolist()

    def check(self, error: BaseException | None, what: str) -> None:
        """Agree on whether a step of the setup worked on every rank: a rank that failed
        raises its own ``error``; the others raise :class:`PeerFailed` naming it, instead of
        waiting in the next collective for a rank that has left."""
        if not self.distributed:
            if error is not None:
                raise error
            return
        reports = self.all_gather((what, None if error is None else first_line(error)))
        if error is not None:
            raise error
        steps = {step for step, _ in reports}
        if len(steps) > 1:  # a rank skipped a step: say so rather than pair unrelated collectives
            raise PeerFailed(f"the ranks are out of step while {what} (others: {', '.join(sorted(steps - {what}))})")
        failed = [(rank, msg) for rank, (_, msg) in enumerate(reports) if msg is not None]
        if failed:
            rank, msg = failed[0]
            raise PeerFailed(f"rank {rank} failed while {what}: {msg}")

    def agreed(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on every rank, then :meth:`check` that it worked on all of them: a
        rank that failed raises its error, the others one naming it, instead of waiting for it
        in the next collective."""
        error: BaseException | None = None
        result = None
        try:
            result = fn(*args)
        except (Exception, Interrupted) as err:  # noqa: BLE001 - re-raised by the agreement, on this rank (a stop too)
            error = err
        self.check(error, what)
        return result

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (batch norm's running statistics) on every rank: each rank's last
        training forward updated its own, and evaluation and checkpoints use one model."""
        if not self.distributed:
            return
        import torch.distributed as dist

        with _peers_left():
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)


@contextmanager
def _peers_left() -> Iterator[None]:
    """A collective that fails because another rank has left (its process ended: an error
    of its own, a kill) is that rank's failure, said in one line."""
    try:
        yield
    except RuntimeError as err:  # torch.distributed.DistError and gloo's connection errors
        raise PeerFailed(f"another rank left the run ({first_line(err)}): its own log (rank<k>.log, or "
                         "torchrun's report) says why") from err


#: How long a rank waits for the others in a collective (a slow download by rank 0 included).
JOIN_TIMEOUT = timedelta(hours=2)

#: The process's Ranks once :func:`init` has run (one process group per process).
_ranks: Ranks | None = None


def init(device_spec: str) -> Ranks:
    """Join the job's process group (once per process) and return this run's ranks.

    The backend follows the device: ``nccl`` when the ranks train on CUDA, ``gloo``
    otherwise. Each rank of a CUDA run takes ``cuda:<local rank>`` (modulo the devices it sees).

    Raises:
        ConfigError: ``device`` names one device for several ranks of a node, or
            ``cuda`` is asked for where there is none.
    """
    global _ranks
    if _ranks is not None:
        return _ranks
    env = environment()
    if not env.distributed:
        _ranks = Ranks(env)
        return _ranks
    import torch
    import torch.distributed as dist

    cuda = device_spec.startswith("cuda") or (device_spec == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device_spec}: CUDA is not available on this machine; use device=cpu.")
        if ":" in device_spec and env.local_world_size > 1:
            raise ConfigError(f"device={device_spec} names one GPU, but {env.local_world_size} ranks run on this "
                              "node: use device=cuda (each rank takes cuda:<local rank>).")
        gpus = torch.cuda.device_count()
        if 1 < gpus < env.local_world_size:
            raise ConfigError(f"{env.local_world_size} ranks run on this node but it has {gpus} GPUs: start one rank "
                              f"per GPU (torchrun --nproc_per_node={gpus}).")
        # With one GPU visible per rank (Slurm binding each task to its own), it is cuda:0.
        torch.cuda.set_device(env.local_rank % gpus)
    set_threads(env)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        kwargs = {"device_id": torch.device("cuda", torch.cuda.current_device())} if cuda else {}
        try:
            # Ranks wait on each other while rank 0 alone downloads or indexes the data.
            dist.init_process_group(backend, timeout=JOIN_TIMEOUT, **kwargs)
        except (RuntimeError, ValueError) as err:
            raise ConfigError(f"rank {env.rank} of {env.world_size} could not join the others at "
                              f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} ({first_line(err)}): "
                              "check torchrun's --rdzv-endpoint (or --master-addr) and that every node reaches it."
                              ) from err
    group = dist.new_group(backend="gloo", timeout=JOIN_TIMEOUT) if backend == "nccl" else None
    atexit.register(_leave)
    _ranks = Ranks(env, group, backend)
    return _ranks


def _leave() -> None:
    """Leave the process group before the interpreter exits: torch asks for it (NCCL warns
    otherwise), and a group torn down at exit while a peer's connection is closing can abort."""
    import torch.distributed as dist

    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - exiting anyway; nothing left to protect
            pass


def check_world(ranks: Ranks, device: torch.device, *, device_option: str, optim: str, closure: bool,
                batch_size: int, sync_batchnorm: bool) -> None:
    """What a run of several ranks needs of the config: ``device_option`` (``device=``) gave
    ``device``; ``optim`` names the optimizer, which needs a ``closure`` (a line search);
    ``batch_size`` is the global batch.

    Raises:
        ConfigError: a global batch that does not split evenly over the ranks, or batch norm
            to sync where torch cannot.
    """
    if not ranks.distributed:
        return
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device={device_option} gave {device.type}, which DistributedDataParallel cannot train on "
                          "across ranks: use device=cuda or device=cpu under torchrun.")
    if closure:
        raise ConfigError(f"optim={optim} cannot train across ranks: its line search follows each rank's own "
                          "loss, so the ranks would take different steps; use another optimizer, or one process.")
    batch, world = batch_size, ranks.world_size
    if batch % world:
        raise ConfigError(f"trainer.batch_size={batch} is the global batch, split evenly over the {world} ranks: "
                          f"make it a multiple of {world} (e.g. {max(world, batch - batch % world)}).")
    if sync_batchnorm and device.type != "cuda":
        raise ConfigError(f"trainer.sync_batchnorm=true needs CUDA (torch syncs batch norm on GPUs only), and this "
                          f"run trains on {device}: set trainer.sync_batchnorm=false.")


def sync_batchnorm(model: nn.Module, ranks: Ranks) -> list[str]:
    """Turn ``model``'s batch norm layers into ones whose statistics are computed over every
    rank's batch (they keep their parameters); returns warnings."""
    from torch.nn.modules.batchnorm import _BatchNorm

    if not any(isinstance(m, _BatchNorm) for m in model.modules()):
        return ["trainer.sync_batchnorm=true: the model has no batch norm layers to sync"]
    if not ranks.distributed:
        log.info("trainer.sync_batchnorm=true: one process, so its batch norm has nothing to sync")
        return []
    from torch import nn as torch_nn

    converted = torch_nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if converted is not model:  # the model itself was a batch norm layer: nothing else to convert
        raise ConfigError("trainer.sync_batchnorm=true cannot convert a model that is a single batch norm layer: "
                          "set trainer.sync_batchnorm=false.")
    return []


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel, for the training steps. Wrapping broadcasts rank
    0's weights and buffers, so every rank starts from the same model."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def training_forward(ranks: Ranks, model: nn.Module, device: torch.device, seed: int,
                     batch_size: int) -> nn.Module | None:
    """The DistributedDataParallel forward the ranks train through (:func:`wrap`); None for
    one process. Each rank is then seeded ``seed + rank``."""
    if not ranks.distributed:
        return None
    from dltrain.training.rng import seed_everything  # torch: not for --help

    forward = wrap(model, device)
    seed_everything(seed + ranks.rank)  # dropout and augmentation differ by rank, as the data does
    log.info("%d ranks (%s): a global batch of %d, %d per rank", ranks.world_size, ranks.backend,
             batch_size, batch_size // ranks.world_size)
    return forward


def device_for(ranks: Ranks, device: torch.device) -> torch.device:
    """The device this rank trains on: its own GPU of the node for ``cuda``."""
    import torch

    if ranks.distributed and device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def set_threads(env: Environment) -> int | None:
    """Share the node's CPUs among its ranks when the user has not chosen: ``OMP_NUM_THREADS``
    unset, or set only by torchrun's own default of 1. Returns the threads per rank set, or None."""
    value = os.environ.get("OMP_NUM_THREADS")
    if value is not None and not (value == "1" and _set_by_torchrun()):
        return None
    import torch

    node = os.cpu_count() or 1
    # A rank bound to its own CPUs (srun --cpus-per-task) uses those; otherwise a fair share.
    mine = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else node
    cpus = min(mine, node // max(1, env.local_world_size)) if mine >= node else mine
    threads = max(1, cpus)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # for the processes this one starts (data workers)
    if env.rank == 0:  # said once for the job
        log.info("OMP_NUM_THREADS=%d per rank (%d CPUs, %d ranks on this node); set OMP_NUM_THREADS to choose",
                 threads, node, env.local_world_size)
    return threads


def _set_by_torchrun() -> bool:
    """Whether ``OMP_NUM_THREADS`` came from torchrun (it sets 1 for several processes per node
    when its own environment lacks it) rather than from the user: the launcher's environment
    as it started (Linux's /proc) does not have it."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return False
    try:
        start_env = Path(f"/proc/{os.getppid()}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return not any(item.startswith(b"OMP_NUM_THREADS=") for item in start_env)


def route_logs(ranks: Ranks, run_dir: str | Path) -> None:
    """A rank other than 0 logs to ``rank<k>.log`` in the run directory instead of the run's
    log file, and prints nothing but errors to the console (rank 0 speaks for the run)."""
    if ranks.is_main:
        return
    root = logging.getLogger()
    target = Path(run_dir) / f"rank{ranks.rank}.log"
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            if Path(handler.baseFilename) == target.resolve():
                continue
            root.removeHandler(handler)
            handler.close()
            own = logging.FileHandler(target)
            own.setFormatter(handler.formatter)
            root.addHandler(own)
        elif isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.ERROR)

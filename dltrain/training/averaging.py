"""Weight averaging (``regularization.ema_decay``, ``regularization.swa_start``): a second copy
of the model whose weights are an average of the trained ones.

- EMA: after every optimizer step, ``ema = decay * ema + (1 - decay) * w`` for every floating
  entry of the state dict: the parameters and batch norm's running statistics alike (timm's
  ``ModelEmaV3`` default); integer buffers (``num_batches_tracked``) are copied. With
  ``ema_warmup`` the decay of update t (1 for the first) is ``min(decay, (1 + t) / (10 + t))``.
  The update is one ``torch._foreach_lerp_`` over tensors listed once: no host sync.
- SWA: at the end of each epoch from ``swa_start``, the equal average of the weights at those
  epochs' ends (``torch.optim.swa_utils.AveragedModel``: parameters averaged, buffers copied),
  then batch norm's statistics recomputed for it by one pass over the training data in train
  mode without gradients (``update_bn``): every validation, checkpoint and the test see the
  averaged weights with their own statistics. :class:`SwaSchedule` anneals the LR to
  ``swa_lr`` (``SWALR``) from ``swa_start``.

What the run evaluates (validation, early stopping, ``best.pt``'s weights to use, the test,
``dltrain-eval``, ``dltrain-predict``, ``dltrain-export``) is the averaged copy with
``evaluate_averaged`` (before SWA's first average: the raw weights), else the raw weights with
the averaged ones evaluated beside them (``val_avg_*`` columns).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import SWALR, update_bn

from dltrain.errors import ConfigError

#: The checkpoint key of the averaged weights and the averager's counters.
STATE_KEY = "averaged_model"


class WeightAverage:
    """An EMA or SWA copy of ``model`` (one of ``ema_decay`` and ``swa_start`` is given).

    Args:
        model: the trained model (not a DDP wrapper); its tensors are read in place.
        ema_decay: the EMA's decay, in (0, 1).
        ema_warmup: the decay of update t is ``min(ema_decay, (1 + t) / (10 + t))``.
        swa_start: the first epoch (1-based) whose end weights are averaged.
        evaluate_averaged: the run evaluates the averaged weights (else the raw ones, and
            the averaged beside them).
    """

    def __init__(self, model: nn.Module, *, ema_decay: float | None = None, ema_warmup: bool = False,
                 swa_start: int | None = None, evaluate_averaged: bool = True) -> None:
        self.method = "ema" if ema_decay is not None else "swa"
        self.decay, self.warmup, self.swa_start = ema_decay, ema_warmup, swa_start
        self.evaluate_averaged = evaluate_averaged
        self.model = model
        self.module = copy.deepcopy(model).requires_grad_(False)  # the averaged weights
        self.updates = 0  # EMA: optimizer steps averaged; SWA: epochs averaged
        self.has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        # The tensors are listed once: the optimizer and batch norm update them in place.
        source, target = model.state_dict(), self.module.state_dict()
        seen: set[int] = set()  # a tied weight is in the state dict under each name: averaged once
        target = {k: v for k, v in target.items() if not (v.data_ptr() in seen or seen.add(v.data_ptr()))}
        floats = [k for k, v in target.items() if v.is_floating_point()]
        others = [k for k in target if k not in floats]
        params = {k for k, _ in model.named_parameters()}
        averaged = floats if self.method == "ema" else [k for k in floats if k in params]
        copied = others if self.method == "ema" else [k for k in target if k not in averaged]
        self._avg, self._src = [target[k] for k in averaged], [source[k] for k in averaged]
        self._copy_to, self._copy_from = [target[k] for k in copied], [source[k] for k in copied]

    @property
    def active(self) -> bool:
        """Whether the copy holds an average yet (SWA: not before ``swa_start``'s end)."""
        return self.method == "ema" or self.updates > 0

    @property
    def evaluated(self) -> bool:
        """Whether the run evaluates the averaged weights now."""
        return self.evaluate_averaged and self.active

    @torch.no_grad()
    def after_step(self) -> None:
        """EMA: average the weights after an optimizer step (SWA: nothing)."""
        if self.method != "ema":
            return
        self.updates += 1
        decay = self.decay
        if self.warmup:
            decay = min(decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._avg, self._src, 1.0 - decay)
        if self._copy_to:
            torch._foreach_copy_(self._copy_to, self._copy_from)

    @torch.no_grad()
    def end_epoch(self, epoch: int, train_batches: Iterable[Any]) -> None:
        """SWA: from ``swa_start``, add the weights at the end of ``epoch`` to the average, then
        recompute batch norm's statistics for it over ``train_batches`` (EMA: nothing)."""
        if self.method != "swa" or epoch < self.swa_start:
            return
        if self.updates == 0:
            torch._foreach_copy_(self._avg, self._src)
        else:  # as AveragedModel: lerp by 1 / (n + 1)
            torch._foreach_lerp_(self._avg, self._src, 1.0 / (self.updates + 1))
        if self._copy_to:  # buffers follow the model's (batch norm's are recomputed below)
            torch._foreach_copy_(self._copy_to, self._copy_from)
        self.updates += 1
        self.recompute_batch_norm(train_batches)

    def recompute_batch_norm(self, train_batches: Iterable[Any]) -> None:
        """Batch norm's statistics of the averaged weights, from one pass over the training
        batches (``update_bn``); the data order is rewound after it, so the pass changes
        nothing of the run (no augmentation, no random numbers drawn)."""
        if not self.has_batch_norm:
            return
        order = getattr(train_batches, "order", None)
        saved = order.state_dict(0) if order is not None else None
        # Train mode runs dropout too: its draws come from forked generators, so the raw
        # weights' training draws what it would without SWA.
        devices = sorted({p.device for p in self.module.parameters() if p.device.type == "cuda"}, key=str)
        with torch.random.fork_rng(devices=devices):
            update_bn(train_batches, self.module)
        if order is not None:
            order.load_state_dict(saved)
        average_batch_norm_over_ranks(self.module)
        self.module.eval()

    def label(self) -> str:
        """summary.json's ``test_weights`` while the averaged weights are evaluated."""
        if self.method == "ema":
            return f"EMA after {self.updates} update{'' if self.updates == 1 else 's'}"
        return f"SWA average of epochs {self.swa_start}-{self.swa_start + self.updates - 1}"

    def nothing_averaged(self) -> str | None:
        """A warning for a run whose SWA averaged no epoch (it stopped before ``swa_start``'s end)."""
        if self.method != "swa" or self.updates:
            return None
        return (f"regularization.swa_start={self.swa_start}: the run stopped before that epoch ended, "
                "so SWA averaged nothing and the raw weights were evaluated")

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights and counters, as tensors and plain data."""
        return {"method": self.method, "updates": self.updates, "weights": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue from :meth:`state_dict`; None (a checkpoint written without averaging)
        starts the average again from the model's current weights."""
        if state is None:
            self.module.load_state_dict(self.model.state_dict())
            self.updates = 0
            return
        if not saved_average(state):  # a resume turns a RuntimeError into its one line
            raise RuntimeError("the checkpoint's averaged weights are not the weights and update count dltrain saves")
        self.module.load_state_dict(state["weights"])
        self.updates = state["updates"]

    def describe(self) -> dict[str, Any]:
        """summary.json's ``averaging``: what was averaged, and which weights were evaluated."""
        kind = (f"EMA, decay {self.decay:g}{' with warm-up' if self.warmup else ''}" if self.method == "ema"
                else f"SWA of the weights at the end of epochs {self.swa_start} on")
        if not self.evaluate_averaged:
            evaluated = "raw weights (the averaged ones beside them: val_avg_*, test_averaged)"
        elif self.method == "swa":
            evaluated = (f"raw weights before epoch {self.swa_start}, averaged from it"
                         + (" (batch norm statistics recomputed)" if self.has_batch_norm else ""))
        else:
            evaluated = "averaged weights"
        return {"method": self.method, "weights": kind, "evaluated": evaluated, "updates": self.updates}


def average_batch_norm_over_ranks(module: nn.Module) -> None:
    """Under DDP, every rank's batch norm statistics become their mean over the ranks: each
    rank's ``update_bn`` saw its own shard (equal in batches), so the mean is the statistics
    of the pass over all of them. One collective per buffer, once per averaged epoch."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.running_mean is not None:
            for buffer in (layer.running_mean, layer.running_var):
                dist.all_reduce(buffer)
                buffer.div_(dist.get_world_size())


def averaged_beside(averaging: WeightAverage | None, evaluate: Callable[[nn.Module], dict[str, float]] | None,
           metrics: Iterable[str]) -> dict[str, float]:
    """With ``evaluate_averaged=false``, the averaged weights' validation metrics
    (``val_avg_<metric>``: NaN before SWA's first average, or in an epoch that does not
    validate: ``evaluate`` None); nothing otherwise."""
    if averaging is None or averaging.evaluate_averaged:
        return {}
    values = evaluate(averaging.module) if averaging.active and evaluate is not None else {}
    return {f"val_avg_{k}": values.get(k, math.nan) for k in metrics}


class SwaSchedule:
    """The configured LR schedule until ``swa_start``, then ``SWALR`` to ``swa_lr`` (cosine
    annealing over ``anneal_epochs``) stepped after each averaged epoch: epoch ``swa_start``
    trains at the configured schedule's LR, the next ones at SWALR's. Only the
    number of SWALR steps is saved: SWALR's next LR follows from it and the current one.

    Args:
        schedule: the configured schedule (:class:`~dltrain.schedulers.LRSchedule`).
        optimizer: the optimizer both act on.
        swa_start, swa_lr, anneal_epochs: ``regularization.swa_*``.
    """

    def __init__(self, schedule: Any, optimizer: torch.optim.Optimizer, *, swa_start: int, swa_lr: float,
                 anneal_epochs: int) -> None:
        self.schedule, self.optimizer = schedule, optimizer
        self.swa_start, self.swa_lr, self.anneal_epochs = swa_start, swa_lr, anneal_epochs
        self.epoch = 0  # epochs finished
        self.swa_steps = 0
        self._swalr: SWALR | None = None

    def step_batch(self) -> None:
        """The configured schedule's batch step, before SWA's epochs."""
        if self.swa_steps == 0:
            self.schedule.step_batch()

    def step_epoch(self, metrics: dict[str, float], **kwargs: Any) -> None:
        """The configured schedule's epoch step, or SWALR's after each averaged epoch (as
        torch's recipe: ``if epoch > swa_start: swa_scheduler.step() else: scheduler.step()``)."""
        self.epoch += 1
        if self.epoch < self.swa_start:
            self.schedule.step_epoch(metrics, **kwargs)
            return
        with warnings.catch_warnings():  # SWALR, built now, never saw the optimizer step: it did
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            self._swa().step()
        self.swa_steps += 1

    def _swa(self) -> SWALR:
        if self._swalr is None:  # built when first needed: it starts from the LR then
            self._swalr = SWALR(self.optimizer, self.swa_lr, anneal_epochs=self.anneal_epochs,
                                anneal_strategy="cos")
            self._swalr._step_count = self.swa_steps + 1  # its next step follows the saved ones
        return self._swalr

    def state_dict(self) -> dict[str, Any]:
        """The configured schedule's state and the SWALR steps taken."""
        return {**self.schedule.state_dict(), "swa_epoch": self.epoch, "swa_steps": self.swa_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (the LR itself is restored by the configured schedule)."""
        self.schedule.load_state_dict(state)
        self.epoch = int(state.get("swa_epoch", state.get("epoch", 0)))
        self.swa_steps = int(state.get("swa_steps", 0))
        self._swalr = None


def build_averaging(model: nn.Module, *, ema_decay: float | None, ema_warmup: bool, swa_start: int | None,
                    evaluate_averaged: bool) -> WeightAverage | None:
    """The averager ``regularization`` asks for; None without EMA or SWA."""
    if ema_decay is None and swa_start is None:
        return None
    return WeightAverage(model, ema_decay=ema_decay, ema_warmup=ema_warmup, swa_start=swa_start,
                         evaluate_averaged=evaluate_averaged)


def check_averaging(*, ema_decay: float | None, ema_warmup: bool, swa_start: int | None, swa_lr: float | None,
                    max_epochs: int, swa_anneal_epochs: int = 1) -> None:
    """The ``regularization.ema_*``/``swa_*`` keys together (``trainer.fast_dev_run``'s one
    epoch is not checked: a smoke run of a config that averages later averages nothing).

    Raises:
        ConfigError: EMA with SWA, a key without the one it modifies, or SWA starting after
            the last epoch.
    """
    if ema_decay is not None and swa_start is not None:
        raise ConfigError(f"regularization.ema_decay={ema_decay:g} and regularization.swa_start={swa_start} "
                          "both average the weights: choose one (set the other to null).")
    if ema_warmup and ema_decay is None:
        raise ConfigError("regularization.ema_warmup=true warms up an EMA, but regularization.ema_decay is null: "
                          "set regularization.ema_decay (e.g. 0.999), or ema_warmup=false.")
    if swa_lr is not None and swa_start is None:
        raise ConfigError(f"regularization.swa_lr={swa_lr:g} is the LR of SWA's epochs, but regularization.swa_start "
                          "is null: set regularization.swa_start, or swa_lr=null.")
    if swa_anneal_epochs != 1 and swa_lr is None:
        raise ConfigError(f"regularization.swa_anneal_epochs={swa_anneal_epochs} anneals the LR to swa_lr, but "
                          "regularization.swa_lr is null: set regularization.swa_lr, or leave swa_anneal_epochs at 1.")
    if swa_start is not None and swa_start > max_epochs:
        raise ConfigError(f"regularization.swa_start={swa_start} is after the last epoch (trainer.max_epochs="
                          f"{max_epochs}): nothing would be averaged; set swa_start to {max_epochs} or less.")


def check_swa_reaches(swa_start: int | None, epochs: int, max_steps: int | None) -> None:
    """SWA's first epoch within the epochs the run takes (``epochs``: ``trainer.max_steps`` and the
    batch limits counted).

    Raises:
        ConfigError: the run ends before ``swa_start``.
    """
    if swa_start is not None and swa_start > epochs:
        raise ConfigError(f"regularization.swa_start={swa_start} is after the run's last epoch ({epochs}: "
                          f"trainer.max_steps={max_steps} and the batches per epoch): nothing would be averaged; "
                          f"set swa_start to {epochs} or less, or raise trainer.max_steps.")


def with_swa(scheduler: Any, optimizer: torch.optim.Optimizer, *, swa_start: int | None, swa_lr: float | None,
             anneal_epochs: int, epochs: int, max_epochs: int, max_steps: int | None) -> Any:
    """``scheduler``, or with ``swa_lr`` the :class:`SwaSchedule` that anneals to it from
    ``swa_start``; when ``max_steps`` ends the run after ``epochs`` < ``max_epochs``, SWA's
    first epoch is checked to come before (:func:`check_swa_reaches`)."""
    if epochs < max_epochs:
        check_swa_reaches(swa_start, epochs, max_steps)
    if swa_lr is None:
        return scheduler
    return SwaSchedule(scheduler, optimizer, swa_start=swa_start, swa_lr=swa_lr, anneal_epochs=anneal_epochs)


def saved_average(entry: Any) -> bool:
    """Whether ``entry`` has the shape :meth:`WeightAverage.state_dict` saves (weights and an
    update count)."""
    return isinstance(entry, dict) and isinstance(entry.get("weights"), dict) and isinstance(entry.get("updates"), int)


def weights_to_use(state: dict[str, Any], evaluate_averaged: bool = True,
                   averaging: bool = False) -> dict[str, torch.Tensor]:
    """The weights a checkpoint's run evaluated last: the averaged ones when it evaluated
    them and they hold an average, else the raw ones (``state["model"]``).

    Args:
        averaging: the checkpoint's config averages the weights (``ema_decay`` or ``swa_start``).

    Raises:
        ValueError: ``averaging`` and ``evaluate_averaged``, but the file holds no average of
            the shape dltrain saves (changed after training): its raw weights are not what the
            run evaluated.
    """
    averaged = state.get(STATE_KEY)
    if not evaluate_averaged or (averaged is None and not averaging):
        return state["model"]
    if not saved_average(averaged):
        raise ValueError("its config averages the weights, but it holds no averaged weights of the shape dltrain saves")
    if averaged.get("method") == "ema" or averaged["updates"] > 0:
        return averaged["weights"]
    return state["model"]

"""``trainer.diagnostics``: how gradients, weights and activations look, layer by layer, once an epoch.

One training step an epoch (the epoch's first) is measured: forward hooks on the layers and
activation modules, registered for that step alone, record each output's mean and standard
deviation; after the step, each layer's gradient norm (the gradients the optimizer stepped
with, after clipping), its weight norm and the update-to-weight ratio
``||w_after - w_before|| / ||w_before||`` are read, and everything reaches the CPU in one
transfer. The step itself is computed as any other (the hooks only read), so the run's
metrics, checkpoints and resume are the same with diagnostics on or off; off, nothing is
registered and the loop takes its usual path.

Rows go to ``diagnostics.csv``, one per epoch and module, flushed as each epoch ends. A run
resumed at an epoch's end measures the same steps as one never stopped; resumed inside an
epoch, it measures the first step it takes. Under torchrun rank 0 measures its own step (the
gradients are the ranks' average, the activations those of its share of the batch); nothing
measured is a collective, so the ranks never wait on one another for it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: The columns of diagnostics.csv, in order.
COLUMNS = ("epoch", "layer", "kind", "grad_norm", "weight_norm", "update_ratio", "identical_units",
           "act_mean", "act_std", "dead_fraction", "saturated_fraction")
#: Activation modules whose outputs are measured (besides every layer with parameters).
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
               nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.Softplus)
#: A unit of these is dead when its output is exactly 0 for every example of the batch.
_RECTIFIERS = (nn.ReLU, nn.ReLU6)
#: Saturated outputs: where the slope is under ~0.01 (sigmoid: 0.0099 at 0.01 and 0.99; tanh: 0.0199 at 0.99).
_SATURATED: dict[type[nn.Module], Callable[[torch.Tensor], torch.Tensor]] = {
    nn.Sigmoid: lambda y: (y < 0.01) | (y > 0.99),
    nn.Tanh: lambda y: y.abs() > 0.99,
}
#: Layers whose weight holds one row per unit: its incoming weights (a convolution's filter).
_UNIT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Rows of a layer's weight closer than this (relative to their norm) count as the same unit.
_SAME = 1e-6

Stats = dict[str, torch.Tensor]


class Diagnostics:
    """Measures one step an epoch of ``model`` and writes the rows to ``path`` as epochs end.

    Args:
        model: the model being trained (not a DDP or compiled wrapper: its modules are hooked).
        path: the run's ``diagnostics.csv``.
        activations: measure module outputs (False under ``trainer.compile``, where hooks would
            make the compiled model recompile).
    """

    def __init__(self, model: nn.Module, path: str | Path, activations: bool = True) -> None:
        self.path = Path(path)
        modules = [(name, m) for name, m in model.named_modules()
                   if next(m.parameters(recurse=False), None) is not None or isinstance(m, ACTIVATIONS)]
        self.modules = dict(modules)
        self.watched = dict(modules) if activations else {}  # whose outputs are measured
        self.kinds = {name: type(m).__name__ for name, m in modules}  # the rows' order: the model's
        self.pending: list[dict[str, Any]] = []  # the last measured step's rows, until its epoch ends
        self._header = False

    def measure(self, step: Callable[[torch.Tensor, torch.Tensor], Any], x: torch.Tensor, y: torch.Tensor) -> Any:
        """Run ``step(x, y)`` (one optimizer step) and measure it; returns what the step returns."""
        outputs: dict[str, Stats] = {}
        layers = {name: m for name, m in self.modules.items() if _params(m)}  # what trains now (fine-tuning freezes)
        handles = [m.register_forward_hook(_recorder(name, m, outputs)) for name, m in self.watched.items()]
        before = {name: [p.detach().clone() for p in _params(m)] for name, m in layers.items()}
        try:
            result = step(x, y)
        finally:
            for handle in handles:
                handle.remove()
        with torch.no_grad():
            stats = {name: _layer_stats(m, before[name]) for name, m in layers.items()}
        for name, values in outputs.items():
            stats.setdefault(name, {}).update(values)
        self.pending = _to_rows({name: stats[name] for name in self.kinds if name in stats}, self.kinds)
        return result

    def write_epoch(self, epoch: int) -> None:
        """Append the rows measured in ``epoch`` to the CSV (nothing when no step was measured)."""
        rows, self.pending = self.pending, []
        if not rows:
            return
        with self.path.open("a" if self._header else "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            if not self._header:
                writer.writeheader()
                self._header = True
            writer.writerows({"epoch": epoch, **{k: _fmt(v) for k, v in row.items()}} for row in rows)

    def continue_from(self, source: Path, epochs: int) -> None:
        """Start the CSV with the rows of epochs ``1..epochs`` of a resumed run's ``source``
        (its own file, when the run continues in place): later epochs, which the resume trains
        again, are dropped, so no epoch has its rows twice."""
        try:
            with source.open(newline="") as f:
                rows = [row for row in csv.DictReader(f) if _int(row.get("epoch")) <= epochs]
        except (OSError, csv.Error):  # the resumed run had none: this one starts its own
            return
        tmp = self.path.with_name(f".tmp-{self.path.name}")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)
        self._header = True


def _params(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters(recurse=False) if p.requires_grad]


def _recorder(name: str, module: nn.Module, outputs: dict[str, Stats]) -> Callable[..., None]:
    """A forward hook keeping the first output's statistics (LBFGS re-evaluates a step's forward)."""

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if name not in outputs and isinstance(output, torch.Tensor) and output.is_floating_point():
            with torch.no_grad():
                outputs[name] = _activation_stats(module, output.detach())

    return hook


def _activation_stats(module: nn.Module, y: torch.Tensor) -> Stats:
    """Mean and std of an output ``(B, ...)``; a rectifier's dead units (0 for every example,
    a unit being one entry of an example's output) and a sigmoid's or tanh's saturated outputs."""
    y = y.float()
    stats = {"act_mean": y.mean(), "act_std": y.std() if y.numel() > 1 else y.new_tensor(math.nan)}
    if isinstance(module, _RECTIFIERS):
        stats["dead_fraction"] = (y == 0).all(dim=0).float().mean()
    saturated = next((test for kind, test in _SATURATED.items() if isinstance(module, kind)), None)
    if saturated is not None:
        stats["saturated_fraction"] = saturated(y).float().mean()
    return stats


def _layer_stats(module: nn.Module, before: list[torch.Tensor]) -> Stats:
    """Gradient norm, weight norm, update-to-weight ratio and identical units of a layer's own parameters."""
    params = _params(module)
    grads = [p.grad for p in params if p.grad is not None]
    weight_before = _norm(before)
    nan = params[0].new_tensor(math.nan, dtype=torch.float32)
    stats = {
        "grad_norm": _norm(grads) if grads else nan,
        "weight_norm": _norm(params),
        # zero weights have no scale to compare the update with
        "update_ratio": torch.where(weight_before > 0, _norm([p - b for p, b in zip(params, before, strict=True)])
                                    / weight_before, nan),
    }
    rows = _unit_rows(module)
    if rows is not None:
        stats["identical_units"] = _identical(rows)
    return stats


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors]))


def _unit_rows(module: nn.Module) -> torch.Tensor | None:
    """Each unit's incoming weights, one row a unit ``(units, fan_in)``: a Linear's or Conv's
    weight, a recurrent layer's first input weights (a row per unit of each gate); None for
    any other layer, whose weight's rows are no units (an embedding's are tokens, a transposed
    convolution's input channels; a norm has none)."""
    if isinstance(module, nn.RNNBase):
        weight = getattr(module, "weight_ih_l0", None)
    elif isinstance(module, _UNIT_LAYERS):
        weight = module.weight
    else:
        return None
    if not isinstance(weight, torch.Tensor) or not weight.requires_grad or weight.shape[0] < 2:
        return None
    return weight.detach().flatten(1).float()


def _identical(rows: torch.Tensor) -> torch.Tensor:
    """The fraction of units 2..n whose incoming weights equal the first unit's: 1.0 when an
    initialisation (``init=zeros``) never broke the symmetry, about 0 for random weights."""
    first, others = rows[0], rows[1:]
    scale = torch.maximum(others.norm(dim=1), first.norm())
    return ((others - first).norm(dim=1) <= _SAME * scale).float().mean()


def _to_rows(stats: dict[str, Stats], kinds: dict[str, str]) -> list[dict[str, Any]]:
    """The rows of one measured step, every value read from the device in one transfer."""
    keys = [(name, column) for name, values in stats.items() for column in values]
    numbers = torch.stack([stats[n][c].float().reshape(()) for n, c in keys]).tolist() if keys else []
    rows = {name: {"layer": name, "kind": kinds[name]} for name in stats}
    for (name, column), number in zip(keys, numbers, strict=True):
        rows[name][column] = number
    return list(rows.values())


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def _int(text: str | None) -> int:
    try:
        return int(text or "")
    except ValueError:
        return 1 << 62  # an unreadable row is not kept

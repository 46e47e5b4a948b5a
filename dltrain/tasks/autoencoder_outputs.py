"""What an autoencoder run writes after its test (rank 0): ``latents.csv`` and ``latents.png``
(:mod:`dltrain.report.latents`), and ``reconstructions.png`` (:mod:`dltrain.report.reconstructions`).

The codes are those of the whole test split, encoded by the weights the run tested. The noisy
inputs of a denoising autoencoder are drawn from a generator of their own, seeded with the run's
seed, inside :func:`torch.random.fork_rng`: drawing them changes no random number of the run.
A picture or file that fails is a warning: the run's results stand. matplotlib is imported when
they are drawn, not with the task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dltrain.data import DataSplits
from dltrain.errors import first_line
from dltrain.models.transfer import unwrap

log = logging.getLogger("dltrain")

#: Examples encoded per forward pass.
BATCH = 512
LATENTS_CSV, LATENTS_PNG, RECONSTRUCTIONS_PNG = "latents.csv", "latents.png", "reconstructions.png"
#: Examples reconstructions.png shows: one row of its grid.
SHOWN = 8


def test_labels(data: DataSplits) -> list[str] | None:
    """Each test example's class name, for data with one class per example; else None."""
    if data.task not in ("binary", "multiclass"):
        return None
    names = list(data.class_names or [])
    return [names[i] if i < len(names) else str(i) for i in data.y_test.long().cpu().tolist()]


def test_rows(data: DataSplits) -> list[Any]:
    """What names each test example, as ``predictions.csv`` names it (its row or file in the
    source where the data records one, else its position in the split)."""
    rows = data.info.get("test_rows")
    return list(rows) if rows is not None and len(rows) == len(data.y_test) else list(range(len(data.y_test)))


def split_batches(x: torch.Tensor | Any, device: torch.device, size: int = BATCH) -> Iterator[torch.Tensor]:
    """The inputs of a split (a tensor, or a dataset of ``(x, y)`` read from disk) in batches on ``device``."""
    for start in range(0, len(x), size):
        if torch.is_tensor(x):
            batch = x[start:start + size]
        else:
            batch = torch.stack([x[i][0] for i in range(start, min(start + size, len(x)))])
        yield batch.to(device)


@torch.no_grad()
def encode_split(model: nn.Module, x: torch.Tensor | Any) -> torch.Tensor:
    """The latent codes ``(N, K)`` of a split's inputs, in eval mode, on the CPU."""
    model = unwrap(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model.encode(batch).float().reshape(len(batch), -1).cpu()
                          for batch in split_batches(x, device)])
    finally:
        model.train(was_training)


def noisy_examples(x: torch.Tensor, corrupt: Callable[[torch.Tensor], torch.Tensor], seed: int) -> torch.Tensor:
    """``corrupt`` of each example of ``x`` apart, example ``j``'s noise drawn on the CPU from seed
    ``seed + j``: a split's noise depends on each example's position alone, not on its batches,
    its shards or the device (the run's generators are left as they were)."""
    cpu = x.detach().cpu()
    with torch.random.fork_rng(devices=[]):
        noisy = []
        for j in range(len(cpu)):
            torch.manual_seed(seed + j)
            noisy.append(corrupt(cpu[j:j + 1]))
    return torch.cat(noisy).to(x.device) if noisy else x.clone()


@torch.no_grad()
def write_reconstructions(run_dir: Path, model: nn.Module, data: DataSplits,
                          corrupt: Callable[[torch.Tensor], torch.Tensor] | None, seed: int) -> Path:
    """``reconstructions.png``: the first test inputs, their noisy versions (``corrupt``: the
    denoising noise; None: none) and what the model makes of what it is given (the noisy input
    when it denoises)."""
    from dltrain.report.reconstructions import plot_reconstructions

    model = unwrap(model)
    device = next(model.parameters()).device
    x = next(split_batches(data.x_test, device, SHOWN))
    was_training = model.training
    model.eval()
    try:
        panels = [("input", x)]
        if corrupt is not None:
            noisy = noisy_examples(x, corrupt, seed)  # the examples noisy_loss reads first
            panels.append(("noisy input", noisy))
            panels.append(("reconstruction", model(noisy)))
        else:
            panels.append(("reconstruction", model(x)))
    finally:
        model.train(was_training)
    rows, labels = test_rows(data)[:len(x)], test_labels(data)
    captions = [caption(row, labels[i] if labels is not None else None) for i, row in enumerate(rows)]
    error = float(((panels[-1][1] - x) ** 2).mean())
    title = (f"test inputs{', noisy inputs' if corrupt is not None else ''} and their reconstructions "
             f"(mean squared error {error:.4g}, standardised)")
    return plot_reconstructions(panels, data, captions, run_dir / RECONSTRUCTIONS_PNG, title)


def caption(row: Any, label: str | None, fits: int = 12) -> str:
    """An example's caption under its picture: its row and label, the label alone when the row is
    too long to fit under an image (an image folder's path), the last part of the row without labels."""
    text = str(row)
    if label is None:
        return text if len(text) <= fits else "..." + text[-(fits - 3):]
    return f"{text} ({label})" if len(text) + len(str(label)) + 3 <= fits else str(label)


def write_outputs(run_dir: Path, model: nn.Module, data: DataSplits,
                  corrupt: Callable[[torch.Tensor], torch.Tensor] | None = None, seed: int = 0) -> list[str]:
    """Write ``latents.csv``, ``latents.png`` and ``reconstructions.png`` into ``run_dir``.

    Args:
        run_dir: the run directory.
        model: the weights the run tested (an autoencoder: ``encode(x)``, ``forward(x)``).
        data: the run's data; the whole test split is encoded.
        corrupt: the denoising noise (a function of a batch), or None.
        seed: the run's seed, for the noisy inputs drawn.

    Returns:
        The names of the files written; a failure is a warning naming the file.
    """
    from dltrain.report.latents import latent_rows, plot_latents, write_latents

    written = []
    codes, labels = None, test_labels(data)
    try:
        codes = encode_split(model, data.x_test)
        write_latents(run_dir / LATENTS_CSV, latent_rows(codes, test_rows(data), labels))
        written.append(LATENTS_CSV)
    except Exception as err:  # noqa: BLE001 - never worth the run's results
        log.warning("warning: could not write %s: %s", LATENTS_CSV, first_line(err))
    for name, draw in ((LATENTS_PNG, lambda: plot_latents(codes, run_dir / LATENTS_PNG, labels, data.class_names)),
                       (RECONSTRUCTIONS_PNG, lambda: write_reconstructions(run_dir, model, data, corrupt, seed))):
        if name == LATENTS_PNG and codes is None:
            continue
        try:
            draw()
            written.append(name)
        except Exception as err:  # noqa: BLE001 - a picture is never worth the run
            log.warning("warning: could not draw %s: %s", name, first_line(err))
    return written

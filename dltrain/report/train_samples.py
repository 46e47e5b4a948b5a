"""samples.png: training images after the run's augmentation, as the model sees them, captioned
with their labels, drawn by rank 0 as the run starts (fastai's ``show_batch``). MixUp and CutMix
are not drawn: they mix whole batches and their labels, and a caption has one label per image.

Drawing it changes nothing in the run: the examples are chosen by a private generator and read
from the training split directly (never through the run's batches, whose order is drawn from the
run's random numbers), and their augmentation draws from the CPU generator inside
:func:`torch.random.fork_rng`, seeded with the run's seed and restored afterwards.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from dltrain.data import Augment, DataSplits
from dltrain.errors import first_line

log = logging.getLogger("dltrain")

SAMPLES_PNG = "samples.png"
#: Examples drawn: four rows of eight.
NUM_SAMPLES = 32


def shows_samples(data: DataSplits) -> bool:
    """Whether the data's examples are images ``(C, H, W)``, of which a run draws samples.png."""
    return len(data.input_shape) == 3


def write_samples(run_dir: Path, data: DataSplits, augment: Augment | None, seed: int) -> Path | None:
    """Draw samples.png into ``run_dir`` for image data, unless it is there already (a run
    continued in place keeps the picture it started with); a failure to draw is a warning.

    Args:
        run_dir: the run directory.
        data: the run's data; nothing is drawn unless its examples are images.
        augment: the run's training augmentation (``regularization.augment``), or None.
        seed: the run's seed: the same run draws the same picture.

    Returns:
        The path written, or None.
    """
    path = run_dir / SAMPLES_PNG
    if not shows_samples(data) or path.exists():
        return None
    try:
        from dltrain.report.report_plots import display_images, plot_image_grid  # matplotlib, for image data only

        x, captions = augmented_samples(data, augment, seed)
        done = f"after {', '.join(augment.params)}" if augment is not None else "no augmentation"
        title = f"{len(x)} training inputs as the model sees them ({done})"
        return plot_image_grid(display_images(x, data), captions, path, title)
    except Exception as err:  # noqa: BLE001 - a plot is never worth the run
        log.warning("warning: could not draw %s: %s", SAMPLES_PNG, first_line(err))
        return None


def augmented_samples(data: DataSplits, augment: Augment | None, seed: int,
                      n: int = NUM_SAMPLES) -> tuple[torch.Tensor, list[str]]:
    """``n`` training inputs chosen by :func:`sample_positions`, augmented on the CPU under a
    private seed, and their captions.

    Returns:
        The model inputs ``(n, C, H, W)`` on the CPU, and one caption per input: its label.
    """
    positions = sample_positions(len(data.y_train), n, seed)
    if torch.is_tensor(data.x_train):
        x = data.x_train[positions.to(data.x_train.device)].detach().cpu()
    else:  # read item by item from the dataset on disk: the run's loader is not touched
        x = torch.stack([data.x_train[i][0] for i in positions.tolist()])
    if augment is not None:
        # fork_rng restores the CPU generator afterwards; no CUDA generator is touched (devices=[]).
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            x = augment(x)
    return x, [label_text(y, data) for y in data.y_train[positions.to(data.y_train.device)].cpu()]


def sample_positions(num_train: int, n: int, seed: int) -> torch.Tensor:
    """``n`` positions in the training split (all of them when it is smaller), drawn from a
    private generator seeded with ``seed``, in split order: a random choice shows every class
    of data stored class by class, where the first examples would show one."""
    chosen = torch.randperm(num_train, generator=torch.Generator().manual_seed(seed))[:n]
    return chosen.sort().values


def label_text(y: torch.Tensor, data: DataSplits) -> str:
    """One example's target as words: its class name, its labels (multi-label data), or its value."""
    names = data.class_names
    if data.task in ("binary", "multiclass"):
        return names[int(y)] if names else str(int(y))
    if data.task == "multilabel":
        on = [names[i] if names else str(i) for i in torch.nonzero(y > 0.5).flatten().tolist()]
        return ", ".join(on) or "(none)"
    values = y.double().reshape(-1)
    if data.target_scale is not None:  # predictions and targets are reported in the target's units
        mean, std = data.target_scale
        values = values * std + mean
    return ", ".join(f"{v:.4g}" for v in values.tolist())

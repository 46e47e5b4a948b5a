"""What a run and a sweep write into their directories (and ``dltrain-lr-find`` into its own): one
list, shown by ``dltrain --help`` and checked against a real run directory by the tests, so the two
cannot drift apart.

Imports nothing: ``dltrain --help`` reads it before torch is loaded.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class RunFile(NamedTuple):
    """One file or folder (a name ending in ``/``) of a run or sweep directory.

    Attributes:
        name: its path inside the directory; ``NNNN`` stands for an epoch's four digits,
            ``<k>`` for a rank, ``<job>`` for a job's number, ``<metric>`` and ``<value>`` for
            a metric's name and value.
        what: what it holds.
        when: when it is written (empty: by every run).
    """

    name: str
    what: str
    when: str = ""


#: Every file and folder of a run directory, in the order ``--help`` lists them.
RUN_FILES: tuple[RunFile, ...] = (
    RunFile("metrics.csv", "one row per epoch: losses, metrics, learning rate, seconds"),
    RunFile("summary.json", "how the run ended: status, best epoch and value, test metrics, data sizes, and the "
            "test split's report (per-class scores, most confused pairs, AUCs, or errors)"),
    RunFile("predictions.csv", "the test split's target, prediction and confidence, one row per example"),
    RunFile("curves.png", "loss and metric curves per epoch, the best epoch marked"),
    RunFile("confusion_matrix.png", "the test split's confusion matrix: counts, and shares of each true class",
            "classification"),
    RunFile("worst_predictions.csv", "the 20 test examples of highest loss: row, target, prediction, confidence, "
            "loss", "classification"),
    RunFile("worst_predictions.png", "the 16 worst test images with their true and predicted classes",
            "classification of images"),
    RunFile("roc_pr.png", "ROC and precision-recall curves of the test split, with their areas", "binary data"),
    RunFile("regression.png", "the test split's predictions against the truth, and their residuals", "regression"),
    RunFile("reconstructions.png", "8 test inputs, their noisy versions (task.denoise) and their reconstructions, "
            "side by side (images; a heatmap of table rows)", "task=autoencoder"),
    RunFile("latents.csv", "the test split's latent codes: row (as predictions.csv names it), label (when the data "
            "has classes), z0..z<K-1>", "task=autoencoder"),
    RunFile("latents.png", "the test codes in 2-D (themselves for model.bottleneck=2, else their first two principal "
            "components), coloured by label", "task=autoencoder"),
    RunFile("samples/", "epoch-NNN.png: each epoch's images of the generator from the fixed latent batch "
            "(task.num_samples), 8 a row", "task=gan"),
    RunFile("diagnostics.csv", "per epoch and layer: gradient and weight norms, update-to-weight ratio, "
            "activation mean and std, dead or saturated units, identical units", "trainer.diagnostics"),
    RunFile("gradients.png", "gradient norm and update ratio per layer over the epochs (log scale), dead or "
            "saturated units", "trainer.diagnostics"),
    RunFile("profile.txt", "seconds, calls, mean ms and share of each phase of training: data, augment, forward, "
            "backward, optimizer, evaluation, checkpointing (also in summary.json)", "trainer.profiler=simple"),
    RunFile("profiler/", "trace.json: a Chrome trace of a few training steps, for https://ui.perfetto.dev",
            "trainer.profiler=pytorch"),
    RunFile("model_summary.txt", "layers, output shapes, parameter counts and initialisation"),
    RunFile("data.json", "the dataset: task, shapes, class names, split sizes, preprocessing"),
    RunFile("samples.png", "32 training images (a seeded random choice) after augmentation, as the model sees "
            "them, with their labels", "image data"),
    RunFile("checkpoints/last.pt", "the latest epoch's full training state: resume= continues it exactly",
            "trainer.checkpoint.save_last"),
    RunFile("checkpoints/best.pt", "the epoch with the best monitored value", "trainer.checkpoint.save_best"),
    RunFile("checkpoints/epoch-NNNN.pt", "every N epochs, the newest keep_last of them",
            "trainer.checkpoint.every_n_epochs=N"),
    RunFile("checkpoints/top-epochNNNN-<metric><value>.pt", "the k best epochs by the monitored metric, each a "
            "full checkpoint named with its epoch and value", "trainer.checkpoint.save_top_k=k"),
    RunFile("tensorboard/", "the same metrics as TensorBoard event files", "logger=tensorboard"),
    RunFile("mlflow.json", "the MLflow run this run logs to (its store and run id): a resumed run carries on with it",
            "logger=mlflow"),
    RunFile("wandb/", "the W&B run, offline: offline-run-<time>-<id>/ (run-<id>.wandb: the config, every epoch's "
            "metrics, the summary; files/: the report files), which `wandb sync` uploads", "logger=wandb"),
    RunFile("wandb.json", "the W&B run this run logs to (its id) and the last epoch it holds: a resumed run carries "
            "on with it", "logger=wandb"),
    RunFile(".hydra/", "the composed config, Hydra's config and the overrides given: config.yaml, hydra.yaml, "
            "overrides.yaml", "by the dltrain command"),
    RunFile("dltrain.log", "the run's log", "by the dltrain command"),
    RunFile("rank<k>.log", "the log of each rank but rank 0", "under torchrun"),
)

#: What a sweep (``dltrain -m``) writes into its directory besides its jobs' run directories.
SWEEP_FILES: tuple[RunFile, ...] = (
    RunFile("<job>/", "one run directory per job (0/, 1/, ...), holding the files above"),
    RunFile("sweep_summary.csv", "one row per job: its overrides, status, best value and test metrics, ranked"),
    RunFile("sweep_summary.json", "the same rows, the monitored metric and the best job"),
    RunFile("best_overrides.yaml", "the best job: its number, value, overrides and the command that re-runs it "
            "(grouped: the best configuration, its mean, CI and n, without the seed; with trainer.repeats, "
            "from its first seed)"),
    RunFile("sweep_groups.csv", "one row per configuration: n, mean, sd and 95% CI of the best value and test "
            "metrics over its seeds, p-value against the best", "a sweep over seed= or trainer.repeats"),
    RunFile("sweep.png", "the monitored value of each job, the best one marked (grouped: each configuration's mean "
            "and 95% CI, its seeds as dots)"),
    RunFile("sweep_curves.png", "the monitored metric per epoch of every job, one colour per job (grouped: per "
            "configuration, its mean thick)"),
    RunFile("sweep.log", "one timestamped line per job as it started: its number, overrides and folder"),
    RunFile("multirun.yaml", "Hydra's record of the sweep's config"),
    RunFile("mlflow.json", "the MLflow parent run of the sweep's jobs (its store and run id)", "logger=mlflow"),
)

#: What ``dltrain-lr-find`` writes into its own folder (``lr_find/<date>/<time>/``), shown by its ``--help``.
LR_FIND_FILES: tuple[RunFile, ...] = (
    RunFile("lr_find.json", "the overrides, every step's lr, loss and smoothed loss, the suggestion, its rule and "
            "reason, and the command to run next"),
    RunFile("lr_find.png", "the loss and the smoothed loss against the learning rate, the suggestion and "
            "minimum / 10 marked"),
    RunFile(".hydra/", "the composed config, Hydra's config and the overrides given"),
    RunFile("lr_find.log", "what it printed"),
)

_PLACEHOLDERS = {"NNNN": r"\d{4,}", "<k>": r"\d+", "<job>": r"\d+", "<metric>": r"[a-z][a-z0-9_]*",
                 "<value>": r"-?\d+\.\d+(?:e-\d+)?"}


def has_placeholder(name: str) -> bool:
    """Whether ``name`` (a :class:`RunFile` name) stands for several paths (``<job>/``, ``rank<k>.log``)."""
    return any(placeholder in name for placeholder in _PLACEHOLDERS)


def name_pattern(name: str) -> re.Pattern[str]:
    """The paths ``name`` (a :class:`RunFile` name) stands for, relative to the directory,
    a folder without its trailing ``/``."""
    parts = re.split("(" + "|".join(map(re.escape, _PLACEHOLDERS)) + ")", name.rstrip("/"))
    return re.compile("".join(_PLACEHOLDERS.get(part) or re.escape(part) for part in parts))

"""``trainer``: epochs, batches, precision, early stopping and checkpoints."""

from dataclasses import dataclass, field
from typing import Any

from dltrain.config.schemas.spec import PRECISIONS, spec


@dataclass
class EarlyStoppingConfig:
    enabled: bool = True
    monitor: str = spec("val_loss", help="a metric logged each epoch, e.g. val_loss or val_accuracy")
    mode: str = spec("auto", choices=("auto", "min", "max"))
    min_delta: float = spec(0.0, ge=0)
    patience: int = spec(5, ge=0)
    baseline: float | None = spec(None, help="an epoch improves only if it also beats this value; null = no baseline")
    restore_best_weights: bool = True
    start_from_epoch: int = spec(0, ge=0, help="epochs at the start that are not monitored")
    check_finite: bool = True


@dataclass
class CheckpointConfig:
    save_best: bool = True
    save_last: bool = True
    every_n_epochs: int = spec(0, ge=0, help="also keep checkpoints/epoch-NNNN.pt every N epochs; 0 = never")
    keep_last: int | None = spec(3, ge=1, help="how many periodic checkpoints to keep; null = all")
    save_top_k: int = spec(0, ge=0, help="keep the k best epochs by the monitor as checkpoints/top-epochNNNN-"
                                         "<monitor><value>.pt; 0 = off")
    every_n_steps: int = spec(0, ge=0, help="also write last.pt every N optimizer steps inside an epoch; 0 = never")
    every_n_minutes: float = spec(0.0, ge=0, help="also write last.pt inside an epoch once N minutes have passed "
                                                  "since the last one; 0 = never")


#: A batch limit: a count (1, 2, ...) or a fraction in (0, 1] (0.25, 1.0).
LIMIT_PATTERN = r"[1-9]\d*|0*\.\d*[1-9]\d*|0*1\.0*"
LIMIT_HELP = "a fraction of the batches in (0, 1], 1.0 = all, or a number of batches (an integer)"


@dataclass
class TrainerConfig:
    max_epochs: int = spec(30, ge=1)
    max_steps: int | None = spec(None, ge=1, help="stop after this many optimizer steps (the epoch it is reached in "
                                                   "ends there); null = no limit")
    # Any: Hydra reads 90 as an int and 00:01:30:00 as a string; the pattern takes both forms.
    max_time: Any = spec(None, pattern=r"\d+(\.\d*)?([eE][-+]?\d+)?|\d+:\d\d:\d\d:\d\d",
                         help="a number of seconds (90, 0.5) or DD:HH:MM:SS (00:01:30:00); null = no limit")
    batch_size: int = spec(64, ge=1)
    eval_batch_size: int = spec(512, ge=1)
    accumulate_grad_batches: int = spec(1, ge=1, help="k batches of batch_size make one optimizer step, whose "
                                                      "gradient is that of their k x batch_size examples")
    fast_dev_run: bool = False
    # Any: a fraction (float) or a count (int), told apart by their type as Lightning does.
    limit_train_batches: Any = spec(1.0, pattern=LIMIT_PATTERN, help=LIMIT_HELP)
    limit_val_batches: Any = spec(1.0, pattern=LIMIT_PATTERN, help=LIMIT_HELP)
    overfit_batches: int = spec(0, ge=0, help="N > 0: train and validate on the first N training batches, "
                                              "unshuffled (a sanity check); 0 = off")
    val_every_n_epochs: int = spec(1, ge=1, help="validate every N epochs, and the last one")
    repeats: int = spec(1, ge=1, help="a sweep (-m) runs each configuration this many times, with seeds seed, "
                                      "seed+1, ...; its summary compares the configurations over them")
    log_every_n_steps: int = spec(50, ge=1)
    precision: str = spec("32", choices=PRECISIONS, help="32, bf16 or 16 (16 needs CUDA)")
    compile: bool = False
    channels_last: bool = spec(False, help="images: model and batches in channels_last layout (faster convolutions "
                                           "on GPUs with tensor cores)")
    cudnn_benchmark: bool = spec(False, help="CUDA: let cuDNN pick the fastest convolution algorithms "
                                             "(not bit-for-bit repeatable)")
    deterministic: bool = spec(False, help="torch's deterministic algorithms (and cuDNN's, cuBLAS's on CUDA); "
                                           "an operation without one is an error naming it")
    sync_batchnorm: bool = spec(False, help="several ranks (torchrun): batch norm statistics over every rank's "
                                            "batch; needs CUDA")
    diagnostics: bool = spec(True, help="per layer, once an epoch: gradient and weight norms, update ratio, "
                                        "activations (diagnostics.csv, gradients.png)")
    profiler: str = spec("none", choices=("none", "simple", "pytorch"),
                         help="simple: seconds per phase (data, forward, backward, optimizer, evaluation, "
                              "checkpointing) in profile.txt and summary.json; pytorch: a trace of a few steps "
                              "in profiler/trace.json")
    profiler_steps: int = spec(3, ge=1, help="profiler=pytorch: how many training steps the trace records, after "
                                             "one skipped and one of warm-up")
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

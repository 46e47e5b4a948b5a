"""What keys exist: one dataclass per config node, with types, defaults and checks.

Hydra enforces the keys and types while it composes the config; ranges and choices are
field metadata (:func:`spec`) that ``dltrain.config.validation.validate`` checks right after.

The schema validates choices and ranges; a builder checks only combinations (``model.dropout``
with one recurrent layer) and what depends on the data (a CNN on non-image inputs). Builders
are also called from Python without a schema: where a value outside the schema's choices would
give a silently wrong model there, the builder asserts it with a plain ``ValueError``.

The YAML presets under ``conf/`` start from these schemas and restate their defaults with a
comment on each value: a preset is the user's map of an option's keys. The defaults live
here; ``tests/test_presets.py`` checks that every value a preset restates equals its schema
default, and lists the few deliberate differences with their reason. Options of a group that
take the same keys share a schema (``sgd``, ``momentum`` and ``nesterov`` are all
``torch.optim.SGD``); their presets are those differences (``optim=momentum`` sets
``momentum: 0.9``). Experiment presets (``conf/experiment``) are overlays, meant to differ.

No torch import here: ``dltrain --help`` and config errors stay fast.
"""

from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING

#: Activation names accepted by the built-in models (see ``dltrain.models.layers``).
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "gelu", "elu", "identity")
#: Batched image augmentations (see ``dltrain.regularization``).
AUGMENTATIONS = ("crop", "hflip", "rotate", "shift", "zoom", "brightness", "contrast")
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"
PRECISIONS = ("32", "bf16", "16")
#: Largest height or width ``data.image_size`` takes.
MAX_IMAGE_SIDE = 4096
#: Points a generated dataset may have (xor, sine, moons, spirals, chirp): far more than any of
#: them needs, and few enough to fit in memory, whether set on the command line or read from a
#: checkpoint's config.
MAX_POINTS = 10_000_000
IMAGE_SIDE_HELP = (f"pixels a side, 1 to {MAX_IMAGE_SIDE}: one {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} RGB image "
                   "already takes 200 MB as float32")


def spec(
    default: Any = MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[str, ...] | None = None,
    pattern: str | None = None,
    items: dict[str, Any] | None = None,
    length: int | None = None,
    help: str = "",
) -> Any:
    """A dataclass field whose metadata carries the checks ``validate`` applies.

    Args:
        default: default value; lists and dicts are copied per instance.
        ge, gt, le, lt: numeric bounds (``>=``, ``>``, ``<=``, ``<``).
        choices: the allowed strings.
        pattern: a regular expression the whole string must match.
        items: checks applied to every element of a list (same keys as here).
        length: the exact number of elements a list must have.
        help: one line shown in error messages.
    """
    meta = {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt, choices=choices, pattern=pattern,
                                  items=items, length=length, help=help).items()
            if v is not None and v != ""}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# --- model= --------------------------------------------------------------------------

@dataclass
class TransferConfig:
    """The keys of a model that can start from trained weights and fine-tune them (see
    :mod:`dltrain.models.transfer`); a model's schema that takes them subclasses this one."""

    weights: str = spec("none", help="none, a torchvision weights name (model=torchvision), or a file: "
                        "a dltrain checkpoint or a state dict of this model")
    freeze: str = spec("none", pattern=r"none|backbone|[1-9]\d*",
                       help="none, backbone (all but the head) or N >= 1 (the first N stages)")
    freeze_epochs: int = spec(0, ge=0, help="epochs trained frozen before everything is unfrozen; "
                              "0 keeps model.freeze for the whole run")
    backbone_lr: float = spec(1.0, gt=0, le=1, help="the backbone's learning rate as a fraction of the head's")


@dataclass
class MLPConfig:
    """``model=mlp``: a multilayer perceptron; input and output sizes come from the data."""

    name: str = "mlp"
    hidden: list[int] = spec([128, 64], items={"ge": 1}, help="widths of the hidden layers; [] is a linear model")
    activation: str = spec("relu", choices=ACTIVATIONS)


@dataclass
class CNNConfig(TransferConfig):
    """``model=cnn``: conv blocks (conv -> [BN] -> activation -> pool), then dense layers; it can
    start from another run's weights and fine-tune them (:class:`TransferConfig`)."""

    name: str = "cnn"
    channels: list[int] = spec([32, 64], items={"ge": 1}, help="output channels of each conv block")
    kernel_size: int = spec(3, ge=1)
    stride: int = spec(1, ge=1)
    padding: str = spec("same", pattern=r"same|valid|\d+", help="same, valid or a number of pixels")
    pool: str = spec("max", choices=("max", "avg", "none"))
    pool_size: int = spec(2, ge=1)
    hidden: list[int] = spec([128], items={"ge": 1}, help="widths of the dense layers after the conv blocks")
    activation: str = spec("relu", choices=ACTIVATIONS)


@dataclass
class RecurrentConfig:
    """``model=lstm|gru``: a recurrent network over ``(batch, time, features)``."""

    name: str = "lstm"
    hidden_size: int = spec(64, ge=1)
    num_layers: int = spec(1, ge=1)
    bidirectional: bool = False
    dropout: float = spec(0.0, ge=0, lt=1, help="dropout between stacked recurrent layers (num_layers > 1)")
    pooling: str = spec("last", choices=("last", "mean", "max"), help="what the head reads from the sequence")
    embedding_dim: int = spec(64, ge=1, help="size of the token embeddings, for text data (data=text_csv)")
    head: list[str] = spec([], help="layers between the pooled state and the output: dense:N, dropout:P, bn and "
                           "activations (conf/model/sequential.yaml has the syntax)")


@dataclass
class RNNConfig(RecurrentConfig):
    """``model=rnn``: an Elman RNN."""

    name: str = "rnn"
    nonlinearity: str = spec("tanh", choices=("tanh", "relu"))


@dataclass
class SequentialConfig(TransferConfig):
    """``model=sequential``: any feed-forward network as a list of layers, shapes inferred from the
    data; the classic networks (``model=mnist_net``, ``lenet5``, ...) are presets of it. It can
    start from another run's weights and fine-tune them (:class:`TransferConfig`)."""

    name: str = "sequential"
    layers: list[str] = spec(["flatten", "dense:128", "relu"],
                             help="layer specs such as conv:32:3, relu, maxpool:2, flatten, dense:128 "
                             "(conf/model/sequential.yaml has the syntax)")


@dataclass
class CustomModelConfig:
    """``model=custom``: any importable ``nn.Module`` class or factory, with its own keys
    added as ``+model.KEY=VALUE``."""

    ALLOWS_EXTRA_KEYS: ClassVar[bool] = True

    name: str = "custom"
    _target_: str = spec(MISSING, pattern=r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+",
                         help="a dotted import path such as my_pkg.MyNet")


@dataclass
class TorchvisionModelConfig(TransferConfig):
    """``model=torchvision``: a classification network torchvision ships, its head sized from
    the data, from random weights, torchvision's trained ones or a file (``model.weights``)."""

    name: str = "torchvision"
    # No pattern: the model option checks the name before any data is read, naming the close ones.
    arch: str = spec("resnet18", help="a torchvision classification model: resnet18, vgg16, efficientnet_b0, "
                                      "vit_b_16, ...")
    download: bool = spec(True, help="fetch named weights missing from torch's cache (TORCH_HOME); false: never")
    image_size: list[int] | None = spec(None, items={"ge": 1, "le": MAX_IMAGE_SIDE, "help": IMAGE_SIDE_HELP},
                                        length=2, help="height and width the network reads; null: the weights' "
                                        "size (with model.weights=none: the data's)")


# --- data= ---------------------------------------------------------------------------
# Every dataset's builder takes these keys (and ``seed``) as keyword arguments.

DATA_TASKS = ("auto", "regression", "binary", "multiclass")


@dataclass
class DigitsConfig:
    """``data=digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images)."""

    name: str = "digits"
    val_fraction: float = spec(0.1, ge=0, lt=1, help="share of the data held out for validation (0: none)")
    test_fraction: float = spec(0.2, gt=0, lt=1, help="share of the data held out for the final test")


@dataclass
class XorConfig:
    """``data=xor``: the four XOR points, each repeated with Gaussian jitter."""

    name: str = "xor"
    copies: int = spec(100, ge=3, le=MAX_POINTS // 4, help="noisy copies of each of the four points")
    noise: float = spec(0.1, ge=0, help="standard deviation of the jitter added to each copy")
    val_fraction: float = spec(0.2, ge=0, lt=1)
    test_fraction: float = spec(0.2, gt=0, lt=1)


@dataclass
class SineConfig:
    """``data=sine``: function approximation, y = f(x) + noise on a 1-D interval."""

    name: str = "sine"
    function: str = spec("sin", help="sin, cos, square, cubic, abs, sinc, step, or an expression in x "
                                     "such as 'sin(3*x) + 0.5*x'")
    x_min: float = spec(-3.141592653589793)
    x_max: float = spec(3.141592653589793)
    samples: int = spec(1000, ge=10, le=MAX_POINTS)
    noise: float = spec(0.1, ge=0, help="standard deviation of the Gaussian noise on y")
    val_fraction: float = spec(0.2, ge=0, lt=1)
    test_fraction: float = spec(0.2, gt=0, lt=1)


@dataclass
class MoonsConfig:
    """``data=moons``: two interleaving half circles (scikit-learn's make_moons)."""

    name: str = "moons"
    samples: int = spec(1000, ge=10, le=MAX_POINTS)
    noise: float = spec(0.2, ge=0)
    val_fraction: float = spec(0.2, ge=0, lt=1)
    test_fraction: float = spec(0.2, gt=0, lt=1)


@dataclass
class SpiralsConfig:
    """``data=spirals``: interleaved spiral arms, one class per arm."""

    name: str = "spirals"
    samples: int = spec(300, ge=10, le=MAX_POINTS // 100, help="points per arm")
    classes: int = spec(3, ge=2, le=100, help="number of arms (classes)")
    turns: float = spec(1.0, gt=0, help="how many times each arm winds around the centre")
    noise: float = spec(0.2, ge=0)
    val_fraction: float = spec(0.2, ge=0, lt=1)
    test_fraction: float = spec(0.2, gt=0, lt=1)


@dataclass
class ChirpConfig:
    """``data=chirp``: forecast the next value of a noisy chirp from a window of past values."""

    name: str = "chirp"
    length: int = spec(4000, ge=100, le=MAX_POINTS // 10, help="samples in the generated signal")
    f0: float = spec(1.0, gt=0, help="frequency at the start, in cycles per 100 samples")
    f1: float = spec(4.0, gt=0, help="frequency at the end, in cycles per 100 samples")
    noise: float = spec(0.1, ge=0, help="standard deviation of the Gaussian noise on the signal")
    window: int = spec(32, ge=1, le=1000, help="past values the model reads")
    horizon: int = spec(1, ge=1, help="how many steps ahead the target lies")
    val_fraction: float = spec(0.15, ge=0, lt=1, help="the signal's later part, before the test part")
    test_fraction: float = spec(0.15, gt=0, lt=1, help="the signal's last part")


@dataclass
class CSVConfig:
    """``data=csv``: a table of features and one target column."""

    name: str = "csv"
    path: str = spec(MISSING, help="the CSV file")
    target: str = spec("target", help="the column to predict")
    features: list[str] | None = spec(None, help="columns to read as features; null: every other column")
    task: str = spec("auto", choices=DATA_TASKS)
    missing: str = spec("error", choices=("error", "drop", "mean"),
                        help="rows with missing values: error, drop them, or fill with training means")
    max_categories: int = spec(50, ge=2, help="one-hot columns per text column; rarer values share one")
    positive_class: str | None = spec(None, help="binary: the label precision/recall/f1 score; null: 1, or the "
                                                 "rarer text label")
    delimiter: str = ","
    val_fraction: float = spec(0.15, ge=0, lt=1)
    test_fraction: float = spec(0.15, gt=0, lt=1)


@dataclass
class TextCSVConfig:
    """``data=text_csv``: text classification from a CSV of texts and labels."""

    name: str = "text_csv"
    path: str = spec(MISSING, help="the CSV file")
    text_column: str = "text"
    target: str = "label"
    task: str = spec("auto", choices=DATA_TASKS)
    min_freq: int = spec(2, ge=1, help="tokens seen fewer times in the training split become <unk>")
    max_vocab: int = spec(20000, ge=10, help="the vocabulary keeps the most frequent tokens")
    max_length: int = spec(200, ge=1, help="tokens per text; longer texts are cut")
    lowercase: bool = True
    positive_class: str | None = spec(None, help="binary: the label precision/recall/f1 score; null: 1, or the "
                                                 "rarer text label")
    delimiter: str = ","
    val_fraction: float = spec(0.15, ge=0, lt=1)
    test_fraction: float = spec(0.15, gt=0, lt=1)


@dataclass
class TorchvisionConfig:
    """``data=mnist|fashion_mnist|cifar10``: torchvision's datasets, downloaded to ``root``."""

    name: str = "mnist"
    root: str = spec("data", help="folder that holds (or receives) the dataset's files")
    download: bool = True
    val_fraction: float = spec(0.1, ge=0, lt=1, help="share of the training set held out for validation (0: none)")


@dataclass
class SVHNConfig(TorchvisionConfig):
    """``data=svhn``: torchvision's Street View House Numbers (its train and test sets; the extra
    set is not read), downloaded to ``root``."""

    name: str = "svhn"


@dataclass
class ImageFolderConfig:
    """``data=image_folder``: one sub-folder of images per class."""

    name: str = "image_folder"
    path: str = spec(MISSING, help="folder with one sub-folder per class (or train/ and test/ of those)")
    # Bounded before any image is decoded: a worker holds a batch of decoded images at this size.
    image_size: list[int] | None = spec(None, items={"ge": 1, "le": MAX_IMAGE_SIDE, "help": IMAGE_SIDE_HELP},
                                        length=2, help="height and width after resizing; null: the model's input "
                                        "size when it declares one, else 64x64")
    color: str = spec("rgb", choices=("rgb", "grayscale"))
    in_memory: Any = spec("auto", help="auto, true or false; auto holds the decoded images in memory "
                                       "when they take under a quarter of the machine's RAM")
    num_workers: int = spec(2, ge=0, help="processes that decode images")
    val_fraction: float = spec(0.15, ge=0, lt=1)
    test_fraction: float = spec(0.15, gt=0, lt=1, help="used when the folder has no test/ split")


# --- optim= --------------------------------------------------------------------------
# Field names and defaults follow the torch signatures; a test checks that they cover them.

@dataclass
class SGDConfig:
    """``optim=sgd|momentum|nesterov``: ``torch.optim.SGD``."""

    name: str = "sgd"
    lr: float = spec(0.01, ge=0)
    momentum: float = spec(0.0, ge=0, le=1)
    dampening: float = spec(0.0, ge=0, le=1)
    weight_decay: float = spec(0.0, ge=0)
    nesterov: bool = False
    maximize: bool = False
    foreach: bool | None = None
    fused: bool | None = None


@dataclass
class AdamConfig:
    """``optim=adam``: ``torch.optim.Adam``."""

    name: str = "adam"
    lr: float = spec(1e-3, ge=0)
    betas: list[float] = spec([0.9, 0.999], items={"ge": 0, "lt": 1}, length=2)
    eps: float = spec(1e-8, gt=0)
    weight_decay: float = spec(0.0, ge=0)
    amsgrad: bool = False
    decoupled_weight_decay: bool = False
    maximize: bool = False
    foreach: bool | None = None
    fused: bool | None = None


@dataclass
class AdamWConfig:
    """``optim=adamw``: ``torch.optim.AdamW`` (decoupled weight decay)."""

    name: str = "adamw"
    lr: float = spec(1e-3, ge=0)
    betas: list[float] = spec([0.9, 0.999], items={"ge": 0, "lt": 1}, length=2)
    eps: float = spec(1e-8, gt=0)
    weight_decay: float = spec(0.01, ge=0)
    amsgrad: bool = False
    maximize: bool = False
    foreach: bool | None = None
    fused: bool | None = None


@dataclass
class NAdamConfig:
    """``optim=nadam``: ``torch.optim.NAdam`` (Adam with Nesterov momentum)."""

    name: str = "nadam"
    lr: float = spec(2e-3, ge=0)
    betas: list[float] = spec([0.9, 0.999], items={"ge": 0, "lt": 1}, length=2)
    eps: float = spec(1e-8, gt=0)
    weight_decay: float = spec(0.0, ge=0)
    momentum_decay: float = spec(4e-3, ge=0)
    decoupled_weight_decay: bool = False
    maximize: bool = False
    foreach: bool | None = None


@dataclass
class RAdamConfig:
    """``optim=radam``: ``torch.optim.RAdam`` (Adam whose step is rectified while the variance
    estimate is still unreliable, a built-in warm-up)."""

    name: str = "radam"
    lr: float = spec(1e-3, ge=0)
    betas: list[float] = spec([0.9, 0.999], items={"ge": 0, "lt": 1}, length=2)
    eps: float = spec(1e-8, gt=0)
    weight_decay: float = spec(0.0, ge=0)
    decoupled_weight_decay: bool = False
    maximize: bool = False
    foreach: bool | None = None


@dataclass
class AdamaxConfig:
    """``optim=adamax``: ``torch.optim.Adamax`` (Adam with the infinity norm of past gradients in
    place of their running mean square)."""

    name: str = "adamax"
    lr: float = spec(2e-3, ge=0)
    betas: list[float] = spec([0.9, 0.999], items={"ge": 0, "lt": 1}, length=2)
    eps: float = spec(1e-8, gt=0)
    weight_decay: float = spec(0.0, ge=0)
    maximize: bool = False
    foreach: bool | None = None


@dataclass
class RMSpropConfig:
    """``optim=rmsprop``: ``torch.optim.RMSprop``."""

    name: str = "rmsprop"
    lr: float = spec(1e-2, ge=0)
    alpha: float = spec(0.99, ge=0, le=1, help="decay of the running average of squared gradients")
    eps: float = spec(1e-8, gt=0)
    weight_decay: float = spec(0.0, ge=0)
    momentum: float = spec(0.0, ge=0, le=1)
    centered: bool = False
    maximize: bool = False
    foreach: bool | None = None


@dataclass
class AdagradConfig:
    """``optim=adagrad``: ``torch.optim.Adagrad``."""

    name: str = "adagrad"
    lr: float = spec(1e-2, ge=0)
    lr_decay: float = spec(0.0, ge=0)
    weight_decay: float = spec(0.0, ge=0)
    initial_accumulator_value: float = spec(0.0, ge=0)
    eps: float = spec(1e-10, gt=0)
    maximize: bool = False
    foreach: bool | None = None
    fused: bool | None = None


@dataclass
class AdadeltaConfig:
    """``optim=adadelta``: ``torch.optim.Adadelta``."""

    name: str = "adadelta"
    lr: float = spec(1.0, ge=0)
    rho: float = spec(0.9, ge=0, le=1)
    eps: float = spec(1e-6, gt=0)
    weight_decay: float = spec(0.0, ge=0)
    maximize: bool = False
    foreach: bool | None = None


@dataclass
class LBFGSConfig:
    """``optim=lbfgs``: ``torch.optim.LBFGS``; the trainer supplies the closure it needs."""

    name: str = "lbfgs"
    lr: float = spec(1.0, ge=0)
    max_iter: int = spec(20, ge=1, help="iterations per optimizer step (per batch)")
    max_eval: int | None = spec(None, ge=1)
    tolerance_grad: float = spec(1e-7, ge=0)
    tolerance_change: float = spec(1e-9, ge=0)
    history_size: int = spec(100, ge=1)
    line_search_fn: str | None = spec("strong_wolfe", choices=("strong_wolfe",))
    maximize: bool = False


# --- loss= ---------------------------------------------------------------------------

@dataclass
class LossConfig:
    """``loss=auto|mse|rmse|mae``: losses with no keys of their own."""

    name: str = "auto"


@dataclass
class HuberConfig:
    """``loss=huber``: squared error below ``delta``, absolute error above."""

    name: str = "huber"
    delta: float = spec(1.0, gt=0)


@dataclass
class BCEConfig:
    """``loss=bce``: binary cross-entropy on logits."""

    name: str = "bce"
    pos_weight: float | None = spec(None, gt=0, help="weight of positive examples; > 1 favours recall")


@dataclass
class CrossEntropyConfig:
    """``loss=cross_entropy|nll``: negative log-likelihood of the class, optionally weighted."""

    name: str = "cross_entropy"
    class_weights: Any = spec(None, help="null, balanced, or a list with one weight per class")


# --- init= ---------------------------------------------------------------------------

@dataclass
class InitConfig:
    """``init=default|zeros|fan_in_uniform|fan_in_normal``: schemes without keys."""

    name: str = "default"


@dataclass
class XavierInitConfig:
    """``init=xavier_*``: Glorot's variance 2/(fan_in+fan_out), times gain² when asked for."""

    name: str = "xavier_uniform"
    gain: float = spec(1.0, gt=0, help="scales every weight; 1 is Glorot's and Keras's glorot_* formula")
    nonlinearity: str | None = spec(None, choices=ACTIVATIONS,
                                    help="null: gain 1 (or init.gain); relu, tanh, ...: that activation's gain")


@dataclass
class GainInitConfig:
    """``init=he_*|orthogonal``: schemes scaled for the activation that follows."""

    name: str = "he_normal"
    nonlinearity: str | None = spec(None, choices=ACTIVATIONS,
                                    help="null matches the model's activation (tanh for recurrent models)")


@dataclass
class ConstantInitConfig:
    """``init=constant``: every weight set to ``value``."""

    name: str = "constant"
    value: float = spec(0.01, help="the value of every weight")


# --- scheduler= ----------------------------------------------------------------------

@dataclass
class SchedulerConfig:
    """``scheduler=none``: a constant learning rate (after the optional warm-up)."""

    name: str = "none"
    warmup_epochs: int = spec(0, ge=0, help="epochs of linear warm-up before the schedule starts")


@dataclass
class StepSchedulerConfig(SchedulerConfig):
    """``scheduler=step``: multiply the LR by ``gamma`` every ``step_size`` epochs."""

    name: str = "step"
    step_size: int = spec(10, ge=1)
    gamma: float = spec(0.1, gt=0)


@dataclass
class MultiStepSchedulerConfig(SchedulerConfig):
    """``scheduler=multistep``: multiply the LR by ``gamma`` at each milestone epoch."""

    name: str = "multistep"
    milestones: list[int] = spec([10, 20], items={"ge": 1})
    gamma: float = spec(0.1, gt=0)


@dataclass
class ExponentialSchedulerConfig(SchedulerConfig):
    """``scheduler=exponential``: multiply the LR by ``gamma`` every epoch."""

    name: str = "exponential"
    gamma: float = spec(0.95, gt=0)


@dataclass
class CosineSchedulerConfig(SchedulerConfig):
    """``scheduler=cosine``: cosine annealing from the LR down to ``eta_min``."""

    name: str = "cosine"
    T_max: int | None = spec(None, ge=1, help="epochs of the half cosine; null: the epochs left after warm-up")
    eta_min: float = spec(0.0, ge=0)


@dataclass
class PlateauSchedulerConfig(SchedulerConfig):
    """``scheduler=plateau``: reduce the LR when the monitored metric stops improving."""

    name: str = "plateau"
    monitor: str | None = spec(None, help="a logged metric; null: trainer.early_stopping.monitor")
    mode: str = spec("auto", choices=("auto", "min", "max"))
    factor: float = spec(0.1, gt=0, lt=1)
    patience: int = spec(2, ge=0)
    threshold: float = spec(1e-4, ge=0)
    threshold_mode: str = spec("rel", choices=("rel", "abs"))
    cooldown: int = spec(0, ge=0)
    min_lr: float = spec(0.0, ge=0)
    eps: float = spec(1e-8, ge=0)


@dataclass
class OneCycleSchedulerConfig(SchedulerConfig):
    """``scheduler=onecycle``: one cycle up to ``max_lr`` and down, stepped every batch."""

    name: str = "onecycle"
    max_lr: float | None = spec(None, gt=0, help="peak LR; null: optim.lr")
    pct_start: float = spec(0.3, gt=0, lt=1)
    anneal_strategy: str = spec("cos", choices=("cos", "linear"))
    cycle_momentum: bool = True
    base_momentum: float = spec(0.85, ge=0, le=1)
    max_momentum: float = spec(0.95, ge=0, le=1)
    div_factor: float = spec(25.0, gt=0)
    final_div_factor: float = spec(1e4, gt=0)
    three_phase: bool = False


# --- logger= -------------------------------------------------------------------------

# Several loggers at once (logger=[tensorboard,mlflow]): each option's keys sit under its own
# name (logger.mlflow.tracking_uri), so the schemas have no ``name`` key.

@dataclass
class CSVLoggerConfig:
    """logger=csv: metrics.csv, which every run writes; nothing to set."""


@dataclass
class TensorBoardLoggerConfig:
    subdir: str = spec("tensorboard", help="folder of the event files, inside the run directory")
    flush_secs: int = spec(30, ge=1, help="how often the event files are flushed to disk")


@dataclass
class MLflowLoggerConfig:
    tracking_uri: str | None = spec(None, help="where the runs go: null = the local store ./mlruns where dltrain "
                                               "started; http://HOST:PORT for a server; sqlite:///mlflow.db")
    experiment_name: str = spec("dltrain", help="the MLflow experiment the runs go into (created if new)")
    run_name: str | None = spec(None, help="the MLflow run's name; null = the run directory's name")
    tags: dict[str, str] = spec({}, help="your own tags of the MLflow run, each added with a plus: "
                                         "+logger.mlflow.tags.team=vision")
    log_artifacts: bool = spec(True, help="also upload summary.json, curves.png, the model summary and report files")

    @staticmethod
    def without_network(options: dict[str, Any]) -> tuple[str, str] | None:
        """A stored config's (a checkpoint's) server made the local store, in place: the
        ``key=value`` replaced and what replaces it; None when it names no server."""
        uri = options.get("tracking_uri")
        scheme = str(uri).partition(":")[0].lower() if uri is not None and ":" in str(uri) else ""
        if uri is None or scheme in ("file", "sqlite") or len(scheme) <= 1:  # a path (C:\... too)
            return None
        options["tracking_uri"] = None
        return f"logger.mlflow.tracking_uri={uri}", "the local store ./mlruns"


@dataclass
class WandbLoggerConfig:
    mode: str = spec("offline", choices=("offline", "online", "disabled"),
                     help="offline: files in the run directory that `wandb sync` uploads later; online: to W&B now")
    project: str = spec("dltrain", help="the W&B project the runs go into")
    entity: str | None = spec(None, help="the W&B user or team; null = the account's default")
    run_name: str | None = spec(None, help="the W&B run's name; null = the run directory's name")
    group: str | None = spec(None, help="the W&B group; null = a sweep's folder for its jobs, none for a single run")
    tags: list[str] = spec([], help="the W&B run's tags")
    dir: str | None = spec(None, help="the folder W&B writes its wandb/ folder into; null = the run directory")
    log_artifacts: bool = spec(True, help="also save summary.json, curves.png, the model summary and report files")

    @staticmethod
    def without_network(options: dict[str, Any]) -> tuple[str, str] | None:
        """A stored config's (a checkpoint's) online mode made offline, in place: the
        ``key=value`` replaced and what replaces it; None when it is not online."""
        if options.get("mode") != "online":
            return None
        options["mode"] = "offline"
        return "logger.wandb.mode=online", "logger.wandb.mode=offline"


# --- plain nodes ---------------------------------------------------------------------

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


@dataclass
class TrainerConfig:
    max_epochs: int = spec(30, ge=1)
    batch_size: int = spec(64, ge=1)
    eval_batch_size: int = spec(512, ge=1)
    fast_dev_run: bool = False
    repeats: int = spec(1, ge=1, help="a sweep (-m) runs each configuration this many times, with seeds seed, "
                                      "seed+1, ...; its summary compares the configurations over them")
    log_every_n_steps: int = spec(50, ge=1)
    precision: str = spec("32", choices=PRECISIONS, help="32, bf16 or 16 (16 needs CUDA)")
    compile: bool = False
    channels_last: bool = spec(False, help="images: model and batches in channels_last layout (faster convolutions "
                                           "on GPUs with tensor cores)")
    cudnn_benchmark: bool = spec(False, help="CUDA: let cuDNN pick the fastest convolution algorithms "
                                             "(not bit-for-bit repeatable)")
    sync_batchnorm: bool = spec(False, help="several ranks (torchrun): batch norm statistics over every rank's "
                                            "batch; needs CUDA")
    diagnostics: bool = spec(True, help="per layer, once an epoch: gradient and weight norms, update ratio, "
                                        "activations (diagnostics.csv, gradients.png)")
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


@dataclass
class CropConfig:
    padding: int = spec(4, ge=1, help="pixels added on each side by reflection; the window moves by up to this many")


@dataclass
class HFlipConfig:
    p: float = spec(0.5, ge=0, le=1, help="probability of mirroring an image left-right")


@dataclass
class RotateConfig:
    degrees: float = spec(15.0, ge=0, le=180, help="rotation drawn from [-degrees, degrees]")


@dataclass
class ShiftConfig:
    fraction: float = spec(0.1, ge=0, lt=1, help="shift drawn from [-fraction, fraction] of the width and height")


@dataclass
class ZoomConfig:
    scale: float = spec(0.1, ge=0, lt=1, help="zoom factor drawn from [1 - scale, 1 + scale]")


@dataclass
class BrightnessConfig:
    delta: float = spec(0.2, ge=0, help="offset drawn from [-delta, delta], in input units")


@dataclass
class ContrastConfig:
    delta: float = spec(0.2, ge=0, lt=1, help="contrast factor drawn from [1 - delta, 1 + delta]")


@dataclass
class AugmentParamsConfig:
    crop: CropConfig = field(default_factory=CropConfig)
    hflip: HFlipConfig = field(default_factory=HFlipConfig)
    rotate: RotateConfig = field(default_factory=RotateConfig)
    shift: ShiftConfig = field(default_factory=ShiftConfig)
    zoom: ZoomConfig = field(default_factory=ZoomConfig)
    brightness: BrightnessConfig = field(default_factory=BrightnessConfig)
    contrast: ContrastConfig = field(default_factory=ContrastConfig)


@dataclass
class RegularizationConfig:
    dropout: float = spec(0.0, ge=0, lt=1, help="probability of zeroing a hidden unit")
    batch_norm: bool = False
    l1: float = spec(0.0, ge=0, help="adds l1 * sum(|w|) over the weights to the loss")
    l2: float = spec(0.0, ge=0, help="weight decay on the weights (never biases or norm parameters)")
    label_smoothing: float = spec(0.0, ge=0, lt=1)
    grad_clip: float | None = spec(None, gt=0, help="clip the gradient norm to this value")
    grad_clip_value: float | None = spec(None, gt=0, help="clip every gradient element to [-value, value]")
    augment: list[str] = spec([], items={"choices": AUGMENTATIONS}, help="image augmentations for training")
    augment_params: AugmentParamsConfig = field(default_factory=AugmentParamsConfig)


@dataclass
class TrainConfig:
    """The primary config (``conf/train.yaml``)."""

    model: Any = MISSING
    data: Any = MISSING
    optim: Any = MISSING
    loss: Any = MISSING
    init: Any = MISSING
    scheduler: Any = MISSING
    logger: Any = MISSING
    seed: int = spec(0, ge=0, le=2**32 - 1)
    device: str = spec("auto", pattern=DEVICE_PATTERN, help="auto, cpu, cuda, cuda:N or mps")
    resume: str | None = spec(None, help="a checkpoint file, a run directory, or auto")
    # Never taken from a checkpoint: only the user's own command line or config allows code.
    trust_code: bool = False
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


#: Schema of every option of every config group: ``GROUP_SCHEMAS[group][option]``.
GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "model": {"mlp": MLPConfig, "cnn": CNNConfig, "rnn": RNNConfig, "lstm": RecurrentConfig,
              "gru": RecurrentConfig, "custom": CustomModelConfig, "sequential": SequentialConfig,
              "torchvision": TorchvisionModelConfig,
              # classic networks: presets of model=sequential (and of model=lstm) under their own names
              "lenet5": SequentialConfig, "mnist_net": SequentialConfig, "notes_cnn": SequentialConfig,
              "resnet_small": SequentialConfig, "vgg_small": SequentialConfig, "mnist_rnn": RecurrentConfig},
    "data": {"digits": DigitsConfig, "xor": XorConfig, "moons": MoonsConfig, "spirals": SpiralsConfig,
             "sine": SineConfig, "chirp": ChirpConfig, "csv": CSVConfig, "text_csv": TextCSVConfig,
             "mnist": TorchvisionConfig, "fashion_mnist": TorchvisionConfig, "cifar10": TorchvisionConfig,
             "svhn": SVHNConfig, "image_folder": ImageFolderConfig},
    "optim": {"sgd": SGDConfig, "momentum": SGDConfig, "nesterov": SGDConfig, "adam": AdamConfig,
              "adamw": AdamWConfig, "nadam": NAdamConfig, "rmsprop": RMSpropConfig, "adagrad": AdagradConfig,
              "adadelta": AdadeltaConfig, "lbfgs": LBFGSConfig, "radam": RAdamConfig,
              "adamax": AdamaxConfig},
    "loss": {"auto": LossConfig, "mse": LossConfig, "rmse": LossConfig, "mae": LossConfig, "huber": HuberConfig,
             "bce": BCEConfig, "cross_entropy": CrossEntropyConfig, "nll": CrossEntropyConfig},
    "init": {"default": InitConfig, "xavier_uniform": XavierInitConfig, "xavier_normal": XavierInitConfig,
             "he_uniform": GainInitConfig, "he_normal": GainInitConfig, "fan_in_uniform": InitConfig,
             "fan_in_normal": InitConfig, "orthogonal": GainInitConfig, "zeros": InitConfig,
             "constant": ConstantInitConfig},
    "scheduler": {"none": SchedulerConfig, "step": StepSchedulerConfig, "multistep": MultiStepSchedulerConfig,
                  "exponential": ExponentialSchedulerConfig, "cosine": CosineSchedulerConfig,
                  "plateau": PlateauSchedulerConfig, "onecycle": OneCycleSchedulerConfig},
    "logger": {"csv": CSVLoggerConfig, "tensorboard": TensorBoardLoggerConfig, "mlflow": MLflowLoggerConfig,
               "wandb": WandbLoggerConfig},
}

#: Groups that take several options at once (``logger=[tensorboard,mlflow]``), each option's keys
#: under its own name (``logger.mlflow.tracking_uri``). Every other group holds one option and
#: names it in its ``name`` key (``optim.name``).
MANY_OPTION_GROUPS = ("logger",)

#: The groups that hold one option, named by their ``name`` key: GROUP_SCHEMAS without :data:`MANY_OPTION_GROUPS`.
ONE_OPTION_GROUPS: dict[str, dict[str, type]] = {group: options for group, options in GROUP_SCHEMAS.items()
                                                 if group not in MANY_OPTION_GROUPS}

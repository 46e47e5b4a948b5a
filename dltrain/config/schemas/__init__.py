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

The schemas live one module per group (``models``, ``data``, ``optim``, ``losses``, ``init``,
``schedulers``, ``loggers``) and per plain node (``trainer``, ``regularization``); this module
assembles them into the primary config and :data:`GROUP_SCHEMAS`, and every name is importable
from here.
"""

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from dltrain.config.schemas.autoencoder import AutoencoderConfig, AutoencoderTaskConfig  # noqa: F401
from dltrain.config.schemas.data import (  # noqa: F401  (importable from here)
    ChirpConfig,
    CSVConfig,
    DigitsConfig,
    ImageFolderConfig,
    MoonsConfig,
    SineConfig,
    SpiralsConfig,
    SVHNConfig,
    TextCSVConfig,
    TorchvisionConfig,
    XorConfig,
)
from dltrain.config.schemas.gan import (  # noqa: F401  (importable from here)
    AdamNetworkConfig,
    DCGANConfig,
    DiscriminatorConfig,
    GanTaskConfig,
    GeneratorConfig,
)
from dltrain.config.schemas.init import (  # noqa: F401  (importable from here)
    ConstantInitConfig,
    GainInitConfig,
    InitConfig,
    XavierInitConfig,
)
from dltrain.config.schemas.loggers import (  # noqa: F401  (importable from here)
    CSVLoggerConfig,
    MLflowLoggerConfig,
    TensorBoardLoggerConfig,
    WandbLoggerConfig,
)
from dltrain.config.schemas.losses import (  # noqa: F401  (importable from here)
    BCEConfig,
    CrossEntropyConfig,
    HuberConfig,
    LossConfig,
)
from dltrain.config.schemas.models import (  # noqa: F401  (importable from here)
    CNNConfig,
    CustomModelConfig,
    MLPConfig,
    RecurrentConfig,
    RNNConfig,
    SequentialConfig,
    TorchvisionModelConfig,
    TransferConfig,
    TransformerConfig,
)
from dltrain.config.schemas.optim import (  # noqa: F401  (importable from here)
    AdadeltaConfig,
    AdagradConfig,
    AdamaxConfig,
    AdamConfig,
    AdamWConfig,
    LBFGSConfig,
    NAdamConfig,
    RAdamConfig,
    RMSpropConfig,
    SGDConfig,
)
from dltrain.config.schemas.regularization import (  # noqa: F401  (importable from here)
    AugmentParamsConfig,
    BrightnessConfig,
    ContrastConfig,
    CropConfig,
    CutMixConfig,
    ErasingConfig,
    HFlipConfig,
    MixUpConfig,
    RegularizationConfig,
    RotateConfig,
    ShiftConfig,
    ZoomConfig,
)
from dltrain.config.schemas.schedulers import (  # noqa: F401  (importable from here)
    CosineSchedulerConfig,
    ExponentialSchedulerConfig,
    MultiStepSchedulerConfig,
    OneCycleSchedulerConfig,
    PlateauSchedulerConfig,
    SchedulerConfig,
    StepSchedulerConfig,
)
from dltrain.config.schemas.spec import (  # noqa: F401  (importable from here)
    ACTIVATIONS,
    AUGMENTATIONS,
    DEVICE_PATTERN,
    IMAGE_SIDE_HELP,
    MAX_IMAGE_SIDE,
    MAX_POINTS,
    PRECISIONS,
    spec,
)
from dltrain.config.schemas.tasks import SupervisedTaskConfig  # noqa: F401  (importable from here)
from dltrain.config.schemas.trainer import (  # noqa: F401  (importable from here)
    CheckpointConfig,
    EarlyStoppingConfig,
    TrainerConfig,
)


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
    task: Any = MISSING
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
              "torchvision": TorchvisionModelConfig, "dcgan": DCGANConfig, "autoencoder": AutoencoderConfig,
              # classic networks: presets of model=sequential (and of model=lstm) under their own names
              "lenet5": SequentialConfig, "mnist_net": SequentialConfig, "notes_cnn": SequentialConfig,
              "resnet_small": SequentialConfig, "vgg_small": SequentialConfig, "mnist_rnn": RecurrentConfig,
              "transformer": TransformerConfig},
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
    "task": {"supervised": SupervisedTaskConfig, "autoencoder": AutoencoderTaskConfig, "gan": GanTaskConfig},
}

#: Groups that take several options at once (``logger=[tensorboard,mlflow]``), each option's keys
#: under its own name (``logger.mlflow.tracking_uri``). Every other group holds one option and
#: names it in its ``name`` key (``optim.name``).
MANY_OPTION_GROUPS = ("logger",)

#: The groups that hold one option, named by their ``name`` key: GROUP_SCHEMAS without :data:`MANY_OPTION_GROUPS`.
ONE_OPTION_GROUPS: dict[str, dict[str, type]] = {group: options for group, options in GROUP_SCHEMAS.items()
                                                 if group not in MANY_OPTION_GROUPS}

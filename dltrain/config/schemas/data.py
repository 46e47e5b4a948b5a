"""``data=``: the datasets' keys and their splits."""

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from dltrain.config.schemas.spec import IMAGE_SIDE_HELP, MAX_IMAGE_SIDE, MAX_POINTS, spec

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

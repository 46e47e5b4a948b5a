"""Sample data for the dataset presets that read your own files, and the ``dltrain-samples`` command.

``data=csv``, ``data=text_csv`` and ``data=image_folder`` train on files you supply. dltrain makes one small,
synthetic but learnable example of each, so that those presets can be tried without a download::

    dltrain-samples                         # writes samples/fraud.csv, samples/reviews.csv, samples/shapes/
    dltrain-samples my_dir --seed 1 --only reviews

It writes, the same bytes for the same seed:

- ``fraud.csv``: 20,000 card transactions in the layout of the Kaggle credit-card fraud data (``Time``,
  ``V1``..``V10``, ``Amount``, plus a categorical ``merchant``) with a ``Class`` column, about 2% fraud.
- ``reviews.csv``: about 3,000 short product reviews (``text``) labelled ``positive`` or ``negative``
  (``label``); negations ("not good") and "X but Y" sentences make word order matter.
- ``shapes/``: 150 PNG images in each of ``circle/``, ``square/`` and ``triangle/``, one light filled shape
  on a darker noisy background, 48x48 to 80x80 pixels.

A training run whose ``data.path`` ends in ``samples/fraud.csv``, ``samples/reviews.csv`` or
``samples/shapes`` and does not exist writes that sample there first (seed 0) and says so in its log
(:func:`provide`), so ``dltrain experiment=fraud data.path=samples/fraud.csv`` works on a fresh install.

Nothing that exists is replaced: a sample already there (the same files for the seed, images compared by
their pixels) is reported as such, anything else at its path is refused. Files are written to a temporary
name beside their place and renamed into it, a folder as a whole, so a reader (or a second writer, such as
another job of a sweep) sees the whole sample or none of it. ``dltrain-samples --mnist-8k`` makes the MNIST
subset of the README's MNIST results from an official download (:mod:`dltrain.data.mnist8k`).
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import os
import random
import shlex
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dltrain.errors import ConfigError, UserError, first_line
from dltrain.files import publish

if TYPE_CHECKING:  # imported where used: checking for a missing sample costs nothing
    import pandas as pd
    from PIL import Image

log = logging.getLogger("dltrain")

PROG = "dltrain-samples"
SAMPLES_FOLDER = "samples"
"""The folder name under which a missing sample is written on first use (``.../samples/<sample>``)."""
FIRST_USE_SEED = 0
"""The seed of samples written on first use: the README's results were measured on these."""
FRAUD_ROWS = 20_000
REVIEW_ROWS = 3_000
IMAGES_PER_SHAPE = 150
MERCHANTS = ["grocery", "restaurant", "fuel", "online", "travel", "entertainment"]
# How often each merchant category occurs among legitimate and among fraudulent transactions.
MERCHANT_P_LEGIT = [0.30, 0.20, 0.15, 0.20, 0.05, 0.10]
MERCHANT_P_FRAUD = [0.12, 0.08, 0.08, 0.45, 0.17, 0.10]


def make_fraud(rng: np.random.Generator, seed: int) -> pd.DataFrame:
    """A credit-card-like transaction table with a rare, learnable fraud class.

    Args:
        rng: source of the times, amounts and merchants.
        seed: seeds scikit-learn's ``make_classification`` for ``V1``..``V10``.

    Returns:
        Columns ``Time``, ``V1``..``V10``, ``Amount``, ``merchant``, ``Class`` (1 = fraud).
    """
    import pandas as pd
    from sklearn.datasets import make_classification

    features, label = make_classification(
        n_samples=FRAUD_ROWS, n_features=10, n_informative=5, n_redundant=2, n_clusters_per_class=2,
        weights=[0.98], class_sep=1.0, flip_y=0.005, random_state=seed)
    fraud = label == 1
    table = pd.DataFrame(features.round(6), columns=[f"V{i}" for i in range(1, 11)])
    # Two days of transactions, in order, as in the original data.
    table.insert(0, "Time", np.sort(rng.uniform(0, 172_800, FRAUD_ROWS)).round())
    # Right-skewed amounts; frauds are larger on average but overlap the legitimate ones.
    amount = np.where(fraud, rng.lognormal(4.3, 1.3, FRAUD_ROWS), rng.lognormal(3.5, 1.2, FRAUD_ROWS))
    table["Amount"] = np.maximum(amount, 0.5).round(2)
    table["merchant"] = np.where(fraud, rng.choice(MERCHANTS, FRAUD_ROWS, p=MERCHANT_P_FRAUD),
                                 rng.choice(MERCHANTS, FRAUD_ROWS, p=MERCHANT_P_LEGIT))
    table["Class"] = label
    return table


PRODUCTS = ["phone", "laptop", "blender", "headphones", "charger", "kettle", "backpack", "lamp", "keyboard",
            "camera", "speaker", "vacuum", "toaster", "monitor", "mouse", "watch", "tent", "jacket"]
ASPECTS = ["battery", "screen", "sound", "build quality", "price", "delivery", "packaging", "design", "fit",
           "material", "quality", "performance", "customer service", "size", "finish", "motor"]
POSITIVE = ["good", "great", "excellent", "amazing", "fantastic", "solid", "reliable", "perfect", "lovely",
            "impressive", "decent", "nice", "sturdy", "superb"]
NEGATIVE = ["bad", "terrible", "awful", "poor", "disappointing", "cheap", "flimsy", "useless", "horrible",
            "weak", "mediocre", "faulty", "noisy", "broken"]
INTENSIFIERS = ["really", "very", "quite", "pretty", "so", "extremely", "rather"]
NEGATIONS = ["not", "never", "hardly"]
OPENERS = ["i bought this {product} last month", "got this {product} as a gift", "ordered the {product} online",
           "i have used this {product} for two weeks", "my second {product} from this shop",
           "to be honest", "after a few days of use", "so here is my review of the {product}",
           "bought it for my sister", "this {product} arrived on tuesday"]
CLOSERS = ["that is all i have to say", "see the photos", "it came in a blue box", "delivery took three days",
           "i use it every day", "my friend has the same one", "thanks for reading"]
# Rare words (brand and model names) that a vocabulary with a minimum frequency turns into <unk>.
RARE_SYLLABLES = ["zen", "tri", "vox", "kor", "lum", "pax", "qua", "rix", "mel", "dro", "fex", "nu"]


def _typo(word: str, rng: random.Random) -> str:
    """Swap two neighbouring letters of ``word`` or drop one."""
    i = rng.randrange(len(word) - 1)
    if rng.random() < 0.5:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return word[:i] + word[i + 1:]


def _clause(positive: bool, rng: random.Random) -> str:
    """One statement about an aspect whose meaning is ``positive``; negated about a third of the time."""
    negate = rng.random() < 0.35
    adjective = rng.choice(NEGATIVE if positive == negate else POSITIVE)
    words = [rng.choice(["the", "its"]), rng.choice(ASPECTS), rng.choice(["is", "was"])]
    if negate:
        words.append(rng.choice(NEGATIONS))
    if rng.random() < 0.4 and words[-1] != "hardly":  # "hardly very good" is not English
        words.append(rng.choice(INTENSIFIERS))
    words.append(adjective)
    if negate and rng.random() < 0.2:
        words.append("at all")
    return " ".join(words)


def _review(rng: random.Random) -> tuple[str, str]:
    """One review and its label.

    One or two statements; "A and B" agree, while in "A but B" the second one decides the label, so a model
    must read the order of the words, not only which words occur.
    """
    positive = rng.random() < 0.5
    parts = []
    if rng.random() < 0.6:
        parts.append(rng.choice(OPENERS).format(product=rng.choice(PRODUCTS)))
    if rng.random() < 0.2:
        brand = "".join(rng.choice(RARE_SYLLABLES) for _ in range(rng.randint(2, 3)))
        parts.append(f"the {brand} {rng.choice(PRODUCTS)} model x{rng.randint(10, 999)}")
    kind = rng.random()
    if kind < 0.45:
        parts.append(_clause(positive, rng))
    elif kind < 0.7:
        parts.append(f"{_clause(positive, rng)} and {_clause(positive, rng)}")
    else:
        parts.append(f"{_clause(not positive, rng)} but {_clause(positive, rng)}")
    if rng.random() < 0.3:
        parts.append(rng.choice(CLOSERS))
    words = " , ".join(parts).split()
    words = [_typo(w, rng) if len(w) > 3 and rng.random() < 0.03 else w for w in words]
    words = words[:40]
    while len(words) < 5:
        words.append(rng.choice(["overall", "anyway", "honestly", "so"]))
    if rng.random() < 0.04:  # reviewers who click the wrong stars
        positive = not positive
    return " ".join(words).replace(" ,", ","), "positive" if positive else "negative"


def make_reviews(rng: random.Random) -> pd.DataFrame:
    """Short English product reviews with ``text`` and ``label`` (``positive`` or ``negative``)."""
    import pandas as pd

    return pd.DataFrame([_review(rng) for _ in range(REVIEW_ROWS)], columns=["text", "label"])


LUMA = np.array([0.299, 0.587, 0.114])  # brightness of an RGB colour (ITU-R BT.601 weights)


def _shape_image(shape: str, rng: np.random.Generator) -> Image.Image:
    """One filled ``shape`` of random size, place and light colour on a noisy background of darker random colour.

    Triangles point up, tilted by up to 17 degrees either way; the light-on-dark contrast and the upright
    triangles let a small CNN learn the shapes from 150 images each.
    """
    from PIL import Image, ImageDraw

    side = int(rng.integers(48, 81))
    background = rng.integers(0, 130, 3)
    noise = rng.normal(0, 10, (side, side, 3))
    image = Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8))
    colour = rng.integers(130, 256, 3)
    while float((colour - background) @ LUMA) < 80:  # clearly brighter, so the outline always shows
        colour = rng.integers(130, 256, 3)
    size = rng.uniform(0.45, 0.8) * side
    cx, cy = rng.uniform(size / 2, side - size / 2, 2)
    r = size / 2
    draw = ImageDraw.Draw(image)
    fill = tuple(int(c) for c in colour)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85], fill=fill)
    else:
        turn = -math.pi / 2 + rng.uniform(-0.3, 0.3)
        draw.polygon([(cx + r * math.cos(turn + k * 2 * math.pi / 3), cy + r * math.sin(turn + k * 2 * math.pi / 3))
                      for k in range(3)], fill=fill)
    return image


SHAPES = ("circle", "square", "triangle")


def _png(image: Image.Image) -> bytes:
    """``image`` as the bytes ``image.save("x.png")`` writes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _csv(table: pd.DataFrame) -> bytes:
    """``table`` as the bytes ``table.to_csv(path, index=False)`` writes."""
    return table.to_csv(index=False).encode()


Content = bytes | dict[str, bytes]
"""A sample's files: the bytes of one file, or a folder's files by their path inside it."""


@dataclass(frozen=True)
class Made:
    """A sample ready to write: its content and a one-line summary of it."""

    content: Content
    summary: str


def fraud_sample(seed: int) -> Made:
    """``fraud.csv`` of :func:`make_fraud`."""
    table = make_fraud(np.random.default_rng(seed), seed)
    fraud = int(table["Class"].sum())
    return Made(_csv(table), f"{len(table):,} rows, {fraud:,} fraud ({table['Class'].mean():.1%})")


def reviews_sample(seed: int) -> Made:
    """``reviews.csv`` of :func:`make_reviews`."""
    table = make_reviews(random.Random(seed))
    counts = table["label"].value_counts()
    return Made(_csv(table), f"{len(table):,} reviews, {counts['positive']:,} positive, "
                             f"{counts['negative']:,} negative")


def shapes_sample(seed: int) -> Made:
    """``shapes/``: ``IMAGES_PER_SHAPE`` PNGs per shape in ``<shape>/<shape>_<i>.png``."""
    rng = np.random.default_rng(seed + 1)
    files = {f"{shape}/{shape}_{i:03d}.png": _png(_shape_image(shape, rng))
             for shape in SHAPES for i in range(IMAGES_PER_SHAPE)}
    return Made(files, f"{len(files)} PNG images, " + ", ".join(f"{IMAGES_PER_SHAPE} {s}" for s in SHAPES))


@dataclass(frozen=True)
class Sample:
    """One sample: its ``--only`` name, its file or folder name, what it is, its maker, and the
    ``experiment=`` that trains on it."""

    option: str
    name: str
    what: str
    make: Callable[[int], Made]
    experiment: str


SAMPLES = (Sample("fraud", "fraud.csv", "CSV file", fraud_sample, "fraud"),
           Sample("reviews", "reviews.csv", "CSV file", reviews_sample, "text_lstm"),
           Sample("shapes", "shapes", "folder of class folders", shapes_sample, "image_folder_cnn"))
BY_NAME = {sample.name: sample for sample in SAMPLES}


def path_for(experiment: str | None) -> str | None:
    """The ``data.path`` of the sample ``experiment`` trains on (``samples/fraud.csv``), if any."""
    return next((f"{SAMPLES_FOLDER}/{s.name}" for s in SAMPLES if s.experiment == experiment), None)


def _same_file(path: Path, data: bytes) -> bool:
    """Whether ``path`` holds ``data``; PNG images by their pixels, which other Pillow versions keep."""
    if path.read_bytes() == data:
        return True
    if path.suffix != ".png":
        return False
    from PIL import Image

    try:
        with Image.open(path) as found, Image.open(io.BytesIO(data)) as wanted:
            return found.mode == wanted.mode and np.array_equal(np.asarray(found), np.asarray(wanted))
    except Exception:  # noqa: BLE001 - any file Pillow cannot decode (a bomb, a bad chunk) is not ours
        return False


def holds(target: Path, content: Content) -> bool:
    """Whether ``target`` holds exactly ``content`` (a folder: those files and no others)."""
    if isinstance(content, bytes):
        return target.is_file() and not target.is_symlink() and _same_file(target, content)
    if not target.is_dir() or target.is_symlink():
        return False
    found = {p.relative_to(target).as_posix() for p in target.rglob("*") if not p.is_dir()}
    return found == set(content) and all(_same_file(target / name, data) for name, data in content.items())


def _where(path: str | Path, key: str) -> str:
    """``key=path`` with the absolute path when ``path`` is relative."""
    absolute = Path(path).expanduser().absolute()
    return f"{key}={path}" if str(absolute) == str(path) else f"{key}={path} ({absolute})"


def provide(path: str | Path, *, create: bool, key: str = "data.path") -> None:
    """Write the sample that a missing ``path`` names, or say how to get it.

    Nothing happens when ``path`` exists or is not named as a sample (``fraud.csv``, ``reviews.csv``,
    ``shapes``): the dataset then reads it or reports it missing. A missing ``.../samples/<sample>``
    is written (seed :data:`FIRST_USE_SEED`) when ``create``, with one log line; if another process
    writes it meanwhile, that one is used.

    Args:
        path: the ``key``'s value.
        create: True for a training run; False where a missing file means moved data (evaluation).
        key: the config key, for messages.

    Raises:
        ConfigError: a missing sample that is not written here, naming ``dltrain-samples``.
    """
    target = Path(path).expanduser()
    sample = BY_NAME.get(target.name)
    if sample is None or os.path.lexists(target):
        return
    folder = shlex.quote(str(target.parent))
    command = f"{PROG} {folder} --only {sample.option}"
    if target.parent.name != SAMPLES_FOLDER:
        raise ConfigError(f"{_where(path, key)} does not exist: give the path of your own {sample.what}, or write "
                        f"dltrain's sample there with {command}")
    if not create:
        raise ConfigError(f"{_where(path, key)} does not exist: write the sample data again with {command}, or set "
                        f"{key} to where the training data is now")
    try:
        made = sample.make(FIRST_USE_SEED)
        wrote = publish(target, made.content)
    except OSError as err:
        raise ConfigError(f"{_where(path, key)} does not exist and the sample data cannot be written there "
                        f"({err.strerror or err}): run {command} where you can write, or set {key} to your own "
                        f"{sample.what}") from err
    if wrote:
        log.info("%s does not exist: wrote the sample data there (%s; %s writes them all; set %s to your own %s "
                 "instead)", _where(path, key), made.summary, PROG, key, sample.what)


def write_sample(target: Path, made: Made, what: str) -> str:
    """Write ``made`` at ``target`` unless it is there already; returns the line to print.

    Raises:
        UserError: something else is at ``target``, or it cannot be written.
    """
    try:
        if publish(target, made.content):
            return f"{target}: {made.summary}"
        if holds(target, made.content):
            return f"{target}: already there ({made.summary})"
    except OSError as err:
        raise UserError(f"cannot write {target} ({err.strerror or err}): choose a folder you can write to") from err
    raise UserError(f"{target} exists and is not {what}: move it away, or write to another folder "
                    f"({PROG} OTHER_FOLDER)")


def write_samples(out: Path, seed: int, only: Sequence[str] = ()) -> Iterator[str]:
    """Write the samples (those named in ``only``, or all) into ``out``, yielding a line as each is done."""
    for sample in SAMPLES:
        if not only or sample.option in only:
            yield write_sample(out / sample.name, sample.make(seed), f"dltrain's {sample.option} sample of seed {seed}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=f"Write dltrain's sample data: {', '.join(s.name for s in SAMPLES)} (see "
        "dltrain.data.samples); existing files are never replaced.",
        epilog="then, e.g.: dltrain experiment=fraud data.path=samples/fraud.csv")
    parser.add_argument("out_dir", nargs="?", default=SAMPLES_FOLDER, help="where to write (default: samples/)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes the same files (default: 0)")
    parser.add_argument("--only", action="append", choices=[s.option for s in SAMPLES],
                        help="write this sample only (repeat for several)")
    parser.add_argument("--mnist-8k", action="store_true",
                        help="write only OUT_DIR/mnist-8k: MNIST's official test set split into 8,000 training "
                             "and 2,000 test images, the data of the README's MNIST results")
    parser.add_argument("--from", dest="source", metavar="ROOT",
                        help="with --mnist-8k: the data.root of an MNIST download, holding MNIST/raw "
                             "(default: data)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``dltrain-samples``: user errors are one line on stderr with exit code 2."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.mnist_8k and args.only:
        parser.error("--mnist-8k writes the MNIST subset alone: leave out --only")
    if args.source is not None and not args.mnist_8k:
        parser.error("--from goes with --mnist-8k")
    out = Path(args.out_dir).expanduser()
    try:
        if args.mnist_8k:
            from dltrain.data import mnist8k

            made = Made(*mnist8k.make(Path(args.source or "data").expanduser()))
            print(write_sample(out / mnist8k.NAME, made, "the mnist-8k data"))
            print(f"then: {mnist8k.usage(out)}")
        else:
            for line in write_samples(out, args.seed, args.only or ()):
                print(line, flush=True)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        sys.exit(130)
    except UserError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            traceback.print_exception(err)
        print(f"{PROG}: error: {first_line(err).rstrip('.')}.", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""Write sample data for the dataset presets that read your own files.

``data=csv``, ``data=text_csv`` and ``data=image_folder`` train on files you supply. This script writes one
small, synthetic but learnable example of each, so that those presets can be tried without a download::

    python examples/make_samples.py            # writes samples/
    python examples/make_samples.py my_dir --seed 1

It writes, the same bytes for the same seed:

- ``fraud.csv``: 20,000 card transactions in the layout of the Kaggle credit-card fraud data (``Time``,
  ``V1``..``V10``, ``Amount``, plus a categorical ``merchant``) with a ``Class`` column, about 2% fraud.
- ``reviews.csv``: about 3,000 short product reviews (``text``) labelled ``positive`` or ``negative``
  (``label``); negations ("not good") and "X but Y" sentences make word order matter.
- ``shapes/``: 150 PNG images in each of ``circle/``, ``square/`` and ``triangle/``, one light filled shape
  on a darker noisy background, 48x48 to 80x80 pixels.

Then, for example::

    dltrain data=csv data.path=samples/fraud.csv data.target=Class
    dltrain data=text_csv data.path=samples/reviews.csv model=lstm
    dltrain data=image_folder data.path=samples/shapes model=cnn model.channels=[16,32,64] model.hidden=[64]
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from sklearn.datasets import make_classification

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
    return pd.DataFrame([_review(rng) for _ in range(REVIEW_ROWS)], columns=["text", "label"])


LUMA = np.array([0.299, 0.587, 0.114])  # brightness of an RGB colour (ITU-R BT.601 weights)


def _shape_image(shape: str, rng: np.random.Generator) -> Image.Image:
    """One filled ``shape`` of random size, place and light colour on a noisy background of darker random colour.

    Triangles point up, tilted by up to 17 degrees either way; the light-on-dark contrast and the upright
    triangles let a small CNN learn the shapes from 150 images each.
    """
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


def make_shapes(folder: Path, rng: np.random.Generator) -> dict[str, int]:
    """Write ``IMAGES_PER_SHAPE`` PNGs per shape under ``folder/<shape>/``; returns the count per shape."""
    counts = {}
    for shape in ("circle", "square", "triangle"):
        (folder / shape).mkdir(parents=True, exist_ok=True)
        for i in range(IMAGES_PER_SHAPE):
            _shape_image(shape, rng).save(folder / shape / f"{shape}_{i:03d}.png")
        counts[shape] = IMAGES_PER_SHAPE
    return counts


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and write the three samples."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", nargs="?", default="samples", help="where to write (default: samples/)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes the same files")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    fraud = make_fraud(np.random.default_rng(args.seed), args.seed)
    fraud.to_csv(out / "fraud.csv", index=False)
    print(f"{out / 'fraud.csv'}: {len(fraud):,} rows, {int(fraud['Class'].sum()):,} fraud "
          f"({fraud['Class'].mean():.1%})")

    reviews = make_reviews(random.Random(args.seed))
    reviews.to_csv(out / "reviews.csv", index=False)
    counts = reviews["label"].value_counts()
    print(f"{out / 'reviews.csv'}: {len(reviews):,} reviews, {counts['positive']:,} positive, "
          f"{counts['negative']:,} negative")

    shapes = make_shapes(out / "shapes", np.random.default_rng(args.seed + 1))
    print(f"{out / 'shapes'}/: {sum(shapes.values())} PNG images, "
          + ", ".join(f"{n} {name}" for name, n in shapes.items()))


if __name__ == "__main__":
    main()

"""Write ``table.csv`` beside this script: 200 made-up customers (age, income in thousands, city,
visits to the shop) and whether they bought, which older, richer and more frequent visitors do
more often. Seeded, standard library only: it writes the same file every time.

    python examples/my_project/data/make_table.py
"""

from __future__ import annotations

import math
import random
from pathlib import Path

ROWS = 200
SEED = 0
CITIES = ("Lyon", "Oslo", "Porto", "Riga")
#: How much each city adds to the odds of buying (one of them buys more).
CITY_EFFECT = {"Lyon": 0.0, "Oslo": 0.4, "Porto": -0.4, "Riga": 0.2}


def rows(seed: int = SEED, count: int = ROWS) -> list[tuple[int, float, str, int, str]]:
    """``count`` rows of (age, income_k, city, visits, bought)."""
    rng = random.Random(seed)
    table = []
    for _ in range(count):
        age = rng.randint(18, 69)
        income = round(max(10.0, rng.gauss(30 + 0.3 * age, 9)), 1)
        city = rng.choice(CITIES)
        visits = min(10, max(0, round(rng.gauss(3, 1.8))))
        logit = 0.15 * (age - 42) + 0.2 * (income - 43) + 1.5 * (visits - 3) + 2 * CITY_EFFECT[city]
        bought = "yes" if rng.random() < 1 / (1 + math.exp(-logit)) else "no"
        table.append((age, income, city, visits, bought))
    return table


def write(path: Path) -> None:
    """Write the table as CSV (a header line, then one line a row)."""
    lines = ["age,income_k,city,visits,bought", *(f"{a},{i:.1f},{c},{v},{b}" for a, i, c, v, b in rows())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write(Path(__file__).with_name("table.csv"))

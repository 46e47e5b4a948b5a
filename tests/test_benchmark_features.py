"""benchmarks/training_features.py: its variants are real configs, each round runs them in
another order, the table's ratios are against the plain run, and the script runs end to end."""

from __future__ import annotations

import pytest

from benchmarks import training_features as bench
from dltrain import compose


@pytest.mark.parametrize("name", list(bench.VARIANTS))
def test_every_variant_composes(name):
    """A renamed or removed key fails here, not after minutes of benchmarking."""
    cfg = compose(bench.VARIANTS[name][1])
    assert cfg.trainer.max_epochs >= 1


def test_each_round_runs_the_variants_in_another_order():
    names = ["a", "b", "c"]
    orders = [bench.order(names, r) for r in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert {tuple(o)[0] for o in orders} == set(names)  # each variant goes first once


def test_the_ratios_are_against_the_plain_run():
    times = {"plain": [{"cpu": [1.0, 1.0, 3.0]}, {"cpu": [2.0, 2.0, 2.0]}],
             "ema": [{"cpu": [1.5, 1.5, 1.5]}, {"cpu": [2.0, 3.0, 3.0]}]}
    plain, ema = bench.rows(times, None, "cpu")
    assert "| 2.0000 | 1.0000–2.0000 | — |" in plain  # pooled median; the rounds' medians 1 and 2
    assert "| 1.7500 | 1.5000–3.0000 |" in ema and ema.endswith("| 1.500× (per round: 1.50, 1.50) |")


@pytest.mark.slow  # two processes that each train
def test_the_script_prints_its_table(capsys):
    assert bench.main(["--quick", "--only", "plain,deterministic"]) == 0
    out = capsys.readouterr().out
    assert "| plain run | — |" in out and "| deterministic algorithms | `trainer.deterministic=true` |" in out

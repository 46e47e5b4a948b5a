"""The notes' claims, as diagnostics.csv shows them on the digits: vanishing gradients in a deep
sigmoid MLP (not in a ReLU+He one), identical units under zero init, exploding update ratios
with too high a learning rate. The numbers pinned are those measured (with a margin)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from dltrain import compose, train
from dltrain.errors import UserError

DEEP = "model.hidden=[32,32,32,32,32,32]"


def diagnostics(tmp_path: Path, overrides: list[str], fast: bool = True) -> dict[int, dict[str, dict[str, str]]]:
    """Train on the digits (one epoch of 2 batches when ``fast``); diagnostics.csv by epoch and layer."""
    run = tmp_path / "run"
    train(compose(["device=cpu", *(["trainer.fast_dev_run=true"] if fast else []), *overrides]), run_dir=run)
    by_epoch: dict[int, dict[str, dict[str, str]]] = {}
    with (run / "diagnostics.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            by_epoch.setdefault(int(row["epoch"]), {})[row["layer"]] = row
    return by_epoch


def first_to_last(layers: dict[str, dict[str, str]]) -> float:
    """The first hidden layer's gradient norm over the output layer's."""
    return float(layers["fc1"]["grad_norm"]) / float(layers["out"]["grad_norm"])


def test_a_deep_sigmoid_mlp_has_vanishing_gradients_a_relu_he_one_does_not(tmp_path):
    sigmoid = first_to_last(diagnostics(tmp_path / "s", [DEEP, "model.activation=sigmoid"])[1])
    relu = first_to_last(diagnostics(tmp_path / "r", [DEEP, "model.activation=relu", "init=he_normal"])[1])
    # measured: 1.23e-5 / 0.406 = 3.0e-5 (sigmoid) and 1.12 / 1.48 = 0.75 (ReLU + He)
    assert 1e-5 < sigmoid < 1e-4
    assert 0.3 < relu < 3
    assert relu / sigmoid >= 10  # the acceptance's bar; measured ~25,000x


@pytest.mark.slow
def test_the_sigmoid_mlp_s_gradients_stay_vanished_while_it_trains(tmp_path):
    sigmoid = diagnostics(tmp_path / "s", [DEEP, "model.activation=sigmoid", "trainer.max_epochs=5"], fast=False)
    relu = diagnostics(tmp_path / "r", [DEEP, "model.activation=relu", "init=he_normal", "trainer.max_epochs=5"],
                       fast=False)
    for epoch in range(1, 6):
        assert first_to_last(relu[epoch]) / first_to_last(sigmoid[epoch]) >= 100


def test_zero_init_leaves_every_unit_identical_and_every_relu_dead(tmp_path):
    layers = diagnostics(tmp_path, ["init=zeros"])[1]
    for name in ("fc1", "fc2", "out"):
        assert float(layers[name]["identical_units"]) == 1.0
    for name in ("act1", "act2"):
        assert float(layers[name]["dead_fraction"]) == 1.0
    assert float(layers["fc1"]["grad_norm"]) == 0.0  # nothing flows back through the zero weights
    default = diagnostics(tmp_path / "default", [])[1]
    assert all(float(default[name]["identical_units"]) == 0.0 for name in ("fc1", "fc2", "out"))


def test_too_high_a_learning_rate_shows_as_exploding_update_ratios(tmp_path):
    def ratios(lr: str) -> list[float]:
        layers = diagnostics(tmp_path / lr, ["optim=sgd", f"optim.lr={lr}"])[1]
        return [float(layers[name]["update_ratio"]) for name in ("fc1", "fc2", "out")]

    high, sane = ratios("10"), ratios("0.01")
    # measured: 0.32, 0.68, 1.37 (lr=10) against 3.2e-4, 6.8e-4, 1.4e-3 (lr=0.01)
    assert min(high) > 0.25 and max(sane) < 2e-3
    assert [h / s for h, s in zip(high, sane, strict=True)] == pytest.approx([1000] * 3, rel=1e-3)  # SGD: lr * grad


@pytest.mark.pictures
def test_a_diverged_run_keeps_the_diagnostics_of_its_last_epoch(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(UserError, match="diverged|nan|inf"):
        train(compose(["device=cpu", "optim=sgd", "optim.lr=10", "trainer.max_epochs=3"]), run_dir=run)
    with (run / "diagnostics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {row["epoch"] for row in rows} == {"1"}
    assert min(float(r["update_ratio"]) for r in rows if r["update_ratio"]) > 0.25
    assert (run / "gradients.png").is_file()

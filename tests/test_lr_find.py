"""The learning-rate range test (dltrain.training.lr_find): its smoothing and suggestion
rule on synthetic curves, and on the real digits run: reproducible, and leaving a run
trained afterwards exactly as it would have been."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dltrain import compose, train
from dltrain.errors import ConfigError
from dltrain.report.lr_find import lr_find_figure, write_lr_find
from dltrain.training.lr_find import BETA, DIVERGENCE_FACTOR, MIN_DROP, SKIP_START, SmoothedLoss, lr_find, suggest

SGD = ["optim=sgd"]


def _synthetic_curve(n: int = 200, spike_at: int | None = 3) -> tuple[np.ndarray, list[float]]:
    """A loss flat at 2.3 until lr 1e-3, falling fastest at lr 1e-1, rising past lr 1; a
    spike of 40 at step ``spike_at``."""
    lrs = np.logspace(-7, 1, n)
    x = np.log10(lrs)
    losses = 2.3 - 2.0 / (1 + np.exp(-3 * (x + 1))) + 3 * np.clip(x, 0, None) ** 2
    losses = losses + 0.02 * np.random.default_rng(0).standard_normal(n)
    if spike_at is not None:
        losses[spike_at] = 40.0
    return lrs, losses.tolist()


def _smooth(losses: list[float], beta: float = BETA, window: int = 5) -> list[float]:
    smoother = SmoothedLoss(beta, window)
    return [smoother.update(loss) for loss in losses]


def test_smoothed_loss_is_bias_corrected_and_detects_divergence() -> None:
    smoother = SmoothedLoss(0.98, window=1)
    assert smoother.update(2.0) == pytest.approx(2.0)  # not 0.04: the average starts at the first loss
    assert smoother.update(2.0) == pytest.approx(2.0)
    weights = [0.98**2, 0.98, 1.0]  # of the losses 2, 2, 1: the newest weighs most
    assert smoother.update(1.0) == pytest.approx((2 * weights[0] + 2 * weights[1] + 1) / sum(weights))
    assert not smoother.diverged
    while not smoother.diverged:
        smoother.update(100.0)
    assert smoother.value > DIVERGENCE_FACTOR * smoother.best


@pytest.mark.parametrize("spike_at", [3, 20, 30])
def test_suggestion_is_not_fooled_by_an_early_spike(spike_at: int) -> None:
    lrs, losses = _synthetic_curve(spike_at=spike_at)
    smoothed = _smooth(losses)
    found = suggest(lrs.tolist(), smoothed)
    assert found["rule"] == "steepest descent" and found["warnings"] == []
    assert found["steepest_step"] >= SKIP_START * len(lrs)
    # The curve falls fastest at 1e-1; the smoothed curve lags it by a fraction of a decade
    # (0.52 with beta 0.98: a lighter smoothing lags less).
    assert 0.1 <= found["suggestion"] <= 0.2, found
    assert found["minimum_step"] > found["steepest_step"]
    # A plain moving average carries a spike past the skipped start: its decay is the steepest descent.
    if spike_at >= SKIP_START * len(lrs):
        assert suggest(lrs.tolist(), _smooth(losses, window=1))["suggestion"] < 1e-5


def test_a_spike_of_two_steps_never_enters_the_smoothed_loss() -> None:
    lrs, losses = _synthetic_curve(spike_at=None)
    spiked = list(losses)
    spiked[80] = spiked[81] = 40.0
    assert _smooth(spiked) == pytest.approx(_smooth(losses), rel=0.02)
    assert suggest(lrs.tolist(), _smooth(spiked))["suggestion"] == suggest(lrs.tolist(), _smooth(losses))["suggestion"]


def test_suggestion_falls_back_to_the_minimum_over_ten() -> None:
    lrs = np.logspace(-7, 1, 100)
    losses = (2.0 + 0.01 * np.arange(100)).tolist()  # never descends
    found = suggest(lrs.tolist(), _smooth(losses))
    assert found["rule"] == "minimum / 10" and found["steepest_step"] is None
    assert found["suggestion"] == pytest.approx(lrs[found["minimum_step"]] / 10, rel=0.05)
    assert "does not descend" in found["reason"]


def test_a_flat_curve_suggests_the_minimum_over_ten_and_warns() -> None:
    # A 20-step ramp that never trains the model: its "steepest descent" would be noise.
    lrs = np.logspace(-7, 1, 20)
    losses = (2.3 + 0.01 * np.random.default_rng(0).standard_normal(20)).tolist()
    found = suggest(lrs.tolist(), _smooth(losses))
    assert found["rule"] == "minimum / 10" and found["steepest_step"] is None
    assert f"does not descend by {MIN_DROP:.0%} of its start value" in found["reason"]
    assert len([w for w in found["warnings"] if w.startswith("the smoothed loss never fell by 5%")]) == 1
    assert "lr_find.num_steps" in found["warnings"][0] and "lr_find.end_lr" in found["warnings"][0]


def test_a_small_real_descent_still_counts() -> None:
    lrs = np.logspace(-7, 1, 100)
    losses = (2.0 - 0.2 / (1 + np.exp(-3 * (np.log10(lrs) + 1))) + np.clip(np.log10(lrs), 0, None)).tolist()
    found = suggest(lrs.tolist(), _smooth(losses, beta=0.9))  # falls by 10%, then turns up
    assert found["rule"] == "steepest descent" and found["warnings"] == []


def test_a_minimum_at_the_last_step_warns_to_widen_the_ramp() -> None:
    lrs = np.logspace(-7, 1, 100)
    losses = (2.3 - 1.5 * np.arange(100) / 99).tolist()  # still falling when the ramp ends
    found = suggest(lrs.tolist(), _smooth(losses))
    assert found["rule"] == "steepest descent" and found["minimum_step"] == 99
    assert found["warnings"] == ["the smoothed loss was lowest at the last step (lr 1.0e+01): it never turned up, "
                                 "so a better learning rate may lie beyond the ramp; raise lr_find.end_lr or "
                                 "lr_find.num_steps"]


def test_too_few_steps_before_divergence_is_one_line() -> None:
    with pytest.raises(ConfigError, match="lower lr_find.start_lr"):
        suggest([1e-3, 1e-2, 1e-1], [2.0, 2.0, 9.0])


def test_lr_find_leaves_the_generators_and_a_later_run_untouched(tmp_path: Path) -> None:
    cfg = compose([*SGD, "data=xor", "trainer.fast_dev_run=true"])
    train(cfg, run_dir=tmp_path / "alone")
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    before = (random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state())
    finding = lr_find(cfg, num_steps=20)
    assert len(finding.lrs) == 20
    after = (random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state())
    assert before[:2] == after[:2] and torch.equal(before[2], after[2])
    train(cfg, run_dir=tmp_path / "after")
    assert _metrics(tmp_path / "alone") == _metrics(tmp_path / "after")
    alone = torch.load(tmp_path / "alone/checkpoints/last.pt", weights_only=True)
    later = torch.load(tmp_path / "after/checkpoints/last.pt", weights_only=True)
    for key, value in alone["model"].items():
        assert torch.equal(value, later["model"][key]), key
    assert alone["optimizer"]["param_groups"] == later["optimizer"]["param_groups"]


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if "seconds" not in k} for row in csv.DictReader(f)]


def test_lr_find_is_reproducible_and_stops_at_divergence() -> None:
    cfg = compose(SGD)
    first, second = (lr_find(cfg, start_lr=1e-3, end_lr=100.0, num_steps=40) for _ in range(2))
    assert first.losses == second.losses and first.suggestion == second.suggestion
    assert first.stopped is not None and len(first.lrs) < 40  # up to lr 100, plain SGD diverges
    assert "passed 4x its best" in first.stopped
    assert first.lrs[0] == pytest.approx(1e-3) and first.lrs[1] == pytest.approx(1e-3 * 1e5 ** (1 / 39))
    assert first.key == "optim.lr" and first.warnings == []


def test_onecycle_suggests_its_max_lr() -> None:
    finding = lr_find(compose([*SGD, "scheduler=onecycle"]), num_steps=20, end_lr=1.0)
    assert finding.key == "scheduler.max_lr"
    command = finding.command(["optim=sgd", "scheduler=onecycle", "scheduler.max_lr=3"])
    assert command.startswith("dltrain optim=sgd scheduler=onecycle scheduler.max_lr=")
    assert "max_lr=3 " not in command and command.count("max_lr") == 1


def test_command_replaces_the_learning_rate_given() -> None:
    finding = lr_find(compose([*SGD, "optim.lr=0.5"]), num_steps=20, end_lr=1.0)
    command = finding.command(["optim=sgd", "optim.lr=0.5", "model.hidden=[32,16]"])
    assert command == f"dltrain optim=sgd 'model.hidden=[32,16]' optim.lr={finding.suggestion:.1e}"


def test_the_ramp_keeps_the_backbone_groups_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    import dltrain.training.step as steps

    seen: list[list[float]] = []

    class Recording(steps.OptimizerStep):
        def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            seen.append([group["lr"] for group in self.optimizer.param_groups])
            return super().__call__(x, y)

    monkeypatch.setattr(steps, "OptimizerStep", Recording)  # the task's make_step builds the step from it
    finding = lr_find(compose(["model=cnn", "model.backbone_lr=0.1"]), num_steps=10)
    assert len(seen) == 10 and len(seen[0]) > 1
    for lrs, lr in zip(seen, finding.lrs, strict=True):
        assert lrs[0] == pytest.approx(lr) and min(lrs) == pytest.approx(lr * 0.1)


def test_lbfgs_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="optim=lbfgs .*line search"):
        lr_find(compose(["optim=lbfgs"]), num_steps=20)


def test_files_and_figure(tmp_path: Path) -> None:
    finding = lr_find(compose(SGD), num_steps=60)
    written = write_lr_find(tmp_path, finding, ["optim=sgd"], finding.command(["optim=sgd"]))
    assert written == ["lr_find.json", "lr_find.png"]
    assert (tmp_path / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "lr_find.json").read_text())
    assert saved["overrides"] == ["optim=sgd"] and saved["suggestion"] == finding.suggestion
    assert len(saved["lrs"]) == len(saved["losses"]) == len(saved["smoothed"])
    assert {"rule", "reason", "command", "minimum_lr", "stopped", "settings"} <= saved.keys()
    ax = lr_find_figure(finding).axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "learning rate (optim.lr)"
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels[:2] == ["loss", "smoothed loss"]
    assert labels[2].startswith("minimum / 10") and labels[3].startswith("suggested")


@pytest.mark.slow
def test_digits_sgd_suggestion_trains_to_95_percent(tmp_path: Path) -> None:
    cfg = compose(SGD)
    finding = lr_find(cfg)
    assert lr_find(cfg).suggestion == finding.suggestion
    summary = train(compose([*SGD, f"optim.lr={finding.suggestion:.1e}", "trainer.max_epochs=20"]),
                    run_dir=tmp_path / "run")
    assert summary["test"]["accuracy"] >= 0.95


def _readme_blocks() -> list[list[str]]:
    """The ``$ dltrain-lr-find`` and ``$ dltrain`` blocks of the README's "Finding a learning rate": the
    command's arguments first, then the lines it shows printed that do not change from run to run (not the
    folder's time, nor the device)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Finding a learning rate", 1)[1].split("\n### ", 1)[0]
    blocks = []
    for block in re.findall(r"```\n(\$ .*?)```", section, flags=re.S):
        command, *printed = block.splitlines()
        blocks.append([command.removeprefix("$ "),
                       *(line for line in printed if line != "..." and not line.startswith(("wrote ", "device=")))])
    return blocks


@pytest.mark.slow
def test_the_readme_s_range_test_and_its_run_print_what_it_quotes(tmp_path: Path) -> None:
    (find, *found), (run, *ran) = _readme_blocks()
    assert find == "dltrain-lr-find optim=sgd" and any(line.startswith("suggested optim.lr=") for line in found)
    env = {**{k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}, "PYTHONUNBUFFERED": "1"}
    printed = subprocess.run([sys.executable, "-c", "from dltrain.cli.lr_find import main; main()",
                              *find.split()[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert printed.returncode == 0, printed.stderr
    assert [line for line in printed.stdout.splitlines() if line in found] == found, printed.stdout
    suggested = printed.stdout.splitlines()[-1].removeprefix("next: ")
    assert run == f"{suggested} trainer.max_epochs=20"
    trained = subprocess.run([sys.executable, "-m", "dltrain", *run.split()[1:]], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr
    assert [line for line in trained.stdout.splitlines() if line in ran] == ran, trained.stdout
    assert float(ran[-1].split()[2]) >= 0.95  # "test accuracy: 0.96..  loss: ...": the acceptance

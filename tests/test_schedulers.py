"""LR schedules: hand-pinned LR sequences, warm-up, resume, and every registered name.

"The LR of epoch k" is the optimizer's LR while epoch k trains, i.e. before the
``step_epoch`` call at its end.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from dltrain.errors import ConfigError
from dltrain.schedulers import SCHEDULERS, LRSchedule, build_scheduler


def sgd(*lrs: float, **kwargs) -> torch.optim.SGD:
    """SGD over one one-element parameter per LR, one param group each."""
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs or (1.0,)]
    return torch.optim.SGD(groups, lr=groups[0]["lr"], **kwargs)


def schedule(name: str, *lrs: float, max_epochs: int = 10, steps_per_epoch: int = 1, **options) -> LRSchedule:
    return build_scheduler(name, sgd(*lrs), max_epochs=max_epochs, steps_per_epoch=steps_per_epoch, **options)


def epoch_lrs(sched: LRSchedule, n: int, metrics: list[dict[str, float]] | None = None,
              group: int = 0) -> list[float]:
    """The LR of each of the next ``n`` epochs (one optimizer step per epoch)."""
    lrs = []
    for k in range(n):
        lrs.append(sched.optimizer.param_groups[group]["lr"])
        sched.optimizer.step()  # before the scheduler's step, as torch expects
        sched.step_batch()
        sched.step_epoch(metrics[k] if metrics else {})
    return lrs


def losses(*values: float) -> list[dict[str, float]]:
    return [{"val_loss": v} for v in values]


# --- each schedule, pinned by hand ----------------------------------------------------

def test_step():
    assert epoch_lrs(schedule("step", step_size=2, gamma=0.5), 5) == [1, 1, 0.5, 0.5, 0.25]


def test_multistep():
    lrs = epoch_lrs(schedule("multistep", milestones=[2, 4], gamma=0.1), 6)
    assert lrs == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_exponential():
    assert epoch_lrs(schedule("exponential", gamma=0.5), 4) == pytest.approx([1, 0.5, 0.25, 0.125])


def test_cosine_reaches_eta_min_at_t_max():
    lrs = epoch_lrs(schedule("cosine", T_max=4, eta_min=0.1), 5)
    # eta_min + (1 - eta_min) * (1 + cos(pi * t / 4)) / 2 for t = 0..4
    assert lrs == pytest.approx([1.0, 0.1 + 0.9 * (1 + math.sqrt(0.5)) / 2, 0.55, 0.1 + 0.9 * (1 - math.sqrt(0.5)) / 2,
                                 0.1])


def test_cosine_t_max_defaults_to_the_epochs_after_warmup():
    sched = schedule("cosine", max_epochs=7, warmup_epochs=2)
    assert sched.scheduler.T_max == 5
    assert schedule("cosine", max_epochs=3, warmup_epochs=5).scheduler.T_max == 1


def test_none_keeps_the_lr():
    assert epoch_lrs(schedule("none", 0.1), 4) == [0.1] * 4


def test_plateau_min_mode():
    # patience 1: the second epoch in a row without improvement reduces the LR.
    sched = schedule("plateau", monitor="val_loss", mode="min", factor=0.5, patience=1, threshold=0.0)
    assert epoch_lrs(sched, 7, losses(1, 1, 1, 0.5, 0.5, 0.5, 0.4)) == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]


def test_plateau_max_mode():
    metrics = [{"val_accuracy": v} for v in (0.5, 0.5, 0.5, 0.9, 0.9, 0.9, 0.95)]
    sched = schedule("plateau", monitor="val_accuracy", mode="max", factor=0.5, patience=1, threshold=0.0)
    assert epoch_lrs(sched, 7, metrics) == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    # A falling accuracy is no improvement in max mode: with patience 0, every fall reduces.
    sched = schedule("plateau", monitor="val_accuracy", mode="max", factor=0.5, patience=0, threshold=0.0)
    assert epoch_lrs(sched, 4, [{"val_accuracy": v} for v in (0.9, 0.8, 0.7, 0.6)]) == [1, 1, 0.5, 0.25]


def test_plateau_auto_mode_from_the_metric_name():
    assert schedule("plateau", monitor="val_accuracy", mode="auto").scheduler.mode == "max"
    assert schedule("plateau", monitor="val_loss", mode="auto").scheduler.mode == "min"


def test_plateau_missing_monitor_names_the_key():
    sched = schedule("plateau", monitor="val_f1")
    with pytest.raises(ConfigError, match=r"scheduler\.monitor=val_f1 .*val_loss.*\.$"):
        sched.step_epoch({"val_loss": 1.0, "train_loss": 1.0})
    with pytest.raises(ConfigError, match=r"scheduler\.monitor"):
        schedule("plateau", monitor=None)


def onecycle_batch_lrs(sched: LRSchedule, steps: int) -> list[float]:
    """The LR of each of the next ``steps`` optimizer steps."""
    lrs = []
    for _ in range(steps):
        lrs.append(sched.lr)
        sched.optimizer.step()
        sched.step_batch()
    return lrs


def test_onecycle_rises_to_max_lr_then_anneals():
    # 2 epochs x 5 batches = 10 steps; pct_start 0.3 peaks at step 0.3 * 10 - 1 = 2.
    sched = schedule("onecycle", 0.1, max_epochs=2, steps_per_epoch=5, max_lr=1.0, pct_start=0.3,
                     div_factor=25.0, final_div_factor=1e4)
    lrs = []
    for _ in range(2):
        lrs += onecycle_batch_lrs(sched, 5)
        sched.step_epoch({})  # per-epoch steps do not move a per-batch schedule
    assert lrs[0] == pytest.approx(1.0 / 25)
    assert max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 2
    assert lrs[-1] == pytest.approx(1.0 / 25 / 1e4)
    assert all(a <= b for a, b in zip(lrs[:2], lrs[1:3], strict=True))
    assert all(a >= b for a, b in zip(lrs[2:-1], lrs[3:], strict=True))
    # The final LR is held after the last step instead of bouncing back up or raising.
    assert onecycle_batch_lrs(sched, 3) == pytest.approx([1.0 / 25 / 1e4] * 3)


def test_onecycle_max_lr_defaults_to_the_optimizer_lr():
    sched = schedule("onecycle", 0.5, max_epochs=1, steps_per_epoch=10)
    assert sched.lr == pytest.approx(0.5 / 25)
    assert max(onecycle_batch_lrs(sched, 10)) == pytest.approx(0.5)


def test_onecycle_refuses_warmup():
    with pytest.raises(ConfigError, match=r"^scheduler=onecycle warms up by itself \(scheduler\.pct_start\): "
                                          r"set scheduler\.warmup_epochs=0\.$"):
        schedule("onecycle", warmup_epochs=2)


@pytest.mark.parametrize("make,cycles", [
    (lambda p: torch.optim.Adagrad(p, lr=0.1), False),
    (lambda p: torch.optim.SGD(p, lr=0.1), False),
    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), True),
    (lambda p: torch.optim.Adam(p, lr=0.1), True),
])
def test_onecycle_cycles_only_the_momentum_the_optimizer_has(make, cycles):
    """Plain SGD stays plain SGD (torch would switch its momentum on); Adagrad has none."""
    opt = make([torch.nn.Parameter(torch.zeros(1))])
    momentum_before = opt.param_groups[0].get("momentum")
    sched = build_scheduler("onecycle", opt, max_epochs=2, steps_per_epoch=3)
    assert sched.lr == pytest.approx(0.1 / 25)
    assert sched.scheduler.cycle_momentum is cycles
    if not cycles:
        assert opt.param_groups[0].get("momentum") == momentum_before


@pytest.mark.parametrize("pct_start,three_phase,steps", [(0.5, False, 2), (0.05, False, 20), (0.25, True, 4)])
def test_onecycle_with_a_zero_length_phase_is_a_config_error(pct_start, three_phase, steps):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    with pytest.raises(ConfigError, match=r"^scheduler=onecycle cannot split \d+ optimizer steps .*pct_start"):
        build_scheduler("onecycle", opt, max_epochs=1, steps_per_epoch=steps, pct_start=pct_start,
                        three_phase=three_phase)


def test_torch_value_errors_become_one_line_config_errors():
    with pytest.raises(ConfigError, match=r"^scheduler=plateau: Factor should be < 1\.0\.$"):
        schedule("plateau", factor=2.0)
    with pytest.raises(ConfigError, match=r"^scheduler=onecycle: .*anneal_strategy.*\.$"):
        schedule("onecycle", anneal_strategy="zigzag")


def test_unknown_name():
    with pytest.raises(ConfigError, match="scheduler=warp is not a known option"):
        schedule("warp")


# --- warm-up --------------------------------------------------------------------------

def test_warmup_rises_in_equal_steps_to_the_base_lr():
    sched = schedule("none", 1.0, 0.1, warmup_epochs=3)
    assert epoch_lrs(sched, 6) == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    sched = schedule("none", 1.0, 0.1, warmup_epochs=3)
    assert epoch_lrs(sched, 6, group=1) == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])


def test_warmup_then_step_is_the_step_schedule_shifted():
    assert epoch_lrs(schedule("step", step_size=2, gamma=0.5, warmup_epochs=3), 8) == [
        0.25, 0.5, 0.75, 1, 1, 0.5, 0.5, 0.25]


SHIFTED = {
    "none": {},
    "step": {"step_size": 2, "gamma": 0.5},
    "multistep": {"milestones": [1, 3], "gamma": 0.3},
    "exponential": {"gamma": 0.7},
    "cosine": {"T_max": 5, "eta_min": 0.01},
    "plateau": {"monitor": "val_loss", "mode": "min", "factor": 0.5, "patience": 1},
}


@pytest.mark.parametrize("name", sorted(SHIFTED))
@pytest.mark.parametrize("warmup", [1, 3])
def test_warmup_shifts_the_schedule_exactly(name, warmup):
    # Chainable torch schedulers multiply the current LR: after the warm-up, every LR (and
    # every param group's) must equal the unwarmed schedule's, bit for bit, W epochs later.
    metrics = losses(1, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8)
    n = len(metrics)
    for group in (0, 1):
        plain = epoch_lrs(schedule(name, 1.0, 0.3, **SHIFTED[name]), n, metrics, group=group)
        warm_metrics = losses(*[5.0] * warmup) + metrics  # warm-up epochs' metrics are not fed to plateau
        warm = epoch_lrs(schedule(name, 1.0, 0.3, warmup_epochs=warmup, **SHIFTED[name]), warmup + n, warm_metrics,
                         group=group)
        base = [1.0, 0.3][group]
        assert warm[:warmup] == pytest.approx([base * k / (warmup + 1) for k in range(1, warmup + 1)])
        assert warm[warmup:] == plain
    assert len(set(plain)) > 1 or name == "none"  # the schedule does move in these epochs


def test_warmup_then_cosine_anneals_over_the_epochs_left():
    # 6 epochs, 2 of warm-up: T_max defaults to 4, so the LR reaches eta_min after the last epoch.
    sched = schedule("cosine", max_epochs=6, warmup_epochs=2, eta_min=0.0)
    c = math.sqrt(0.5)
    assert epoch_lrs(sched, 6) == pytest.approx([1 / 3, 2 / 3, 1.0, (1 + c) / 2, 0.5, (1 - c) / 2])
    assert sched.lr == pytest.approx(0.0, abs=1e-12)


# --- state_dict / resume --------------------------------------------------------------

OPTIONS = {
    "none": {},
    "step": {"step_size": 2, "gamma": 0.5},
    "multistep": {"milestones": [2, 3], "gamma": 0.5},
    "exponential": {"gamma": 0.8},
    "cosine": {"eta_min": 0.05},
    "plateau": {"monitor": "val_loss", "mode": "min", "factor": 0.5, "patience": 0},
    "onecycle": {"pct_start": 0.4},
}


def is_plain(obj) -> bool:
    if type(obj) is dict:
        return all(isinstance(k, str | int) and is_plain(v) for k, v in obj.items())
    if type(obj) is list:
        return all(is_plain(v) for v in obj)
    return obj is None or type(obj) in (int, float, str, bool)


def build(name: str, warmup: int) -> LRSchedule:
    opt = sgd(1.0, 0.2, momentum=0.9)
    return build_scheduler(name, opt, max_epochs=8, steps_per_epoch=3,
                           warmup_epochs=0 if name == "onecycle" else warmup, **OPTIONS[name])


def run_batches(sched: LRSchedule, epochs: int, start: int) -> list[list[float]]:
    """Train ``epochs`` epochs of 3 batches; each batch's LRs (and momenta) of every group."""
    seen = []
    metrics = [1.0, 0.8, 0.9, 0.9, 0.7, 0.7, 0.7, 0.7]
    for epoch in range(start, start + epochs):
        for _ in range(3):
            seen.append([g["lr"] for g in sched.optimizer.param_groups] +
                        [g["momentum"] for g in sched.optimizer.param_groups])
            sched.optimizer.step()
            sched.step_batch()
        sched.step_epoch({"val_loss": metrics[epoch], "train_loss": 0.0})
    return seen


@pytest.mark.parametrize("name", sorted(OPTIONS))
@pytest.mark.parametrize("warmup,stop", [(3, 2), (3, 5), (0, 4)])
@pytest.mark.parametrize("with_optimizer_state", [False, True])
def test_resume_continues_with_the_same_lrs(name, warmup, stop, with_optimizer_state):
    reference = run_batches(build(name, warmup), 8, 0)

    first = build(name, warmup)
    head = run_batches(first, stop, 0)
    state = first.state_dict()
    assert is_plain(state)
    buffer = io.BytesIO()
    torch.save({"schedule": state, "optim": first.optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    resumed = build(name, warmup)  # a fresh optimizer and schedule, as a resumed run builds them
    if with_optimizer_state:
        resumed.optimizer.load_state_dict(saved["optim"])
    resumed.load_state_dict(saved["schedule"])
    assert resumed.lr == first.lr and resumed.epoch == stop
    assert head + run_batches(resumed, 8 - stop, stop) == reference


# --- every registered name ------------------------------------------------------------

def test_the_registry_has_every_preset():
    assert SCHEDULERS.names() == sorted(OPTIONS)


@pytest.mark.parametrize("name", SCHEDULERS.names())
def test_every_scheduler_builds_and_steps(name):
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = build_scheduler(name, opt, max_epochs=3, steps_per_epoch=2)
    assert repr(sched).startswith(f"LRSchedule({name}")
    for _ in range(3):
        for _ in range(2):
            opt.zero_grad()
            model(torch.randn(4, 3)).pow(2).mean().backward()
            opt.step()
            sched.step_batch()
        sched.step_epoch({"val_loss": 1.0})
        assert math.isfinite(sched.lr) and 0 <= sched.lr <= 0.01  # cosine ends at eta_min 0
    assert is_plain(sched.state_dict())

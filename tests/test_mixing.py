"""MixUp, CutMix and random erasing: the mixed images and soft targets, the soft-target loss,
the erased rectangles, no reads from the device, training and exact resume, and the refusals."""

from __future__ import annotations

import math
import signal

import pytest
import torch
import torch.nn.functional as F

from dltrain import train
from dltrain.data.augment import build_augment
from dltrain.data.erasing import erase
from dltrain.data.mixing import Mix
from dltrain.errors import ConfigError
from dltrain.losses import LOSSES
from dltrain.training.checkpoint import load_checkpoint
from dltrain.training.signals import Interrupted
from dltrain.training.step import OptimizerStep, StepOptions
from dltrain.training.trainer import Trainer
from tests.test_resume import rows, same_weights

B, C, H, W = 8, 8, 8, 8  # 8 classes, one label each: a soft target's columns name its two sources


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images (B, 2, H, W) labelled 0..B-1 (no value is exactly 0)."""
    x = torch.randn(B, 2, H, W, generator=torch.Generator().manual_seed(seed))
    return x, torch.arange(B)


def sources(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From soft targets of labels ``arange(B)``: each row's partner ``perm[i]`` (the other
    column it puts weight on; itself if none), and the share of its own label."""
    own = target.diagonal()  # (B,)
    others = target - torch.diag(own)
    perm = torch.where(others.amax(dim=1) > 0, others.argmax(dim=1), torch.arange(B))
    return perm, own


def test_mixup_targets_sum_to_one_and_the_images_are_their_mix():
    x, y = batch()
    torch.manual_seed(3)
    mixed, target = Mix(C, mixup={"alpha": 0.4, "p": 1.0})(x, y)
    assert target.shape == (B, C) and target.dtype == torch.float32
    assert torch.allclose(target.sum(dim=1), torch.ones(B))
    perm, own = sources(target)
    moved = perm != torch.arange(B)
    assert moved.any()
    lam = own[moved][0]  # one lam for the batch
    assert 0 < lam < 1 and torch.allclose(own[moved], lam.expand(int(moved.sum())))
    for i in range(B):  # pixel by pixel: lam of its own image, 1 - lam of its partner's
        assert torch.allclose(mixed[i], lam * x[i] + (1 - lam) * x[perm[i]], atol=1e-6)
        assert math.isclose(target[i, y[perm[i]]].item(), 1.0 if not moved[i] else 1 - lam.item(), rel_tol=1e-6)


@pytest.mark.parametrize("seed", range(12))
def test_cutmix_lam_is_the_kept_area_exactly_and_the_box_is_pasted(seed):
    x, y = batch(seed)
    torch.manual_seed(seed)
    mixed, target = Mix(C, cutmix={"alpha": 1.0, "p": 1.0})(x, y)
    assert torch.allclose(target.sum(dim=1), torch.ones(B))
    perm, own = sources(target)
    moved = perm != torch.arange(B)
    if not moved.any():  # a box that truncates to nothing: lam = 1, nothing pasted
        assert torch.equal(mixed, x) and torch.equal(own, torch.ones(B))
        return
    # The pasted pixels: where a moved image now holds its partner's values (all channels).
    pasted = (mixed[moved] == x[perm[moved]]).all(dim=1) & (mixed[moved] != x[moved]).all(dim=1)  # (M, H, W)
    box = pasted[0]
    assert all(torch.equal(p, box) for p in pasted)  # one box for the batch
    kept = (mixed[moved] == x[moved]).all(dim=1)
    assert torch.equal(kept, ~pasted)  # every pixel is its own or its partner's
    if box.any():  # a rectangle: its bounding box is all pasted
        r, c = box.any(dim=1).nonzero().flatten(), box.any(dim=0).nonzero().flatten()
        assert box[r.min():r.max() + 1, c.min():c.max() + 1].all()
    # lam is the kept fraction of the (clipped) box's image, exactly: 64 pixels, a power of two.
    assert torch.equal(own[moved], torch.full((int(moved.sum()),), 1 - box.sum().item() / (H * W)))


def test_cutmix_boxes_are_clipped_at_the_border_and_lam_follows():
    clipped = 0
    for seed in range(40):
        x, y = batch(seed)
        torch.manual_seed(seed)
        weight, lam = Mix(C, cutmix={"alpha": 1.0, "p": 1.0}).weights(x)
        box = weight == 0
        assert lam.item() == 1 - box.sum().item() / (H * W)
        rows_, cols = box.any(dim=1).nonzero().flatten(), box.any(dim=0).nonzero().flatten()
        clipped += int(box.any() and (rows_.min() == 0 or cols.min() == 0 or rows_.max() == H - 1
                                      or cols.max() == W - 1))
    assert clipped > 0


def test_with_both_listed_each_batch_takes_one_of_them():
    kinds = set()
    for seed in range(16):
        x, y = batch(seed)
        torch.manual_seed(seed)
        mixed, target = Mix(C, mixup={"alpha": 1.0, "p": 1.0}, cutmix={"alpha": 1.0, "p": 1.0})(x, y)
        perm, _ = sources(target)
        whole = ((mixed == x) | (mixed == x[perm])).all()  # CutMix: every value one image's or the other's
        kinds.add("cutmix" if whole else "mixup")
    assert kinds == {"mixup", "cutmix"}


def test_p_zero_mixes_nothing():
    x, y = batch()
    for params in ({"mixup": {"alpha": 0.2, "p": 0.0}}, {"cutmix": {"alpha": 1.0, "p": 0.0}},
                   {"mixup": {"alpha": 0.2, "p": 0.0}, "cutmix": {"alpha": 1.0, "p": 0.0}}):
        mixed, target = Mix(C, **params)(x, y)
        assert torch.equal(mixed, x) and torch.equal(target, F.one_hot(y, C).float())


def hand_ce(logits: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Cross-entropy with label smoothing, written out: the mean over examples of
    -[(1 - eps) * log p(y) + eps / C * sum_c log p(c)]."""
    log_p = logits - logits.logsumexp(dim=1, keepdim=True)
    classes = logits.shape[1]
    per_example = -((1 - eps) * log_p[torch.arange(len(y)), y] + eps / classes * log_p.sum(dim=1))
    return per_example.mean()


@pytest.mark.parametrize("loss_name", ["cross_entropy", "nll"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_the_loss_of_mixed_targets_is_the_mix_of_the_losses(loss_name, eps):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, C, generator=g, dtype=torch.float64)
    y_a, y_b = torch.randint(0, C, (B,), generator=g), torch.randint(0, C, (B,), generator=g)
    lam = 0.3
    soft = lam * F.one_hot(y_a, C).double() + (1 - lam) * F.one_hot(y_b, C).double()
    loss = LOSSES.build(loss_name, task="multiclass", num_outputs=C, label_smoothing=eps)
    output = logits.log_softmax(dim=1) if loss_name == "nll" else logits  # nll's model ends in log-softmax
    expected = lam * hand_ce(logits, y_a, eps) + (1 - lam) * hand_ce(logits, y_b, eps)
    assert torch.allclose(loss(output, soft), expected, rtol=1e-12)
    assert torch.allclose(loss(output, y_a), hand_ce(logits, y_a, eps), rtol=1e-12)  # class indices as before


def test_the_training_step_trains_on_the_mix():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * H * W, C))
    loss_fn = LOSSES.build("cross_entropy", task="multiclass", num_outputs=C)
    mix = Mix(C, mixup={"alpha": 1.0, "p": 1.0})
    step = OptimizerStep(model, torch.optim.SGD(model.parameters(), lr=0.0), loss_fn, StepOptions(mix=mix))
    x, y = batch()
    torch.manual_seed(5)
    output, loss = step(x, y)
    torch.manual_seed(5)
    mixed, soft = mix(x, y)
    assert torch.equal(output, model(mixed)) and torch.equal(loss, loss_fn(output, soft))
    assert not torch.equal(loss, loss_fn(output, y))


def erased_rectangles(before: torch.Tensor, after: torch.Tensor) -> list[tuple[int, int] | None]:
    """Each example's erased rectangle (height, width), None if untouched; asserts that what
    changed is one whole rectangle in every channel, filled with zeros."""
    found = []
    for b, a in zip(before, after, strict=True):
        changed = a != b  # (C, H, W)
        assert torch.equal(changed, changed[:1].expand_as(changed))  # every channel alike
        mask = changed[0]
        if not mask.any():
            found.append(None)
            continue
        r, c = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
        h, w = int(r.max() - r.min() + 1), int(c.max() - c.min() + 1)
        assert int(mask.sum()) == h * w  # the bounding box is all erased: one rectangle
        assert (a[:, mask] == 0).all()
        found.append((h, w))
    return found


def test_erasing_changes_one_rectangle_within_the_area_bounds():
    x = torch.randn(64, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    scale, ratio = (0.02, 0.33), (0.3, 3.3)
    found = erased_rectangles(x, erase(x, p=1.0, scale=scale, ratio=ratio, value=0.0))
    area = 20 * 24
    assert sum(f is not None for f in found) >= 60  # p=1: all but images none of whose ten draws fit
    for h, w in filter(None, found):
        assert h < 20 and w < 24
        # Each side is rounded from the drawn area's: within half a pixel of a side each way.
        slack = 0.5 * (h + w + 1) + 0.25
        assert scale[0] * area - slack <= h * w <= scale[1] * area + slack


def test_erasing_p_and_the_targets():
    x = torch.randn(32, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    assert torch.equal(erase(x, p=0.0, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0), x)
    torch.manual_seed(1)
    found = erased_rectangles(x, erase(x, p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0))
    assert 0 < sum(f is not None for f in found) < 32
    augment = build_augment(["erasing"], {"erasing": {"p": 1.0}}, (3, 12, 12))
    step = OptimizerStep(torch.nn.Linear(1, 1), torch.optim.SGD([torch.zeros(1)], lr=0.1), torch.nn.MSELoss(),
                         StepOptions(augment=augment))
    y = torch.arange(32)
    out_x, out_y = step.augmented(x, y)
    assert out_y is y and not torch.equal(out_x, x)  # inputs only


def test_erasing_random_fills_with_noise():
    x = torch.zeros(16, 3, 12, 12)
    out = build_augment(["erasing"], {"erasing": {"p": 1.0, "value": "random"}}, (3, 12, 12))(x)
    assert (out != 0).any() and out[out != 0].std() > 0.5


NO_READS = ["item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"]


def test_no_value_is_read_back_from_the_device(monkeypatch):
    """On the CPU, every Python-level way of reading a tensor's value raises while the batch is
    mixed and erased (reads inside torch's C++ would not be caught: the CUDA test below catches
    those as synchronisations)."""
    mix = Mix(C, mixup={"alpha": 0.2, "p": 0.5}, cutmix={"alpha": 1.0, "p": 0.5})
    augment = build_augment(["erasing"], {"erasing": {"p": 0.5, "value": "random"}}, (2, H, W))
    x, y = batch()

    def refuse(*_args, **_kwargs):
        raise AssertionError("a tensor's value was read on the host")

    for name in NO_READS:
        monkeypatch.setattr(torch.Tensor, name, refuse)
    mixed, target = mix(augment(x), y)
    monkeypatch.undo()
    assert mixed.shape == x.shape and target.shape == (B, C)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_synchronisation_on_cuda():
    mix = Mix(C, mixup={"alpha": 0.2, "p": 0.5}, cutmix={"alpha": 1.0, "p": 0.5})
    augment = build_augment(["erasing"], {"erasing": {"p": 0.5, "value": "random"}}, (2, H, W))
    x, y = (t.cuda() for t in batch())
    mix(augment(x), y)  # the first call loads kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            mixed, target = mix(augment(x), y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert mixed.is_cuda and torch.allclose(target.sum(dim=1), torch.ones(B, device="cuda"))


# Dropout and a cosine schedule, as tests/test_resume.py: a resume that lost the RNG would differ.
EXACT = ["regularization.dropout=0.3", "scheduler=cosine", "scheduler.T_max=3", "model.hidden=[16]",
         "trainer.diagnostics=false", "trainer.batch_size=128", "trainer.limit_train_batches=6",
         "regularization.augment=[mixup,cutmix,erasing]", "regularization.augment_params.erasing.p=0.5"]


def test_a_run_with_every_mix_trains_and_resumes_exactly(compose, tmp_path, monkeypatch):
    straight = train(compose([*EXACT, "trainer.max_epochs=3"]), run_dir=tmp_path / "straight")
    assert straight["status"] == "completed" and math.isfinite(straight["test"]["loss"])
    step = Trainer.train_step

    def interrupt_at_step_9(self, x, y):  # epoch 2, step 3 of 6
        out = step(self, x, y)
        if self.global_step == 8:  # counted after the step
            self.stop.signum = signal.SIGTERM
        return out

    monkeypatch.setattr(Trainer, "train_step", interrupt_at_step_9)
    with pytest.raises(Interrupted):
        train(compose([*EXACT, "trainer.max_epochs=3"]), run_dir=tmp_path / "first")
    monkeypatch.undo()
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    assert load_checkpoint(last)["partial_epoch"]["step"] == 3
    train(compose([*EXACT, "trainer.max_epochs=3", f"resume={last}"]), run_dir=tmp_path / "resumed")
    assert rows(tmp_path / "resumed") == rows(tmp_path / "straight")
    checkpoints = [tmp_path / run / "checkpoints" / "last.pt" for run in ("resumed", "straight")]
    assert same_weights(*checkpoints)


@pytest.mark.parametrize(("overrides", "message"), [
    (["data=sine", "regularization.augment=[mixup]"],
     "regularization.augment=[mixup] mixes class labels, but this data has none to mix (its target is continuous): "
     "remove mixup from regularization.augment."),
    (["data=moons", "regularization.augment=[mixup]"],
     "regularization.augment=[mixup] trains on mixed class targets, which loss=bce does not take: use "
     "loss=cross_entropy (or nll), or remove mixup."),
    (["loss=huber", "regularization.augment=[mixup]"],
     "regularization.augment=[mixup] trains on mixed class targets, which loss=huber does not take: use "
     "loss=cross_entropy (or nll), or remove mixup."),
    (["data=moons", "loss=mse", "regularization.augment=[mixup,cutmix]"],
     "regularization.augment=[cutmix] pastes a box of one image into another, but this data's examples have shape "
     "(2,): use mixup, or remove cutmix."),
    (["data=moons", "regularization.augment=[erasing]"],
     "regularization.augment needs images (channels, height, width), but this data's examples have shape (2,): "
     "remove regularization.augment."),
    (["loss=cross_entropy", "loss.class_weights=balanced", "regularization.augment=[cutmix]"],
     "loss.class_weights does not say how to weigh the mixed targets of regularization.augment=[cutmix]: "
     "remove loss.class_weights or cutmix."),
    (["regularization.augment=[erasing]", "regularization.augment_params.erasing.scale=[0.3,0.1]"],
     "regularization.augment_params.erasing.scale=[0.3, 0.1] is not a range: give [low, high] with 0 < low <= high."),
])
def test_refusals_are_one_line_before_training(compose, tmp_path, overrides, message):
    with pytest.raises(ConfigError) as info:
        train(compose(["device=cpu", *overrides]), run_dir=tmp_path / "run")
    assert str(info.value) == message
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_mixup_on_token_ids_is_refused(compose, tmp_path, data_overrides):
    with pytest.raises(ConfigError, match=r"^regularization.augment=\[mixup\] blends inputs, but this data's inputs "
                                          r"are token ids, which cannot be blended: remove mixup from "
                                          r"regularization.augment.$"):
        train(compose(["device=cpu", "data=text_csv", "model=lstm", "regularization.augment=[mixup]",
                       *data_overrides("text_csv")]), run_dir=tmp_path / "run")


def test_mixup_trains_on_points(compose, tmp_path):
    summary = train(compose(["device=cpu", "data=moons", "loss=cross_entropy", "regularization.augment=[mixup]",
                             "trainer.fast_dev_run=true"]), run_dir=tmp_path / "run")
    assert summary["status"] == "completed"


@pytest.mark.pictures
def test_samples_png_shows_erased_images_before_mixing(compose, tmp_path):
    from dltrain.build import build_experiment
    from dltrain.report.train_samples import augmented_samples, write_samples

    cfg = compose(["device=cpu", "regularization.augment=[mixup,cutmix,erasing]",
                   "regularization.augment_params.erasing.p=1.0"])
    exp = build_experiment(cfg, torch.device("cpu"))
    assert exp.mix is not None and list(exp.augment.params) == ["erasing"]
    x, captions = augmented_samples(exp.data, exp.augment, seed=0)
    plain, _ = augmented_samples(exp.data, None, seed=0)
    assert not torch.equal(x, plain) and (x[x != plain] == 0).all() and len(captions) == len(x)
    assert write_samples(tmp_path, exp.data, exp.augment, seed=0).exists()

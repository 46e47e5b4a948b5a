"""``task=gan`` with ``model=dcgan``: the networks follow DCGAN's guidelines, each update moves
its own network only, the losses and metrics are the ones the paper defines, a run trains and
resumes exactly, and what cannot apply is refused in one line."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from dltrain import train
from dltrain.errors import ConfigError
from dltrain.models import MODELS
from dltrain.models.dcgan import INIT_STD
from dltrain.tasks.gan import GanTask
from dltrain.tasks.gan_step import GanStep
from dltrain.training.metrics import MetricAccumulator, metric_names
from dltrain.training.signals import Interrupted
from dltrain.training.step import StepOptions
from tests.conftest import run_cli
from tests.test_registry_walk import assert_every_parameter_learns
from tests.test_resume import rows, same_weights, stop_in_step

#: A small DCGAN on the 8x8 digits: a run of a few epochs takes seconds.
SMALL = ["task=gan", "model.latent_size=8", "model.generator.channels=[16,8]", "model.discriminator.channels=[8,16]",
         "trainer.batch_size=128", "trainer.diagnostics=false", "device=cpu"]


def dcgan(shape: tuple[int, int, int], **options) -> nn.Module:
    torch.manual_seed(0)
    return MODELS.build("dcgan", input_shape=shape, num_outputs=1, **options)


# --- the networks ----------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_the_generator_makes_images_of_the_data_and_the_discriminator_one_logit(shape):
    model = dcgan(shape)
    images = model.generate(torch.randn(5, 100))
    assert images.shape == (5, *shape)
    assert images.min() >= -1 and images.max() <= 1  # Tanh
    assert model(images).shape == (5, 1)
    assert_every_parameter_learns(model, torch.randn(4, *shape))


def test_the_networks_follow_dcgans_guidelines():
    model = dcgan((1, 28, 28))
    modules = list(model.modules())
    assert not any(isinstance(m, (nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)) for m in modules)
    g = list(model.generator)
    d = list(model.discriminator)
    # G: strided transposed convolutions, batch norm + ReLU after each but the output layer, Tanh out.
    assert [type(m) for m in g] == [nn.Unflatten, nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU, nn.ConvTranspose2d,
                                    nn.BatchNorm2d, nn.ReLU, nn.ConvTranspose2d, nn.Tanh]
    assert [m.stride for m in g if isinstance(m, nn.ConvTranspose2d)][1:] == [(2, 2), (2, 2)]
    # D: strided convolutions, no batch norm on the input layer, LeakyReLU(0.2), a conv to one logit.
    assert [type(m) for m in d] == [nn.Conv2d, nn.LeakyReLU, nn.Conv2d, nn.BatchNorm2d, nn.LeakyReLU, nn.Conv2d,
                                    nn.Flatten]
    assert [m.stride for m in d if isinstance(m, nn.Conv2d)] == [(2, 2), (2, 2), (1, 1)]
    assert all(m.negative_slope == 0.2 for m in d if isinstance(m, nn.LeakyReLU))


def test_the_papers_initialisation_is_the_models_default():
    model = dcgan((3, 32, 32), generator={"channels": [256, 128], "batch_norm": True})
    convs = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    scales = torch.cat([m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    assert convs.mean().abs() < 1e-3 and convs.std().item() == pytest.approx(INIT_STD, rel=0.02)
    assert scales.mean().item() == pytest.approx(1, abs=0.01)
    assert scales.std().item() == pytest.approx(INIT_STD, rel=0.2)
    assert all(not m.bias.any() for m in model.modules() if getattr(m, "bias", None) is not None)


def test_no_blocks_is_one_line():
    with pytest.raises(ConfigError, match=r"^model.discriminator.channels is empty: give it at least one entry"):
        dcgan((1, 8, 8), discriminator={"channels": []})


def test_a_size_the_blocks_cannot_reach_is_one_line():
    with pytest.raises(ConfigError, match=r"^model=dcgan cannot reach 30x30 images with 2 blocks of stride 2 "
                                          r"\(model.generator.channels has 2 entries; .*give model.generator.channels "
                                          r"1 entry, or resize the images"):
        dcgan((1, 30, 30))


# --- the step --------------------------------------------------------------------------

class FirstPixel(nn.Module):
    """A discriminator whose logit is each image's first pixel times a weight of 1: logits set by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :1] * self.scale  # (B, 1)


def step_for(model: nn.Module, label_smoothing: float = 0.0) -> GanStep:
    task = GanTask(label_smoothing=label_smoothing)
    return GanStep(model, task.make_optimizer(model), nn.Identity(), StepOptions(),
                   discriminator_optimizer=task.discriminator_optimizer, to_range=lambda x: x,
                   label_smoothing=label_smoothing)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def unchanged(module: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in module.named_parameters())


def test_the_discriminator_step_leaves_the_generator_and_the_generator_step_the_discriminator():
    model = dcgan((1, 8, 8), generator={"channels": [8, 4]}, discriminator={"channels": [4, 8]})
    step = step_for(model)
    real = torch.rand(6, 1, 8, 8) * 2 - 1
    fake = model.generate(torch.randn(6, 100))
    g_before, d_before = snapshot(model.generator), snapshot(model.discriminator)
    step.discriminator_step(real, fake.detach())
    assert unchanged(model.generator, g_before) and not unchanged(model.discriminator, d_before)
    d_after = snapshot(model.discriminator)
    step.generator_step(fake)
    assert unchanged(model.discriminator, d_after) and not unchanged(model.generator, g_before)
    assert all(p.requires_grad for p in model.discriminator.parameters())  # D trains again in the next step


def test_the_non_saturating_loss_is_minus_log_d_of_the_generated_images():
    model = dcgan((1, 8, 8), generator={"channels": [8, 4]})
    model.discriminator = FirstPixel()
    step = step_for(model)
    fake = torch.tensor([0.0, 2.0, -1.0]).reshape(3, 1, 1, 1).expand(3, 1, 8, 8).clone().requires_grad_()
    logits, g_loss = step.generator_step(fake)
    assert logits.flatten().tolist() == [0.0, 2.0, -1.0]
    sigmoid = [1 / (1 + math.exp(-v)) for v in (0.0, 2.0, -1.0)]
    assert g_loss.item() == pytest.approx(sum(-math.log(s) for s in sigmoid) / 3, rel=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_discriminator_loss_smooths_the_real_target_only(smoothing):
    model = dcgan((1, 8, 8), generator={"channels": [8, 4]})
    model.discriminator = FirstPixel()
    step = step_for(model, label_smoothing=smoothing)
    real = torch.tensor([1.5, -0.5]).reshape(2, 1, 1, 1).expand(2, 1, 8, 8)
    fake = torch.tensor([0.5, -2.0]).reshape(2, 1, 1, 1).expand(2, 1, 8, 8)
    _, _, terms = step.discriminator_step(real, fake)

    def bce(logit: float, target: float) -> float:
        p = 1 / (1 + math.exp(-logit))
        return -(target * math.log(p) + (1 - target) * math.log(1 - p))

    expected = [bce(r, 1 - smoothing) + bce(f, 0.0) for r, f in ((1.5, 0.5), (-0.5, -2.0))]
    assert terms.flatten().tolist() == pytest.approx(expected, rel=1e-6)


def test_the_metrics_are_the_means_of_d_of_real_and_generated_images():
    out1 = torch.tensor([[2.0, -1.0, 0.5, 0.7], [0.0, 1.0, -0.5, 1.1]])  # (B, 4): real, fake, fake in G's step, D loss
    out2 = torch.tensor([[-3.0, 0.0, 1.0, 0.2]])
    acc = MetricAccumulator("gan")
    acc.update(out1, torch.zeros(2), torch.tensor(1.5))
    acc.update(out2, torch.zeros(1), torch.tensor(0.9))
    got = acc.compute()
    sig = torch.sigmoid
    rows_ = torch.cat([out1, out2])
    assert got["d_real"] == pytest.approx(sig(rows_[:, 0]).mean().item(), rel=1e-6)
    assert got["d_fake"] == pytest.approx(sig(rows_[:, 1]).mean().item(), rel=1e-6)
    assert got["g_loss"] == pytest.approx((-torch.log(sig(rows_[:, 2]))).mean().item(), rel=1e-6)
    assert got["d_loss"] == pytest.approx((0.7 + 1.1 + 0.2) / 3, rel=1e-6)
    assert got["loss"] == pytest.approx((1.5 * 2 + 0.9) / 3, rel=1e-6)
    assert metric_names("gan")[:5] == ["train_loss", "train_d_loss", "train_g_loss", "train_d_real", "train_d_fake"]


def test_real_images_reach_the_discriminator_in_the_tanhs_range(compose):
    from dltrain.build import load_data

    data = load_data(compose(["task=gan"]), torch.device("cpu"))
    task = GanTask()
    task.check(data)
    real = task.to_range(data.x_train)  # standardised ink counts back to pixels, then to [-1, 1]
    assert torch.allclose(real, data.preprocessing.pixels(data.x_train) * 2 - 1, atol=1e-6)
    assert real.min().item() == pytest.approx(-1, abs=1e-6) and real.max().item() == pytest.approx(1, abs=1e-6)


# --- runs -------------------------------------------------------------------------------

def test_a_gan_trains_on_the_digits_and_reports_both_networks(compose, tmp_path):
    cfg = compose([*SMALL, "trainer.fast_dev_run=true"])
    assert cfg.model.name == "dcgan"  # task=gan picks its model
    summary = train(cfg, run_dir=tmp_path)
    assert summary["status"] == "completed"
    with (tmp_path / "metrics.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    for split in ("train", "val"):
        for name in ("d_loss", "g_loss", "d_real", "d_fake"):
            assert math.isfinite(float(row[f"{split}_{name}"])), f"{split}_{name}"
        assert 0 < float(row[f"{split}_d_real"]) < 1 and 0 < float(row[f"{split}_d_fake"]) < 1
    assert float(row["lr"]) == 2e-4  # the generator's Adam, the paper's rate
    text = (tmp_path / "model_summary.txt").read_text()
    assert "generator.project" in text and "discriminator.logit" in text and "N(0, 0.02)" in text
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["task"]["latents"].shape == (64, 8)
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    networks = (("generator", state["optimizer"]), ("discriminator", state["task"]["discriminator_optimizer"]))
    for network, saved in networks:
        weights = [k for k in state["model"] if k.startswith(f"{network}.") and not k.endswith(buffers)]
        assert sum(len(g["params"]) for g in saved["param_groups"]) == len(weights), network  # each its own network's
        assert {g["betas"] for g in saved["param_groups"]} == {(0.5, 0.999)}, network


def test_the_latent_batch_is_drawn_from_the_runs_seed(compose, tmp_path):
    train(compose([*SMALL, "trainer.fast_dev_run=true", "seed=3", "task.num_samples=5"]), run_dir=tmp_path)
    latents = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["task"]["latents"]
    assert torch.equal(latents, torch.randn(5, 8, generator=torch.Generator().manual_seed(3)))


@pytest.mark.slow  # tests/test_resume.py's mid-epoch interrupt of task=gan runs by default
def test_one_epoch_then_resume_equals_three_straight(compose, tmp_path):
    straight, first, resumed = tmp_path / "straight", tmp_path / "first", tmp_path / "resumed"
    exact = [*SMALL, "task.label_smoothing=0.1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=1"]
    train(compose([*exact, "trainer.max_epochs=3"]), run_dir=straight)
    train(compose([*exact, "trainer.max_epochs=1"]), run_dir=first)
    train(compose([*exact, "trainer.max_epochs=3", f"resume={first / 'checkpoints' / 'last.pt'}"]),
          run_dir=resumed)
    assert len(rows(straight)) == 3 and rows(resumed) == rows(straight)
    assert same_weights(resumed / "checkpoints" / "last.pt", straight / "checkpoints" / "last.pt")
    a, b = (torch.load(run / "checkpoints" / "last.pt", weights_only=True) for run in (resumed, straight))
    assert torch.equal(a["task"]["latents"], b["task"]["latents"])
    for opt in (a["optimizer"], a["task"]["discriminator_optimizer"]):
        assert opt["state"], "the optimizers' moments were saved"
    assert all(torch.equal(x["exp_avg"], y["exp_avg"])
               for x, y in zip(a["task"]["discriminator_optimizer"]["state"].values(),
                               b["task"]["discriminator_optimizer"]["state"].values(), strict=True))


@pytest.mark.slow  # the same check as tests/test_resume.py's task=gan parametrization, which runs by default
def test_an_interrupt_mid_epoch_then_resume_equals_straight(compose, tmp_path, monkeypatch):
    exact = [*SMALL, "trainer.limit_train_batches=4", "trainer.limit_val_batches=1", "trainer.max_epochs=2"]
    train(compose(exact), run_dir=tmp_path / "straight")
    stop_in_step(monkeypatch, 6)  # step 7: epoch 2, step 3 of 4: the partial epoch's sums and D's moments are saved
    with pytest.raises(Interrupted, match="interrupted by SIGTERM in epoch 2 after batch 3 of 4: saved"):
        train(compose(exact), run_dir=tmp_path / "first")
    monkeypatch.undo()
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    train(compose([*exact, f"resume={last}"]), run_dir=tmp_path / "resumed")
    assert rows(tmp_path / "resumed") == rows(tmp_path / "straight")
    assert same_weights(tmp_path / "resumed" / "checkpoints" / "last.pt",
                        tmp_path / "straight" / "checkpoints" / "last.pt")


def test_dltrain_eval_reports_the_gan_metrics_of_a_checkpoint(compose, tmp_path):
    from dltrain.inference.evaluate import evaluate_checkpoint

    summary = train(compose([*SMALL, "trainer.max_epochs=1", "trainer.limit_train_batches=2"]), run_dir=tmp_path)
    result = evaluate_checkpoint(tmp_path / "checkpoints" / "last.pt", device="cpu")
    assert set(result["metrics"]) == {"loss", "d_loss", "g_loss", "d_real", "d_fake"}
    # D(x) on the real test images depends on the weights alone (D(G(z)) on the latents drawn too).
    assert result["metrics"]["d_real"] == pytest.approx(summary["test"]["d_real"], rel=1e-5)


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory) -> Path:
    """The last.pt of a one-epoch run, which the tests below damage."""
    from dltrain import compose

    run = tmp_path_factory.mktemp("one_epoch")
    train(compose([*SMALL, "trainer.max_epochs=1", "trainer.limit_train_batches=2"]), run_dir=run)
    return run / "checkpoints" / "last.pt"


def test_dltrain_predict_refuses_a_gans_checkpoint_in_one_line(capsys, tmp_path, one_epoch):
    from PIL import Image

    from dltrain.inference.predict import main
    from tests.conftest import tool_error

    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    err = tool_error(capsys, main, "dltrain-predict", [f"ckpt={one_epoch}", f"input={tmp_path / 'a.png'}",
                                                       f"output={tmp_path / 'p.csv'}"])
    assert "is a checkpoint of task=gan: its discriminator predicts no labels" in err
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize(("damage", "message"), [
    (lambda task: task.update(latents=task["latents"][:3]),
     r"fixed latent batch \(task=gan's\) is a torch.float32 tensor of shape \(3, 8\), not a float32 64x8 tensor"),
    (lambda task: task.update(latents=task["latents"].double()), r"fixed latent batch \(task=gan's\) is a "
                                                                r"torch.float64 tensor"),
    (lambda task: task.update(latents=task["latents"] * math.inf), r"fixed latent batch \(task=gan's\) holds "
                                                                   r"non-finite values"),
    (lambda task: task.update(latents=[1, 2]), r"fixed latent batch \(task=gan's\) is a list"),
    (lambda task: task.update(discriminator_optimizer={"state": {}}),
     r"discriminator's optimizer state \(task=gan's\) is a dict without state and param_groups"),
    (lambda task: task["discriminator_optimizer"]["param_groups"][0].update(params=[0]),
     r"discriminator's optimizer state \(task=gan's\) is for other parameters"),
    (lambda task: task["discriminator_optimizer"]["state"][0].update(exp_avg=torch.zeros(3)),
     r"discriminator's optimizer state \(task=gan's\) is damaged \(exp_avg of a parameter of shape \(8, 1, 4, 4\) "
     r"is \(3,\)\)"),
])
def test_a_damaged_task_state_in_a_checkpoint_is_one_line(compose, tmp_path, one_epoch, damage, message):
    state = torch.load(one_epoch, weights_only=True)
    damage(state["task"])
    crafted = tmp_path / "crafted.pt"
    torch.save(state, crafted)
    with pytest.raises(ConfigError, match=f"^resume={crafted}: the checkpoint's {message}") as err:
        train(compose([*SMALL, "trainer.max_epochs=2", "trainer.limit_train_batches=2", f"resume={crafted}"]),
              run_dir=tmp_path / "resumed")
    assert "\n" not in str(err.value)


# --- refusals -----------------------------------------------------------------------------

def test_a_gan_on_tabular_data_is_one_line_from_the_command_line(tmp_path):
    proc = run_cli(["task=gan", "data=moons", "hydra.run.dir=run"], cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "task=gan trains on images or ink_counts, and data=moons gives points: use data=cifar10, digits, "
        "fashion_mnist, image_folder, mnist or svhn, or another task=.")


def test_a_gan_on_several_processes_is_one_line():
    from dltrain.tasks.base import check_task_fits

    check_task_fits("gan", "digits", "ink_counts", world_size=1)
    with pytest.raises(ConfigError, match=r"^task=gan trains in one process, and this run has 2 \(torchrun or "
                                          r"Slurm\): run it as one process\.$"):
        check_task_fits("gan", "digits", "ink_counts", world_size=2)


@pytest.mark.parametrize(("overrides", "message"), [
    (["data=xor"], r"^task=gan trains on images or ink_counts, and data=xor gives points: use data="),
    (["model=mlp"], r"^model=mlp cannot be trained by task=gan \(it serves task=supervised\): use model=dcgan"),
    (["task=supervised", "model=dcgan"], r"^model=dcgan cannot be trained by task=supervised \(it serves task=gan\)"),
    (["optim=sgd"], r"^optim=sgd does not apply to task=gan: each network has its own Adam: set task.generator"),
    (["optim=lbfgs"], r"^optim=lbfgs does not apply to task=gan"),
    (["optim.lr=0.01"], r"^optim.lr does not apply to task=gan: each network has its own Adam"),
    (["loss=mse"], r"^loss=mse does not apply to task=gan"),
    (["scheduler=cosine"], r"^scheduler=cosine does not apply to task=gan: use scheduler=none\.$"),
    (["trainer.accumulate_grad_batches=2"], r"^trainer.accumulate_grad_batches=2 does not apply to task=gan"),
    (["regularization.ema_decay=0.9"], r"^regularization.ema_decay=0.9 does not apply to task=gan"),
    (["regularization.swa_start=1"], r"^regularization.swa_start=1 does not apply to task=gan"),
    (["regularization.augment=[hflip,cutmix]"], r"^regularization.augment=cutmix does not apply to task=gan"),
    (["regularization.l2=0.01"], r"^regularization.l1/l2 does not apply to task=gan"),
    (["regularization.label_smoothing=0.1"], r"^regularization.label_smoothing=0.1 does not apply to task=gan: "
                                             r"use task.label_smoothing"),
    (["trainer.precision=16"], r"^trainer.precision=16 does not apply to task=gan"),
    (["trainer.compile=true"], r"^trainer.compile=true does not apply to task=gan"),
])
def test_what_a_gan_cannot_take_is_one_line(compose, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        train(compose(["task=gan", "device=cpu", "trainer.fast_dev_run=true", *overrides]), run_dir=tmp_path)
    assert "\n" not in str(err.value)

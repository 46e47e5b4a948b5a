"""``task=autoencoder`` with ``model=autoencoder``: shapes of both encoders, the loss against the
clean input, denoising noise on training inputs only (reproducible), the bottleneck refusal,
runs on images and tables, exact resume, and ``dltrain-eval``'s reconstruction loss."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from dltrain import train
from dltrain.build import build_experiment
from dltrain.errors import ConfigError
from dltrain.inference.evaluate import evaluate_checkpoint
from dltrain.models.autoencoder import build_autoencoder
from dltrain.tasks.autoencoder import ReconstructionLoss, ReconstructionStep, corruption
from dltrain.training.signals import Interrupted
from dltrain.training.step import StepOptions

from .conftest import run_cli
from .test_resume import rows, same_weights, stop_in_step

AE = ["task=autoencoder", "device=cpu"]
QUICK = [*AE, "trainer.fast_dev_run=true"]


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 13, 9)])
@pytest.mark.parametrize("encoder", ["mlp", "conv"])
def test_the_reconstruction_has_the_input_s_shape_and_the_codes_the_bottleneck(shape, encoder):
    model = build_autoencoder(shape, 10, encoder=encoder, hidden=[32], channels=[4, 8, 8], bottleneck=5,
                              batch_norm=True)
    x = torch.randn(3, *shape)
    assert model(x).shape == x.shape
    assert model.encode(x).shape == (3, 5) and model.decode(model.encode(x)).shape == x.shape
    assert {key.split(".")[0] for key in model.state_dict()} == {"encoder", "decoder"}


def test_the_conv_decoder_mirrors_the_encoder_with_transposed_convolutions():
    model = build_autoencoder((1, 28, 28), 10, encoder="conv", channels=[16, 32], bottleneck=8)
    convs = [m for m in model.encoder if isinstance(m, nn.Conv2d)]
    deconvs = [m for m in model.decoder if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 16), (16, 32)]
    assert [(d.in_channels, d.out_channels) for d in deconvs] == [(32, 16), (16, 1)]
    assert all(c.stride == (2, 2) for c in convs + deconvs)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"bottleneck": 64}, ["model.bottleneck=64", "64 values", "1x8x8"]),
    ({"bottleneck": 100}, ["model.bottleneck=100", "below 64"]),
])
def test_a_bottleneck_not_below_the_input_is_refused(kwargs, words):
    with pytest.raises(ConfigError) as err:
        build_autoencoder((1, 8, 8), 10, **kwargs)
    assert all(w in str(err.value) for w in words)


def test_the_bottleneck_refusal_through_the_command_line_is_one_line(tmp_path):
    proc = run_cli([*QUICK, "model.bottleneck=64"], cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "model.bottleneck=64" in line]
    assert len(lines) == 1 and "64 values" in lines[0]


def test_a_conv_encoder_on_a_table_is_one_line():
    with pytest.raises(ConfigError, match="model.encoder=conv needs images .* use model.encoder=mlp"):
        build_autoencoder((12,), 1, encoder="conv", bottleneck=3)


class Recorder(nn.Module):
    """An autoencoder that remembers the inputs its forward saw."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = build_autoencoder((1, 4, 4), 1, hidden=[8], bottleneck=3)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.net(x)


def step_on(model: nn.Module, denoise: str = "none", noise: float = 0.5) -> ReconstructionStep:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return ReconstructionStep(model, optimizer, ReconstructionLoss("mse", (1, 4, 4)), StepOptions(),
                              corrupt=corruption(denoise, noise))


def test_the_loss_compares_the_reconstruction_with_the_clean_input():
    model = Recorder()
    x, labels = torch.randn(6, 1, 4, 4), torch.arange(6)
    with torch.no_grad():
        expected = ((model.net(x) - x) ** 2).sum() / x.numel()  # by hand, before the step changes the weights
    _, loss = step_on(model)(x, labels)
    assert torch.allclose(loss, expected)
    assert torch.equal(model.seen[-1], x)  # without denoise the model sees the inputs as they are


def test_noise_reaches_the_training_inputs_only_and_the_loss_still_targets_the_clean_ones():
    model = Recorder()
    step = step_on(model, "gaussian", 0.5)
    x, labels = torch.randn(6, 1, 4, 4), torch.arange(6)
    torch.manual_seed(3)
    _, loss = step(x, labels)
    noisy = model.seen[-1]
    assert not torch.equal(noisy, x) and 0.3 < (noisy - x).std() < 0.7  # std 0.5 noise
    torch.manual_seed(3)
    assert torch.equal(x + 0.5 * torch.randn_like(x), noisy)  # from torch's generator: reproducible
    _, val_loss = step.eval_outputs_and_loss(x, labels)
    assert torch.equal(model.seen[-1], x)  # validation and test see clean inputs
    assert torch.allclose(val_loss, ((model.net(x) - x) ** 2).mean())


def test_masking_sets_the_given_fraction_of_inputs_to_zero():
    torch.manual_seed(0)
    x = torch.randn(100, 1, 8, 8) + 5  # no input is 0 by itself
    masked = corruption("masking", 0.25)(x)
    assert torch.equal(masked[masked != 0], x[masked != 0])
    assert 0.2 < (masked == 0).float().mean() < 0.3


def test_bce_compares_pixels_the_preprocessing_maps_back_to(compose):
    exp = build_experiment(compose([*AE, "task.loss=bce"]), torch.device("cpu"))
    loss_fn, x = exp.loss_fn, exp.data.x_train[:4]
    pixels = exp.data.preprocessing.pixels(x)
    assert torch.allclose(x * loss_fn.scale + loss_fn.shift, pixels, atol=1e-5)
    out = torch.randn_like(x) * 0.1
    p = exp.data.preprocessing.pixels(out).clamp(1e-6, 1 - 1e-6)
    t = pixels.clamp(0, 1)
    assert torch.allclose(loss_fn(out, x), nn.functional.binary_cross_entropy(p, t), atol=1e-5)


def test_bce_on_a_table_is_one_line(compose, data_overrides):
    cfg = compose([*QUICK, "data=csv", "data.target=Class", "data.missing=mean", "task.loss=bce", "model.bottleneck=2",
                   *data_overrides("csv")])
    with pytest.raises(ConfigError, match=r"^task.loss=bce compares pixels .* use task.loss=mse or l1"):
        build_experiment(cfg, torch.device("cpu"))


def test_text_data_is_one_line(compose, data_overrides):
    cfg = compose([*QUICK, "data=text_csv", *data_overrides("text_csv")])
    with pytest.raises(ConfigError, match="task=autoencoder reconstructs numeric inputs"):
        build_experiment(cfg, torch.device("cpu"))


@pytest.mark.parametrize("extra", [["model.encoder=conv", "task.denoise=masking"], ["task.loss=l1"]])
def test_a_fast_dev_run_on_digits_writes_reconstruction_metrics_and_no_predictions(compose, tmp_path, extra):
    summary = train(compose([*QUICK, *extra]), run_dir=tmp_path / "run")
    assert summary["status"] == "completed" and summary["loss"] == ("l1" if "task.loss=l1" in extra else "mse")
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train_loss", "val_loss"} <= set(header) and "val_accuracy" not in header
    assert set(summary["test"]) == ({"loss", "noisy_loss"} if "task.denoise=masking" in extra else {"loss"})
    assert not (tmp_path / "run" / "predictions.csv").exists()


def test_a_fast_dev_run_on_a_table(compose, tmp_path, data_overrides):
    cfg = compose([*QUICK, "data=csv", "data.target=Class", "data.missing=mean", "model.bottleneck=2",
                   "task.denoise=gaussian", *data_overrides("csv")])
    summary = train(cfg, run_dir=tmp_path / "run")
    assert summary["status"] == "completed" and summary["test"]["loss"] > 0


def test_the_noisy_test_loss_is_the_same_every_run(compose, tmp_path):
    cfg = [*QUICK, "task.denoise=gaussian", "task.noise=1.0"]
    first = train(compose(cfg), run_dir=tmp_path / "a")["test"]
    second = train(compose(cfg), run_dir=tmp_path / "b")["test"]
    assert first == second and first["noisy_loss"] > first["loss"]  # the noise is strong: worse than clean


EXACT = [*AE, "task.denoise=gaussian", "regularization.dropout=0.2", "model.hidden=[16]", "model.bottleneck=4",
         "trainer.limit_train_batches=6", "trainer.early_stopping.patience=9"]


@pytest.mark.slow  # tests/test_resume.py's mid-epoch interrupt of a denoising task=autoencoder runs by default
def test_an_interrupted_denoising_autoencoder_resumes_exactly(compose, tmp_path, monkeypatch):
    train(compose([*EXACT, "trainer.max_epochs=3"]), run_dir=tmp_path / "straight")
    stop_in_step(monkeypatch, 9)  # step 10: epoch 2, batch 4 of 6
    with pytest.raises(Interrupted):
        train(compose([*EXACT, "trainer.max_epochs=3"]), run_dir=tmp_path / "first")
    monkeypatch.undo()
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    summary = train(compose([f"resume={last}", "device=cpu"]), run_dir=tmp_path / "resumed")
    assert rows(tmp_path / "resumed") == rows(tmp_path / "straight")
    for name in ("last.pt", "best.pt"):
        assert same_weights(tmp_path / "resumed" / "checkpoints" / name, tmp_path / "straight" / "checkpoints" / name)
    straight = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert summary["test"] == straight["test"]


def test_dltrain_eval_reports_the_reconstruction_loss(compose, tmp_path):
    summary = train(compose([*AE, "trainer.max_epochs=2", "model.encoder=conv", "trainer.limit_train_batches=2",
                             "trainer.diagnostics=false"]), run_dir=tmp_path / "run")
    result = evaluate_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt", device="cpu")
    assert set(result["metrics"]) == {"loss"}
    assert result["metrics"]["loss"] == pytest.approx(summary["test"]["loss"], rel=1e-5)


def test_the_lr_range_test_steps_the_reconstruction_loss(compose):
    from dltrain.training.lr_find import lr_find

    cfg = compose([*AE, "model.bottleneck=8"])
    found = lr_find(cfg, start_lr=1e-7, end_lr=1e-6, num_steps=10)  # too small a rate to move the weights
    exp = build_experiment(compose([*AE, "model.bottleneck=8"]), torch.device("cpu"))  # the same seeded start
    x = exp.data.x_train[:64]
    with torch.no_grad():
        first = float(((exp.model(x) - x) ** 2).mean())
    assert found.losses[0] == pytest.approx(first, rel=0.3)  # the first batch's error against its inputs


@pytest.mark.parametrize(("override", "words"), [
    ("loss=cross_entropy", "loss=cross_entropy does not apply to task=autoencoder: its loss compares"),
    ("regularization.augment=[hflip,mixup]", "regularization.augment=[hflip,mixup] does not apply to "
                                             "task=autoencoder: mixup mixes class targets"),
    ("regularization.label_smoothing=0.1", "regularization.label_smoothing=0.1 does not apply to task=autoencoder"),
])
def test_supervised_keys_an_autoencoder_would_ignore_are_refused_before_it_builds(compose, override, words):
    with pytest.raises(ConfigError) as err:
        build_experiment(compose([*AE, override]), torch.device("cpu"))
    assert str(err.value).startswith(words) and "\n" not in str(err.value)

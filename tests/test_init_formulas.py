"""Every init scheme draws the weights its formula names, within sampling error.

The formulas are the textbook ones: Xavier/Glorot N(0, 2/(fan_in+fan_out)) and
U(-a, a) with a = sqrt(6/(fan_in+fan_out)) (no activation gain, as in Glorot & Bengio and
Keras's ``glorot_*``), He N(0, 2/fan_in) for ReLU, fan-in N(0, 1/n) and U(-1/sqrt(n), 1/sqrt(n)).

A moment is checked against the formula within 5 standard errors of its estimate, the error
worked out from the sample itself, so the tolerance suits a layer of any size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from dltrain import train
from dltrain.build import build_experiment
from dltrain.errors import ConfigError
from dltrain.init import FORMULAS, INITS, apply_init, init_formula
from dltrain.models.summary import format_summary, summarize
from dltrain.training.checkpoint import load_checkpoint, save_checkpoint
from dltrain.training.resume import find_checkpoint
from tests.files import write_mnist

FAN_IN, FAN_OUT = 800, 1000
TANH_GAIN = 5 / 3


@dataclass
class Law:
    """What a scheme promises of one weight tensor: variance, and the bound of a uniform law."""

    variance: float
    bound: float | None = None  # uniform on [-bound, bound]; None: normal

    @classmethod
    def uniform(cls, bound: float) -> Law:
        return cls(bound**2 / 3, bound)


def assert_drawn_from(weight: torch.Tensor, law: Law) -> None:
    """The weights' mean, second moment, kurtosis and range agree with ``law`` (mean 0)."""
    x = weight.detach().double().flatten()
    n = x.numel()
    m2, m4 = (x**2).mean().item(), (x**4).mean().item()
    assert abs(x.mean().item()) < 5 * math.sqrt(m2 / n)
    # the standard error of a mean of x^2 is sqrt(Var(x^2) / n), Var(x^2) = E[x^4] - E[x^2]^2
    assert abs(m2 - law.variance) < 5 * math.sqrt((m4 - m2**2) / n), (m2, law.variance)
    kurtosis = 9 / 5 if law.bound else 3.0  # of a uniform law, of a normal one
    assert abs(m4 / m2**2 - kurtosis) < 5 * math.sqrt(24 / n)
    if law.bound is not None:
        top = x.abs().max().item()
        # the largest of n uniform draws falls short of the bound by more than 20/n of it
        # with probability (1 - 20/n)^n < e^-20
        assert law.bound * (1 - 20 / n) < top <= law.bound * (1 + 1e-6), (top, law.bound)


def big_linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(FAN_IN, FAN_OUT)


#: scheme -> the law of a Linear(fan_in, fan_out)'s weight under a model with ReLU.
LAWS = {
    "xavier_normal": lambda i, o: Law(2 / (i + o)),
    "xavier_uniform": lambda i, o: Law.uniform(math.sqrt(6 / (i + o))),
    "he_normal": lambda i, o: Law(2 / i),
    "he_uniform": lambda i, o: Law.uniform(math.sqrt(6 / i)),
    "fan_in_normal": lambda i, o: Law(1 / i),
    "fan_in_uniform": lambda i, o: Law.uniform(1 / math.sqrt(i)),
    "default": lambda i, o: Law.uniform(1 / math.sqrt(i)),  # PyTorch's kaiming_uniform_(a=sqrt(5))
}
#: The schemes whose weights are not random: checked exactly below.
EXACT = {"orthogonal", "zeros", "constant"}


def test_every_scheme_has_its_law_pinned():
    assert set(LAWS) | EXACT == set(INITS.names())
    assert set(FORMULAS) | {"default"} == set(INITS.names())  # and the summary can name its formula


@pytest.mark.parametrize("name", sorted(LAWS))
def test_linear_weights_follow_the_formula(name):
    layer = big_linear()
    apply_init(layer, name, activation="relu")
    assert_drawn_from(layer.weight, LAWS[name](FAN_IN, FAN_OUT))
    if name == "default":  # PyTorch draws the bias from the same range
        assert_drawn_from(layer.bias, Law.uniform(1 / math.sqrt(FAN_IN)))
    else:
        assert torch.all(layer.bias == 0)


@pytest.mark.parametrize("name", sorted(LAWS))
def test_conv_fans_count_the_kernel_area(name):
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 64, kernel_size=3)  # fan_in = 32 * 3 * 3, fan_out = 64 * 3 * 3
    apply_init(conv, name, activation="relu")
    assert_drawn_from(conv.weight, LAWS[name](32 * 9, 64 * 9))


@pytest.mark.parametrize("activation", [None, "relu", "tanh", "sigmoid", "identity"])
@pytest.mark.parametrize("name", ["xavier_normal", "xavier_uniform"])
def test_xavier_has_no_activation_gain(name, activation):
    layer = big_linear()
    assert apply_init(layer, name, activation=activation) == {"": name}
    assert_drawn_from(layer.weight, LAWS[name](FAN_IN, FAN_OUT))


@pytest.mark.parametrize(("options", "gain"), [({"gain": 2.0}, 2.0), ({"gain": 0.5}, 0.5),
                                               ({"nonlinearity": "relu"}, math.sqrt(2)),
                                               ({"nonlinearity": "tanh"}, TANH_GAIN)])
def test_xavier_gain_on_request_scales_the_variance_by_its_square(options, gain):
    normal, uniform = big_linear(), big_linear()
    apply_init(normal, "xavier_normal", activation="identity", **options)
    apply_init(uniform, "xavier_uniform", activation="identity", **options)
    assert_drawn_from(normal.weight, Law(gain**2 * 2 / (FAN_IN + FAN_OUT)))
    assert_drawn_from(uniform.weight, Law.uniform(gain * math.sqrt(6 / (FAN_IN + FAN_OUT))))


def test_xavier_gain_and_nonlinearity_together_are_refused():
    with pytest.raises(ConfigError, match=r"^init.gain=2 and init.nonlinearity=relu both set the gain: keep one"):
        apply_init(big_linear(), "xavier_normal", gain=2.0, nonlinearity="relu")


def test_a_config_with_both_gains_fails_before_the_data_is_loaded(compose, monkeypatch):
    monkeypatch.setattr("dltrain.build.load_data", lambda *a, **k: pytest.fail("the data was loaded"))
    cfg = compose(["init=xavier_uniform", "init.gain=0.5", "init.nonlinearity=tanh"])
    with pytest.raises(ConfigError, match=r"^init.gain=0.5 and init.nonlinearity=tanh both set the gain"):
        build_experiment(cfg, torch.device("cpu"))


def test_he_normal_matches_the_activation():
    layer = big_linear()
    apply_init(layer, "he_normal", activation="tanh")
    assert_drawn_from(layer.weight, Law(TANH_GAIN**2 / FAN_IN))


@pytest.mark.parametrize(("shape", "activation", "gain"), [((256, 256), "relu", math.sqrt(2)),
                                                           ((300, 700), "tanh", TANH_GAIN),
                                                           ((700, 300), "identity", 1.0)])
def test_orthogonal_gram_matrix_is_gain_squared_identity(shape, activation, gain):
    torch.manual_seed(0)
    layer = nn.Linear(shape[1], shape[0])
    apply_init(layer, "orthogonal", activation=activation)
    w = layer.weight.double()
    gram = w @ w.T if shape[0] <= shape[1] else w.T @ w  # the orthonormal side: rows or columns
    torch.testing.assert_close(gram, gain**2 * torch.eye(min(shape), dtype=torch.double), atol=1e-5, rtol=0)


def test_zeros_and_constant_are_exact():
    layer = big_linear()
    apply_init(layer, "zeros")
    assert torch.all(layer.weight == 0) and torch.all(layer.bias == 0)
    apply_init(layer, "constant", value=0.25)
    assert torch.all(layer.weight == 0.25) and torch.all(layer.bias == 0)


def keras_mnist_convnet(compose, root: Path, *extra: str):
    """Keras's MNIST example: conv32-pool-conv64-pool-flatten-dropout(0.5)-dense10, on 28x28x1."""
    write_mnist(root)
    cfg = compose(["data=mnist", f"data.root={root}", "data.download=false", "model=cnn",
                   "model.channels=[32,64]", "model.kernel_size=3", "model.padding=valid", "model.hidden=[]",
                   "regularization.dropout=0.5", "init=xavier_uniform", "device=cpu", *extra])
    return build_experiment(cfg, torch.device("cpu"))


def fans(module: nn.Module) -> tuple[int, int]:
    w = module.weight
    area = math.prod(w.shape[2:])
    return w.shape[1] * area, w.shape[0] * area


def test_keras_convnet_with_default_xavier_gets_glorots_variance(compose, tmp_path):
    exp = keras_mnist_convnet(compose, tmp_path)
    layers = [m for m in exp.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [type(m).__name__ for m in layers] == ["Conv2d", "Conv2d", "Linear"]
    assert fans(layers[-1]) == (64 * 5 * 5, 10)  # 28 -conv-> 26 -pool-> 13 -conv-> 11 -pool-> 5
    for module in layers:  # the model's ReLU changes nothing, the output layer included
        fan_in, fan_out = fans(module)
        assert_drawn_from(module.weight, Law.uniform(math.sqrt(6 / (fan_in + fan_out))))
        assert torch.all(module.bias == 0)
    text = format_summary(exp.summary_rows, exp.model)
    assert "Init xavier_uniform: w ~ U(-a, a), a = sqrt(6/(fan_in+fan_out)), b = 0" in text.splitlines()
    assert {r.init for r in exp.summary_rows if r.params} == {"xavier_uniform"}


def test_keras_convnet_with_relu_gain_asked_for(compose, tmp_path):
    exp = keras_mnist_convnet(compose, tmp_path, "init.nonlinearity=relu")
    for module in (m for m in exp.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))):
        fan_in, fan_out = fans(module)
        assert_drawn_from(module.weight, Law.uniform(math.sqrt(2) * math.sqrt(6 / (fan_in + fan_out))))
    assert "Init xavier_uniform(relu): w ~ U(-a, a), a = sqrt(12/(fan_in+fan_out)), b = 0" in \
        format_summary(exp.summary_rows, exp.model)


@pytest.mark.parametrize(("label", "formula"), [
    ("xavier_normal", "w ~ N(0, variance 2/(fan_in+fan_out))"),
    ("xavier_normal(gain=2)", "w ~ N(0, variance 8/(fan_in+fan_out))"),
    ("xavier_uniform(relu)", "w ~ U(-a, a), a = sqrt(12/(fan_in+fan_out))"),
    ("he_normal(relu)", "w ~ N(0, variance 2/fan_in)"),
    ("he_normal(identity)", "w ~ N(0, variance 1/fan_in)"),
    ("he_uniform(relu)", "w ~ U(-a, a), a = sqrt(6/fan_in)"),
    ("fan_in_normal", "w ~ N(0, variance 1/fan_in)"),
    ("fan_in_uniform", "w ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))"),
    ("orthogonal(relu)", "w = 1.414 * Q, Q (out, fan_in) with orthonormal rows or columns"),
    ("zeros", "w = 0"),
    ("constant(0.25)", "w = 0.25"),
])
def test_formula_of_each_label(label, formula):
    assert init_formula(label) == f"{label}: {formula}, b = 0"


def test_summary_names_each_scheme_once_with_its_formula():
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    rows = summarize(model, (8,), apply_init(model, "he_normal", activation="relu"))
    lines = format_summary(rows, model).splitlines()
    assert [line for line in lines if line.startswith("Init ")] == [
        "Init he_normal(relu): w ~ N(0, variance 2/fan_in), b = 0",
        "Init default: PyTorch's own (norm layers: w = 1, b = 0)"]


def test_default_describes_the_layers_it_labels():
    model = nn.Sequential(nn.Embedding(10, 8), nn.Flatten(), nn.Linear(16, 16), nn.LayerNorm(16), nn.Linear(16, 4))
    example = torch.zeros(3, 2, dtype=torch.long)
    lines = {scheme: [line for line in format_summary(summarize(model, example, apply_init(model, scheme)),
                                                      model).splitlines() if line.startswith("Init default")]
             for scheme in ("xavier_normal", "default")}
    assert lines["xavier_normal"] == ["Init default: PyTorch's own (norm layers: w = 1, b = 0; Embedding: w ~ N(0, 1))"]
    assert lines["default"] == ["Init default: PyTorch's own (Linear, Conv: w, b ~ U(-1/sqrt(fan_in), "
                                "1/sqrt(fan_in)); norm layers: w = 1, b = 0; Embedding: w ~ N(0, 1))"]


@pytest.mark.parametrize(("scheme", "options", "label"), [
    ("xavier_normal", {"gain": 1.0000001}, "xavier_normal(gain=1.0000001)"),
    ("xavier_normal", {"gain": 2.0}, "xavier_normal(gain=2)"),
    ("constant", {"value": 0.0100001}, "constant(0.0100001)"),
])
def test_labels_name_the_exact_value(scheme, options, label):
    assert apply_init(big_linear(), scheme, **options) == {"": label}
    assert init_formula(label).startswith(f"{label}: ")


def test_a_checkpoint_without_init_gain_resumes(compose, tmp_path, monkeypatch):
    """A run started before ``init.gain`` existed continues, by path and by ``resume=auto``."""
    monkeypatch.chdir(tmp_path)
    mlp = ["init=xavier_normal", "model.hidden=[16]"]
    train(compose([*mlp, "trainer.max_epochs=1"]), run_dir=tmp_path / "first")
    assert "Init xavier_normal: w ~ N(0, variance 2/(fan_in+fan_out)), b = 0" in \
        (tmp_path / "first" / "model_summary.txt").read_text()
    old = load_checkpoint(tmp_path / "first" / "checkpoints" / "last.pt")
    del old["config"]["init"]["gain"]  # as written before the key existed
    save_checkpoint(old, Path("outputs/old/checkpoints/last.pt"))
    current = compose([*mlp, "trainer.max_epochs=2", "resume=auto"])
    assert find_checkpoint("auto", OmegaConf.to_container(current, resolve=True)) == Path("outputs/old/checkpoints/last.pt")
    summary = train(compose(["trainer.max_epochs=2", "resume=outputs/old/checkpoints/last.pt"]),
                    run_dir=tmp_path / "resumed")
    assert summary["status"] == "completed" and summary["epochs_run"] == 2

"""What the trainer adds around a step: augmentation on training batches only, gradient
clipping, the learning-rate schedule, autocast, and the model checks before training."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

from dltrain import train
from dltrain.build import build_experiment
from dltrain.errors import ConfigError
from dltrain.models import MODELS
from dltrain.training.callbacks import EarlyStopping
from dltrain.training.device import resolve_precision
from dltrain.training.trainer import StepOptions, Trainer

from .test_catalog import DATA_FOR, REQUIRED


def read_metrics(run_dir) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_augmentation_touches_training_batches_only(compose):
    """The real augmentation, built from the config: it sees every training batch and
    nothing else, and the stored validation and test inputs are left as they were."""
    cfg = compose(["regularization.augment=[hflip,rotate,shift,zoom,brightness,contrast]", "device=cpu",
                   "trainer.batch_size=256"])
    exp = build_experiment(cfg, torch.device("cpu"))
    x_val, x_test, x_train = exp.data.x_val.clone(), exp.data.x_test.clone(), exp.data.x_train.clone()
    seen: list[int] = []

    def spy(x):
        seen.append(id(x))
        out = exp.augment(x)
        assert out.shape == x.shape and not torch.equal(out, x)
        return out

    train_batches, val_batches, test_batches = exp.batches
    trainer = Trainer(exp.model, exp.optimizer, exp.loss_fn, exp.data.task, max_epochs=2,
                      stopper=EarlyStopping("val_loss"), options=StepOptions(augment=spy))
    trainer.fit(train_batches, val_batches)
    trainer.evaluate(test_batches)
    assert len(seen) == 2 * len(train_batches)
    assert torch.equal(exp.data.x_val, x_val) and torch.equal(exp.data.x_test, x_test)
    assert torch.equal(exp.data.x_train, x_train)  # batches are augmented copies, never the stored data


def test_augmentation_needs_images(compose):
    from dltrain.data.augment import build_augment

    with pytest.raises(ConfigError, match=r"regularization.augment needs images"):
        build_augment(["rotate"], {}, (64,))


def one_step(**kwargs) -> nn.Linear:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(16, 4) * 100, torch.randint(0, 3, (16,))
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), nn.CrossEntropyLoss(), "multiclass",
                      max_epochs=1, stopper=EarlyStopping("val_loss"), options=StepOptions(**kwargs))
    trainer.train_step(x, y)
    return model


def test_grad_clip_bounds_the_total_norm():
    raw = torch.cat([p.grad.flatten() for p in one_step().parameters()]).norm()
    clipped = torch.cat([p.grad.flatten() for p in one_step(grad_clip=1.0).parameters()]).norm()
    assert raw > 10 and clipped == pytest.approx(1.0, rel=1e-4)


def test_grad_clip_value_bounds_every_element():
    grads = torch.cat([p.grad.flatten() for p in one_step(grad_clip_value=0.5).parameters()])
    assert grads.abs().max() == pytest.approx(0.5)


def test_l1_penalty_reaches_the_gradient():
    """The weight gradient gains l1 * sign(w); the bias gradient gains nothing."""
    from dltrain.regularization import WeightPenalty

    torch.manual_seed(0)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    grads = []
    for l1 in (0.0, 0.5):
        torch.manual_seed(1)
        model = nn.Linear(4, 3)
        trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), nn.CrossEntropyLoss(), "multiclass",
                          max_epochs=1, stopper=EarlyStopping("val_loss"),
                          options=StepOptions(penalty=WeightPenalty(model, l1=l1)))
        trainer.train_step(x, y)
        grads.append((model.weight.grad, model.bias.grad, model.weight.detach()))
    (w0, b0, weight), (w1, b1, _) = grads
    assert torch.allclose(w1 - w0, 0.5 * weight.sign()) and torch.equal(b1, b0)


def test_logged_lr_follows_the_schedule(compose, tmp_path):
    train(compose(["scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.5", "optim.lr=0.01",
                   "trainer.max_epochs=3", "trainer.early_stopping.enabled=false"]), run_dir=tmp_path)
    assert [float(r["lr"]) for r in read_metrics(tmp_path)] == pytest.approx([0.01, 0.005, 0.0025])


def test_warmup_then_cosine_is_logged(compose, tmp_path):
    train(compose(["scheduler=cosine", "scheduler.warmup_epochs=3", "optim.lr=0.01", "trainer.max_epochs=5",
                   "trainer.early_stopping.enabled=false"]), run_dir=tmp_path)
    lrs = [float(r["lr"]) for r in read_metrics(tmp_path)]
    assert lrs[:4] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])  # then cosine over the 2 epochs left
    assert lrs[4] == pytest.approx(0.005)


def test_plateau_monitor_must_be_logged(compose, tmp_path):
    with pytest.raises(ConfigError, match="scheduler.monitor=val_f1 is never logged"):
        train(compose(["scheduler=plateau", "scheduler.monitor=val_f1"]), run_dir=tmp_path)


def test_bf16_autocast_trains_on_cpu(compose, tmp_path):
    summary = train(compose(["trainer.precision=bf16", "device=cpu", "trainer.max_epochs=3"]), run_dir=tmp_path)
    assert summary["test"]["accuracy"] > 0.8


def test_float16_is_refused_on_cpu():
    with pytest.raises(ConfigError, match="trainer.precision=16 needs a CUDA device .* use trainer.precision=bf16"):
        resolve_precision("16", torch.device("cpu"))
    assert resolve_precision("32", torch.device("cpu")) is None
    assert resolve_precision("bf16", torch.device("cpu")) is torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_float16_with_grad_scaler_on_cuda(compose, tmp_path):
    summary = train(compose(["trainer.precision=16", "device=cuda", "trainer.max_epochs=3"]), run_dir=tmp_path)
    assert summary["test"]["accuracy"] > 0.8


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [["model=mlp"], ["model=lstm", "loss=nll"]])
def test_compiled_model_trains_like_the_eager_one(compose, tmp_path, overrides):
    base = [*overrides, "device=cpu", "trainer.max_epochs=2"]
    eager = train(compose(base), run_dir=tmp_path / "eager")
    compiled = train(compose([*base, "trainer.compile=true"]), run_dir=tmp_path / "compiled")
    assert compiled["test"]["accuracy"] > 0.3  # chance is 0.1
    assert compiled["test"]["accuracy"] == pytest.approx(eager["test"]["accuracy"], abs=0.05)
    # checkpoints hold the plain module's weights, loadable without torch.compile
    state = torch.load(tmp_path / "compiled" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert not any(k.startswith("_orig_mod") for k in state)


def test_nll_models_end_in_log_softmax(compose, tmp_path):
    for model in ("mlp", "lstm"):
        cfg = compose(["loss=nll", f"model={model}", "init=orthogonal"])
        exp = build_experiment(cfg, torch.device("cpu"))
        out = exp.model(exp.data.x_val[:4])
        assert torch.allclose(out.exp().sum(dim=1), torch.ones(4), atol=1e-5)
        assert exp.summary_rows[-1].kind == "LogSoftmax" and not exp.warnings
        # the summary's init column still names each layer's scheme after the wrapping
        assert all(row.init.startswith("orthogonal") for row in exp.summary_rows if row.kind in ("Linear", "LSTM"))


def test_binary_width_follows_the_loss():
    from dltrain.losses import LOSSES

    assert LOSSES.build("bce", task="binary", num_outputs=2).output_width == 1
    assert LOSSES.build("cross_entropy", task="binary", num_outputs=2).output_width == 2


# --- model=custom, end to end -------------------------------------------------------

def test_custom_model_trains_with_its_own_keys(compose, tmp_path):
    summary = train(compose(["model=custom", "model._target_=tests.nets.TinyNet", "+model.width=32",
                             "trainer.max_epochs=3"]), run_dir=tmp_path)
    assert summary["test"]["accuracy"] > 0.8
    assert "body.1" in (tmp_path / "model_summary.txt").read_text()
    assert summary["num_params"] == 64 * 32 + 32 + 32 * 10 + 10


def test_softmax_before_cross_entropy_warns(compose, tmp_path, caplog):
    summary = train(compose(["model=custom", "model._target_=tests.nets.softmax_net", "trainer.fast_dev_run=true"]),
                    run_dir=tmp_path)
    assert any("ends in Softmax and loss=cross_entropy applies softmax on top of it" in w for w in summary["warnings"])
    assert "ends in Softmax" in caplog.text
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["warnings"] == summary["warnings"]


def test_custom_output_size_must_match_the_classes(compose, tmp_path):
    with pytest.raises(ConfigError, match=r"model=custom outputs shape \(2, 5\) for a batch of 2, but "
                                          r"loss=cross_entropy on this data needs \(2, 10\)"):
        train(compose(["model=custom", "model._target_=tests.nets.fixed_width_net"]), run_dir=tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"


def test_regularization_on_custom_model_warns(compose, tmp_path):
    summary = train(compose(["model=custom", "model._target_=tests.nets.TinyNet", "regularization.dropout=0.5",
                             "trainer.fast_dev_run=true"]), run_dir=tmp_path)
    assert any("regularization.dropout=0.5 does not apply to model=custom" in w for w in summary["warnings"])


# --- the textbook result on initialisation ------------------------------------------

@pytest.mark.parametrize("init,low,high", [("zeros", 0.0, 0.2), ("he_normal", 0.9, 1.0)])
def test_zero_init_never_breaks_symmetry_he_normal_learns(compose, tmp_path, init, low, high):
    """All-zero weights give every hidden unit the same (zero) gradient: the network can
    only learn the class prior, so it stays near chance (0.1) on ten digits."""
    summary = train(compose([f"init={init}", "trainer.max_epochs=10"]), run_dir=tmp_path)
    assert low <= summary["test"]["accuracy"] <= high


# --- combinations caught at start-up --------------------------------------------------

@pytest.mark.parametrize("overrides,expected", [
    (["model=custom", "model._target_=tests.nets.TupleNet"], "model=custom returned a tuple, not a tensor"),
    (["model=custom", "model._target_=tests.nets.TinyNet", "+model.num_outputs=3"],
     "model.num_outputs is passed by dltrain from the data: remove +model.num_outputs"),
    (["model=custom", "model._target_=tests.nets.NoParams"], "model=custom has no trainable parameters"),
    (["model=custom", "model._target_=tests.nets.NoAutocast", "trainer.precision=bf16"],
     "trainer.precision=bf16: model=custom cannot run in bfloat16 on this device"),
    (["trainer.batch_size=1", "regularization.batch_norm=true"],
     "regularization.batch_norm=true cannot normalise batches of one example"),
    (["trainer.batch_size=1", "model=custom", "model._target_=tests.nets.batch_norm_net"],
     "model=custom has batch norm layers, which cannot normalise batches of one example"),
    (["model=custom", "model._target_=tests.nets.NeedsMask"],
     "model=custom: dltrain calls forward(x) with one tensor, but"),
    (["model=custom", "model._target_=tests.nets.TupleNet", "loss=nll"], "model=custom returned a tuple"),
    (["optim=lbfgs", "regularization.grad_clip=1.0"], "regularization.grad_clip would hand optim=lbfgs"),
    (["optim.foreach=true", "optim.fused=true"], "optim=adam: `fused` and `foreach` cannot be `True` together"),
    (["scheduler=onecycle", "scheduler.pct_start=0.5", "trainer.fast_dev_run=true"],
     "scheduler=onecycle cannot split 2 optimizer steps"),
])
def test_impossible_combinations_fail_before_training(compose, tmp_path, overrides, expected):
    with pytest.raises(ConfigError) as info:
        train(compose(overrides), run_dir=tmp_path)
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"


def _bf16_step_runs(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether this torch, on this CPU, has the bfloat16 kernels for a forward and backward
    pass of ``model`` under autocast: asked of torch directly, not of dltrain's check."""
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        out.float().sum().backward()
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("model", [name for name in MODELS.names() if not MODELS.facts(name).user_code])
def test_bf16_trains_or_says_it_cannot(compose, tmp_path, data_overrides, model):
    """Some CPUs have no bfloat16 kernel for a layer (oneDNN's LSTM): that is one line
    naming trainer.precision, never a traceback in the first step. Which of the two
    happens is decided by probing torch here, so a refusal where torch can run the model
    (or a traceback where it cannot) fails. A model that cannot read the digits reads the
    data the catalog trains it on."""
    data = DATA_FOR.get(("model", model))
    overrides = [f"model={model}", "trainer.precision=bf16", "device=cpu", *REQUIRED.get(("model", model), []),
                 *([f"data={data}", *data_overrides(data)] if data else [])]  # REQUIRED: a model's task
    exp = build_experiment(compose(overrides), torch.device("cpu"))
    runs = _bf16_step_runs(exp.model, exp.data.x_train[:2])
    cfg = compose([*overrides, "trainer.fast_dev_run=true"])
    if runs:
        assert train(cfg, run_dir=tmp_path)["status"] == "completed"
    else:
        with pytest.raises(ConfigError, match=rf"^trainer\.precision=bf16: model={model} cannot run in bfloat16"):
            train(cfg, run_dir=tmp_path)


def test_lazy_custom_model_takes_any_init(compose, tmp_path):
    summary = train(compose(["model=custom", "model._target_=tests.nets.lazy_net", "init=he_normal",
                             "trainer.max_epochs=2"]), run_dir=tmp_path)
    assert summary["num_params"] == 64 * 32 + 32 + 32 * 10 + 10
    assert "he_normal(relu)" in (tmp_path / "model_summary.txt").read_text()


def test_nll_wraps_a_custom_model_too(compose):
    exp = build_experiment(compose(["loss=nll", "model=custom", "model._target_=tests.nets.TinyNet"]),
                           torch.device("cpu"))
    out = exp.model(exp.data.x_val[:4])
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(4), atol=1e-5) and not exp.warnings
    soft = build_experiment(compose(["loss=nll", "model=custom", "model._target_=tests.nets.softmax_net"]),
                            torch.device("cpu"))
    assert any("ends in Softmax and loss=nll applies log-softmax" in w for w in soft.warnings)


def test_sgd_under_onecycle_keeps_its_momentum(compose):
    exp = build_experiment(compose(["optim=sgd", "scheduler=onecycle"]), torch.device("cpu"))
    assert all(g["momentum"] == 0.0 for g in exp.optimizer.param_groups)


@pytest.mark.parametrize("overrides,expected", [
    (["scheduler=cosine", "scheduler.T_max=2", "trainer.max_epochs=6"], "scheduler.T_max=2 is shorter than"),
    (["scheduler.warmup_epochs=5", "trainer.max_epochs=3"], "the learning rate never reaches optim.lr"),
])
def test_schedules_that_will_not_do_what_they_say_warn(compose, overrides, expected):
    exp = build_experiment(compose(overrides), torch.device("cpu"))
    assert any(expected in w for w in exp.warnings)


@pytest.mark.parametrize("model", ["mlp", "lstm", "custom"])
def test_nll_keeps_the_weight_names(compose, model):
    """Checkpoints of an nll run load into the same model built for cross_entropy."""
    extra = ["model._target_=tests.nets.TinyNet"] if model == "custom" else []
    keys = {}
    for loss in ("nll", "cross_entropy"):
        exp = build_experiment(compose([f"model={model}", f"loss={loss}", *extra]), torch.device("cpu"))
        keys[loss] = set(exp.model.state_dict())
    assert keys["nll"] == keys["cross_entropy"]


def test_a_model_ending_in_log_softmax_is_left_alone_under_nll(compose):
    exp = build_experiment(compose(["loss=nll", "model=custom", "model._target_=tests.nets.LogSoftmaxNet"]),
                           torch.device("cpu"))
    assert [r.kind for r in exp.summary_rows].count("LogSoftmax") == 1 and not exp.warnings
    out = exp.model(exp.data.x_val[:3])
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(3), atol=1e-5)


@pytest.mark.parametrize("loss", ["cross_entropy", "nll"])
def test_trap_warning_follows_the_call_order(compose, loss):
    exp = build_experiment(compose([f"loss={loss}", "model=custom", "model._target_=tests.nets.HeadFirst"]),
                           torch.device("cpu"))
    assert any("ends in Softmax" in w for w in exp.warnings)


def test_onecycle_leaves_adam_without_beta1_alone(compose):
    exp = build_experiment(compose(["scheduler=onecycle", "optim.betas=[0.0,0.999]"]), torch.device("cpu"))
    assert all(tuple(g["betas"]) == (0.0, 0.999) for g in exp.optimizer.param_groups)


# --- trainer.channels_last and trainer.cudnn_benchmark -----------------------------------

CNN = ["model=cnn", "model.channels=[8,16]", "model.hidden=[16]", "regularization.batch_norm=true", "device=cpu"]


def nhwc(t: torch.Tensor) -> bool:
    """Laid out channels_last and not also in the default layout (as one channel would be)."""
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def test_channels_last_converts_the_cnn_and_keeps_the_loss(compose):
    """Digits (one channel): conv2's weights and every activation after conv1 are channels_last."""
    losses = {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        exp = build_experiment(compose([*CNN, f"trainer.channels_last={channels_last}"]), torch.device("cpu"))
        assert nhwc(exp.model.conv2.weight) == channels_last and not exp.warnings
        trainer = Trainer(exp.model, exp.optimizer, exp.loss_fn, exp.data.task, max_epochs=1,
                          stopper=EarlyStopping("val_loss"),
                          options=StepOptions(memory_format=torch.channels_last if channels_last else None))
        batches = iter(exp.batches[0])
        losses[channels_last] = torch.stack([trainer.train_step(*next(batches))[1].detach() for _ in range(3)])
        assert nhwc(exp.model.conv2.weight) == channels_last  # the optimizer's steps keep the layout
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-5, atol=1e-6)


def test_the_trainer_hands_the_model_batches_in_its_memory_format():
    """Three-channel images stored in the default layout: the model sees channels_last
    batches in training and evaluation alike."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).to(
        memory_format=torch.channels_last)
    seen: list[bool] = []
    model.register_forward_pre_hook(lambda _module, args: seen.append(nhwc(args[0])))
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), "multiclass",
                      max_epochs=1, stopper=EarlyStopping("val_loss"),
                      options=StepOptions(memory_format=torch.channels_last,
                                          augment=lambda x: x.flip(-1).contiguous()))  # it loses the layout
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 2, (8,))
    trainer.train_step(x, y)
    trainer.evaluate([(x, y)])
    assert seen == [True, True]


@pytest.mark.parametrize("overrides,expected", [
    (["data=sine"], "trainer.channels_last=true only changes image models; ignored for data=sine, whose examples "
                    "have shape (1,), not (channels, height, width)"),
    (["model=mlp"], "trainer.channels_last=true only changes convolutions; ignored for model=mlp, which has none"),
])
def test_channels_last_where_it_changes_nothing_is_a_warning(compose, overrides, expected):
    exp = build_experiment(compose([*overrides, "trainer.channels_last=true", "device=cpu"]), torch.device("cpu"))
    assert expected in exp.warnings
    assert all(p.is_contiguous() for p in exp.model.parameters())
    assert not build_experiment(compose([*overrides, "device=cpu"]), torch.device("cpu")).warnings


def test_cudnn_benchmark_changes_nothing_on_the_cpu(compose, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)  # left by an earlier CUDA run, say
    base = [*CNN, "trainer.fast_dev_run=true"]
    off = train(compose(base), run_dir=tmp_path / "off")
    on = train(compose([*base, "trainer.cudnn_benchmark=true"]), run_dir=tmp_path / "on")
    assert on["status"] == "completed" and on["test"] == off["test"] and not on["warnings"]
    assert torch.backends.cudnn.benchmark is False  # set on every run, and only CUDA runs turn it on


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cudnn_benchmark_is_set_for_each_cuda_run(compose, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # restored afterwards
    cuda = [*CNN, "device=cuda"]
    build_experiment(compose([*cuda, "trainer.cudnn_benchmark=true"]), torch.device("cuda"))
    assert torch.backends.cudnn.benchmark is True
    build_experiment(compose(cuda), torch.device("cuda"))  # the next run in this process: off again
    assert torch.backends.cudnn.benchmark is False


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_channels_last_on_cuda_trains_like_the_default_layout(compose, tmp_path):
    base = [*CNN, "device=cuda", "trainer.max_epochs=2", "regularization.augment=[crop,hflip]"]
    plain = train(compose(base), run_dir=tmp_path / "plain")
    fast = train(compose([*base, "trainer.channels_last=true", "trainer.cudnn_benchmark=true"]),
                 run_dir=tmp_path / "fast")
    assert fast["test"]["loss"] == pytest.approx(plain["test"]["loss"], rel=1e-2)

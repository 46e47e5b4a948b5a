"""``model=transformer``: the inputs it reads, the padding mask, pooling, norms, positions,
the init of attention, its refusals, and runs (text, digits as patches, exact resume)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from dltrain import train
from dltrain.errors import ConfigError
from dltrain.init import apply_init
from dltrain.models import MODELS, summarize
from dltrain.models.transformer import TransformerNet, sinusoidal
from tests.test_bad_input import error_line
from tests.test_resume import rows, same_weights

from .conftest import run_cli

SMALL = {"d_model": 16, "num_heads": 2, "num_layers": 2, "ff_dim": 32}


def net(input_shape, **kwargs) -> TransformerNet:
    torch.manual_seed(0)
    return MODELS.build("transformer", input_shape=input_shape, num_outputs=3, **{**SMALL, **kwargs})


def token_batch() -> torch.Tensor:
    """Two texts of 5 and 3 tokens, padded with 0 to 6."""
    return torch.tensor([[5, 3, 8, 2, 9, 0], [4, 7, 6, 0, 0, 0]])


@pytest.mark.parametrize(("shape", "options", "steps"), [
    ((6,), {"vocab_size": 10}, 6),  # token ids
    ((32, 3), {}, 32),  # (time, features) windows
    ((5,), {}, 5),  # a table's columns: one feature per step
    ((3, 8, 12), {}, 8),  # an image row by row
    ((3, 8, 12), {"patch_size": 4}, 6),  # 2 x 3 patches
])
def test_every_input_kind_gives_logits_per_example(shape, options, steps):
    model = net(shape, **options)
    x = torch.randint(1, 10, (4, *shape)) if "vocab_size" in options else torch.randn(4, *shape)
    assert model(x).shape == (4, 3)
    embedded = model.embed(x) if "vocab_size" in options else model._as_sequence(x)
    assert embedded.shape == (4, steps, SMALL["d_model"])


def test_patches_are_a_strided_convolution():
    model = net((1, 28, 28), patch_size=7)
    assert isinstance(model.embed, nn.Conv2d)
    assert model.embed.kernel_size == model.embed.stride == (7, 7)
    assert model._as_sequence(torch.randn(2, 1, 28, 28)).shape == (2, 16, SMALL["d_model"])


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_changes_nothing(pooling):
    model = net((6,), vocab_size=10, pooling=pooling).eval()
    x = token_batch()
    longer = torch.cat([x, torch.zeros(2, 5, dtype=x.dtype)], dim=1)  # five more padding steps
    with torch.no_grad():
        assert torch.allclose(model(x), model(longer), atol=1e-5)
        assert torch.allclose(model(x[1:, :3]), model(x)[1:], atol=1e-5)  # no padding at all
        # a token where the padding was changes the output: the mask is what hid it
        changed = x.clone()
        changed[1, 3] = 5
        assert not torch.allclose(model(changed)[1], model(x)[1], atol=1e-4)


def test_eval_outputs_agree_with_or_without_gradients():
    # Without gradients torch takes its fused encoder path; the results must match the plain one.
    model = net((6,), vocab_size=10).eval()
    with torch.no_grad():
        fused = model(token_batch())
    assert torch.allclose(model(token_batch()), fused, atol=1e-5)


def test_mean_pooling_averages_the_tokens_and_cls_reads_its_token():
    x = token_batch()
    for pooling in ("cls", "mean"):
        model = net((6,), vocab_size=10, pooling=pooling, dropout=0.0).eval()
        states = {}
        model.encoder.register_forward_hook(lambda _m, _i, out, states=states: states.update(out=out))
        pooled = {}
        model.out.register_forward_hook(lambda _m, inputs, _o, pooled=pooled: pooled.update(x=inputs[0]))
        model(x)
        out = states["out"]
        if pooling == "cls":
            assert out.shape[1] == 7 and isinstance(model.cls.weight, nn.Parameter)
            assert torch.equal(pooled["x"], out[:, 0])
        else:
            assert out.shape[1] == 6 and model.cls is None
            expected = torch.stack([out[0, :5].mean(0), out[1, :3].mean(0)])
            assert torch.allclose(pooled["x"], expected, atol=1e-6)


def test_pre_and_post_norm_differ_in_structure():
    pre, post = net((8, 2), norm_first=True), net((8, 2), norm_first=False)
    assert all(layer.norm_first for layer in pre.encoder.layers)
    assert not any(layer.norm_first for layer in post.encoder.layers)
    assert isinstance(pre.encoder.norm, nn.LayerNorm) and post.encoder.norm is None  # pre-norm ends normalised
    x = torch.randn(3, 8, 2)
    post.load_state_dict({k: v for k, v in pre.state_dict().items() if not k.startswith("encoder.norm.")})
    assert not torch.allclose(pre.eval()(x), post.eval()(x))


def test_sinusoidal_positions_follow_the_formula_and_are_no_weights():
    table = sinusoidal(50, 4)
    # PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)), d = 4
    assert table[1, 0].item() == pytest.approx(math.sin(1.0))
    assert table[1, 1].item() == pytest.approx(math.cos(1.0))
    assert table[2, 2].item() == pytest.approx(math.sin(2 / 100))
    assert table[7, 3].item() == pytest.approx(math.cos(7 / 100))
    assert table[0].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert sinusoidal(3, 5).shape == (3, 5)  # an odd width: one cosine fewer
    model = net((8, 2))
    assert not any("positions" in k for k in model.state_dict())
    x = torch.zeros(1, 600, 2)  # longer than the table of max_length 512: computed for it
    assert torch.allclose(model.positions(model.embed(x)) - model.embed(x), sinusoidal(600, 16), atol=1e-6)


def test_learned_positions_are_a_weight_per_position():
    model = net((8, 2), positional="learned", max_length=20)
    assert model.state_dict()["positions.weight"].shape == (20, SMALL["d_model"])
    seq = torch.zeros(1, 8, SMALL["d_model"])
    assert torch.equal(model.positions(seq)[0], model.positions.weight[:8].detach())
    with pytest.raises(ConfigError, match=r"^a sequence of 21 steps is longer than the model.max_length=20 "):
        model.positions(torch.zeros(1, 21, SMALL["d_model"]))


@pytest.mark.parametrize(("shape", "options", "message"), [
    ((8, 2), {"num_heads": 3}, r"^model.num_heads=3 does not divide model.d_model=16 .*: set model.num_heads to "
                               r"one of 1, 2, 4, 8, 16 or model.d_model to a multiple of it\.$"),
    ((1, 28, 28), {"patch_size": 5}, r"^model.patch_size=5 does not divide this data's images of 28x28 pixels: "
                                     r"set model.patch_size to one of 1, 2, 4, 7, 14, 28 \(or null: rows\)\.$"),
    ((8, 2), {"patch_size": 4}, r"^model.patch_size=4 cuts images into patches, but this data's examples have "
                                r"shape \(8, 2\): set model.patch_size=null\.$"),
    ((30, 2), {"positional": "learned", "max_length": 16},
     r"^this data's sequences have 30 steps, more than the model.max_length=16 positions .*: set model.max_length "
     r"to at least 30, or model.positional=sinusoidal\.$"),
    ((1, 28, 28), {"positional": "learned", "max_length": 16, "patch_size": 4},
     r"^this data's sequences have 49 steps"),
    ((2, 3, 4, 5), {}, r"^model=transformer reads examples of shape .* use model=mlp\.$"),
])
def test_refusals_are_one_line_naming_the_keys(shape, options, message):
    with pytest.raises(ConfigError, match=message):
        net(shape, **options)


def test_names_outside_the_schema_choices_are_refused_from_python():
    with pytest.raises(ValueError, match="pooling must be one of cls, mean, got 'max'"):
        net((8, 2), pooling="max")


def test_an_unknown_pooling_is_refused_by_the_schema(compose):
    with pytest.raises(ConfigError, match=r"^model.pooling=max is not a known value: choose one of cls, mean"):
        compose(["model=transformer", "model.pooling=max"])


def test_num_heads_not_dividing_d_model_from_the_command_line(tmp_path):
    proc = run_cli(["model=transformer", "model.num_heads=3", "model.d_model=64", "trainer.max_epochs=1",
                    "hydra.run.dir=run"], cwd=tmp_path)
    line = error_line(proc)
    assert "model.num_heads=3" in line and "model.d_model=64" in line and "set model.num_heads to one of" in line
    assert not (tmp_path / "run" / "metrics.csv").exists()


@pytest.mark.parametrize("init", ["he_normal", "xavier_uniform", "orthogonal", "zeros"])
def test_init_schemes_reach_the_attention_projections(init):
    model = net((8, 2), num_layers=1)
    applied = apply_init(model, init, activation="gelu")
    attention = model.encoder.layers[0].self_attn
    assert applied["encoder.layers.0.self_attn"].startswith(init)
    assert "encoder.layers.0.self_attn.out_proj" not in applied  # one layer with its output projection
    assert torch.count_nonzero(attention.in_proj_bias) == torch.count_nonzero(attention.out_proj.bias) == 0
    if init == "he_normal":  # identity gain: std 1/sqrt(fan_in), fan_in = d_model
        assert applied["encoder.layers.0.self_attn"] == "he_normal(identity)"
        assert attention.in_proj_weight.std().item() == pytest.approx(1 / math.sqrt(16), rel=0.15)
    if init == "zeros":
        assert torch.count_nonzero(attention.in_proj_weight) == torch.count_nonzero(attention.out_proj.weight) == 0


def test_the_summary_counts_attention_as_one_layer():
    model = net((8, 2), num_layers=1)
    rows_ = {row.name: row for row in summarize(model, (8, 2))}
    attention = rows_["encoder.layers.0.self_attn"]
    assert attention.kind == "MultiheadAttention" and attention.params == 4 * 16 * 16 + 4 * 16
    assert sum(row.params for row in rows_.values()) == sum(p.numel() for p in model.parameters())


def test_the_init_footnote_says_what_the_class_token_and_learned_positions_start_from():
    from dltrain.init import init_formula

    formula = init_formula("default", ["ClassToken", "LearnedPositions"])
    assert "ClassToken: w = 0" in formula and "LearnedPositions: w ~ N(0, std 0.02)" in formula
    assert "its own" not in formula
    model = net((6,), vocab_size=10, positional="learned", max_length=4096, pooling="cls")
    assert torch.count_nonzero(model.cls.weight) == 0
    assert model.positions.weight.std().item() == pytest.approx(0.02, rel=0.05)


def fast(compose, tmp_path, overrides):
    cfg = compose(["model=transformer", "trainer.fast_dev_run=true", "device=cpu", *overrides])
    summary = train(cfg, run_dir=tmp_path / "run")
    assert summary["status"] == "completed" and math.isfinite(summary["test"]["loss"])
    return (tmp_path / "run" / "model_summary.txt").read_text()


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    """The run directory of a text transformer (learned positions, mean pooling) trained for a few
    batches on texts of 2 to 12 tokens."""
    from dltrain import compose
    from tests.test_export_recurrent import write_texts

    root = tmp_path_factory.mktemp("text")
    texts = write_texts(root / "texts.csv")
    summary = train(compose(["model=transformer", "device=cpu", "trainer.fast_dev_run=true", "data=text_csv",
                             f"data.path={texts}", "model.d_model=8", "model.num_heads=2", "model.ff_dim=16",
                             "model.num_layers=1", "model.positional=learned", "model.max_length=16",
                             "model.pooling=mean", "trainer.diagnostics=false"]),
                    run_dir=root / "run")
    assert summary["status"] == "completed" and math.isfinite(summary["test"]["loss"])
    return root / "run"


def test_text_csv_trains_on_embedded_tokens(text_run):
    text = (text_run / "model_summary.txt").read_text()
    assert "embed  " in text and "Embedding" in text and "MultiheadAttention" in text


def test_digits_as_patches_train(compose, tmp_path):
    text = fast(compose, tmp_path, ["model.patch_size=4", "model.d_model=32"])
    assert "Conv2d" in text and "(-1, 32, 2, 2)" in text  # 8x8 digits: 2 x 2 patches of 4 x 4


EXACT = ["model=transformer", "model.d_model=16", "model.num_heads=2", "model.ff_dim=32", "model.dropout=0.2",
         "model.positional=learned", "model.max_length=8", "regularization.dropout=0.3", "scheduler=cosine",
         "scheduler.T_max=3", "trainer.batch_size=64", "trainer.limit_train_batches=4", "trainer.diagnostics=false"]


@pytest.mark.slow  # tests/test_resume.py's mid-epoch interrupt of model=transformer checks more, by default
def test_resume_equals_the_uninterrupted_run(compose, tmp_path):
    straight = tmp_path / "straight"
    train(compose([*EXACT, "trainer.max_epochs=3"]), run_dir=straight)
    train(compose([*EXACT, "trainer.max_epochs=1"]), run_dir=tmp_path / "first")
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    train(compose([*EXACT, "trainer.max_epochs=3", f"resume={last}"]), run_dir=tmp_path / "resumed")
    assert len(rows(straight)) == 3 and rows(tmp_path / "resumed") == rows(straight)
    for name in ("last.pt", "best.pt"):
        assert same_weights(tmp_path / "resumed" / "checkpoints" / name, straight / "checkpoints" / name)


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_a_traced_graph_computes_the_positions_of_any_length_alike(monkeypatch, positional):
    model = net((6,), vocab_size=10, positional=positional, max_length=6).eval()
    x = token_batch()
    with torch.no_grad():
        eager = model(x)
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # as torch.export traces it
        torch.testing.assert_close(model(x), eager, rtol=0, atol=1e-6)
        assert model(torch.cat([x, torch.ones(2, 4, dtype=x.dtype)], dim=1)).shape == (2, 3)  # past max_length


@pytest.fixture(scope="module")
def text_onnx(text_run) -> tuple[Path, str]:
    """The text transformer exported to ONNX: (its folder, what dltrain-export printed)."""
    from tests.test_export_recurrent import export

    return export(text_run / "checkpoints" / "best.pt", "onnx")


@pytest.mark.parametrize("fmt", ["onnx", pytest.param("exported_program", marks=pytest.mark.slow)])
def test_a_text_transformer_exports_and_verifies(text_run, text_onnx, fmt):
    from tests.test_export_recurrent import export

    folder, printed = text_onnx if fmt == "onnx" else export(text_run / "checkpoints" / "best.pt", fmt)
    assert printed.splitlines()[0].startswith("dltrain-export: largest difference: ")
    assert (folder / "vocab.txt").is_file() and (folder / "model.json").is_file()


def test_the_onnx_export_reads_texts_longer_than_the_learned_positions(text_run, text_onnx, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    from dltrain.inference.restore import load_model

    session = ort.InferenceSession(str(text_onnx[0] / "model.onnx"), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    model = load_model(text_run / "checkpoints" / "best.pt", "cpu").model.eval()
    ids = torch.randint(1, model.embed.num_embeddings, (3, 25), generator=torch.Generator().manual_seed(0))
    assert ids.shape[1] > model.positions.max_length  # 25 tokens, 16 learned positions
    with torch.no_grad():
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # the positions as the graph computes them
        p = torch.sigmoid(model(ids))  # (3, 1): the binary logit
    (probabilities,) = session.run(None, {name: ids.numpy()})
    torch.testing.assert_close(torch.from_numpy(probabilities), torch.cat([1 - p, p], dim=1), rtol=1e-4, atol=1e-5)


def test_predict_refuses_a_text_longer_than_the_learned_positions_in_one_line(text_run, tmp_path, capsys):
    from dltrain.inference.predict import main as predict_main
    from tests.conftest import tool_error

    texts = tmp_path / "texts.csv"
    texts.write_text("text\nGood movie\n" + "Bad " * 30 + "\n")
    err = tool_error(capsys, predict_main, "dltrain-predict",
                     [f"ckpt={text_run / 'checkpoints' / 'best.pt'}", f"input={texts}", f"output={tmp_path / 'p.csv'}"])
    assert "model.max_length=16" in err and not (tmp_path / "p.csv").exists()


def test_the_benchmark_s_runs_compose_and_pair_each_data_with_a_transformer(compose):
    from benchmarks.transformer_vs_lstm import command, runs

    planned = runs("samples/mnist-8k")
    for data in dict.fromkeys(data for data, _ in planned):  # one command per data set: composing is slow
        args = command(next(keys for d, keys in planned if d == data and "model=transformer" in keys), "outputs/x")[1:]
        assert args[-1] == "hydra.run.dir=outputs/x"
        compose(args[:-1])
    for data in {data for data, _ in planned}:
        models = [key for d, keys in planned if d == data for key in keys if key.startswith("model=")]
        assert models[0] != "model=transformer" and "model=transformer" in models[1:]

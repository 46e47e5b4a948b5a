"""Recurrent models over text, exported: the unpacked net computes what the packed one does
(every cell, direction, pooling and depth; its scan loop too), text inputs are padded in the
graph as dltrain pads them, and a bidirectional LSTM trained on texts exports to ONNX with a
dynamic batch and length, verified. The exporter matrix (every cell x format) is slow."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from dltrain import compose, train
from dltrain.data.preprocessing import from_record
from dltrain.data.preprocessing.text import TOKEN, Text, Vocabulary
from dltrain.errors import UserError
from dltrain.export.cli import export_checkpoint
from dltrain.export.formats import load_model_file, write_model
from dltrain.export.graph import ExportGraph, OutputHead
from dltrain.export.recurrent import UnpackedRecurrentNet, exportable, scan_layer
from dltrain.export.text import TextInput, vocabulary_text
from dltrain.inference.predict import output_rows
from dltrain.inference.restore import load_model
from dltrain.models.recurrent import RecurrentNet

VOCAB = 13


def token_ids(lengths: list[int], steps: int, seed: int = 0) -> torch.Tensor:
    """int64 ``(len(lengths), steps)``: random ids 1.., each row padded with 0 after its length."""
    x = torch.randint(1, VOCAB, (len(lengths), steps), generator=torch.Generator().manual_seed(seed))
    return x.masked_fill(torch.arange(steps)[None, :] >= torch.tensor(lengths)[:, None], 0)


def text_net(kind: str, bidirectional: bool, pooling: str, num_layers: int, **kwargs) -> RecurrentNet:
    torch.manual_seed(len(kind) + 2 * bidirectional + num_layers)
    return RecurrentNet(kind, (9,), 3, hidden_size=5, num_layers=num_layers, bidirectional=bidirectional,
                        pooling=pooling, vocab_size=VOCAB, embedding_dim=4, **kwargs).eval()


LENGTHS = [1, 9, 4, 7, 2, 9, 1, 5]  # length 1 and the full length among them


MATRIX = list(itertools.product(("rnn", "lstm", "gru"), (False, True), ("last", "mean", "max"), (1, 2)))


# The scan loop on the deepest nets only: scan_layer's own test covers each cell.
@pytest.mark.parametrize(("kind", "bidirectional", "pooling", "num_layers", "loop"),
                         [(*case, "module") for case in MATRIX]
                         + [(*case, "scan") for case in MATRIX if case[1] and case[3] == 2])
def test_unpacked_net_gives_the_packed_outputs(monkeypatch, kind, bidirectional, pooling, num_layers, loop):
    """Eager (torch's modules) and as exported (a scan over time steps): the packed net's logits."""
    net = text_net(kind, bidirectional, pooling, num_layers, dropout=0.3 if num_layers > 1 else 0.0)
    unpacked = exportable(net).eval()
    assert isinstance(unpacked, UnpackedRecurrentNet)
    if loop == "scan":
        monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    x = token_ids(LENGTHS, 9)
    with torch.no_grad():
        torch.testing.assert_close(unpacked(x), net(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("cell", "kwargs"), [(nn.RNN, {"nonlinearity": "tanh"}), (nn.RNN, {"nonlinearity": "relu"}),
                                              (nn.LSTM, {}), (nn.GRU, {})])
def test_scan_layer_is_torchs_recurrent_module(cell, kwargs):
    torch.manual_seed(0)
    module = cell(4, 6, batch_first=True, **kwargs)
    seq = torch.randn(3, 7, 4)
    with torch.no_grad():
        torch.testing.assert_close(scan_layer(module, seq), module(seq)[0], rtol=0, atol=1e-6)


def test_exportable_replaces_text_nets_in_a_copy_and_leaves_numeric_ones():
    numeric = RecurrentNet("gru", (6, 3), 2).eval()
    assert exportable(numeric) is numeric  # no lengths, nothing packed: exporters follow it already
    text = text_net("lstm", True, "mean", 1, batch_norm=True, head=["dense:4", "relu"])
    text.bn.running_mean.uniform_(-1, 1)
    outer = nn.Sequential(text).eval()
    copy = exportable(outer)
    assert isinstance(copy[0], UnpackedRecurrentNet) and isinstance(outer[0], RecurrentNet)  # the model is unchanged
    x = token_ids(LENGTHS, 9, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(copy(x), outer(x), rtol=0, atol=1e-5)


def test_unpacked_net_keeps_the_nets_dtype():
    net = text_net("gru", True, "last", 2).double()
    x = token_ids(LENGTHS, 9, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(exportable(net)(x), net(x), rtol=0, atol=1e-12)  # float64 all the way


def text_prep(padded_length: int | None) -> Text:
    return Text(Vocabulary(["<pad>", "<unk>", "good", "bad", "\u00e9t\u00e9"]), lowercase=True, max_length=20,
                padded_length=padded_length, column="review")


@pytest.mark.parametrize("steps", [1, 3, 6, 8])
def test_text_input_pads_ids_to_the_training_length_as_text_pad(steps):
    prep = text_prep(6)
    ids = [[2, 3, 4][:min(steps, 3)], [4] * steps]
    got = TextInput(prep, {})(torch.tensor([row + [0] * (steps - len(row)) for row in ids]))
    torch.testing.assert_close(got, prep.pad(ids))


def test_text_input_entries_and_vocabulary_file():
    graph = TextInput(text_prep(6), {})
    assert (graph.name, graph.dtype, graph.shape) == ("token_ids", torch.int64, ("length",))
    assert graph.entries() == {"column": "review", "delimiter": ",",
                               "tokenizer": {"pattern": TOKEN.pattern, "lowercase": True},
                               "max_length": 20, "min_length": 6, "pad_id": 0, "unk_id": 1,
                               "vocabulary_file": "vocab.txt"}
    assert graph.files()["vocab.txt"].splitlines() == ["<pad>", "<unk>", "good", "bad", "\u00e9t\u00e9"]
    assert graph.example(3).min() >= 0 and (graph.example(3)[:, 0] > 0).all()  # every example holds a token


def test_a_token_with_a_line_break_is_refused_in_one_line():
    with pytest.raises(UserError, match=r"^the checkpoint's vocabulary holds a token .*id 2") as err:
        vocabulary_text(["<pad>", "<unk>", "two\nlines"])
    assert "\n" not in str(err.value)


# --- trained on texts, exported to ONNX --------------------------------------------------------------------------

WORDS = "good bad movie plot actor scene great awful fine dull".split()


def write_texts(path: Path, rows: int = 80) -> Path:
    """Texts of 2 to 12 tokens labelled by their first word (Good / Bad), so lengths vary."""
    rng = np.random.default_rng(0)
    texts = [f"{'Good' if i % 2 else 'Bad'} {' '.join(rng.choice(WORDS, int(rng.integers(1, 12))))}"
             for i in range(rows)]
    pd.DataFrame({"text": texts, "label": np.where(np.arange(rows) % 2, "pos", "neg")}).to_csv(path, index=False)
    return path


def train_text(root: Path, overrides: list[str]) -> Path:
    run, texts = root / "run", write_texts(root / "texts.csv")
    train(compose(["device=cpu", "trainer.max_epochs=1", "data=text_csv", f"data.path={texts}",
                   "model.hidden_size=6", "model.embedding_dim=5", *overrides]), run_dir=run)
    return run / "checkpoints" / "best.pt"


def export(ckpt: Path, fmt: str) -> tuple[Path, str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        folder = export_checkpoint(ckpt, fmt, batch_size=7)
    return folder, printed.getvalue()


@pytest.fixture(scope="module")
def lstm_onnx(tmp_path_factory) -> tuple[Path, Path, str]:
    """A bidirectional LSTM trained on texts, exported to ONNX: (best.pt, the folder, what was printed)."""
    ckpt = train_text(tmp_path_factory.mktemp("lstm"), ["model=lstm", "model.bidirectional=true",
                                                        "trainer.fast_dev_run=true"])
    return ckpt, *export(ckpt, "onnx")


def test_text_lstm_exports_to_onnx_with_vocab_and_tokenizer(lstm_onnx):
    ckpt, folder, printed = lstm_onnx
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.onnx", "vocab.txt"]
    assert printed.splitlines()[-1] == f"dltrain-export: wrote {folder}/: model.onnx, model.json, vocab.txt"
    restored = load_model(ckpt, "cpu")
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    assert card["input"]["name"] == "token_ids" and card["input"]["shape"] == ["batch", "length"]
    assert card["input"]["min_length"] == restored.data["padded_length"] > 1
    assert card["input"]["tokenizer"] == {"pattern": TOKEN.pattern, "lowercase": True}
    assert "re.findall" in card["outside_the_graph"] and "vocabulary" not in card["data"]
    assert (folder / "vocab.txt").read_text(encoding="utf-8").splitlines() == restored.data["vocabulary"]
    assert card["verification"]["examples"] == restored.data["num_test"] > 0
    assert card["verification"]["max_abs_diff"] <= card["verification"]["tolerance"]


def test_the_onnx_file_reads_texts_of_any_batch_and_length(lstm_onnx):
    """Texts tokenised as model.json says, shorter than the training length and in other batch
    sizes than traced: dltrain's probabilities for the same texts."""
    import onnxruntime

    ckpt, folder, _ = lstm_onnx
    restored = load_model(ckpt, "cpu")
    prep = from_record(restored.data, restored.cfg.data, restored.path)
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [d for d in session.get_inputs()[0].shape] == ["batch", "length"]
    for texts in (["Good"], ["bad plot", "Good movie, great actor!", "zzz"], ["fine " * 30 + "dull"] * 2):
        ids = prep.encode(prep.tokenize(texts))
        x = np.zeros((len(ids), max(map(len, ids))), dtype=np.int64)  # padded to this batch's longest text only
        for row, sequence in enumerate(ids):
            x[row, :len(sequence)] = sequence
        got = session.run(None, {"token_ids": x})[0]
        with torch.no_grad():
            rows = output_rows(restored.model(prep.apply(texts)), list(range(len(texts))), restored.data)
        expected = [[v for k, v in row.items() if k.startswith("p_")] for row in rows]  # what dltrain-predict writes
        np.testing.assert_allclose(got, np.array(expected), rtol=0, atol=1e-5)


# --- slow: every cell in every format, and trained text models end to end ----------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "exported_program"])
@pytest.mark.parametrize(("kind", "bidirectional", "pooling", "num_layers"),
                         [("rnn", False, "last", 2), ("rnn", True, "max", 1), ("lstm", False, "mean", 1),
                          ("lstm", True, "last", 2), ("gru", False, "max", 2), ("gru", True, "mean", 1)])
def test_every_cell_exports_with_dynamic_batch_and_length(tmp_path, fmt, kind, bidirectional, pooling, num_layers):
    net = text_net(kind, bidirectional, pooling, num_layers)
    graph = ExportGraph(TextInput(text_prep(6), {}), exportable(net), OutputHead("multiclass", 3, None), 3).eval()
    path = tmp_path / f"model.{fmt}"
    write_model(graph, fmt, path)
    run = load_model_file(fmt, path)
    for lengths, steps in ((LENGTHS, 9), ([1, 3], 3), ([1], 1), ([11, 2, 12, 5, 1], 12)):
        x = token_ids(lengths, steps, seed=steps)
        with torch.no_grad():
            padded = text_prep(6).pad([row[:n] for row, n in zip(x.tolist(), lengths, strict=True)])
            expected = torch.softmax(net(padded), dim=1)
        np.testing.assert_allclose(run(x.numpy()), expected.numpy(), rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "overrides", "formats"), [
    ("lstm", ["experiment=text_lstm", "trainer.max_epochs=1"], ["onnx", "torchscript", "exported_program"]),
    ("gru", ["model=gru", "model.bidirectional=true", "model.pooling=mean", "model.num_layers=2"],
     ["onnx", "torchscript"]),
])
def test_trained_text_models_export_verified(tmp_path, name, overrides, formats):
    ckpt = train_text(tmp_path, overrides)
    for fmt in formats:
        folder, printed = export(ckpt, fmt)
        card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        assert card["verification"]["max_abs_diff"] <= card["verification"]["tolerance"], printed
        assert (folder / "vocab.txt").exists()

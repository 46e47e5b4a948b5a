"""``data=text_csv``: tokenizing, a training-split vocabulary, and padded token ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dltrain.data.registry import DATASETS
from dltrain.data.text import Vocabulary, build_text_csv, tokenize
from dltrain.errors import ConfigError
from tests.files import reviews, write_csv, write_text_csv


def decode(data, x: torch.Tensor) -> list[list[str]]:
    vocabulary = data.info["vocabulary"]
    return [[vocabulary[i] for i in row if i != 0] for row in x.tolist()]


def test_tokenize_words_and_punctuation():
    assert tokenize("Don't STOP, now!") == ["don", "'", "t", "stop", ",", "now", "!"]
    assert tokenize("Don't", lowercase=False) == ["Don", "'", "t"]
    assert tokenize("") == []


def test_vocabulary_order_limits_and_reserved_ids():
    texts = [["b", "a", "c", "c"], ["a", "b", "d"], ["c", "e"]]
    vocab = Vocabulary.build(texts, min_freq=2, max_vocab=10)
    assert vocab.tokens == ["<pad>", "<unk>", "c", "a", "b"]  # most frequent first, ties alphabetically
    assert vocab.encode(["a", "d", "zzz"]) == [3, 1, 1] and len(vocab) == 5
    assert Vocabulary.build(texts, min_freq=1, max_vocab=4).tokens == ["<pad>", "<unk>", "c", "a"]


def test_vocabulary_comes_from_the_training_split_only(tmp_path):
    data = build_text_csv(path=str(write_text_csv(tmp_path / "texts.csv")))
    vocabulary = data.info["vocabulary"]
    assert vocabulary[:2] == ["<pad>", "<unk>"] and data.vocab_size == len(vocabulary)
    train_own = {t for tokens in decode(data, data.x_train) for t in tokens if t.startswith("own")}
    assert len(train_own) == data.sizes["num_train"]  # every training text's own token is known
    assert {t for t in vocabulary if t.startswith("own")} == train_own
    assert not any(t.startswith("once") for t in vocabulary)  # seen once: below min_freq=2
    for x in (data.x_val, data.x_test):
        tokens = decode(data, x)
        assert all(row.count("<unk>") == 3 for row in tokens)  # own token twice and once-token: only in this split
    assert data.info["unknown_token_share_val"] == pytest.approx(3 / 7)
    everything = build_text_csv(path=str(write_text_csv(tmp_path / "texts.csv")), min_freq=1)
    assert sum(t.startswith("once") for t in everything.info["vocabulary"]) == data.sizes["num_train"]


def test_string_labels_give_class_names(tmp_path):
    data = build_text_csv(path=str(write_text_csv(tmp_path / "texts.csv")))
    assert data.task == "binary" and data.class_names == ["neg", "pos"] and data.num_outputs == 2
    assert data.x_train.dtype == torch.int64 and data.y_train.dtype == torch.int64
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        first = [tokens[0] for tokens in decode(data, x)]
        assert first == [{"neg": "bad", "pos": "good"}[data.class_names[i]] for i in y.tolist()]


def test_padding_at_the_end_and_lengths_truncated(tmp_path):
    counts = np.arange(120) % 12  # 0 (an empty text) to 11 tokens; the target says how many
    texts = [" ".join(["w"] * c) for c in counts]
    path = write_csv(tmp_path / "texts.csv", {"text": texts, "label": counts.astype(float)})
    data = build_text_csv(path=str(path), task="regression", max_length=8)
    assert data.task == "regression" and data.info["padded_length"] == 8 and data.input_shape == (8,)
    assert data.info["truncated"] == int((counts > 8).sum())
    mean, std = data.target_scale
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val), (data.x_test, data.y_test)):
        tokens = (y.double() * std + mean).round().long().clamp(max=8)
        lengths = (x != 0).sum(1)
        assert torch.equal(lengths, tokens.clamp(min=1))
        positions = torch.arange(x.shape[1]).expand_as(x)
        assert torch.all((x != 0) == (positions < lengths.unsqueeze(1)))  # ids first, then padding only
        empty = tokens == 0
        assert empty.any() and torch.all(x[empty, 0] == 1)  # an empty text is one <unk>


def test_sequences_are_padded_to_the_longest_text(tmp_path):
    data = build_text_csv(path=str(write_text_csv(tmp_path / "texts.csv")), max_length=200)
    assert data.info["padded_length"] == data.x_train.shape[1] == 7 and data.info["truncated"] == 0


def test_the_split_is_seeded(tmp_path):
    path = str(write_text_csv(tmp_path / "texts.csv"))
    a, b, c = (build_text_csv(seed=s, path=path) for s in (0, 0, 1))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val) and a.info == b.info
    assert not torch.equal(a.x_train, c.x_train)


def test_rows_without_a_label_are_refused(tmp_path):
    table = reviews(20)
    table["label"] = table["label"].astype(object)
    table["label"][[3, 5]] = None
    with pytest.raises(ConfigError, match=r"data.target=label: 2 rows of data.path=.* have no label: remove those"):
        build_text_csv(path=str(write_csv(tmp_path / "texts.csv", table)))


def test_unknown_columns_are_refused(tmp_path):
    path = str(write_text_csv(tmp_path / "texts.csv", 20))
    with pytest.raises(ConfigError, match="data.text_column=body is not a column of .*: choose one of text, label"):
        build_text_csv(path=path, text_column="body")
    with pytest.raises(ConfigError, match="data.target=sentiment is not a column"):
        build_text_csv(path=path, target="sentiment")


def test_registered_as_text_csv(tmp_path):
    data = DATASETS.build("text_csv", seed=0, path=str(write_text_csv(tmp_path / "texts.csv")))
    assert data.vocab_size == len(data.info["vocabulary"])

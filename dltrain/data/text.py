"""``data=text_csv``: texts and their labels from a CSV, as padded sequences of token ids.

The vocabulary is built from the training split only, so a token that appears only in
validation or test texts reads as ``<unk>`` there, as an unseen word would in use.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from dltrain.data.cells import check_finite
from dltrain.data.registry import DATASETS
from dltrain.data.splits import DataSplits
from dltrain.data.tabular import (
    describe_path,
    read_table,
    read_target,
    require_column,
    resolve_task,
    split_target,
)
from dltrain.errors import ConfigError

log = logging.getLogger("dltrain")

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Words and single punctuation marks: ``"Don't!"`` -> ``["don", "'", "t", "!"]``."""
    return TOKEN.findall(text.lower() if lowercase else text)


class Vocabulary:
    """Token <-> id map: id 0 pads, id 1 (``<unk>``) stands for every token not in it.

    Args:
        tokens: the tokens in id order, starting with ``<pad>`` and ``<unk>``.
    """

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self._ids = {token: i for i, token in enumerate(tokens)}

    @classmethod
    def build(cls, texts: Iterable[list[str]], min_freq: int = 2, max_vocab: int = 20000) -> Vocabulary:
        """The tokens seen at least ``min_freq`` times in ``texts``, most frequent first (ties
        alphabetically), after ``<pad>`` and ``<unk>``; at most ``max_vocab`` in all."""
        counts = Counter(token for tokens in texts for token in tokens)
        kept = sorted((token for token, count in counts.items() if count >= min_freq),
                      key=lambda token: (-counts[token], token))
        return cls([PAD, UNK, *kept[:max(max_vocab - 2, 0)]])

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """The id of each token; ``1`` for those not in the vocabulary."""
        return [self._ids.get(token, UNK_ID) for token in tokens]

    def __len__(self) -> int:
        return len(self.tokens)


def _check_vocabulary(vocab: Vocabulary, train_texts: list[list[str]], column: str, min_freq: int) -> None:
    """Refuse a vocabulary with no token: every training text empty, or no token frequent enough.

    Raises:
        ConfigError: naming ``data.text_column`` or ``data.min_freq``.
    """
    if len(vocab) > 2:  # <pad> and <unk> are always there
        return
    if not any(train_texts):
        raise ConfigError(f"data.text_column={column}: every text of the training split is empty (no words or "
                          "punctuation): point data.text_column at the column that holds the texts.")
    raise ConfigError(f"data.min_freq={min_freq}: no token appears {min_freq} times in the training split's texts, "
                      "so every token would read as <unk>: lower data.min_freq (1 keeps every token).")


@DATASETS.register("text_csv")
def build_text_csv(
    seed: int = 0,
    *,
    path: str,
    text_column: str = "text",
    target: str = "label",
    task: str = "auto",
    min_freq: int = 2,
    max_vocab: int = 20000,
    max_length: int = 200,
    lowercase: bool = True,
    positive_class: str | None = None,
    delimiter: str = ",",
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> DataSplits:
    """A CSV of texts and labels as int64 token ids ``(N, L)``, padded with 0 at the end.

    Each text is tokenized (:func:`tokenize`), cut to ``max_length`` tokens and encoded with
    a :class:`Vocabulary` of the training split; an empty text becomes one ``<unk>``, so
    every sequence holds at least one token and ``(x != 0).sum(1)`` is its length. ``L`` is
    the longest sequence in any split.

    Args:
        seed: the run's seed; the same seed gives the same split.
        path: the CSV file, with a header row.
        text_column: the column of texts; a missing text reads as an empty one.
        target: the column of labels.
        task: ``auto`` infers it from the labels (see :func:`~dltrain.data.tabular.infer_task`);
            a numeric target may be ``regression``.
        min_freq: tokens seen fewer times in the training split become ``<unk>``.
        max_vocab: the vocabulary's size at most, ``<pad>`` and ``<unk>`` included.
        max_length: tokens kept per text.
        lowercase: lowercase texts before tokenizing.
        delimiter: the field separator.
        val_fraction, test_fraction: shares of all rows.

    Raises:
        ConfigError: for an unreadable file, unknown columns, rows without a label, labels
            that do not fit the task, or texts without a token in the vocabulary.
    """
    table = read_table(path, delimiter)
    where = describe_path(path)
    require_column(table, text_column, "data.text_column", where)
    require_column(table, target, "data.target", where)
    strays, label_warnings = read_target(table, target, task)  # '?' among regression targets is none
    check_finite(table, [target], where)
    labels = table[target]
    unlabelled = int(labels.isna().sum())
    if unlabelled:
        stray = f" ({strays[target].describe()})" if target in strays else ""
        raise ConfigError(f"data.target={target}: {unlabelled} rows of {where} have no label{stray}: "
                          "remove those rows from the file.")
    task, reason = resolve_task(labels, task)
    encoded = split_target(labels, task, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                           positive_class=positive_class)
    train, val, _ = encoded.parts
    texts = [tokenize(text, lowercase) for text in table[text_column].fillna("").astype(str)]
    vocab = Vocabulary.build((texts[i] for i in train), min_freq=min_freq, max_vocab=max_vocab)
    _check_vocabulary(vocab, [texts[i] for i in train], text_column, min_freq)
    ids = [vocab.encode(tokens[:max_length]) or [UNK_ID] for tokens in texts]
    length = max(map(len, ids))
    x = np.full((len(ids), length), PAD_ID, dtype=np.int64)
    for row, sequence in enumerate(ids):
        x[row, :len(sequence)] = sequence
    truncated = sum(len(tokens) > max_length for tokens in texts)
    val_tokens = [ids[i][:len(texts[i])] for i in val]  # an empty text's placeholder <unk> is no token
    val_count = sum(map(len, val_tokens))
    unknown_share = sum(s.count(UNK_ID) for s in val_tokens) / val_count if val_count else 0.0
    absolute = str(Path(path).expanduser().resolve())
    log.info("data: %s: %d texts, %d tokens in the vocabulary (min_freq=%d, training split), padded to %d tokens, "
             "%d texts cut at data.max_length=%d, %.1f%% of validation tokens unknown",
             absolute, len(ids), len(vocab), min_freq, length, truncated, max_length, 100 * unknown_share)
    info = {
        "path": absolute, "text_column": text_column, "target": target, "task": task, "task_reason": reason,
        "vocab_size": len(vocab), "padded_length": length, "vocabulary": vocab.tokens, "truncated": truncated,
        "unknown_token_share_val": round(unknown_share, 6),
        "target_scale": None if encoded.scale is None else list(encoded.scale),
        "test_rows": encoded.parts[2].tolist(),  # position in the file, for predictions.csv
    }
    return encoded.splits(torch.from_numpy(x), info, vocab_size=len(vocab), warnings=label_warnings)

"""``data=text_csv``: texts and their labels from a CSV, as padded sequences of token ids.

The vocabulary is built from the training split only, so a token that appears only in
validation or test texts reads as ``<unk>`` there, as an unseen word would in use.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dltrain.data.cells import check_finite
from dltrain.data.preprocessing.text import UNK_ID, Text, Vocabulary, tokenize
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


@DATASETS.register("text_csv", inputs="text")
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
    prep = Text.fit((texts[i] for i in train), min_freq=min_freq, max_vocab=max_vocab, lowercase=lowercase,
                    max_length=max_length, column=text_column)
    vocab = prep.vocabulary
    _check_vocabulary(vocab, [texts[i] for i in train], text_column, min_freq)
    ids = prep.encode(texts)
    x = prep.pad(ids)  # (N, L): L the longest sequence of any split
    length = x.shape[1]
    prep = prep.padded_to(length)
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
        **prep.to_record(), "truncated": truncated,
        "unknown_token_share_val": round(unknown_share, 6),
        "target_scale": None if encoded.scale is None else list(encoded.scale),
        "test_rows": encoded.parts[2].tolist(),  # position in the file, for predictions.csv
        "val_rows": encoded.parts[1].tolist(),  # and for dltrain-eval split=val
    }
    return encoded.splits(x, info, vocab_size=len(vocab), warnings=label_warnings, preprocessing=prep)

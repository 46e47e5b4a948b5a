"""Texts: tokenized, cut to ``data.max_length`` tokens, encoded with the training split's
vocabulary and padded with 0 (:class:`Text`). New inputs are the text column of a CSV."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dltrain.data.csv_file import read_table
from dltrain.data.preprocessing import drift
from dltrain.data.preprocessing.base import Batch, Preprocessing, Warn, batched
from dltrain.errors import UserError

if TYPE_CHECKING:  # torch is imported where tensors are made: an exported model reads its inputs without it
    import torch

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


@dataclass(frozen=True)
class Text(Preprocessing):
    """Token ids of texts, padded with 0 at the end to the longest of them, and to at least
    the training length.

    Attributes:
        vocabulary: the training split's tokens.
        lowercase: lowercase texts before tokenizing.
        max_length: tokens kept per text.
        padded_length: the training sequences' length (None while fitting).
        column: the text column of a CSV of new texts.
        delimiter: that CSV's field separator.
    """

    kind = "text"
    marks = ("vocabulary",)
    reads = "a CSV with the training text column"

    vocabulary: Vocabulary
    lowercase: bool = True
    max_length: int = 200
    padded_length: int | None = None
    column: str = "text"
    delimiter: str = ","

    @classmethod
    def fit(cls, train: Iterable[list[str]], *, min_freq: int, max_vocab: int, lowercase: bool, max_length: int,
            column: str) -> Text:
        """Build the vocabulary from the training split's tokenized texts (see :meth:`Vocabulary.build`)."""
        return cls(Vocabulary.build(train, min_freq=min_freq, max_vocab=max_vocab), lowercase, max_length,
                   column=column)

    @classmethod
    def from_record(cls, record: Mapping[str, Any], options: Mapping[str, Any], checkpoint: str | Path) -> Text:
        return cls(Vocabulary(list(record["vocabulary"])), options.get("lowercase", True),
                   options.get("max_length", 200), record.get("padded_length"), record["text_column"],
                   options.get("delimiter", ","))

    def to_record(self) -> dict[str, Any]:
        return {"vocab_size": len(self.vocabulary), "padded_length": self.padded_length,
                "vocabulary": self.vocabulary.tokens}

    def padded_to(self, length: int) -> Text:
        """This preprocessing, recording ``length`` as the training sequences' length."""
        return replace(self, padded_length=length)

    def tokenize(self, texts: Iterable[str]) -> list[list[str]]:
        """Each text's tokens (see :func:`tokenize`), all of them."""
        return [tokenize(text, self.lowercase) for text in texts]

    def encode(self, tokens: Iterable[list[str]]) -> list[list[int]]:
        """The ids of each text's first ``max_length`` tokens; an empty text becomes one
        ``<unk>``, so every sequence holds at least one token."""
        return [self.vocabulary.encode(sequence[:self.max_length]) or [UNK_ID] for sequence in tokens]

    def pad(self, ids: Sequence[list[int]]) -> torch.Tensor:
        """int64 ``(N, L)``: the sequences padded with 0 to ``L``, the longest of them or the
        training length if longer (``(0, L)`` for no sequences)."""
        import torch

        return torch.from_numpy(self.padded(ids))

    def padded(self, ids: Sequence[list[int]]) -> np.ndarray:
        """:meth:`pad` as a numpy array."""
        x = np.full((len(ids), max([*map(len, ids), self.padded_length or 1])), PAD_ID, dtype=np.int64)
        for row, sequence in enumerate(ids):
            x[row, :len(sequence)] = sequence
        return x

    def apply(self, raw: Iterable[str]) -> torch.Tensor:
        """Texts -> their padded token ids ``(N, L)``."""
        return self.pad(self.encode(self.tokenize(raw)))

    def read(self, path: Path, batch_size: int, warn: Warn) -> Iterator[Batch]:
        """The CSV's text column as :meth:`token_ids`, in batches.

        Raises:
            UserError: the CSV has no such column.
        """
        import torch

        ids, flags = self.token_ids(path)
        yield from batched(torch.from_numpy(ids), flags, batch_size)

    def token_ids(self, path: Path) -> tuple[np.ndarray, list[str]]:
        """The CSV's text column (a missing text reads as an empty one; other columns are
        ignored) as padded token ids int64 ``(N, L)`` (see :meth:`pad`), and each text's flags.

        Raises:
            UserError: the CSV has no such column.
        """
        table = read_table(path, self.delimiter, key="input")
        if self.column not in table.columns:
            raise UserError(f"input={path} has no column {self.column}: the model reads its texts from a column "
                            f"named {self.column}; name it so")
        ids = self.encode(self.tokenize(table[self.column].fillna("").astype(str)))
        known = [sum(i != UNK_ID for i in sequence) for sequence in ids]
        return self.padded(ids), drift.text_flags(known, [len(sequence) for sequence in ids])

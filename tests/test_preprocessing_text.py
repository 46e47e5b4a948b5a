"""The text preprocessing pads any number of sequences, none included."""

from __future__ import annotations

import torch

from dltrain.data.preprocessing import Text


def text() -> Text:
    return Text.fit([["a", "b"], ["b"]], min_freq=1, max_vocab=10, lowercase=True, max_length=5, column="text")


def test_no_sequences_pad_to_an_empty_batch_of_the_training_length():
    assert text().pad([]).shape == (0, 1)
    padded = text().padded_to(4).pad([])
    assert padded.shape == (0, 4) and padded.dtype == torch.int64


def test_one_sequence_pads_to_the_training_length():
    assert text().padded_to(3).pad([[2, 3]]).tolist() == [[2, 3, 0]]

"""Text inputs of an exported model: token ids in (the caller tokenises, as ``model.json``
says, and maps tokens with ``vocab.txt``), padded inside the graph to the training length
as :meth:`Text.pad <dltrain.data.preprocessing.text.Text.pad>` pads them."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dltrain.data.preprocessing.text import PAD_ID, TOKEN, UNK_ID, Text
from dltrain.errors import UserError
from dltrain.export.contract import VOCABULARY_FILE


class TextInput(nn.Module):
    """Token ids int64 ``(batch, length)``, padded with 0 at the end -> the same ids padded to
    at least the training length (``min_length``): the input graph of text
    (:class:`dltrain.export.graph.InputGraph`'s attributes and methods; it is no subclass, so
    that this module imports nothing of the module that registers it)."""

    name = "token_ids"
    dtype = torch.int64
    shape = ("length",)

    def __init__(self, prep: Text, record: dict[str, Any]) -> None:
        super().__init__()
        self.prep = prep
        self.min_length = prep.padded_length or 1
        self.layout = (f"one row per text: the ids of its first {prep.max_length} tokens (the line numbers of the "
                       f"tokens in {VOCABULARY_FILE}, counted from 0; {UNK_ID} for a token not in it), padded with "
                       f"{PAD_ID} at the end to the longest text of the batch, as int64")
        split = "lowercase each text and split it" if prep.lowercase else "split each text"
        self.outside = (f"{split} into tokens with the regular expression input.tokenizer.pattern (Python's "
                        f"re.findall, Unicode), keep the first {prep.max_length} tokens, map each to its id with "
                        f"{VOCABULARY_FILE} ({UNK_ID} for a token not in it; a text without tokens becomes [{UNK_ID}]) "
                        f"and pad the rows with {PAD_ID} at the end to a common length")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, max(L, min_length))
        if self.min_length <= 1:  # every text holds a token already
            return x
        steps = x.shape[1]
        # Traced (torch.jit.trace), sizes are tensors; exported, symbols that sym_max keeps free.
        # Reading ids by position, rather than concatenating padding, leaves torch.export no size to guard.
        length = steps.clamp_min(self.min_length) if isinstance(steps, torch.Tensor) else torch.sym_max(
            steps, self.min_length)
        positions = torch.arange(length, device=x.device)  # (max(L, min_length),)
        return torch.where(positions < steps, x[:, positions.clamp_max(steps - 1)], PAD_ID)

    def example(self, batch: int) -> torch.Tensor:
        """Ids of real tokens, the last example padded after its first token (not all padding:
        each sequence holds at least one token)."""
        top = max(len(self.prep.vocabulary) - UNK_ID, 1)
        x = torch.arange(batch * 4).reshape(batch, 4) % top + UNK_ID  # (batch, 4)
        x[-1, 1:] = PAD_ID
        return x

    def entries(self) -> dict[str, Any]:
        return {"column": self.prep.column, "delimiter": self.prep.delimiter,
                "tokenizer": {"pattern": TOKEN.pattern, "lowercase": self.prep.lowercase},
                "max_length": self.prep.max_length, "min_length": self.min_length,
                "pad_id": PAD_ID, "unk_id": UNK_ID, "vocabulary_file": VOCABULARY_FILE}

    def files(self) -> dict[str, str]:
        return {VOCABULARY_FILE: vocabulary_text(self.prep.vocabulary.tokens)}


def vocabulary_text(tokens: list[str]) -> str:
    """``vocab.txt``: one token per line, line i (from 0) the token of id i.

    Raises:
        UserError: a token that would not stay on one line (no tokenised text holds one).
    """
    for i, token in enumerate(tokens):
        if token.splitlines() != [token] or not token:
            raise UserError(f"the checkpoint's vocabulary holds a token that {VOCABULARY_FILE} cannot hold on one "
                            f"line (id {i}, {token!r}): retrain with the tokenizer of this version of dltrain")
    return "".join(f"{token}\n" for token in tokens)

"""``model=rnn|lstm|gru``: a recurrent network over ``(batch, time, features)`` with a dense head."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dltrain.errors import ConfigError
from dltrain.models.layer_spec import HEAD_KINDS, build_layers
from dltrain.models.registry import MODELS

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
POOLINGS = ("last", "mean", "max")


class RecurrentNet(nn.Module):
    """A stacked (optionally bidirectional) RNN, LSTM or GRU, pooled over time, then
    ``[BatchNorm1d] -> [Dropout] -> [head] -> Linear``.

    Examples are read as sequences: ``(T, F)`` as is, ``(F,)`` as F steps of one feature,
    and an image ``(C, H, W)`` row by row (``H`` steps of ``C * W`` features). With
    ``vocab_size``, examples are token ids ``(T,)`` padded with 0 at the end: an embedding
    layer turns them into vectors, and the padding steps are packed away.

    Args:
        kind: ``"rnn"``, ``"lstm"`` or ``"gru"``; also the name of the recurrent submodule.
        input_shape: shape of one example without the batch dimension.
        num_outputs: width of the output layer.
        hidden_size: units per layer and direction.
        num_layers: stacked recurrent layers.
        bidirectional: read the sequence both ways and join the two states.
        dropout: torch's dropout between stacked layers (needs ``num_layers > 1``).
        pooling: ``"last"`` (final hidden state), ``"mean"`` or ``"max"`` over time steps.
        head_dropout: dropout on the pooled state before the output layer; 0 adds no layer.
        batch_norm: BatchNorm1d on the pooled state.
        vocab_size: number of token ids, for text; None for numeric inputs.
        embedding_dim: size of each token's vector (with ``vocab_size`` only).
        head: layer specs between the pooled state and the output layer (``dense:32``, ``relu``,
            ``dropout:0.5``, ``bn``: see :mod:`dltrain.models.layer_spec`); empty adds none.
        **cell_kwargs: ``nonlinearity`` for the RNN, passed to ``torch.nn.RNN``; nothing else.
    """

    def __init__(
        self,
        kind: str,
        input_shape: tuple[int, ...],
        num_outputs: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        pooling: str = "last",
        head_dropout: float = 0.0,
        batch_norm: bool = False,
        vocab_size: int | None = None,
        embedding_dim: int = 64,
        head: Sequence[str] = (),
        **cell_kwargs,
    ) -> None:
        super().__init__()
        if len(input_shape) not in (1, 2, 3):
            raise ConfigError(
                f"model={kind} reads examples of shape (features,), (time, features) or (channels, height, width), "
                f"but this data's examples have shape {tuple(input_shape)}: use model=mlp."
            )
        if dropout > 0 and num_layers == 1:
            raise ConfigError("model.dropout applies between stacked recurrent layers: "
                              "set model.num_layers above 1 or model.dropout=0.")
        unknown = set(cell_kwargs) - ({"nonlinearity"} if kind == "rnn" else set())
        if unknown:
            raise TypeError(f"model={kind} takes no argument {', '.join(sorted(unknown))}")
        if pooling not in POOLINGS:  # forward() would read any other name as max
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.kind = kind
        self.input_shape = tuple(input_shape)
        self.pooling = pooling
        if vocab_size is not None and len(input_shape) != 1:
            raise ConfigError(f"model={kind} embeds token ids of shape (time,), but this data's examples have "
                              f"shape {tuple(input_shape)}.")
        # Token id 0 is padding: its vector stays zero and gets no gradient.
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0) if vocab_size is not None else None
        if self.embedding is not None:
            features = embedding_dim
        elif len(input_shape) == 3:
            features = input_shape[0] * input_shape[2]  # an image row: C * W
        else:
            features = 1 if len(input_shape) == 1 else input_shape[1]
        self.add_module(kind, CELLS[kind](features, hidden_size, num_layers=num_layers, dropout=dropout,
                                          bidirectional=bidirectional, batch_first=True, **cell_kwargs))
        width = hidden_size * (2 if bidirectional else 1)
        self.bn = nn.BatchNorm1d(width) if batch_norm else None
        self.dropout = nn.Dropout(head_dropout) if head_dropout > 0 else None
        layers, (width,) = build_layers(head, (width,), key="model.head", kinds=HEAD_KINDS)
        self.head = nn.Sequential(layers) if layers else None  # None: no module, the same weights as before
        self.out = nn.Linear(width, num_outputs)  # logits: losses apply softmax/sigmoid

    @property
    def recurrent(self) -> nn.RNNBase:
        """The torch RNN/LSTM/GRU module (registered under ``kind``)."""
        return getattr(self, self.kind)

    def _as_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """Examples as ``(B, T, F)``; T is left free so padded batches of any length pass."""
        b = x.shape[0]
        if len(self.input_shape) == 1:
            return x.reshape(b, -1, 1)  # (B, F) -> (B, F, 1)
        if len(self.input_shape) == 2:
            return x.reshape(b, -1, self.input_shape[-1])  # (B, T, F)
        c, _, w = self.input_shape
        # (B, C, H, W) -> (B, H, C, W) -> (B, H, C * W): one time step per image row
        return x.reshape(b, c, -1, w).transpose(1, 2).reshape(b, -1, c * w)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, num_outputs)``.

        Args:
            x: a batch of examples, sequences padded to a common length when ``lengths`` is given.
            lengths: 1-D integer tensor, the true length of each sequence; padding steps
                then play no part in the result.
        """
        if self.embedding is not None:
            if lengths is None:  # padding (id 0) only ever comes after a text's tokens
                lengths = (x != 0).sum(dim=1).clamp_min(1)  # (B,)
            seq = self.embedding(x)  # (B, T) ids -> (B, T, E)
        else:
            seq = self._as_sequence(x)  # (B, T, F)
        steps = seq.shape[1]
        if lengths is not None:
            packed = pack_padded_sequence(seq, lengths.to("cpu", torch.int64), batch_first=True, enforce_sorted=False)
            output, h_n = self.recurrent(packed)
            # Padding steps come back as zeros; total_length keeps T so the mask lines up.
            output, _ = pad_packed_sequence(output, batch_first=True, total_length=steps)  # (B, T, D * H)
        else:
            output, h_n = self.recurrent(seq)  # (B, T, D * H)
        if isinstance(h_n, tuple):  # the LSTM returns (h_n, c_n)
            h_n = h_n[0]

        if self.pooling == "last":
            # h_n is (layers * D, B, H) in the batch's original order even when packed unsorted;
            # for a bidirectional net the backward state that read the whole sequence is h_n[-1].
            r = self.recurrent
            last = h_n.reshape(r.num_layers, 2 if r.bidirectional else 1, -1, r.hidden_size)[-1]  # (D, B, H)
            pooled = last.transpose(0, 1).reshape(last.shape[1], -1)  # (B, D * H)
        elif lengths is None:
            pooled = output.mean(dim=1) if self.pooling == "mean" else output.amax(dim=1)  # (B, D * H)
        else:
            lengths = lengths.to(output.device)
            mask = (torch.arange(steps, device=output.device)[None, :] < lengths[:, None])[..., None]  # (B, T, 1)
            pooled = masked_pool(output, lengths, mask, self.pooling)
        return self._head(pooled)

    def _head(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled states ``(B, D * H)`` -> logits (the export's unpacked net runs it too)."""
        return dense_head(self, pooled)


def dense_head(net: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    """Pooled states ``(B, D)`` -> logits ``(B, num_outputs)`` through ``net``'s batch norm, dropout,
    head layers and output layer, those there are (``net.bn``, ``net.dropout``, ``net.head``: None when
    absent; ``net.out``); the recurrent models and the transformer share it."""
    if net.bn is not None:
        pooled = net.bn(pooled)
    if net.dropout is not None:
        pooled = net.dropout(pooled)
    if net.head is not None:
        pooled = net.head(pooled)
    return net.out(pooled)


def masked_pool(output: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """``(B, T, D * H)`` -> ``(B, D * H)``: the mean or max over each sequence's first ``lengths``
    steps (``mask`` ``(B, T, 1)``: those steps)."""
    if pooling == "mean":
        return (output * mask).sum(dim=1) / lengths[:, None].to(output.dtype)
    return output.masked_fill(~mask, float("-inf")).amax(dim=1)


def _builder(kind: str):
    """The registered builder of ``model=KIND``: :class:`RecurrentNet` of that kind."""

    def build(input_shape: tuple[int, ...], num_outputs: int, **kwargs) -> RecurrentNet:
        return RecurrentNet(kind, input_shape, num_outputs, **kwargs)

    build.__name__ = f"build_{kind}"
    build.__doc__ = (f"``model={kind}``: ``torch.nn.{CELLS[kind].__name__}`` with a dense head; the keyword "
                     "arguments are those of :class:`RecurrentNet` (and ``nonlinearity`` for the RNN).")
    build.__signature__ = _signature(kind)  # what it takes, for inspect and for the signature tests
    return build


def _signature(kind: str) -> inspect.Signature:
    """The arguments of ``model=KIND``'s builder: :class:`RecurrentNet`'s without ``kind``, and
    the RNN's ``nonlinearity``."""
    params = [p for p in inspect.signature(RecurrentNet).parameters.values()
              if p.name != "kind" and p.kind is not inspect.Parameter.VAR_KEYWORD]
    if kind == "rnn":
        params.append(inspect.Parameter("nonlinearity", inspect.Parameter.KEYWORD_ONLY, default="tanh",
                                        annotation="str"))
    return inspect.Signature(params, return_annotation="RecurrentNet")


# All three embed token ids; LSTM and GRU compute with tanh (the RNN's own nonlinearity is a model key).
build_rnn = MODELS.register("rnn", reads_tokens=True)(_builder("rnn"))
build_lstm = MODELS.register("lstm", reads_tokens=True, init_activation="tanh")(_builder("lstm"))
build_gru = MODELS.register("gru", reads_tokens=True, init_activation="tanh")(_builder("gru"))
# pytorch/examples' MNIST LSTM, a preset of model=lstm under its own name (conf/model/mnist_rnn.yaml).
MODELS.register("mnist_rnn", reads_tokens=True, init_activation="tanh")(build_lstm)

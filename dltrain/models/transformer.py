"""``model=transformer``: a transformer encoder (self-attention) over a sequence, pooled into a
dense head. Token ids, feature steps, table columns, image rows or image patches (a small ViT)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dltrain.errors import ConfigError
from dltrain.models.layer_spec import HEAD_KINDS, build_layers
from dltrain.models.recurrent import dense_head, masked_pool
from dltrain.models.registry import MODELS

POSITIONALS = ("sinusoidal", "learned")
POOLINGS = ("cls", "mean")
ACTIVATIONS = ("relu", "gelu")  # the two torch's encoder layer computes on its fast path


def sinusoidal(length: int, d_model: int, device: torch.device | None = None) -> torch.Tensor:
    """``(length, d_model)``: PE(pos, 2i) = sin(pos / 10000^(2i / d_model)), PE(pos, 2i + 1) the cosine."""
    pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]  # (L, 1)
    rates = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model, device=device)
    table[:, 0::2] = torch.sin(pos * rates)
    table[:, 1::2] = torch.cos(pos * rates[: d_model // 2])  # an odd d_model has one cosine fewer
    return table


def traced() -> bool:
    """Whether the forward pass is being traced into a graph (export, ``torch.compile``): the
    length of a sequence is then a symbol, and the graph must take any length."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


class SinusoidalPositions(nn.Module):
    """Adds the fixed sinusoidal encoding of each step's position: ``(B, T, D) -> (B, T, D)``.

    The table is no weight: it is not saved in checkpoints, and a sequence longer than it (or
    any sequence, in a traced graph) gets its own computed."""

    def __init__(self, length: int, d_model: int) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal(length, d_model), persistent=False)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        steps = seq.shape[1]
        if traced() or steps > self.table.shape[0]:
            return seq + sinusoidal(steps, seq.shape[2], seq.device).to(seq.dtype)
        return seq + self.table[:steps].to(seq.dtype)


class LearnedPositions(nn.Module):
    """Adds a learned vector per position, ``max_length`` of them: ``(B, T, D) -> (B, T, D)``."""

    def __init__(self, max_length: int, d_model: int) -> None:
        super().__init__()
        self.max_length = max_length
        self.weight = nn.Parameter(torch.randn(max_length, d_model) * 0.02)  # as BERT and GPT-2 draw them

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        steps = seq.shape[1]
        if traced():  # an exported graph takes any length: steps past the last position reuse it
            return seq + self.weight[torch.arange(steps, device=seq.device).clamp_max(self.max_length - 1)]
        if steps > self.max_length:  # a shape, no value read from the device
            raise ConfigError(f"a sequence of {steps} steps is longer than the model.max_length={self.max_length} "
                              f"positions the model learned: give sequences of at most {self.max_length} steps "
                              "(a text's tokens), or train with a larger model.max_length.")
        return seq + self.weight[:steps]


class ClassToken(nn.Module):
    """Puts a learned vector before each sequence, which the head reads (``pooling=cls``):
    ``(B, T, D) -> (B, 1 + T, D)``."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, 1, d_model))  # as ViT starts it

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.weight.expand(seq.shape[0], -1, -1), seq], dim=1)


class TransformerNet(nn.Module):
    """An input embedding, positions, ``nn.TransformerEncoder``, pooling, then
    ``[BatchNorm1d] -> [Dropout] -> [head] -> Linear``.

    Examples are read as sequences as the recurrent models read them: ``(T, F)`` as is, ``(F,)``
    as F steps of one feature, an image ``(C, H, W)`` row by row (``H`` steps of ``C * W``
    features) or, with ``patch_size``, as square patches (a strided convolution embeds each:
    ``(H / P) * (W / P)`` steps). With ``vocab_size``, examples are token ids ``(T,)`` padded
    with 0 at the end: an embedding turns them into vectors, and attention and mean pooling
    ignore the padding.

    Args:
        input_shape: shape of one example without the batch dimension.
        num_outputs: width of the output layer.
        d_model: width of every step's vector.
        num_heads: attention heads per layer; must divide ``d_model``.
        num_layers: stacked encoder layers.
        ff_dim: width of each layer's feed-forward block.
        dropout: dropout on attention weights, in the feed-forward block, after each residual
            branch, and on the embedded inputs.
        activation: ``"relu"`` or ``"gelu"``, in the feed-forward block.
        positional: ``"sinusoidal"`` (fixed) or ``"learned"`` (``max_length`` vectors).
        max_length: positions learned; a longer sequence is refused.
        pooling: ``"cls"`` (a learned class token's output) or ``"mean"`` (over non-padding steps).
        norm_first: layer norm before attention and feed-forward (pre-norm, with a final norm)
            rather than after each residual add (post-norm, as the original transformer).
        patch_size: read images as square patches of this side; None reads them row by row.
        head_dropout: dropout on the pooled state before the output layer; 0 adds no layer.
        batch_norm: BatchNorm1d on the pooled state.
        vocab_size: number of token ids, for text; None for numeric inputs.
        head: layer specs between the pooled state and the output layer (as a recurrent model's).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        ff_dim: int = 128,
        dropout: float = 0.1,
        activation: str = "gelu",
        positional: str = "sinusoidal",
        max_length: int = 512,
        pooling: str = "cls",
        norm_first: bool = True,
        patch_size: int | None = None,
        head_dropout: float = 0.0,
        batch_norm: bool = False,
        vocab_size: int | None = None,
        head: Sequence[str] = (),
    ) -> None:
        super().__init__()
        # Outside the schema's choices a name would silently build something else.
        for key, value, known in (("pooling", pooling, POOLINGS), ("positional", positional, POSITIONALS),
                                  ("activation", activation, ACTIVATIONS)):
            if value not in known:
                raise ValueError(f"{key} must be one of {', '.join(known)}, got {value!r}")
        if d_model % num_heads:
            raise ConfigError(f"model.num_heads={num_heads} does not divide model.d_model={d_model} (each head reads "
                              f"d_model / num_heads features): set model.num_heads to one of "
                              f"{', '.join(map(str, divisors(d_model)))} or model.d_model to a multiple of it.")
        self.input_shape = tuple(input_shape)
        self.reads_tokens = vocab_size is not None
        self.embed, steps = embedding(self.input_shape, d_model, vocab_size, patch_size)
        if positional == "learned" and steps > max_length:
            raise ConfigError(f"this data's sequences have {steps} steps, more than the model.max_length={max_length} "
                              "positions model.positional=learned learns: set model.max_length to at least "
                              f"{steps}, or model.positional=sinusoidal.")
        self.positions = (LearnedPositions(max_length, d_model) if positional == "learned"
                          else SinusoidalPositions(max(steps, max_length), d_model))
        self.input_dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.cls = ClassToken(d_model) if pooling == "cls" else None
        layer = nn.TransformerEncoderLayer(d_model, num_heads, ff_dim, dropout, activation=activation,
                                           batch_first=True, norm_first=norm_first)
        # Pre-norm leaves the last layer's output unnormalised: a final norm, as GPT-2 and ViT end.
        # No nested tensors: the padded steps stay in the batch, and train and eval compute alike.
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(d_model) if norm_first else None,
                                             enable_nested_tensor=False)
        self.bn = nn.BatchNorm1d(d_model) if batch_norm else None
        self.dropout = nn.Dropout(head_dropout) if head_dropout > 0 else None
        layers, (width,) = build_layers(head, (d_model,), key="model.head", kinds=HEAD_KINDS)
        self.head = nn.Sequential(layers) if layers else None
        self.out = nn.Linear(width, num_outputs)  # logits: losses apply softmax/sigmoid

    def _as_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """Numeric examples as embedded steps ``(B, T, D)``."""
        b = x.shape[0]
        if isinstance(self.embed, nn.Conv2d):
            return self.embed(x).flatten(2).transpose(1, 2)  # (B, D, H/P, W/P) -> (B, N, D)
        if len(self.input_shape) == 1:
            x = x.reshape(b, -1, 1)  # (B, F) -> (B, F, 1)
        elif len(self.input_shape) == 3:
            c, _, w = self.input_shape
            x = x.reshape(b, c, -1, w).transpose(1, 2).reshape(b, -1, c * w)  # one step per row: (B, H, C * W)
        return self.embed(x)  # (B, T, F) -> (B, T, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_outputs)``."""
        padding = None
        if self.reads_tokens:
            padding = x == 0  # (B, T): True at the padding, which attention and pooling skip
            seq = self.embed(x)  # (B, T, D)
        else:
            seq = self._as_sequence(x)  # (B, T, D)
        seq = self.positions(seq)
        if self.input_dropout is not None:
            seq = self.input_dropout(seq)
        if self.cls is not None:
            seq = self.cls(seq)  # (B, 1 + T, D)
            if padding is not None:
                padding = torch.cat([padding.new_zeros(padding.shape[0], 1), padding], dim=1)
        out = self.encoder(seq, src_key_padding_mask=padding)  # (B, T', D)
        if self.cls is not None:
            pooled = out[:, 0]  # the class token's state
        elif padding is None:
            pooled = out.mean(dim=1)
        else:
            keep = (~padding)[..., None]  # (B, T, 1): the tokens, not the padding
            pooled = masked_pool(out, keep.sum(dim=(1, 2)), keep, "mean")
        return dense_head(self, pooled)


def embedding(input_shape: tuple[int, ...], d_model: int, vocab_size: int | None,
              patch_size: int | None) -> tuple[nn.Module, int]:
    """The layer that turns one example into ``d_model``-wide steps, and how many steps it makes.

    Raises:
        ConfigError: the example's shape cannot be read so (patches of a non-image, a patch
            size not dividing the image, token ids of more than one axis).
    """
    shape = tuple(input_shape)
    if len(shape) not in (1, 2, 3):
        raise ConfigError(f"model=transformer reads examples of shape (features,), (time, features) or (channels, "
                          f"height, width), but this data's examples have shape {shape}: use model=mlp.")
    if patch_size is not None and len(shape) != 3 or patch_size is not None and vocab_size is not None:
        raise ConfigError(f"model.patch_size={patch_size} cuts images into patches, but this data's examples have "
                          f"shape {shape}: set model.patch_size=null.")
    if vocab_size is not None:
        if len(shape) != 1:
            raise ConfigError(f"model=transformer embeds token ids of shape (time,), but this data's examples have "
                              f"shape {shape}.")
        return nn.Embedding(vocab_size, d_model, padding_idx=0), shape[0]  # the padding's vector stays zero
    if len(shape) == 3 and patch_size is not None:
        c, h, w = shape
        if h % patch_size or w % patch_size:
            sides = divisors(math.gcd(h, w))
            raise ConfigError(f"model.patch_size={patch_size} does not divide this data's images of {h}x{w} pixels: "
                              f"set model.patch_size to one of {', '.join(map(str, sides))} (or null: rows).")
        return nn.Conv2d(c, d_model, patch_size, stride=patch_size), (h // patch_size) * (w // patch_size)
    if len(shape) == 3:
        return nn.Linear(shape[0] * shape[2], d_model), shape[1]  # an image row: C * W features
    if len(shape) == 2:
        return nn.Linear(shape[1], d_model), shape[0]
    return nn.Linear(1, d_model), shape[0]


def divisors(n: int) -> list[int]:
    """The whole numbers that divide ``n``, smallest first."""
    return [k for k in range(1, n + 1) if n % k == 0]


# It embeds token ids; model.activation is what an init= scheme's gain follows. The builder is
# the class: its arguments are the keys (with the data's shape, vocabulary and the head's regularization).
build_transformer = MODELS.register("transformer", reads_tokens=True)(TransformerNet)

"""Recurrent models over token ids as exporters can trace them (:func:`exportable`).

:class:`~dltrain.models.recurrent.RecurrentNet` packs padded token sequences, whose lengths
depend on the data: torch.export, the ONNX exporter and tracing cannot follow that. Padding only
ever comes after a text's tokens, so :class:`UnpackedRecurrentNet` runs each layer over the whole
padded sequence instead: a forward direction's outputs at ``t < length`` are the packed ones, and
a backward direction reads each sequence reversed within its own length (an index gather). Under
torch.export (and so the ONNX exporter) each layer's time loop is a ``scan``, which keeps the
sequence length a dimension of any size; elsewhere it is torch's own RNN/LSTM/GRU module.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch._higher_order_ops.scan import scan  # torch's scan: no public name yet, torch.export and ONNX take it

from dltrain.models.recurrent import RecurrentNet, masked_pool


def exportable(model: nn.Module) -> nn.Module:
    """``model``, or a deep copy of it with every :class:`RecurrentNet` that reads token ids
    replaced by an :class:`UnpackedRecurrentNet` computing the same outputs. Recurrent nets over
    numeric sequences (no lengths, nothing packed) are left as they are."""
    names = [name for name, module in model.named_modules()
             if isinstance(module, RecurrentNet) and module.embedding is not None]
    if not names:
        return model
    model = copy.deepcopy(model)
    if names == [""]:  # the model itself
        return UnpackedRecurrentNet(model)
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, attr, UnpackedRecurrentNet(getattr(parent, attr)))
    return model


class UnpackedRecurrentNet(nn.Module):
    """A token-reading :class:`RecurrentNet` without packing: the same weights and outputs.

    Each layer and direction of the trained stack becomes a one-layer unidirectional module
    holding that direction's weights, so that the backward direction can be fed each sequence
    reversed within its length.

    Args:
        net: the trained net (its embedding, pooled-state layers and output layer are reused).
    """

    def __init__(self, net: RecurrentNet) -> None:
        super().__init__()
        r = net.recurrent
        self.pooling, self.hidden_size = net.pooling, r.hidden_size
        self.bidirectional = r.bidirectional
        self.embedding, self.bn, self.dropout, self.head, self.out = (net.embedding, net.bn, net.dropout,
                                                                      net.head, net.out)
        self.between = nn.Dropout(r.dropout)  # torch's dropout between stacked layers (training only)
        suffixes = ["", "_reverse"] if r.bidirectional else [""]
        self.layers = nn.ModuleList(
            nn.ModuleList(_direction(r, layer, suffix) for suffix in suffixes) for layer in range(r.num_layers))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, num_outputs)`` of token ids ``x`` ``(B, T)`` padded with 0 at the end
        (``lengths``: each sequence's length, else its count of non-zero ids, at least 1)."""
        if lengths is None:
            lengths = (x != 0).sum(dim=1).clamp_min(1)  # (B,)
        seq = self.embedding(x)  # (B, T) ids -> (B, T, E)
        steps = seq.shape[1]
        positions = torch.arange(steps, device=seq.device)[None, :]  # (1, T)
        mask = positions < lengths[:, None]  # (B, T): the tokens, not the padding
        # Position t of a sequence reversed within its length; padding steps stay where they are.
        reverse = torch.where(mask, lengths[:, None] - 1 - positions, positions)  # (B, T)
        for i, directions in enumerate(self.layers):
            if i > 0:
                seq = self.between(seq)
            outputs = [_run(directions[0], seq)]  # (B, T, H)
            if self.bidirectional:
                outputs.append(_gather_steps(_run(directions[1], _gather_steps(seq, reverse)), reverse))
            seq = torch.cat(outputs, dim=2)  # (B, T, D * H); padding steps hold values no one reads
        # RecurrentNet's own tail, on the modules this net took from it (bn, dropout, head, out)
        return RecurrentNet._head(self, self._pool(seq, lengths, mask[..., None]))

    def _pool(self, output: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, T, D * H)`` -> ``(B, D * H)``: the final states, or the mean or max over the tokens."""
        if self.pooling == "last":
            h = self.hidden_size
            at_end = (lengths - 1)[:, None, None].expand(-1, 1, h)  # (B, 1, H)
            last = [output[:, :, :h].gather(1, at_end)[:, 0]]  # forward: the state at the last token
            if self.bidirectional:
                last.append(output[:, 0, h:])  # backward: it has read the whole sequence at step 0
            return torch.cat(last, dim=1)
        return masked_pool(output, lengths, mask, self.pooling)


def _direction(r: nn.RNNBase, layer: int, suffix: str) -> nn.RNNBase:
    """A one-layer unidirectional copy of one layer and direction of ``r``."""
    kwargs = {"nonlinearity": r.nonlinearity} if isinstance(r, nn.RNN) else {}
    inputs = r.input_size if layer == 0 else r.hidden_size * (2 if r.bidirectional else 1)
    cell = type(r)(inputs, r.hidden_size, batch_first=True, **kwargs).to(r.weight_ih_l0)  # its device and dtype
    cell.load_state_dict({f"{name}_l0": getattr(r, f"{name}_l{layer}{suffix}")
                          for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
    return cell


def _gather_steps(seq: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``seq[b, index[b, t]]`` for every ``b, t``: ``(B, T, F)``."""
    return seq.gather(1, index[..., None].expand(-1, -1, seq.shape[2]))


def _run(cell: nn.RNNBase, seq: torch.Tensor) -> torch.Tensor:
    """The outputs ``(B, T, H)`` of a one-layer unidirectional ``cell`` over ``seq`` ``(B, T, F)``."""
    if torch.compiler.is_exporting():  # torch's RNN modules fix T when exported; a scan does not
        return scan_layer(cell, seq)
    return cell(seq)[0]


def scan_layer(cell: nn.RNNBase, seq: torch.Tensor) -> torch.Tensor:
    """What ``cell(seq)[0]`` computes, as a ``scan`` over time steps (torch's formulas, from a zero state).

    Args:
        cell: a one-layer unidirectional ``nn.RNN``, ``nn.LSTM`` or ``nn.GRU`` with ``batch_first``.
        seq: its inputs ``(B, T, F)``.
    """
    w_hh, b_hh = cell.weight_hh_l0, cell.bias_hh_l0
    inputs = F.linear(seq, cell.weight_ih_l0, cell.bias_ih_l0).transpose(0, 1)  # (T, B, gates * H)
    h0 = seq.new_zeros(seq.shape[0], cell.hidden_size)  # (B, H)

    if isinstance(cell, nn.LSTM):
        def step(carry, gi):
            h, c = carry
            i, f, g, o = (gi + F.linear(h, w_hh, b_hh)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            return (h, c), h.clone()

        init = (h0, h0.clone())
    elif isinstance(cell, nn.GRU):
        def step(h, gi):
            r_i, z_i, n_i = gi.chunk(3, dim=1)
            r_h, z_h, n_h = F.linear(h, w_hh, b_hh).chunk(3, dim=1)
            r, z = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
            h = (1 - z) * torch.tanh(n_i + r * n_h) + z * h
            return h, h.clone()

        init = h0
    else:
        act = torch.tanh if cell.nonlinearity == "tanh" else torch.relu

        def step(h, gi):
            h = act(gi + F.linear(h, w_hh, b_hh))
            return h, h.clone()

        init = h0
    _, outputs = scan(step, init, inputs)  # (T, B, H)
    return outputs.transpose(0, 1)

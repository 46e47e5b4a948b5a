"""A Keras-style per-layer table of a model: name, type, output shape, parameters, init."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from dltrain.init import init_formula, layers


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: str
    params: int
    init: str
    frozen: bool = False  # its parameters take no gradient (model.freeze)


def dummy_forward(model: nn.Module, example: torch.Tensor | tuple[int, ...],
                  autocast_dtype: torch.dtype | None = None, call: Callable[[torch.Tensor], object] | None = None
                  ) -> object:
    """The model's output for a small batch, in eval mode without gradients.

    It also materialises lazy layers (``nn.LazyLinear``). The model's train/eval mode is
    restored afterwards.

    Args:
        model: the model.
        example: a batch of real inputs (any dtype: token ids stay integers), or the shape
            of one example, for a batch of two zero examples.
        autocast_dtype: run under autocast to this dtype.
        call: what runs on the batch instead of ``model(x)`` (a model's ``summary_forward``).
    """
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = example.to(device) if torch.is_tensor(example) else torch.zeros((2, *example), device=device)
    try:
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                             enabled=autocast_dtype is not None):
            return (call or model)(x)
    finally:
        model.train(was_training)


def summarize(
    model: nn.Module,
    example: torch.Tensor | tuple[int, ...],
    init_applied: dict[str, str] | None = None,
) -> list[LayerRow]:
    """One row per layer (:func:`dltrain.init.layers`), in call order, from a forward pass on a small batch.

    Args:
        model: the model; its train/eval mode is restored afterwards.
        example: a batch of inputs, or the shape of one example (see :func:`dummy_forward`).
        init_applied: module name -> init scheme, as returned by ``dltrain.init.apply_init``.
    """
    init_applied = init_applied or {}
    rows: list[LayerRow] = []
    leaves = list(layers(model))  # attention is one row, its out_proj in it

    def hook(name: str, module: nn.Module):
        def record(_module, _inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            shape = "(-1, " + ", ".join(str(d) for d in out.shape[1:]) + ")" if torch.is_tensor(out) else "?"
            params = sum(p.numel() for p in module.parameters())
            rows.append(LayerRow(name, type(module).__name__, shape.replace(", )", ")"), params,
                                 init_applied.get(name, "-" if params == 0 else "default")))
        return record

    hooks = [module.register_forward_hook(hook(name, module)) for name, module in leaves]
    try:
        # A model of several networks runs each of them (DCGAN: the generator, then the discriminator).
        dummy_forward(model, example, call=getattr(model, "summary_forward", None))
    finally:
        for h in hooks:
            h.remove()
    return rows


def mark_frozen(rows: list[LayerRow], model: nn.Module) -> None:
    """Mark the rows of layers whose parameters take no gradient (frozen)."""
    modules = dict(model.named_modules())
    for row in rows:
        params = list(modules[row.name].parameters()) if row.name in modules else []
        row.frozen = bool(params) and not any(p.requires_grad for p in params)


def format_summary(rows: list[LayerRow], model: nn.Module, notes: list[str] | tuple[str, ...] = ()) -> str:
    """The rows as a fixed-width text table with parameter totals (trainable: as the run starts),
    then ``notes`` (what unfreezes when) and what each init scheme draws. A frozen layer's type
    reads ``(frozen)``."""
    header = ("Layer", "Type", "Output shape", "Params", "Init")
    table = [header] + [(r.name, f"{r.kind} (frozen)" if r.frozen else r.kind, r.output_shape, f"{r.params:,}", r.init)
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)

    def fmt(row):  # parameter counts right-aligned, the rest left-aligned
        cells = zip(row, widths, strict=True)
        return "  ".join(cell.rjust(w) if i == 3 else cell.ljust(w) for i, (cell, w) in enumerate(cells))

    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out = [fmt(header), line, *(fmt(r) for r in table[1:]), line,
           f"Total params: {total:,}", f"Trainable params: {trainable:,}",
           f"Non-trainable params: {total - trainable:,}", *notes]
    # What each scheme in the Init column draws, once per scheme: the column stays short. A note
    # may say it already (a model that initialises its layers its own way).
    said = {note.partition(":")[0].removeprefix("Init ") for note in notes if note.startswith("Init ")}
    # "pretrained (encoder.0)": loaded from an autoencoder's encoder layer (one note for all of them)
    labels = dict.fromkeys(r.init.partition(" (encoder")[0] for r in rows if r.init not in ("-", *said))
    from_encoder = any(r.init.startswith("pretrained (encoder") for r in rows)
    out += [f"Init {init_formula(label, [r.kind for r in rows if r.init == label])}" if label != "pretrained"
            else "Init pretrained: loaded from model.weights, not drawn" + (
                "; (encoder.N): the autoencoder's encoder layer it holds" if from_encoder else "")
            for label in labels]
    return "\n".join(s.rstrip() for s in out) + "\n"

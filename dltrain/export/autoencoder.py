"""An autoencoder's export (``task=autoencoder``): its encoder, so the exported graph reads raw inputs
and returns each input's latent code ``(batch, K)`` (``output.name: latents``, columns ``z0 ..
z<K-1>``). The data record the export describes says so (``task: latents``); ``model.json``'s
``autoencoder`` entry says what the file is.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

#: The data record's task of an exported encoder: its outputs are latent codes.
LATENTS = "latents"


class Encoder(nn.Module):
    """An autoencoder's ``encode`` as a module: inputs -> latent codes ``(B, K)``."""

    def __init__(self, autoencoder: nn.Module) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = self.autoencoder.encode(x)
        return code.flatten(1)  # (B, K); flatten keeps the batch size free in a traced graph


def encoder_of(restored: Any) -> Any:
    """``restored`` (:class:`~dltrain.inference.restore.Restored`) as its encoder when its run
    trained an autoencoder, its data record's task ``latents`` and output width the code's size;
    any other checkpoint as it is."""
    from dltrain.inference.predict_autoencoder import is_autoencoder

    if not is_autoencoder(restored):
        return restored
    encoder = Encoder(restored.model).eval()
    shape = restored.data["input_shape"]
    with torch.no_grad():
        width = int(encoder(torch.zeros(2, *shape)).shape[1])
    data = {**restored.data, "task": LATENTS, "num_outputs": width, "target_scale": None, "class_names": None}
    state = {**restored.state, "model_spec": {**restored.state["model_spec"], "output_width": width}}
    return dataclasses.replace(restored, model=encoder, data=data, state=state)


def card_entry() -> dict[str, str]:
    """``model.json``'s line saying the file is an autoencoder's encoder."""
    return {"autoencoder": "the encoder of an autoencoder (task=autoencoder): it returns each input's latent code; "
                           "its decoder is not exported"}

"""The smallest Hydra app that uses torch: the start-up floor that ``benchmarks.run`` compares ``dltrain`` with.

It composes an empty config, imports torch inside the task function (as dltrain does, so that Hydra's own
start-up comes first) and creates one tensor::

    python benchmarks/bare_app.py hydra.run.dir=/tmp/bare
    python benchmarks/bare_app.py hydra.run.dir=/tmp/bare +step=true     # and one Adam step on a tiny Linear
    python benchmarks/bare_app.py hydra.run.dir=/tmp/bare +device=cuda   # on a GPU

``+step=true`` is the floor of any torch training command: the first ``optimizer.step()`` imports
``torch._dynamo``, which costs about a second on a small CPU whatever the model.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg: DictConfig) -> None:
    """Import torch and make one tensor; with ``+step=true`` also take one Adam step."""
    import torch

    device = torch.device(cfg.get("device", "cpu"))
    x = torch.ones(8, 4, device=device)
    if cfg.get("step", False):
        model = torch.nn.Linear(4, 2).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        model(x).square().mean().backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the work is done before the process reports it finished


if __name__ == "__main__":
    main()

"""Per-task metrics, accumulated on the device and read once per pass.

Nothing here calls ``.item()`` per batch: sums stay tensors until :meth:`compute`, so the
training loop never waits on the device between logging points.
"""

from __future__ import annotations

import torch

from dltrain.losses import CLASSIFICATION
from dltrain.tasks.gan_metrics import GAN_METRICS, SAMPLE_METRICS, add_gan_sums, gan_metrics


class MetricAccumulator:
    """Running sums for one pass over a split.

    Classification reports ``loss`` and ``accuracy`` (per label for multi-label data), and for
    binary data ``precision``, ``recall`` and ``f1`` of the positive class (index 1), which
    accuracy hides on imbalanced data; regression reports ``loss``, ``rmse``, ``mae`` and ``r2``
    (averaged over output columns); ``reconstruction`` (``task=autoencoder``) reports ``loss`` alone.
    """

    def __init__(self, task: str) -> None:
        self.task = task
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def _add(self, name: str, value: torch.Tensor) -> None:
        total = self.sums.get(name)
        if total is None:
            self.sums[name] = value  # a tensor of this batch's own: added to in place from now on
        else:
            total.add_(value)

    @torch.no_grad()
    def update(self, output: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None:
        """Add one batch: ``loss`` is the batch's mean loss."""
        n = target.shape[0]
        self.count += n
        total = self.sums.get("loss")
        if total is None:
            self.sums["loss"] = loss.detach().float() * n
        else:
            total.add_(loss.detach().float() * n)  # in place; the product first, as the sum always rounded
        if self.task == "reconstruction":  # task=autoencoder: the reconstruction loss is its metric
            return
        if self.task == "multilabel":  # share of labels right, averaged over examples
            self._add("correct", ((output > 0) == (target > 0.5)).float().mean(dim=1).sum())
        elif self.task in CLASSIFICATION:
            # One output column is a binary logit (loss=bce); otherwise one column per class.
            pred = (output[:, 0] > 0).long() if output.shape[1] == 1 else output.argmax(dim=1)
            self._add("correct", (pred == target).sum())
            if self.task == "binary":
                self._add("true_pos", ((pred == 1) & (target == 1)).sum())
                self._add("pred_pos", (pred == 1).sum())
                self._add("actual_pos", (target == 1).sum())
        elif self.task == "gan":  # task=gan: the step's (B, 4) logits and D's losses
            add_gan_sums(self._add, output)
        else:
            pred = output.detach().float()
            y = target.reshape(pred.shape).float()
            err = pred - y
            self._add("sse", (err * err).sum(dim=0))
            self._add("sae", err.abs().sum(dim=0))
            self._add("sum_y", y.sum(dim=0))
            self._add("sum_y2", (y * y).sum(dim=0))

    def state_dict(self) -> dict[str, object]:
        """The sums so far, to continue a pass after a mid-epoch resume."""
        return {"count": self.count, "sums": {k: v.detach().clone() for k, v in self.sums.items()}}

    def load_state_dict(self, state: dict[str, object], device: torch.device | None = None) -> None:
        self.count = int(state["count"])
        # copies: the sums are added to in place
        self.sums = {k: v.to(device, copy=True) if device is not None else v.clone() for k, v in state["sums"].items()}

    @classmethod
    def merged(cls, task: str, states: list[dict[str, object]]) -> MetricAccumulator:
        """One accumulator of the sums of several (each rank's :meth:`state_dict`), in float64
        on the CPU; a rank that saw no example adds nothing."""
        acc = cls(task)
        for state in states:
            if not state["count"]:
                continue
            acc.count += int(state["count"])
            for k, v in state["sums"].items():
                v = v.detach().double().cpu()
                acc.sums[k] = acc.sums[k] + v if k in acc.sums else v
        return acc

    def compute(self) -> dict[str, float]:
        """The metrics over everything seen so far (one device sync)."""
        if self.count == 0:
            return {}
        n = self.count
        sums = {k: v.double().cpu() for k, v in self.sums.items()}
        out = {"loss": float(sums["loss"]) / n}
        if self.task == "reconstruction":
            return out
        if self.task in CLASSIFICATION:
            out["accuracy"] = float(sums["correct"]) / n
            if self.task == "binary":  # 0 where undefined (nothing predicted or nothing to find)
                tp, pp, ap = (float(sums[k]) for k in ("true_pos", "pred_pos", "actual_pos"))
                out["precision"] = tp / pp if pp else 0.0
                out["recall"] = tp / ap if ap else 0.0
                out["f1"] = 2 * tp / (pp + ap) if pp + ap else 0.0
        elif self.task == "gan":
            out.update(gan_metrics(sums, n))
        else:
            out["rmse"] = float((sums["sse"] / n).mean().sqrt())
            out["mae"] = float((sums["sae"] / n).mean())
            sst = sums["sum_y2"] - sums["sum_y"] ** 2 / n  # total sum of squares per column
            r2 = 1 - sums["sse"] / sst.clamp_min(1e-12)
            out["r2"] = float(r2.mean())
        return out


def metric_names(task: str) -> list[str]:
    """Every per-epoch column ``metrics.csv`` has for ``task`` (what early stopping may monitor)."""
    if task == "reconstruction":  # task=autoencoder
        return ["train_loss", "val_loss", "lr"]
    if task == "binary":
        per_split = ["loss", "accuracy", "precision", "recall", "f1"]
    elif task in CLASSIFICATION:
        per_split = ["loss", "accuracy"]
    elif task == "gan":
        per_split = ["loss", *GAN_METRICS]
    else:
        per_split = ["loss", "rmse", "mae", "r2"]
    names = [f"{split}_{m}" for split in ("train", "val") for m in per_split] + ["lr"]
    return names + [f"val_{m}" for m in SAMPLE_METRICS] if task == "gan" else names  # task.scorer's

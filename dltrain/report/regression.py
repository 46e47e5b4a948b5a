"""A regression's test predictions in the target's units: mean absolute error, root mean
squared error and the coefficient of determination (R²)."""

from __future__ import annotations

import torch


def target_units(values: torch.Tensor, target_scale: tuple[float, float] | None) -> torch.Tensor:
    """Standardised values ``(N, ...)`` back in the target's units, ``(N, columns)`` float64."""
    mean, std = target_scale or (0.0, 1.0)
    return values.double().cpu().reshape(len(values), -1) * std + mean


def regression_report(truth: torch.Tensor, prediction: torch.Tensor) -> dict[str, float]:
    """MAE and RMSE over every value, and R² averaged over the columns ``(N, columns)``. A
    column whose truth is constant has R² 1 when predicted exactly, else 0 (it has no
    variance to explain)."""
    error = prediction - truth
    ss_res = (error**2).sum(dim=0)
    ss_tot = ((truth - truth.mean(dim=0)) ** 2).sum(dim=0)
    r2 = torch.where(ss_tot > 0, 1 - ss_res / ss_tot.clamp(min=1e-300), (ss_res == 0).double())
    return {"mae": round(float(error.abs().mean()), 6), "rmse": round(float((error**2).mean().sqrt()), 6),
            "r2": round(float(r2.mean()), 6)}

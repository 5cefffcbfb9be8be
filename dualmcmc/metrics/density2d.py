"""How far a 2-D model density is from the true one, both normalised on the same grid: KL and total variation."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .grid import DEFAULT_BATCH, grid_log_density, histogram_log_density


def kl_tv_from_log_masses(true_log_mass: Tensor, model_log_mass: Tensor) -> dict[str, float]:
    """{"kl": KL(p_true || p_model) in nats, "tv": total variation} of two grids of log cell masses.

    Cells where the truth is 0 contribute nothing to the KL; a model mass of 0 where the truth has mass
    gives inf.  NaN anywhere in the model grid gives NaN for both (e.g. a diverged model).
    """
    log_p = true_log_mass.to(torch.float64).reshape(-1)
    log_q = model_log_mass.to(torch.float64).reshape(-1)
    if log_p.shape != log_q.shape:
        raise ValueError(
            f"grids differ in size: truth {tuple(true_log_mass.shape)}, model {tuple(model_log_mass.shape)}"
        )
    if torch.isnan(log_q).any() or torch.isnan(log_p).any():
        return {"kl": math.nan, "tv": math.nan}
    p, q = log_p.exp(), log_q.exp()
    support = p > 0
    kl = torch.sum(p[support] * (log_p[support] - log_q[support])).item()
    tv = 0.5 * torch.sum((p - q).abs()).item()
    # Rounding can leave KL at -1e-17 for identical grids; the divergence itself is never negative.
    return {"kl": max(kl, 0.0), "tv": min(max(tv, 0.0), 1.0)}


def grid_kl_tv(
    model_log_prob: Callable[[Tensor], Tensor],
    true_log_prob: Callable[[Tensor], Tensor] | None = None,
    true_samples: Tensor | None = None,
    bounds=(-4.0, 4.0),
    resolution: int = 500,
    batch: int = DEFAULT_BATCH,
    bandwidth: float | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """{"kl", "tv"}: KL(p_true || p_model) in nats and total variation between two densities on a grid.

    ``model_log_prob`` (possibly unnormalised, e.g. -energy / T; a neural net is fine) is evaluated at the
    cell centres in batches of ``batch`` under no_grad, on ``device`` when given, and exp of it is normalised
    on the grid by log-sum-exp.  The truth is normalised on the same grid: from ``true_log_prob`` when given,
    else from a Gaussian-smoothed histogram of ``true_samples`` (biased upwards: see
    ``histogram_log_density``; ``bandwidth`` sets its smoothing).  Both are thus restricted to ``bounds``.
    """
    model_log_mass = grid_log_density(model_log_prob, bounds, resolution, batch, device)
    if true_log_prob is not None:
        true_log_mass = grid_log_density(true_log_prob, bounds, resolution, batch)
    elif true_samples is not None:
        true_log_mass = histogram_log_density(true_samples, bounds, resolution, bandwidth)
    else:
        raise ValueError("grid_kl_tv needs the truth: pass true_log_prob (a log-density) or true_samples")
    return kl_tv_from_log_masses(true_log_mass, model_log_mass)

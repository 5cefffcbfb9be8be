"""Mixing diagnostics for MCMC chains: autocorrelation, effective sample size, split R-hat, acceptance, mode switches.

Chains come first, as in ArviZ: ``x`` is (n_chains, n_draws) or (n_chains, n_draws, d), a torch tensor or a numpy
array; everything is computed in float64. Scalar inputs per draw give floats, vector inputs (d,) tensors.
The ESS and R-hat follow Stan's definitions (Gelman et al., BDA3 §11.4-11.5): the within-chain variance W, the
pooled estimate var+ = (n-1)/n W + B/n, and Geyer's initial positive and monotone sequence for the ESS.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

MIN_DRAWS = 4


def _chains(x, name: str = "x") -> tuple[Tensor, bool]:
    """(m, n, d) float64 and whether the input was scalar per draw."""
    t = torch.as_tensor(x).detach().to(torch.float64).cpu()
    if t.dim() not in (2, 3):
        raise ValueError(f"{name} must be (n_chains, n_draws) or (n_chains, n_draws, d), got shape {tuple(t.shape)}")
    if t.shape[1] < MIN_DRAWS:
        raise ValueError(f"{name} needs at least {MIN_DRAWS} draws per chain, got {t.shape[1]}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} holds non-finite values; drop the diverged chains first")
    scalar = t.dim() == 2
    return (t.unsqueeze(-1) if scalar else t), scalar


def _out(value: Tensor, scalar: bool):
    return float(value[0]) if scalar else value


def _autocovariance(t: Tensor) -> Tensor:
    """(m, n, d) -> (m, n, d) biased autocovariance per chain (divided by n), by FFT."""
    n = t.shape[1]
    centred = t - t.mean(dim=1, keepdim=True)
    size = 1 << (2 * n - 1).bit_length()  # zero padding: no circular wrap-around
    spectrum = torch.fft.rfft(centred, n=size, dim=1)
    return torch.fft.irfft(spectrum * spectrum.conj(), n=size, dim=1)[:, :n] / n


def autocorrelation(x, max_lag: Optional[int] = None):
    """Normalised autocorrelation at lags 0..max_lag (default n_draws - 1), averaged over chains:
    (max_lag + 1,) or (max_lag + 1, d)."""
    t, scalar = _chains(x)
    lag = t.shape[1] - 1 if max_lag is None else int(max_lag)
    if not 0 <= lag < t.shape[1]:
        raise ValueError(f"max_lag must be in [0, n_draws - 1 = {t.shape[1] - 1}], got max_lag={max_lag}")
    acov = _autocovariance(t)
    acf = (acov / acov[:, :1].clamp_min(1e-300)).mean(dim=0)[: lag + 1]
    return acf[:, 0] if scalar else acf


def _pooled_variance(t: Tensor) -> tuple[Tensor, Tensor]:
    """(W, var+) per dimension for chains (m, n, d)."""
    n = t.shape[1]
    within = t.var(dim=1, unbiased=True).mean(dim=0)
    between_over_n = t.mean(dim=1).var(dim=0, unbiased=True) if t.shape[0] > 1 else torch.zeros_like(within)
    return within, (n - 1) / n * within + between_over_n


def effective_sample_size(x):
    """Multi-chain ESS = m n / tau, tau = -1 + 2 sum of Geyer's initial positive, monotone pair sums of the
    combined autocorrelation rho_t = 1 - (W - mean_chains acov_t) / var+."""
    t, scalar = _chains(x)
    m, n, d = t.shape
    acov = _autocovariance(t).mean(dim=0)  # (n, d)
    within, var_plus = _pooled_variance(t)
    result = torch.empty(d, dtype=torch.float64)
    for j in range(d):
        if var_plus[j] <= 0:
            result[j] = float(m * n)  # a constant chain: nothing to correlate
            continue
        rho = 1.0 - (within[j] - acov[:, j]) / var_plus[j]
        rho[0] = 1.0
        pairs = rho[: n - n % 2].reshape(-1, 2).sum(dim=1)
        positive = int((pairs <= 0).nonzero()[0]) if (pairs <= 0).any() else len(pairs)
        pairs = pairs[:positive]
        pairs = torch.cummin(pairs, dim=0).values if len(pairs) else pairs  # initial monotone sequence
        tau = -1.0 + 2.0 * float(pairs.sum()) if len(pairs) else 1.0
        result[j] = m * n / max(tau, 1.0 / torch.log10(torch.tensor(float(m * n))).item())
    return _out(result, scalar)


def split_rhat(x):
    """Split-chain R-hat: each chain cut into halves, sqrt(var+ / W) over the 2m half chains (1 when mixed)."""
    t, scalar = _chains(x)
    half = t.shape[1] // 2
    halves = torch.cat([t[:, :half], t[:, t.shape[1] - half:]], dim=0)
    within, var_plus = _pooled_variance(halves)
    # constant half chains: equal constants are mixed (1), different constants never mix (inf)
    degenerate = torch.where(var_plus > 0, torch.full_like(var_plus, float("inf")), torch.ones_like(var_plus))
    rhat = torch.where(within > 0, torch.sqrt(var_plus / within.clamp_min(1e-300)), degenerate)
    return _out(rhat, scalar)


def acceptance_rate(accepted) -> float:
    """Fraction of accepted Metropolis proposals in a bool or 0/1 tensor of any shape."""
    a = torch.as_tensor(accepted).detach().to(torch.float64)
    if a.numel() == 0:
        raise ValueError("accepted is empty")
    if ((a != 0) & (a != 1)).any():
        raise ValueError("accepted must hold booleans or 0/1 values")
    return float(a.mean())


def mode_switches(trajectory, centers, radius: float) -> Tensor:
    """(C,) int64: how often each chain moved from one mode's neighbourhood (within ``radius`` of a centre) to
    another's. A chain's mode is the last neighbourhood it was inside, so time spent between modes, or leaving
    and re-entering the same mode, counts nothing."""
    t = torch.as_tensor(trajectory).detach().to(torch.float64).cpu()
    c = torch.as_tensor(centers).detach().to(torch.float64).cpu()
    if t.dim() != 3 or c.dim() != 2 or t.shape[-1] != c.shape[-1]:
        raise ValueError(f"trajectory must be (n_chains, n_steps, D) and centers (M, D) with the same D; got "
                         f"{tuple(t.shape)} and {tuple(c.shape)}")
    if not (torch.isfinite(t).all() and torch.isfinite(c).all()):
        raise ValueError("trajectory and centers must be finite; drop the diverged chains from trajectory first")
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius!r}")
    dist = torch.cdist(t.reshape(-1, t.shape[-1]), c).reshape(t.shape[0], t.shape[1], -1)
    nearest = dist.argmin(dim=-1)
    inside = dist.min(dim=-1).values <= radius
    counts = torch.zeros(t.shape[0], dtype=torch.int64)
    for k in range(t.shape[0]):
        visited = nearest[k][inside[k]]  # the modes in the order the chain was inside them
        counts[k] = int((visited[1:] != visited[:-1]).sum()) if len(visited) > 1 else 0
    return counts


__all__ = ["autocorrelation", "effective_sample_size", "split_rhat", "acceptance_rate", "mode_switches"]

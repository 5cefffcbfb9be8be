"""Sample-based metrics: kernel MMD between two sample sets, and coverage of known modes or rings."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

DEFAULT_BANDWIDTH_MULTIPLES = (0.25, 0.5, 1.0, 2.0, 4.0)
# A mode counts as hit when it holds at least this fraction of the samples a perfect sampler would put there.
DEFAULT_MIN_FRACTION = 0.1
_MEDIAN_POINTS_PER_SET = 500
_ROWS_PER_BLOCK = 2048


def _as_points(x: Tensor, name: str) -> Tensor:
    pts = torch.as_tensor(x).detach()
    if pts.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) tensor, got shape {tuple(pts.shape)}")
    return pts.to(torch.float64)


def median_distance(x: Tensor, y: Tensor) -> float:
    """Median pairwise distance in the pooled sample (the first 500 points of each set), 1.0 if degenerate."""
    pooled = torch.cat([x[:_MEDIAN_POINTS_PER_SET], y[:_MEDIAN_POINTS_PER_SET]])
    dist = torch.cdist(pooled, pooled)
    upper = dist[torch.triu_indices(len(pooled), len(pooled), offset=1, device=dist.device).unbind()]
    median = upper.median().item() if upper.numel() else 0.0
    return median if math.isfinite(median) and median > 0 else 1.0


def _kernel_sum(a: Tensor, b: Tensor, bandwidths: Tensor) -> float:
    """sum over pairs (a_i, b_j) and bandwidths h of exp(-|a_i - b_j|^2 / (2 h^2)), blockwise in a."""
    total = 0.0
    neg_inv_two_var = (-0.5 / bandwidths.square()).tolist()
    for start in range(0, len(a), _ROWS_PER_BLOCK):
        # Distances in float64; kernel values and row sums in float32 (values in [0, 1]); the total in float64.
        sq_dist = torch.cdist(a[start : start + _ROWS_PER_BLOCK], b).square().to(torch.float32)
        for scale in neg_inv_two_var:
            total += torch.exp(sq_dist * scale).sum(dim=1).to(torch.float64).sum().item()
    return total


def mmd(
    x: Tensor,
    y: Tensor,
    bandwidths: Sequence[float] | None = None,
    multiples: Sequence[float] = DEFAULT_BANDWIDTH_MULTIPLES,
) -> float:
    """Unbiased estimate of MMD^2 between samples x (n, D) and y (m, D), n, m >= 2.

    Kernel: the sum of Gaussian kernels exp(-|a - b|^2 / (2 h^2)) over bandwidths h = ``bandwidths``, or by
    default the median pairwise distance of the pooled samples times ``multiples`` (0.25 ... 4).  Each kernel
    is 1 at a = b, so the value is at most 2K for K kernels; ~0 for equal distributions (it can be slightly
    negative: it is unbiased).  Distances in float64 on x's device, in blocks.
    """
    xs = _as_points(x, "x")
    ys = _as_points(y, "y").to(xs.device)
    if xs.shape[1] != ys.shape[1]:
        raise ValueError(f"x and y differ in dimension: {xs.shape[1]} vs {ys.shape[1]}")
    n, m = len(xs), len(ys)
    if n < 2 or m < 2:
        raise ValueError(f"mmd needs at least 2 samples in each set, got {n} and {m}")
    if bandwidths is None:
        median = median_distance(xs, ys)
        bandwidths = [median * float(k) for k in multiples]
    h = torch.tensor([float(b) for b in bandwidths], dtype=torch.float64, device=xs.device)
    if len(h) == 0 or not bool((h > 0).all()):
        raise ValueError(f"mmd bandwidths must be positive, got {list(bandwidths)}")
    n_kernels = len(h)
    # Diagonal terms are exactly 1 per kernel; removing them makes the within-set averages unbiased.
    xx = (_kernel_sum(xs, xs, h) - n * n_kernels) / (n * (n - 1))
    yy = (_kernel_sum(ys, ys, h) - m * n_kernels) / (m * (m - 1))
    xy = _kernel_sum(xs, ys, h) / (n * m)
    return xx + yy - 2.0 * xy


def _coverage(distances: Tensor, weights: Tensor, radius: float, min_fraction: float) -> dict:
    """Coverage statistics from sample-to-mode distances (N, M); NaN distances count as off-mode."""
    n, n_modes = distances.shape
    if n == 0:
        raise ValueError("mode coverage needs at least one sample")
    w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
    if len(w) != n_modes:
        raise ValueError(f"got {len(w)} weights for {n_modes} modes")
    w = w / w.sum()
    nearest_dist, nearest = torch.nan_to_num(distances, nan=math.inf).min(dim=1)
    on_mode = nearest_dist <= radius
    counts = torch.bincount(nearest[on_mode], minlength=n_modes).to(torch.float64)
    shares = counts / n
    needed = torch.clamp(min_fraction * w * n, min=1.0)
    return {
        "modes_hit": int((counts >= needed).sum().item()),
        "n_modes": int(n_modes),
        "shares": [float(s) for s in shares],
        "max_share_error": float((shares - w).abs().max().item()),
        "off_mode_fraction": float(1.0 - on_mode.to(torch.float64).mean().item()),
    }


def mode_coverage(
    samples: Tensor,
    centers: Tensor,
    weights: Tensor | None = None,
    radius: float = 0.3,
    min_fraction: float = DEFAULT_MIN_FRACTION,
) -> dict:
    """How well samples (N, D) cover point modes ``centers`` (M, D) of mixture ``weights`` (M,) (default equal).

    A sample belongs to its nearest centre when within ``radius`` of it, else it is off-mode (so are NaN
    samples).  A mode is hit when it holds at least max(1, min_fraction * weight * N) samples, i.e. by default
    10 % of what a perfect sampler would put there: lenient enough that sampling noise never drops a mode
    (expected 200, needed 20 for 25 modes and 5000 samples), strict enough that a few stray samples do not
    count as covering it.  Returns {"modes_hit", "n_modes", "shares" (observed fraction of ALL samples per mode),
    "max_share_error" (max |share - weight|), "off_mode_fraction"}.
    """
    pts = _as_points(samples, "samples")
    c = torch.as_tensor(centers, dtype=torch.float64, device=pts.device)
    if c.ndim != 2 or c.shape[1] != pts.shape[1]:
        raise ValueError(f"centers must be (M, {pts.shape[1]}), got {tuple(c.shape)}")
    w = torch.ones(len(c), dtype=torch.float64) if weights is None else weights
    return _coverage(torch.cdist(pts, c).cpu(), w, float(radius), min_fraction)


def ring_coverage(
    samples: Tensor,
    radii: Tensor,
    weights: Tensor | None = None,
    half_width: float = 0.3,
    min_fraction: float = DEFAULT_MIN_FRACTION,
) -> dict:
    """mode_coverage for concentric rings around the origin: the distance of x to ring k is | |x| - r_k |."""
    pts = _as_points(samples, "samples")
    r = torch.as_tensor(radii, dtype=torch.float64, device=pts.device).reshape(-1)
    w = torch.ones(len(r), dtype=torch.float64) if weights is None else weights
    distances = (pts.norm(dim=1, keepdim=True) - r).abs()
    return _coverage(distances.cpu(), w, float(half_width), min_fraction)

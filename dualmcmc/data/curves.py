"""Toy 2-D densities made of a curve blurred by isotropic Gaussian noise: 2spirals, moons.

The samplers draw a curve parameter t from a known density, take the curve point c(t), and add N(0, s^2 I).
The density is then p(x) = E_t[ N(x; c(t), s^2 I) ], a smooth 1-D integral evaluated by a midpoint rule with
nodes s/5 apart along the curve.  So their log-densities are *numerical but precise*, and consistent with the
samplers by construction: against a 10x finer rule, the grid KL is < 1e-7 nats and the relative error is
< 0.05 % where a 250x250-grid cell holds > 1e-4 of the mass, < 0.5 % where it holds > 1e-5; it reaches a few %
only in the far tails just beyond the curve ends (the rule's end-point error).

Choices (FFJORD-like shapes; FFJORD adds extra uniform jitter, dropped here so the density stays exact):

* 2spirals: t ~ 3 pi sqrt(U) on [0, 3 pi] (density 2t / (3 pi)^2, about uniform along the arc, as in
  FFJORD), c(t) = +-(t / 3) (-cos t, sin t) with the two signs equally likely, noise std 0.1.
  Arms are ~1.05 apart, radii up to pi.
* moons: sklearn's two half-circles (cos t, sin t) and (1 - cos t, 0.5 - sin t), t ~ U[0, pi], scaled by 2 and
  shifted by (-1, -0.2) (FFJORD), noise std 0.2 (sklearn noise 0.1 before the scaling).  Spans x in
  [-3, 3], y in [-1.2, 1.8] before noise.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

SPIRAL_TURN_END = 3.0 * math.pi  # 540 degrees
SPIRAL_SCALE = 1.0 / 3.0
SPIRAL_STD = 0.1
MOONS_SCALE = 2.0
MOONS_SHIFT = (-1.0, -0.2)
MOONS_STD = 0.2
SPIRAL_NODES_PER_ARM = 1500  # arc spacing <= 0.021 = std / 5
MOON_NODES_PER_MOON = 160  # arc spacing 0.039 = std / 5


def spiral_points(t: Tensor, sign: Tensor) -> Tensor:
    """Points on the two spirals for parameters t (N,) and arm signs +-1 (N,), shape (N, 2)."""
    base = SPIRAL_SCALE * t[:, None] * torch.stack([-torch.cos(t), torch.sin(t)], dim=1)
    return sign[:, None] * base


def moon_points(t: Tensor, which: Tensor) -> Tensor:
    """Points on the two moons for parameters t in [0, pi] (N,) and moon index 0/1 (N,), shape (N, 2)."""
    outer = torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    inner = torch.stack([1.0 - torch.cos(t), 0.5 - torch.sin(t)], dim=1)
    raw = torch.where(which[:, None].bool(), inner, outer)
    return MOONS_SCALE * raw + torch.tensor(MOONS_SHIFT, dtype=raw.dtype)


def sample_2spirals(n: int, generator: torch.Generator | None) -> Tensor:
    """n points from 2spirals, float32 (n, 2)."""
    t = SPIRAL_TURN_END * torch.rand(n, generator=generator, dtype=torch.float64).sqrt()
    sign = 2.0 * torch.randint(2, (n,), generator=generator).to(torch.float64) - 1.0
    noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (spiral_points(t, sign) + SPIRAL_STD * noise).float()


def sample_moons(n: int, generator: torch.Generator | None) -> Tensor:
    """n points from moons, float32 (n, 2)."""
    t = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    which = torch.randint(2, (n,), generator=generator)
    noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (moon_points(t, which) + MOONS_STD * noise).float()


def spiral_quadrature() -> tuple[Tensor, Tensor]:
    """Midpoint-rule nodes (K, 2) and log-weights (K,) for E_t over both spiral arms."""
    m = SPIRAL_NODES_PER_ARM
    step = SPIRAL_TURN_END / m
    t = (torch.arange(m, dtype=torch.float64) + 0.5) * step
    weight = 0.5 * (2.0 * t / SPIRAL_TURN_END**2) * step  # arm probability * density of t * step
    ones = torch.ones(m, dtype=torch.float64)
    nodes = torch.cat([spiral_points(t, ones), spiral_points(t, -ones)])
    return nodes, torch.cat([weight, weight]).log()


def moon_quadrature() -> tuple[Tensor, Tensor]:
    """Midpoint-rule nodes (K, 2) and log-weights (K,) for E_t over both moons."""
    m = MOON_NODES_PER_MOON
    t = (torch.arange(m, dtype=torch.float64) + 0.5) * (math.pi / m)
    nodes = torch.cat([moon_points(t, torch.zeros(m)), moon_points(t, torch.ones(m))])
    return nodes, torch.full((2 * m,), math.log(0.5 / m), dtype=torch.float64)


def blurred_curve_log_density(nodes: Tensor, log_weights: Tensor, std: float):
    """Callable x (N, 2) -> log sum_i w_i N(x; nodes_i, std^2 I).

    Points are processed in spatially compact chunks (Z-order); a chunk sums only over the nodes that can
    matter: a node is skipped when, for every point of the chunk, its term is below exp(-_CUTOFF_LOG) times
    that of the chunk's nearest node, so the result equals the full sum to ~1e-13 relative.
    """
    log_norm = -math.log(2.0 * math.pi * std * std)
    two_var = 2.0 * std * std

    def log_density(x: Tensor) -> Tensor:
        xd = x.to(torch.float64)
        nd, lw = nodes.to(xd.device), log_weights.to(xd.device)
        out = torch.empty(len(xd), dtype=torch.float64, device=xd.device)
        order = _z_order(xd, cell=std)
        for start in range(0, len(xd), _POINTS_PER_CHUNK):
            idx = order[start : start + _POINTS_PER_CHUNK]
            pts = xd[idx]
            lo, hi = pts.min(dim=0).values, pts.max(dim=0).values
            center, half_diag = 0.5 * (lo + hi), 0.5 * (hi - lo).norm()
            to_center = (nd - center).norm(dim=1)
            nearest_bound = (to_center.min() + half_diag).square()
            farthest_needed = (nearest_bound + two_var * _CUTOFF_LOG).sqrt() + half_diag
            keep = to_center <= farthest_needed
            sq_dist = torch.cdist(pts, nd[keep]).square()
            out[idx] = torch.logsumexp(lw[keep] - sq_dist / two_var, dim=1)
        return (out + log_norm).to(x.dtype if x.is_floating_point() else torch.float32)

    return log_density


_POINTS_PER_CHUNK = 256
_CUTOFF_LOG = 32.0  # skipped terms weigh < e^-32 ~ 1e-14 of the nearest node's


def _z_order(x: Tensor, cell: float) -> Tensor:
    """A permutation of the rows of x (N, 2) along a Z-order curve over cells of side ``cell``."""
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.long, device=x.device)
    ij = torch.floor((x - x.min(dim=0).values) / cell).clamp(0, 2**20 - 1).long()
    key = torch.zeros(len(x), dtype=torch.long, device=x.device)
    for bit in range(20):
        key |= ((ij[:, 0] >> bit) & 1) << (2 * bit)
        key |= ((ij[:, 1] >> bit) & 1) << (2 * bit + 1)
    return torch.argsort(key)

"""Toy 2-D densities with closed-form log-densities: 8gaussians, 25gaussians, rings.

Every sampler here draws from exactly the density its log-density function returns, so grid KL against
these densities measures the model alone.

Choices (all in data units; the data live well inside [-4, 4]^2):

* 8gaussians: 8 equal-weight isotropic Gaussians, centres on a circle of radius 2*sqrt(2) ~ 2.83 (FFJORD's
  scale 4 / sqrt(2)) at angles 0, 45, ..., 315 degrees, std 0.2 (FFJORD's is 0.5/sqrt(2) ~ 0.35; 0.2 keeps
  neighbouring modes 10.8 std apart while staying 12 grid cells wide on the 500x500 grid of [-4, 4]^2).
* 25gaussians: 25 equal-weight isotropic Gaussians on the 5x5 grid {-3, -1.5, 0, 1.5, 3}^2 (spacing 1.5, so
  the outer modes sit 10 std inside the box instead of straddling its edge), std 0.1 (15 std between
  neighbours, 6 grid cells per std).
* rings: 4 equal-weight rings of radius 0.75, 1.5, 2.25, 3.0 (FFJORD's radii); a point is drawn as
  radius |r_k + s*eps| (eps ~ N(0, 1), s = 0.1) at a uniform angle.  Its density is the folded normal over
  the circumference, exactly: p(x) = sum_k w_k [N(|x|; r_k, s) + N(-|x|; r_k, s)] / (2 pi |x|).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

EIGHT_GAUSSIANS_RADIUS = 2.0 * math.sqrt(2.0)
EIGHT_GAUSSIANS_STD = 0.2
GRID_GAUSSIANS_SPACING = 1.5
GRID_GAUSSIANS_STD = 0.1
RING_RADII = (0.75, 1.5, 2.25, 3.0)
RING_STD = 0.1
# A mode (or ring) is "reached" within this many stds: a 2-D Gaussian keeps 1 - exp(-4.5) = 98.9 % of its
# mass within 3 std of its centre; a radial Gaussian keeps 99.7 % within 3 std of its ring.
MODE_RADIUS_IN_STDS = 3.0


def eight_gaussians_centers() -> Tensor:
    """(8, 2) float64 centres of 8gaussians, counter-clockwise from angle 0."""
    angles = torch.arange(8, dtype=torch.float64) * (2.0 * math.pi / 8.0)
    return EIGHT_GAUSSIANS_RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)


def grid_gaussians_centers() -> Tensor:
    """(25, 2) float64 centres of 25gaussians, row-major over (x, y) in {-3, -1.5, 0, 1.5, 3}."""
    ticks = (torch.arange(5, dtype=torch.float64) - 2.0) * GRID_GAUSSIANS_SPACING
    xs, ys = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


def sample_gaussian_mixture(centers: Tensor, std: float, n: int, generator: torch.Generator | None) -> Tensor:
    """n points from the equal-weight isotropic mixture over ``centers``, float32 (n, 2)."""
    which = torch.randint(len(centers), (n,), generator=generator)
    noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (centers[which] + std * noise).float()


def gaussian_mixture_log_density(centers: Tensor, std: float):
    """Callable x (N, 2) -> exact log-density (N,) of the equal-weight isotropic mixture."""
    log_weight = -math.log(len(centers))
    log_norm = -math.log(2.0 * math.pi * std * std)

    def log_density(x: Tensor) -> Tensor:
        xd = x.to(torch.float64)
        sq_dist = torch.cdist(xd, centers.to(xd.device)).square()
        out = torch.logsumexp(log_weight - 0.5 * sq_dist / (std * std), dim=1) + log_norm
        return out.to(_float_dtype(x))

    return log_density


def sample_rings(n: int, generator: torch.Generator | None) -> Tensor:
    """n points from rings, float32 (n, 2)."""
    radii = torch.tensor(RING_RADII, dtype=torch.float64)
    which = torch.randint(len(radii), (n,), generator=generator)
    radius = (radii[which] + RING_STD * torch.randn(n, generator=generator, dtype=torch.float64)).abs()
    angle = 2.0 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    return (radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)).float()


def rings_log_density(x: Tensor) -> Tensor:
    """Exact log-density of rings at x (N, 2) -> (N,)."""
    xd = x.to(torch.float64)
    radii = torch.tensor(RING_RADII, dtype=torch.float64, device=xd.device)
    # The origin is a measure-zero point where the folded normal's 1/(2 pi rho) blows up; any finite value
    # is a valid density there, and clamping keeps the grid free of inf.
    rho = xd.norm(dim=1).clamp_min(1e-12)[:, None]
    log_gauss_plus = -0.5 * ((rho - radii) / RING_STD).square()
    log_gauss_minus = -0.5 * ((rho + radii) / RING_STD).square()
    log_radial = torch.logaddexp(log_gauss_plus, log_gauss_minus) - math.log(RING_STD * math.sqrt(2.0 * math.pi))
    out = torch.logsumexp(log_radial, dim=1) - math.log(len(RING_RADII)) - torch.log(2.0 * math.pi * rho[:, 0])
    return out.to(_float_dtype(x))


def _float_dtype(x: Tensor) -> torch.dtype:
    """The dtype a log-density is returned in: x's own if floating, float32 otherwise."""
    return x.dtype if x.is_floating_point() else torch.float32

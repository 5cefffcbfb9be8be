"""Toy 2-D densities that are neither mixtures nor blurred curves: checkerboard, pinwheel.

* checkerboard: uniform on the 8 "black" 2x2 squares of a 4x4 board covering [-4, 4]^2, a square with lower
  corner (2i, 2j) being black when i + j is even (FFJORD's board).  Density 1/32 on black squares, 0 elsewhere:
  exact and piecewise constant, log-density -log 32 or -inf.
* pinwheel: 5 arms.  f = (1 + 0.3 e1, 0.1 e2) with e ~ N(0, I), rotated counter-clockwise by
  2 pi k / 5 + 0.25 exp(f_1) for an arm k drawn uniformly, then scaled by 2 (FFJORD's radial std 0.3,
  tangential std 0.1, rate 0.25).  The map from f to x is not invertible in closed form (and not one-to-one
  in general), so there is no analytic log-density: metrics compare against a histogram of samples.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

CHECKER_SQUARE = 2.0
CHECKER_HALF_WIDTH = 4.0
PINWHEEL_ARMS = 5
PINWHEEL_RADIAL_STD = 0.3
PINWHEEL_TANGENTIAL_STD = 0.1
PINWHEEL_RATE = 0.25
PINWHEEL_SCALE = 2.0


def checkerboard_black_corners() -> Tensor:
    """(8, 2) float64 lower-left corners of the black squares."""
    ticks = torch.arange(-CHECKER_HALF_WIDTH, CHECKER_HALF_WIDTH, CHECKER_SQUARE, dtype=torch.float64)
    xs, ys = torch.meshgrid(ticks, ticks, indexing="ij")
    corners = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)
    index_sum = torch.floor(corners / CHECKER_SQUARE).sum(dim=1)
    return corners[index_sum.remainder(2) == 0]


def sample_checkerboard(n: int, generator: torch.Generator | None) -> Tensor:
    """n points uniform on the black squares, float32 (n, 2)."""
    corners = checkerboard_black_corners()
    which = torch.randint(len(corners), (n,), generator=generator)
    offset = CHECKER_SQUARE * torch.rand(n, 2, generator=generator, dtype=torch.float64)
    return (corners[which] + offset).float()


def checkerboard_log_density(x: Tensor) -> Tensor:
    """Exact log-density of checkerboard at x (N, 2) -> (N,): -log 32 on black squares, -inf elsewhere."""
    xd = x.to(torch.float64)
    inside = ((xd >= -CHECKER_HALF_WIDTH) & (xd < CHECKER_HALF_WIDTH)).all(dim=1)
    black = torch.floor(xd / CHECKER_SQUARE).sum(dim=1).remainder(2) == 0
    black_area = len(checkerboard_black_corners()) * CHECKER_SQUARE**2
    out = torch.full_like(xd[:, 0], -math.inf)
    out[inside & black] = -math.log(black_area)
    return out.to(x.dtype if x.is_floating_point() else torch.float32)


def sample_pinwheel(n: int, generator: torch.Generator | None) -> Tensor:
    """n points from pinwheel, float32 (n, 2)."""
    eps = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    radial = 1.0 + PINWHEEL_RADIAL_STD * eps[:, 0]
    tangential = PINWHEEL_TANGENTIAL_STD * eps[:, 1]
    arm = torch.randint(PINWHEEL_ARMS, (n,), generator=generator).to(torch.float64)
    angle = arm * (2.0 * math.pi / PINWHEEL_ARMS) + PINWHEEL_RATE * torch.exp(radial)
    cos, sin = torch.cos(angle), torch.sin(angle)
    x = torch.stack([cos * radial - sin * tangential, sin * radial + cos * tangential], dim=1)
    return (PINWHEEL_SCALE * x).float()

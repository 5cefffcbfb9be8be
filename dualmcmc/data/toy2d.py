"""Toy 2-D densities: one registry, samplers, log-densities and mode descriptions.

==============  ==================  ====================================================================
name            log-density         shape (details in mixtures.py, curves.py, shapes.py)
==============  ==================  ====================================================================
8gaussians      exact (analytic)    8 Gaussians, std 0.2, centres on the circle of radius 2*sqrt(2)
25gaussians     exact (analytic)    25 Gaussians, std 0.1, centres on {-3, -1.5, 0, 1.5, 3}^2
rings           exact (analytic)    4 rings of radius 0.75, 1.5, 2.25, 3 with radial std 0.1
checkerboard    exact (analytic)    uniform on 8 black 2x2 squares of [-4, 4]^2
2spirals        numerical, precise  two spiral arms out to radius pi, Gaussian blur std 0.1
moons           numerical, precise  two half-moons (sklearn, x2), Gaussian blur std 0.2
pinwheel        None                5 arms, radial std 0.6, tangential std 0.2 (after the x2 scale)
==============  ==================  ====================================================================

All data lie within [-4, 4]^2 up to Gaussian tails (pinwheel leaves < 0.1 % outside).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from . import curves, mixtures, shapes

LogDensity = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class _Toy:
    sample: Callable[[int, "torch.Generator | None"], Tensor]
    log_density: Callable[[], "LogDensity | None"]  # built lazily: quadrature nodes cost a little


def _mixture_toy(centers: Callable[[], Tensor], std: float) -> _Toy:
    return _Toy(
        sample=lambda n, g: mixtures.sample_gaussian_mixture(centers(), std, n, g),
        log_density=lambda: mixtures.gaussian_mixture_log_density(centers(), std),
    )


_TOYS: dict[str, _Toy] = {
    "8gaussians": _mixture_toy(mixtures.eight_gaussians_centers, mixtures.EIGHT_GAUSSIANS_STD),
    "25gaussians": _mixture_toy(mixtures.grid_gaussians_centers, mixtures.GRID_GAUSSIANS_STD),
    "rings": _Toy(mixtures.sample_rings, lambda: mixtures.rings_log_density),
    "2spirals": _Toy(
        curves.sample_2spirals,
        lambda: curves.blurred_curve_log_density(*curves.spiral_quadrature(), curves.SPIRAL_STD),
    ),
    "checkerboard": _Toy(shapes.sample_checkerboard, lambda: shapes.checkerboard_log_density),
    "pinwheel": _Toy(shapes.sample_pinwheel, lambda: None),
    "moons": _Toy(
        curves.sample_moons,
        lambda: curves.blurred_curve_log_density(*curves.moon_quadrature(), curves.MOONS_STD),
    ),
}

TOY_DENSITIES: tuple[str, ...] = tuple(_TOYS)
ANALYTIC_TOYS: tuple[str, ...] = ("8gaussians", "25gaussians", "rings", "checkerboard")
NUMERICAL_TOYS: tuple[str, ...] = ("2spirals", "moons")


def _toy(name: str) -> _Toy:
    try:
        return _TOYS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown toy density {name!r}; valid names: {', '.join(TOY_DENSITIES)}") from None


def sample_toy(name: str, n: int, generator: torch.Generator | None = None) -> Tensor:
    """Draw ``n`` points from the toy density ``name`` as a float32 (n, 2) CPU tensor.

    The same (CPU) ``torch.Generator`` state gives the same points; without one, torch's global RNG is used.
    """
    toy = _toy(name)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"sample_toy: n must be a non-negative int, got {n!r}")
    return toy.sample(n, generator)


def toy_log_density(name: str) -> LogDensity | None:
    """The normalised log-density of toy ``name`` as a callable x (N, 2) -> (N,), or None.

    Exact for 8gaussians, 25gaussians, rings, checkerboard (-inf off the black squares); a precise midpoint
    quadrature of the exact density for 2spirals and moons; None for pinwheel.  Computed in float64 on x's
    device and returned in x's floating dtype.
    """
    return _toy(name).log_density()


def toy_modes(name: str) -> tuple[Tensor, Tensor, float] | None:
    """(centers (M, 2), weights (M,), radius) of a Gaussian-mixture toy, else None.

    ``radius`` is 3 component stds (98.9 % of a component's mass lies within it); weights sum to 1.
    """
    _toy(name)
    if name == "8gaussians":
        centers, std = mixtures.eight_gaussians_centers(), mixtures.EIGHT_GAUSSIANS_STD
    elif name == "25gaussians":
        centers, std = mixtures.grid_gaussians_centers(), mixtures.GRID_GAUSSIANS_STD
    else:
        return None
    weights = torch.full((len(centers),), 1.0 / len(centers), dtype=torch.float64)
    return centers.float(), weights.float(), mixtures.MODE_RADIUS_IN_STDS * std


def toy_rings(name: str) -> tuple[Tensor, Tensor, float] | None:
    """(radii (M,), weights (M,), half_width) of a ring toy ("rings"), else None.

    ``half_width`` is 3 radial stds: a sample belongs to ring k when | |x| - r_k | <= half_width.
    """
    _toy(name)
    if name != "rings":
        return None
    radii = torch.tensor(mixtures.RING_RADII, dtype=torch.float32)
    weights = torch.full((len(radii),), 1.0 / len(radii))
    return radii, weights, mixtures.MODE_RADIUS_IN_STDS * mixtures.RING_STD


def is_toy(spec: object) -> bool:
    """True when ``spec`` names a toy density."""
    return isinstance(spec, str) and spec in _TOYS


"""Data sets for dualmcmc: toy 2-D densities (with their true log-densities) and user arrays."""
from __future__ import annotations

from .arrays import load_dataset
from .toy2d import (
    ANALYTIC_TOYS,
    NUMERICAL_TOYS,
    TOY_DENSITIES,
    is_toy,
    sample_toy,
    toy_log_density,
    toy_modes,
    toy_rings,
)

__all__ = [
    "ANALYTIC_TOYS",
    "NUMERICAL_TOYS",
    "TOY_DENSITIES",
    "is_toy",
    "load_dataset",
    "sample_toy",
    "toy_log_density",
    "toy_modes",
    "toy_rings",
]

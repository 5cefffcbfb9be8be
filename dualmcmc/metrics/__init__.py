"""Metrics for dualmcmc: grid-normalised densities (KL, total variation), MMD, mode coverage, evaluate_2d."""
from __future__ import annotations

from .density2d import grid_kl_tv, kl_tv_from_log_masses
from .evaluate import evaluate_2d, true_grid_log_mass
from .grid import (
    cell_area,
    grid_density,
    grid_log_density,
    grid_log_values,
    grid_points,
    histogram_log_density,
    normalise_log_grid,
)
from .samples import median_distance, mmd, mode_coverage, ring_coverage

__all__ = [
    "cell_area",
    "evaluate_2d",
    "grid_density",
    "grid_kl_tv",
    "grid_log_density",
    "grid_log_values",
    "grid_points",
    "histogram_log_density",
    "kl_tv_from_log_masses",
    "median_distance",
    "mmd",
    "mode_coverage",
    "normalise_log_grid",
    "ring_coverage",
    "true_grid_log_mass",
]

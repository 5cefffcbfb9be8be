"""Metrics for dualmcmc: grid-normalised densities (KL, total variation), MMD, mode coverage, evaluate_2d; for
images, Frechet distance and kernel MMD in the features of the package's digits classifier, evaluate_images."""
from __future__ import annotations

from .density2d import grid_kl_tv, kl_tv_from_log_masses
from .evaluate import evaluate_2d, mode_masses, true_grid_log_mass
from .grid import (
    cell_area,
    grid_density,
    grid_log_density,
    grid_log_values,
    grid_points,
    histogram_log_density,
    normalise_log_grid,
)
from .images import digits_classifier, evaluate_images, frechet_distance, kernel_mmd
from .samples import median_distance, mmd, mode_coverage, ring_coverage

__all__ = [
    "cell_area",
    "digits_classifier",
    "evaluate_2d",
    "evaluate_images",
    "frechet_distance",
    "grid_density",
    "grid_kl_tv",
    "grid_log_density",
    "grid_log_values",
    "grid_points",
    "histogram_log_density",
    "kernel_mmd",
    "kl_tv_from_log_masses",
    "median_distance",
    "mmd",
    "mode_coverage",
    "mode_masses",
    "normalise_log_grid",
    "ring_coverage",
    "true_grid_log_mass",
]

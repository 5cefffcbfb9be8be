"""Data sets for dualmcmc: toy 2-D densities (with their true log-densities), user arrays, and images.

load_dataset is the entry point; images are (N, C, H, W), uint8 for 8-bit sources: map batches with to_model_range.
"""
from __future__ import annotations

from .digits import DIGITS_N_TEST, load_digits, load_digits_labels
from .images import is_image_shape, to_model_range
from .load import dataset_shape, load_dataset, resolved_spec
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
    "DIGITS_N_TEST",
    "NUMERICAL_TOYS",
    "TOY_DENSITIES",
    "dataset_shape",
    "is_image_shape",
    "is_toy",
    "load_dataset",
    "load_digits",
    "load_digits_labels",
    "resolved_spec",
    "sample_toy",
    "toy_log_density",
    "toy_modes",
    "toy_rings",
    "to_model_range",
]

"""Reference networks. Energies return E(x) with shape (N,), lower on data.

Vector data (shape (D,)) use the MLPs in :mod:`.mlp`; conv nets for images come in :mod:`.conv` later.
"""
from __future__ import annotations

from .mlp import ACTIVATIONS, GaussianMLPEncoder, MLPEnergy, MLPGenerator, mlp

__all__ = ["ACTIVATIONS", "GaussianMLPEncoder", "MLPEnergy", "MLPGenerator", "mlp", "is_vector_shape"]


def is_vector_shape(data_shape: tuple[int, ...]) -> bool:
    """True for flat vector data (D,), which the MLPs handle; image shapes (C, H, W) need conv nets."""
    return len(tuple(data_shape)) == 1

"""Networks: MLPs for vector data, small conv nets and the Dual-MCMC reference ResNets for images, normalizing flows
(:mod:`.flow`, imported on its own).

``make_energy`` / ``make_generator`` / ``make_encoder`` pick them by ``arch`` and data shape (:mod:`.factory`).
"""
from __future__ import annotations

from .conv import ConvEncoder, ConvEnergy, ConvGenerator
from .factory import ARCHS, make_encoder, make_energy, make_generator, resolve_arch
from .mlp import ACTIVATIONS, GaussianMLPEncoder, MLPEnergy, MLPGenerator, mlp
from .resnet import REFERENCE_SHAPES, ReferenceEncoder, ReferenceEnergy, ReferenceGenerator, weights_init

__all__ = ["ACTIVATIONS", "ARCHS", "REFERENCE_SHAPES", "ConvEncoder", "ConvEnergy", "ConvGenerator",
           "GaussianMLPEncoder", "MLPEnergy", "MLPGenerator", "ReferenceEncoder", "ReferenceEnergy",
           "ReferenceGenerator", "is_vector_shape", "make_encoder", "make_energy", "make_generator",
           "mlp", "resolve_arch", "weights_init"]


def is_vector_shape(data_shape: tuple[int, ...]) -> bool:
    """True for flat vector data (D,), which the MLPs handle; image shapes (C, H, W) need conv nets."""
    return len(tuple(data_shape)) == 1


def __getattr__(name: str):
    if name == "build_nets":  # moved to dualmcmc.build_nets (it reads configs; the nets library does not)
        from ..build import build_nets

        return build_nets
    raise AttributeError(f"module 'dualmcmc.nets' has no attribute {name!r}")

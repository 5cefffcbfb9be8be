"""Networks: MLPs for vector data, small conv nets and the Dual-MCMC reference ResNets for images, normalizing flows
(:mod:`.flow`, imported on its own).

``make_energy`` / ``make_generator`` / ``make_encoder`` pick them by ``arch`` and data shape (:mod:`.factory`).
"""
from __future__ import annotations

from .conv import ConvEncoder, ConvEnergy, ConvGenerator
from .factory import ARCHS, build_nets, make_encoder, make_energy, make_generator, resolve_arch
from .mlp import ACTIVATIONS, GaussianMLPEncoder, MLPEnergy, MLPGenerator, mlp
from .resnet import REFERENCE_SHAPES, ReferenceEncoder, ReferenceEnergy, ReferenceGenerator, weights_init

__all__ = ["ACTIVATIONS", "ARCHS", "REFERENCE_SHAPES", "ConvEncoder", "ConvEnergy", "ConvGenerator",
           "GaussianMLPEncoder", "MLPEnergy", "MLPGenerator", "ReferenceEncoder", "ReferenceEnergy",
           "ReferenceGenerator", "build_nets", "is_vector_shape", "make_encoder", "make_energy", "make_generator",
           "mlp", "resolve_arch", "weights_init"]


def is_vector_shape(data_shape: tuple[int, ...]) -> bool:
    """True for flat vector data (D,), which the MLPs handle; image shapes (C, H, W) need conv nets."""
    return len(tuple(data_shape)) == 1

"""Which nets a method gets: one switch, ``arch``, from the data shape to the energy, generator and encoder.

    "mlp"       MLPs for vector data (D,); images are NOT flattened into MLPs
    "conv"      small conv nets for square images (C, S, S), S in 8, 16, 32, 64; width = base channels
    "cifar10"   the Dual-MCMC reference ResNets for 3 x 32 x 32 (width = ngf / ndf / nif, latent_dim = nz)
    "celeba64"  the Dual-MCMC reference ResNets for 3 x 64 x 64
    "auto"      "mlp" for vectors, "conv" for images

``layers`` and ``activation`` shape the MLPs; the conv energy takes ``activation`` too; the reference nets ignore both.
"""
from __future__ import annotations

from torch import nn

from .conv import ConvEncoder, ConvEnergy, ConvGenerator
from .mlp import GaussianMLPEncoder, MLPEnergy, MLPGenerator
from .resnet import REFERENCE_SHAPES, ReferenceEncoder, ReferenceEnergy, ReferenceGenerator

ARCHS = ("mlp", "conv", "cifar10", "celeba64")


def resolve_arch(arch: str, data_shape) -> str:
    """The concrete arch for ``data_shape``; a ValueError naming 'arch' (or 'data_shape') when the two do not fit."""
    shape = tuple(int(d) for d in data_shape)
    if len(shape) not in (1, 3):
        raise ValueError(f"data_shape must be (D,) for vectors or (C, H, W) for images, got data_shape {shape}")
    if arch == "auto":
        return "mlp" if len(shape) == 1 else "conv"
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose 'auto' or one of {ARCHS}")
    if arch == "mlp" and len(shape) != 1:
        raise ValueError(f"arch 'mlp' takes vector data (D,), got data_shape {shape}; images need arch 'conv' "
                         f"(or 'cifar10' / 'celeba64'): they are not flattened into MLPs")
    if arch != "mlp" and len(shape) != 3:
        raise ValueError(f"arch {arch!r} takes images (C, H, W), got data_shape {shape}; use arch 'mlp' for vectors")
    if arch in REFERENCE_SHAPES and shape != REFERENCE_SHAPES[arch]:
        raise ValueError(f"arch {arch!r} is built for data_shape {REFERENCE_SHAPES[arch]}, got {shape}; "
                         f"use arch 'conv' for other image sizes")
    return arch


def _image_size(data_shape) -> tuple[int, int]:
    channels, height, width = (int(d) for d in data_shape)
    if height != width:
        raise ValueError(f"conv nets take square images, got data_shape {tuple(data_shape)}")
    return channels, height


def make_energy(arch: str, data_shape, width: int, layers: int = 3, activation: str = "silu") -> nn.Module:
    """Energy net (N, *data_shape) -> (N,), lower on data."""
    arch = resolve_arch(arch, data_shape)
    if arch == "mlp":
        return MLPEnergy(int(data_shape[0]), width, layers, activation)
    if arch == "conv":
        return ConvEnergy(*_image_size(data_shape), width, activation)
    return ReferenceEnergy(arch, ndf=width)


def make_generator(arch: str, data_shape, latent_dim: int, width: int, layers: int = 3) -> nn.Module:
    """Generator (N, latent_dim) -> (N, *data_shape)."""
    arch = resolve_arch(arch, data_shape)
    if arch == "mlp":
        return MLPGenerator(latent_dim, int(data_shape[0]), width, layers)
    if arch == "conv":
        return ConvGenerator(latent_dim, *_image_size(data_shape), width)
    return ReferenceGenerator(arch, nz=latent_dim, ngf=width)


def make_encoder(arch: str, data_shape, latent_dim: int, width: int, layers: int = 3) -> nn.Module:
    """Gaussian encoder x -> (mu, logvar), each (N, latent_dim); logvar is a log-variance."""
    arch = resolve_arch(arch, data_shape)
    if arch == "mlp":
        return GaussianMLPEncoder(int(data_shape[0]), latent_dim, width, layers)
    if arch == "conv":
        channels, size = _image_size(data_shape)
        return ConvEncoder(channels, size, latent_dim, width)
    return ReferenceEncoder(arch, nz=latent_dim, nif=width)

"""Which nets a method gets: one switch, ``arch``, from the data shape to the energy, generator and encoder.

    "mlp"       MLPs for vector data (D,)
    "conv"      small conv nets for square images (C, S, S), S in 8, 16, 32, 64
    "cifar10"   the Dual-MCMC reference ResNets for 3 x 32 x 32 (width = ngf / ndf / nif, latent_dim = nz)
    "celeba64"  the Dual-MCMC reference ResNets for 3 x 64 x 64
    "auto"      "mlp" for vectors, "conv" for images
"""
from __future__ import annotations

from torch import nn

from . import conv, mlp

ARCHS = ("mlp", "conv", "cifar10", "celeba64")
_REFERENCE_SHAPES = {"cifar10": (3, 32, 32), "celeba64": (3, 64, 64)}


def resolve_arch(arch: str, data_shape) -> str:
    """The concrete arch for ``data_shape``; a ValueError naming 'arch' when the two do not fit."""
    shape = tuple(int(d) for d in data_shape)
    if arch == "auto":
        return "mlp" if len(shape) == 1 else "conv"
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose 'auto' or one of {ARCHS}")
    if arch == "mlp" and len(shape) != 1:
        raise ValueError(f"arch 'mlp' takes vector data (D,), got data_shape {shape}; images need arch 'conv' "
                         f"(or 'cifar10' / 'celeba64'): they are not flattened into MLPs")
    if arch in _REFERENCE_SHAPES and shape != _REFERENCE_SHAPES[arch]:
        raise ValueError(f"arch {arch!r} is built for data_shape {_REFERENCE_SHAPES[arch]}, got {shape}; "
                         f"use arch 'conv' for other image sizes")
    return arch


def make_energy(arch: str, data_shape, width: int, layers: int = 3, activation: str = "silu") -> nn.Module:
    """Energy net (N, *data_shape) -> (N,). ``layers`` / ``activation`` only shape the MLP."""
    arch = resolve_arch(arch, data_shape)
    if arch == "mlp":
        return mlp.MLPEnergy(int(data_shape[0]), width, layers, activation)
    if arch == "conv":
        return conv.ConvEnergy(data_shape, width)
    from . import resnet

    return resnet.ReferenceEnergy(arch, ndf=width)


def make_generator(arch: str, data_shape, latent_dim: int, width: int, layers: int = 3) -> nn.Module:
    """Generator (N, latent_dim) -> (N, *data_shape)."""
    arch = resolve_arch(arch, data_shape)
    if arch == "mlp":
        return mlp.MLPGenerator(latent_dim, int(data_shape[0]), width, layers)
    if arch == "conv":
        return conv.ConvGenerator(latent_dim, data_shape, width)
    from . import resnet

    return resnet.ReferenceGenerator(arch, nz=latent_dim, ngf=width)


def make_encoder(arch: str, data_shape, latent_dim: int, width: int, layers: int = 3) -> nn.Module:
    """Gaussian encoder x -> (mu, logvar), each (N, latent_dim)."""
    arch = resolve_arch(arch, data_shape)
    if arch == "mlp":
        return mlp.GaussianMLPEncoder(int(data_shape[0]), latent_dim, width, layers)
    if arch == "conv":
        return conv.ConvEncoder(data_shape, latent_dim, width)
    from . import resnet

    return resnet.ReferenceEncoder(arch, nz=latent_dim, nif=width)


def build_nets(config) -> dict:
    """{"generator", "ebm", "encoder"} of the method a config (YAML path, dict or TrainConfig) names, built for
    its data; a net the method does not have is None. The data set is loaded to learn its shape, except for the
    reference archs, whose shape is fixed."""
    from ..config import load_config
    from ..data import load_dataset
    from ..methods import build_method

    cfg = load_config(config)
    arch = cfg.model.get("arch", "auto")
    if arch in _REFERENCE_SHAPES:
        shape = _REFERENCE_SHAPES[arch]
    else:
        shape = tuple(load_dataset(cfg.data, n_samples=min(cfg.n_data, 16), seed=cfg.seed).shape[1:])
    method = build_method(cfg.method, cfg.model, shape)
    return {"generator": method.generator, "ebm": method.ebm, "encoder": method.encoder}

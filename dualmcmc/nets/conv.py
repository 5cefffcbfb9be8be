"""Small DCGAN-style conv nets for square images of side 8, 16, 32 or 64 (the bundled digits are 1 x 8 x 8).

Each halves the side with stride-2 convs down to 4 x 4 (energy, encoder) or doubles it up from 4 x 4 (generator),
doubling / halving the channels at each step from the base ``width``. The energy has no BatchNorm (its value must
not depend on the batch) and a smooth activation by default, so Langevin gradients are smooth; the generator ends
in tanh because images live in [-1, 1].
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from .mlp import make_activation

SIDES = (8, 16, 32, 64)


def conv_doublings(channels: int, size: int) -> int:
    """Number of x2 steps between 4 x 4 and the image side; a ValueError for shapes these nets do not take."""
    shape = (int(channels), int(size), int(size))
    if shape[0] < 1 or shape[1] not in SIDES:
        raise ValueError(f"conv nets take data_shape (C, S, S) with C >= 1 and S in {SIDES}; got data_shape {shape} "
                         f"(resize the images, or use arch 'mlp' for vector data)")
    return int(math.log2(shape[1] // 4))


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"'{name}' must be a positive integer, got {value}")


class ConvEnergy(nn.Module):
    """E(x): (N, C, S, S) -> (N,), lower on data. conv3x3, then stride-2 conv4x4s (channels doubling) to 4 x 4,
    then a linear read-out of the flattened 4 x 4 map."""

    def __init__(self, channels: int, size: int, width: int = 32, activation: str = "silu"):
        super().__init__()
        n_down = conv_doublings(channels, size)
        _check_positive(width=width)
        self.data_shape = (int(channels), int(size), int(size))
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, 1, 1), make_activation(activation)]
        width_now = width
        for _ in range(n_down):
            layers += [nn.Conv2d(width_now, 2 * width_now, 4, 2, 1), make_activation(activation)]
            width_now *= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width_now * 16, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1)).squeeze(-1)


class ConvGenerator(nn.Module):
    """G(z): (N, latent_dim) -> (N, C, S, S) in [-1, 1]. Linear to a 4 x 4 map, then (transposed conv4x4 stride 2
    -> BN -> ReLU) per doubling with the channels halving, then conv3x3 -> tanh. Transposed convs rather than
    upsample + conv3x3: under half the cost on CPU (the conv runs at the low resolution)."""

    def __init__(self, latent_dim: int, channels: int, size: int, width: int = 32):
        super().__init__()
        n_up = conv_doublings(channels, size)
        _check_positive(latent_dim=latent_dim, width=width)
        self.latent_dim, self.data_shape = int(latent_dim), (int(channels), int(size), int(size))
        width_now = width * 2**n_up
        self.start_channels = width_now
        self.project = nn.Linear(latent_dim, width_now * 16)
        # BN on the 4 x 4 map rather than BatchNorm1d on the vector: it also works for a batch of one
        layers: list[nn.Module] = [nn.BatchNorm2d(width_now), nn.ReLU()]
        for _ in range(n_up):
            layers += [nn.ConvTranspose2d(width_now, width_now // 2, 4, 2, 1), nn.BatchNorm2d(width_now // 2),
                       nn.ReLU()]
            width_now //= 2
        layers += [nn.Conv2d(width_now, channels, 3, 1, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.body(self.project(z.flatten(1)).view(-1, self.start_channels, 4, 4))


class ConvEncoder(nn.Module):
    """q(z|x): (N, C, S, S) -> (mu, logvar), each (N, latent_dim); logvar is a log-VARIANCE. The energy's
    conv stack with LeakyReLU(0.2), then one linear layer for both heads."""

    def __init__(self, channels: int, size: int, latent_dim: int, width: int = 32):
        super().__init__()
        n_down = conv_doublings(channels, size)
        _check_positive(latent_dim=latent_dim, width=width)
        self.latent_dim, self.data_shape = int(latent_dim), (int(channels), int(size), int(size))
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, 1, 1), nn.LeakyReLU(0.2)]
        width_now = width
        for _ in range(n_down):
            layers += [nn.Conv2d(width_now, 2 * width_now, 4, 2, 1), nn.LeakyReLU(0.2)]
            width_now *= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width_now * 16, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.head(self.features(x).flatten(1)).chunk(2, dim=-1)
        return mu, logvar

"""Small DCGAN-style conv nets for square images of side 8, 16, 32 or 64 (the bundled digits are 1 x 8 x 8).

Each halves the side with stride-2 convs down to 4 x 4 (energy, encoder) or doubles it up from 4 x 4 (generator).
The energy uses SiLU, smooth so that Langevin gradients are; the generator ends in tanh (images live in [-1, 1]).
"""
from __future__ import annotations

import math

from torch import Tensor, nn

SIDES = (8, 16, 32, 64)


def _doublings(data_shape) -> int:
    """Number of x2 steps between 4 x 4 and the image side; a ValueError for shapes these nets do not take."""
    shape = tuple(int(d) for d in data_shape)
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] not in SIDES or shape[0] < 1:
        raise ValueError(f"conv nets take data_shape (C, S, S) with S in {SIDES}; got data_shape {shape} "
                         f"(resize the images, or use arch 'mlp' for vector data)")
    return int(math.log2(shape[1] // 4))


class ConvEnergy(nn.Module):
    """E(x): (N, C, S, S) -> (N,). conv3x3 then stride-2 conv4x4 blocks (channels doubling) to 4 x 4, then linear."""

    def __init__(self, data_shape, width: int = 32):
        super().__init__()
        n = _doublings(data_shape)
        layers: list[nn.Module] = [nn.Conv2d(data_shape[0], width, 3, 1, 1), nn.SiLU()]
        channels = width
        for _ in range(n):
            layers += [nn.Conv2d(channels, 2 * channels, 4, 2, 1), nn.SiLU()]
            channels *= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels * 16, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1)).squeeze(-1)


class ConvGenerator(nn.Module):
    """G(z): (N, latent_dim) -> (N, C, S, S) in [-1, 1]. Linear to 4 x 4, upsample + conv3x3 + BN + ReLU, tanh."""

    def __init__(self, latent_dim: int, data_shape, width: int = 32):
        super().__init__()
        n = _doublings(data_shape)
        channels = width * 2**n
        self.start_channels = channels
        self.project = nn.Sequential(nn.Linear(latent_dim, channels * 16), nn.BatchNorm1d(channels * 16), nn.ReLU())
        layers: list[nn.Module] = []
        for _ in range(n):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels // 2, 3, 1, 1),
                       nn.BatchNorm2d(channels // 2), nn.ReLU()]
            channels //= 2
        layers += [nn.Conv2d(channels, data_shape[0], 3, 1, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.body(self.project(z.flatten(1)).view(-1, self.start_channels, 4, 4))


class ConvEncoder(nn.Module):
    """q(z|x): (N, C, S, S) -> (mu, logvar), each (N, latent_dim); logvar is a log-VARIANCE."""

    def __init__(self, data_shape, latent_dim: int, width: int = 32):
        super().__init__()
        n = _doublings(data_shape)
        layers: list[nn.Module] = [nn.Conv2d(data_shape[0], width, 3, 1, 1), nn.LeakyReLU(0.2)]
        channels = width
        for _ in range(n):
            layers += [nn.Conv2d(channels, 2 * channels, 4, 2, 1), nn.LeakyReLU(0.2)]
            channels *= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels * 16, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.head(self.features(x).flatten(1)).chunk(2, dim=-1)
        return mu, logvar

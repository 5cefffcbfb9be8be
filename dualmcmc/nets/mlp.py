"""Multi-layer perceptrons for vector data (2-D toys, user arrays): energy, generator, Gaussian encoder."""
from __future__ import annotations

from torch import Tensor, nn

ACTIVATIONS = {
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "relu": nn.ReLU,
}


def make_activation(name: str) -> nn.Module:
    """An activation module by name; raises a ValueError listing the known names."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


def mlp(in_dim: int, out_dim: int, hidden: int, layers: int, activation: str) -> nn.Sequential:
    """`layers` hidden layers of width `hidden`, activation after each, then a linear read-out."""
    if layers < 1:
        raise ValueError(f"mlp: 'layers' must be >= 1, got {layers}")
    modules: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), make_activation(activation)]
        width = hidden
    modules.append(nn.Linear(width, out_dim))
    return nn.Sequential(*modules)


class MLPEnergy(nn.Module):
    """E(x): (N, dim) -> (N,), lower on data. Smooth activation by default so that Langevin gradients are smooth."""

    def __init__(self, dim: int, hidden: int = 256, layers: int = 3, activation: str = "silu"):
        super().__init__()
        self.dim = dim
        self.net = mlp(dim, 1, hidden, layers, activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1)).squeeze(-1)


class MLPGenerator(nn.Module):
    """G(z): (N, latent_dim) -> (N, dim), linear output (vector data is not bounded like images)."""

    def __init__(self, latent_dim: int, dim: int, hidden: int = 256, layers: int = 3, activation: str = "leaky_relu"):
        super().__init__()
        self.latent_dim, self.dim = latent_dim, dim
        self.net = mlp(latent_dim, dim, hidden, layers, activation)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.flatten(1))


class GaussianMLPEncoder(nn.Module):
    """q(z|x) = N(mu(x), diag(exp(logvar(x)))): (N, dim) -> (mu, logvar), each (N, latent_dim).

    The second output is a log-VARIANCE, as in the Dual-MCMC reference encoder.
    """

    def __init__(self, dim: int, latent_dim: int, hidden: int = 256, layers: int = 3, activation: str = "leaky_relu"):
        super().__init__()
        self.dim, self.latent_dim = dim, latent_dim
        self.net = mlp(dim, 2 * latent_dim, hidden, layers, activation)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.net(x.flatten(1)).chunk(2, dim=-1)
        return mu, logvar

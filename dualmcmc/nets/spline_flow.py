"""A neural spline flow for vectors from zuko (an optional dependency): NT-EBM's backbone where affine couplings fail.

Affine couplings move and stretch; they cannot bend a Gaussian into a ring (NT-EBM's rings and 2spirals in
benchmarks/RESULTS.md). Monotonic rational-quadratic splines (Durkan et al. 2019) can. ``SplineFlow`` wraps
``zuko.flows.NSF`` in the interface of :class:`dualmcmc.nets.flow.Flow` (``forward(z) -> x``,
``inverse_and_log_det(x)``, ``log_prob(x)``, ``sample(n)``), so NT-EBM uses either without knowing which.
The splines act on [-5, 5] per coordinate (zuko's bound) and are the identity outside; the toys lie in [-4, 4]^2.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn


def zuko_or_explain():
    """The zuko package, or an ImportError that says how to get it."""
    try:
        import zuko
    except ImportError as err:
        raise ImportError("flow 'spline' needs the zuko package (neural spline flows): pip install zuko, or pip "
                          "install 'dualmcmc[flows]'; or use flow: affine") from err
    return zuko


class SplineFlow(nn.Module):
    """x = g(z), z ~ N(0, I) of x's shape (D,): ``n_layers`` rational-quadratic spline couplings (zuko's NSF,
    ``bins`` knots, MLP conditioners of two ``hidden``-wide layers), alternating the coordinates."""

    def __init__(self, dim: int, n_layers: int = 8, hidden: int = 64, bins: int = 8):
        super().__init__()
        if dim < 2 or n_layers < 1 or hidden < 1 or bins < 2:
            raise ValueError(f"SplineFlow needs dim >= 2, n_layers >= 1, hidden >= 1 and bins >= 2; got dim={dim}, "
                             f"n_layers={n_layers}, hidden={hidden}, bins={bins}")
        zuko = zuko_or_explain()
        self.data_shape = (int(dim),)
        self.nsf = zuko.flows.NSF(dim, transforms=n_layers, bins=bins, hidden_features=[hidden, hidden])

    def _transform(self):  # zuko's transform maps data to the base space
        return self.nsf().transform

    def inverse_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(z, log|det dz/dx|) for data x (N, D)."""
        return self._transform().call_and_ladj(x)

    def forward_and_log_det(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(x, log|det dx/dz|) for latents z (N, D)."""
        return self._transform().inv.call_and_ladj(z)

    def forward(self, z: Tensor) -> Tensor:
        """x = g(z) (the splines' closed-form inverse), without the log-determinant."""
        return self._transform().inv(z)

    def inverse(self, x: Tensor) -> Tensor:
        return self.inverse_and_log_det(x)[0]

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log q(x) = log N(g^-1(x); 0, I) + log|det dz/dx|, (N,)."""
        z, log_det = self.inverse_and_log_det(x)
        return -0.5 * z.square().sum(dim=1) - 0.5 * z.shape[1] * math.log(2 * math.pi) + log_det

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """n draws x = g(z), z ~ N(0, I); z from ``generator`` (on its own device), as Flow.sample."""
        weight = next(self.parameters())
        device = weight.device if generator is None else generator.device
        z = torch.randn((int(n), *self.data_shape), generator=generator, device=device, dtype=weight.dtype)
        return self(z.to(weight.device))

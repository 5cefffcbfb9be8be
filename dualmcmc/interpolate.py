"""Latent interpolation: paths between pairs of latent codes, decoded by a method's generator (or NT-EBM's flow).

    z = interpolation_codes(method, rows=6, steps=10, kind="spherical", generator=g)   # (rows * steps, *latent)
    x = method.decode(z)                                                              # row r: code a_r -> b_r

"linear" walks the straight line (1 - t) a + t b; "spherical" the great circle between a and b (slerp), which keeps
the norm of Gaussian codes typical along the way, where the straight line's midpoint is atypically short.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .kernels import random_tensor

KINDS = ("linear", "spherical")


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between rows of ``a`` and ``b`` (N, D) at fractions ``t`` (T,): (N, T, D). Falls back
    to the straight line where the two codes are (nearly) parallel."""
    a_unit = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b_unit = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    omega = torch.arccos((a_unit * b_unit).sum(dim=1).clamp(-1.0, 1.0))[:, None]  # (N, 1)
    t = t[None, :]
    sin = torch.sin(omega)
    parallel = sin.abs() < 1e-6
    wa = torch.where(parallel, 1 - t, torch.sin((1 - t) * omega) / torch.where(parallel, 1.0, sin))
    wb = torch.where(parallel, t, torch.sin(t * omega) / torch.where(parallel, 1.0, sin))
    return wa[..., None] * a[:, None] + wb[..., None] * b[:, None]


def interpolation_codes(method, rows: int = 6, steps: int = 10, kind: str = "spherical",
                        generator: Optional[torch.Generator] = None) -> Tensor:
    """(rows * steps, *latent_shape) codes: row r walks from a_r to b_r, both drawn from N(0, I)."""
    shape = method.latent_shape
    if shape is None:
        raise ValueError(f"method {method.name!r} has no generator: nothing to interpolate through")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    for name, value in (("rows", rows), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "rows" else 2):
            raise ValueError(f"{name} must be an integer >= {1 if name == 'rows' else 2}, got {value!r}")
    ends = random_tensor("normal", (2, rows, *shape), device=method.device, generator=generator)
    a, b = ends[0].reshape(rows, -1), ends[1].reshape(rows, -1)
    t = torch.linspace(0.0, 1.0, steps, device=a.device, dtype=a.dtype)
    path = slerp(a, b, t) if kind == "spherical" else (1 - t)[None, :, None] * a[:, None] + t[None, :, None] * b[:, None]
    return path.reshape(rows * steps, *shape)

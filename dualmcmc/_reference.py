"""Eager PyTorch reference of the fused Langevin step.

It is the oracle of the parity tests and the fallback when the compiled extension (or a device's kernel) is
missing. Semantics match the registered op exactly, except that the noise it draws itself comes from
``torch.randn`` rather than the kernel's Philox stream (same distribution, different numbers).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_langevin_args(
    x: Tensor,
    grad: Tensor,
    step_size: float,
    noise_std: float,
    prior_precision: float,
    noise: Tensor | None,
    clamp_min: float | None,
    clamp_max: float | None,
) -> None:
    """Raise a clear error naming the bad argument; mirrors the checks of the C++ kernels."""
    for name, t in (("x", x), ("grad", grad)):
        if not isinstance(t, Tensor):
            raise TypeError(f"langevin_step: '{name}' must be a Tensor, got {type(t).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"langevin_step: 'x' must be float32, float64, float16 or bfloat16, got {x.dtype}")
    if grad.dtype != x.dtype:
        raise TypeError(f"langevin_step: 'grad' dtype {grad.dtype} must match 'x' dtype {x.dtype}; cast it with .to(x.dtype)")
    if grad.shape != x.shape:
        raise ValueError(f"langevin_step: 'grad' shape {tuple(grad.shape)} must match 'x' shape {tuple(x.shape)}")
    if grad.device != x.device:
        raise ValueError(f"langevin_step: 'grad' is on {grad.device} but 'x' is on {x.device}; move them to one device")
    if noise is not None:
        if noise.dtype != x.dtype:
            raise TypeError(f"langevin_step: 'noise' dtype {noise.dtype} must match 'x' dtype {x.dtype}")
        if noise.shape != x.shape:
            raise ValueError(f"langevin_step: 'noise' shape {tuple(noise.shape)} must match 'x' shape {tuple(x.shape)}")
        if noise.device != x.device:
            raise ValueError(f"langevin_step: 'noise' is on {noise.device} but 'x' is on {x.device}")
    if not math.isfinite(step_size) or step_size < 0:
        raise ValueError(f"langevin_step: 'step_size' must be finite and >= 0, got {step_size}")
    if not math.isfinite(noise_std) or noise_std < 0:
        raise ValueError(f"langevin_step: 'noise_std' must be finite and >= 0, got {noise_std}")
    if not math.isfinite(prior_precision) or prior_precision < 0:
        raise ValueError(f"langevin_step: 'prior_precision' must be finite and >= 0, got {prior_precision}")
    for name, v in (("clamp_min", clamp_min), ("clamp_max", clamp_max)):
        if v is not None and math.isnan(v):
            raise ValueError(f"langevin_step: '{name}' must not be NaN")
    if clamp_min is not None and clamp_max is not None and clamp_min > clamp_max:
        raise ValueError(f"langevin_step: clamp_min ({clamp_min}) must be <= clamp_max ({clamp_max})")


def langevin_step(
    x: Tensor,
    grad: Tensor,
    step_size: float,
    noise_std: float,
    prior_precision: float = 0.0,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    clamp_min: float | None = None,
    clamp_max: float | None = None,
) -> Tensor:
    """x' = clamp(x - 0.5*step_size**2*(grad + prior_precision*x) + noise_std*eps), computed in float for half types."""
    check_langevin_args(x, grad, step_size, noise_std, prior_precision, noise, clamp_min, clamp_max)
    compute_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    xc, gc = x.to(compute_dtype), grad.to(compute_dtype)
    drift = 0.5 * step_size * step_size
    out = xc - drift * (gc + prior_precision * xc) if prior_precision != 0.0 else xc - drift * gc
    if noise_std != 0.0:
        if noise is None:
            noise = torch.randn(x.shape, dtype=compute_dtype, device=x.device, generator=generator)
        out = out + noise_std * noise.to(compute_dtype)
    if clamp_min is not None or clamp_max is not None:
        out = out.clamp(clamp_min, clamp_max)
    return out.to(x.dtype)

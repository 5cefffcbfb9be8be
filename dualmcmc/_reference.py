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
    inplace: bool = False,
) -> None:
    """Raise a clear error naming the bad argument; mirrors the checks of the C++ kernels (langevin_checks.h):
    the same exception types in the same order, so both backends behave the same on every bad input."""
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
    if inplace:
        if torch._debug_has_internal_overlap(x) == 1:  # 1: MemOverlap::Yes, as at::has_internal_overlap
            raise ValueError("langevin_step_: 'x' must not have overlapping memory (e.g. from expand()); pass x.clone()")
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError("langevin_step_: 'x' requires grad; use the functional langevin_step, or detach x for "
                               "an in-place chain")
        if partly_overlap(x, grad):
            raise ValueError("langevin_step_: 'grad' partially overlaps 'x' in memory (e.g. two shifted slices of one "
                             "tensor); pass grad.clone()")
        if noise is not None and partly_overlap(x, noise):
            raise ValueError("langevin_step_: 'noise' partially overlaps 'x' in memory; pass noise.clone()")


def partly_overlap(a: Tensor, b: Tensor) -> bool:
    """Whether b's memory meets a's without being exactly a's elements (at::get_overlap_status == Partial, which
    also decides from the byte ranges only)."""
    if a.numel() == 0 or b.numel() == 0 or a.device != b.device:
        return False
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False
    if a.data_ptr() == b.data_ptr() and a.stride() == b.stride() and a.shape == b.shape:
        return False  # the same elements (full overlap): fine, like x itself

    def byte_range(t: Tensor) -> tuple[int, int]:
        extent = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
        return t.data_ptr(), t.data_ptr() + (extent + 1) * t.element_size()

    (a0, a1), (b0, b1) = byte_range(a), byte_range(b)
    return a0 < b1 and b0 < a1


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

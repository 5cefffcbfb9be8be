"""The fused Langevin step: typed wrappers, fake and autograd registration, and the eager fallback.

    x' = clamp(x - 0.5 * step_size**2 * (grad + prior_precision * x) + noise_std * eps),   eps ~ N(0, I)

``langevin_step`` returns a new tensor and is differentiable in ``x``, ``grad`` (and an explicit ``noise``);
``langevin_step_`` updates ``x`` in place and returns it. Both dispatch to the compiled kernels in
``dualmcmc._C`` (registered as ``torch.ops.dualmcmc.langevin_step`` / ``langevin_step_``) and fall back to the
eager reference in :mod:`dualmcmc._reference`, with a one-time warning, when the extension or a kernel for the
input's device is missing.
"""
from __future__ import annotations

import numbers
import os
import warnings
from typing import Optional

import torch
from torch import Tensor

from . import _reference

__all__ = ["langevin_step", "langevin_step_", "backend", "temperature", "has_kernel"]

_OP_NS = "dualmcmc"
_EXTENSION_ERROR: Optional[BaseException] = None
if os.environ.get("DUALMCMC_BACKEND", "").lower() == "reference":
    _EXTENSION_ERROR = RuntimeError("DUALMCMC_BACKEND=reference")
else:
    try:
        from . import _C  # noqa: F401  (loading it runs the TORCH_LIBRARY registrations)
    except ImportError as err:  # built without the extension, or a stale build
        _EXTENSION_ERROR = err

_HAS_EXTENSION = _EXTENSION_ERROR is None
_warned: set[str] = set()


def backend() -> str:
    """'extension' when the compiled operators are loaded, 'reference' when the eager fallback is used."""
    return "extension" if _HAS_EXTENSION else "reference"


def _kernel_device_types() -> frozenset[str]:
    if not _HAS_EXTENSION:
        return frozenset()
    keys = {"cpu": "CPU", "cuda": "CUDA"}
    return frozenset(t for t, k in keys.items() if torch._C._dispatch_has_kernel_for_dispatch_key(f"{_OP_NS}::langevin_step", k))


# Looked up once: a constant set keeps the dispatch decision traceable by torch.compile.
_KERNEL_DEVICE_TYPES = _kernel_device_types()


def has_kernel(device: torch.device | str) -> bool:
    """Whether the compiled extension has a kernel for ``device``'s type (e.g. CUDA may be compiled out)."""
    return torch.device(device).type in _KERNEL_DEVICE_TYPES


def temperature(step_size: float, noise_std: float) -> float:
    """Temperature T = (noise_std / step_size)**2 of the density exp(-U/T) that the chain targets."""
    if step_size <= 0:
        raise ValueError(f"temperature: 'step_size' must be > 0, got {step_size}")
    return (noise_std / step_size) ** 2


def _number(name: str, value) -> float:
    """A real number argument as float; anything else (a string, None, a bool, a tensor with several elements) is a
    TypeError naming the argument, the same on both backends."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) and not (
            isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex()):
        raise TypeError(f"langevin_step: '{name}' must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def _clamp_bounds(clamp) -> tuple[Optional[float], Optional[float]]:
    if clamp is None:
        return None, None
    if isinstance(clamp, (str, bytes)) or not hasattr(clamp, "__len__") or len(clamp) != 2:
        raise ValueError(f"langevin_step: 'clamp' must be None or a (min, max) pair (None for an open end), got {clamp!r}")
    lo, hi = clamp
    return (None if lo is None else _number("clamp", lo)), (None if hi is None else _number("clamp", hi))


def _scalars(step_size, noise_std, prior_precision) -> tuple[float, float, float]:
    return (_number("step_size", step_size), _number("noise_std", noise_std),
            _number("prior_precision", prior_precision))


def _use_extension(x: Tensor) -> bool:
    if not isinstance(x, Tensor):
        return False  # let the reference raise its TypeError
    if x.device.type == "meta" or x.device.type in _KERNEL_DEVICE_TYPES:
        return True
    if not _HAS_EXTENSION:
        reason = f"the compiled extension is unavailable ({_EXTENSION_ERROR})"
    else:
        reason = f"the extension has no kernel for device type '{x.device.type}'"
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"dualmcmc.ops: {reason}; using the eager PyTorch reference", RuntimeWarning, stacklevel=3)
    return False


def langevin_step(
    x: Tensor,
    grad: Tensor,
    step_size: float,
    noise_std: float,
    *,
    prior_precision: float = 0.0,
    noise: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
    clamp: Optional[tuple[Optional[float], Optional[float]]] = None,
) -> Tensor:
    """One Langevin update, out of place. Differentiable in ``x``, ``grad`` and an explicit ``noise``.

    Args:
        x: chain state, any shape, float32/float64/float16/bfloat16.
        grad: gradient of the energy (or negative log-target) at ``x``, same shape, dtype and device.
        step_size: ``a`` in the drift ``-a**2/2 * (grad + prior_precision * x)``.
        noise_std: ``b``, the standard deviation of the added noise (``b == a`` is standard Langevin).
        prior_precision: precision of a zero-mean Gaussian prior/reference added to the energy.
        noise: explicit standard-normal noise (same shape/dtype/device); drawn by the kernel when None.
        generator: torch generator seeding the kernel's Philox stream (the device's default one when None).
        clamp: optional ``(min, max)`` bounds applied to the result; either end may be None.
    """
    lo, hi = _clamp_bounds(clamp)
    step_size, noise_std, prior_precision = _scalars(step_size, noise_std, prior_precision)
    if _use_extension(x):
        return torch.ops.dualmcmc.langevin_step.default(x, grad, step_size, noise_std, prior_precision, noise, generator, lo, hi)
    return _reference.langevin_step(x, grad, step_size, noise_std, prior_precision, noise, generator, lo, hi)


def langevin_step_(
    x: Tensor,
    grad: Tensor,
    step_size: float,
    noise_std: float,
    *,
    prior_precision: float = 0.0,
    noise: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
    clamp: Optional[tuple[Optional[float], Optional[float]]] = None,
) -> Tensor:
    """In-place form of :func:`langevin_step`: updates ``x`` and returns it. Not differentiable.

    On bad input it raises before touching ``x``.
    """
    lo, hi = _clamp_bounds(clamp)
    step_size, noise_std, prior_precision = _scalars(step_size, noise_std, prior_precision)
    if _use_extension(x):
        torch.ops.dualmcmc.langevin_step_.default(x, grad, step_size, noise_std, prior_precision, noise, generator, lo, hi)
        return x
    _reference.check_langevin_args(x, grad, step_size, noise_std, prior_precision, noise, lo, hi, inplace=True)
    out = _reference.langevin_step(x, grad, step_size, noise_std, prior_precision, noise, generator, lo, hi)
    with torch.no_grad():
        x.copy_(out)
    return x


# ----------------------------------------------------------------------------------------------------------------
# torch.library registrations of the compiled ops: fake kernels (torch.compile, meta) and autograd.
# ----------------------------------------------------------------------------------------------------------------
if _HAS_EXTENSION:

    def _check_fake_args(op, x, grad, noise):
        # Meta/fake tensors never reach the C++ checks, so the ones that shape the output are repeated here.
        for name, t in (("grad", grad), ("noise", noise)):
            if t is None:
                continue
            # the exception types of the C++ checks: ValueError for shapes and devices, TypeError for dtypes
            torch._check_value(t.shape == x.shape, lambda: f"{op}: '{name}' shape {tuple(t.shape)} must match 'x' shape {tuple(x.shape)}")
            torch._check_type(t.dtype == x.dtype, lambda: f"{op}: '{name}' dtype {t.dtype} must match 'x' dtype {x.dtype}")
            torch._check_value(t.device == x.device, lambda: f"{op}: '{name}' is on {t.device} but 'x' is on {x.device}")

    @torch.library.register_fake("dualmcmc::langevin_step")
    def _langevin_step_fake(x, grad, step_size, noise_std, prior_precision=0.0, noise=None, generator=None, clamp_min=None, clamp_max=None):
        _check_fake_args("langevin_step", x, grad, noise)
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)

    @torch.library.register_fake("dualmcmc::langevin_step_")
    def _langevin_step_inplace_fake(x, grad, step_size, noise_std, prior_precision=0.0, noise=None, generator=None, clamp_min=None, clamp_max=None):
        _check_fake_args("langevin_step_", x, grad, noise)
        return None

    def _setup_context(ctx, inputs, output):
        x, grad, step_size, noise_std, prior_precision, noise, generator, clamp_min, clamp_max = inputs
        ctx.drift = 0.5 * step_size * step_size
        ctx.prior_precision = prior_precision
        ctx.noise_std = noise_std
        ctx.noise_needs_grad = noise is not None and noise.requires_grad
        ctx.clamped = clamp_min is not None or clamp_max is not None
        ctx.clamp_min, ctx.clamp_max = clamp_min, clamp_max
        ctx.save_for_backward(output if ctx.clamped else None)

    def _backward(ctx, grad_out):
        (output,) = ctx.saved_tensors
        g = grad_out
        if ctx.clamped:
            # Elements pinned at a bound do not move with the inputs (clamp's gradient is zero there).
            inside = torch.ones_like(output, dtype=torch.bool)
            if ctx.clamp_min is not None:
                inside = inside & (output > ctx.clamp_min)
            if ctx.clamp_max is not None:
                inside = inside & (output < ctx.clamp_max)
            g = g * inside.to(g.dtype)
        dx = dgrad = dnoise = None
        if ctx.needs_input_grad[0]:
            dx = g * (1.0 - ctx.drift * ctx.prior_precision)
        if ctx.needs_input_grad[1]:
            dgrad = g * (-ctx.drift)
        if ctx.noise_needs_grad:
            dnoise = g * ctx.noise_std
        return dx, dgrad, None, None, None, dnoise, None, None, None

    torch.library.register_autograd("dualmcmc::langevin_step", _backward, setup_context=_setup_context)

"""Speed options for the networks a chain calls: torch.compile, low-precision autocast, channels-last.

    energy = fast_forward(ebm, compile=True, autocast="bf16", channels_last=True)
    x, _ = samplers.langevin_data_chain(energy, x0, 30, 0.5, 1e-3, cuda_graph=True)

Only the network pass changes: the chain state stays in the caller's dtype (float32), the network runs under
autocast, and its floating outputs are cast back to the dtype of the input, so energies, gradients and the fused
update stay float32. bf16 is the safe choice; fp16 has no loss scaling here, so very small energy gradients can
underflow to zero.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from ._buffers import version_counters_kept

__all__ = ["AUTOCAST_DTYPES", "FastForward", "fast_forward"]

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _cast_floats(out: Any, dtype: torch.dtype) -> Any:
    """Floating tensors in ``out`` (a tensor, or a tuple / list / dict of them) cast to ``dtype``."""
    if isinstance(out, Tensor):
        return out.to(dtype) if out.is_floating_point() and out.dtype != dtype else out
    if isinstance(out, (tuple, list)):
        return type(out)(_cast_floats(o, dtype) for o in out)
    if isinstance(out, dict):
        return {k: _cast_floats(v, dtype) for k, v in out.items()}
    return out


def _to_channels_last(arg: Any) -> Any:
    if isinstance(arg, Tensor) and arg.dim() == 4:
        return arg.contiguous(memory_format=torch.channels_last)
    return arg


class FastForward:
    """``module``'s forward with speed options. A plain object, not an nn.Module: the compiled wrapper never becomes
    a submodule, so the module's state_dict keys stay the same. ``.module`` is the module itself
    (samplers.energy_potential names it as the module a CUDA graph reads)."""

    def __init__(self, module: nn.Module, compile: bool, autocast: Optional[str], channels_last: bool,
                 input_grads_only: bool = False):
        self.module = module
        self.autocast_dtype = None if autocast is None else AUTOCAST_DTYPES[autocast]
        self.channels_last = channels_last
        self.compiled = compile
        self.input_grads_only = input_grads_only
        if channels_last:  # once: 4-D weights to NHWC (same Parameter objects, new storage; optimizers keep them)
            module.to(memory_format=torch.channels_last)
        target: Callable = self._with_parameters if input_grads_only else module
        self.forward: Callable = torch.compile(target) if compile else target

    def _with_parameters(self, parameters: dict, *args: Any, **kwargs: Any) -> Any:
        return torch.func.functional_call(self.module, parameters, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.input_grads_only:
            # a chain needs d/dx only: with detached parameters a compiled backward skips the weight gradients,
            # which the autograd engine would prune in eager mode but a compiled backward graph computes
            args = ({name: p.detach() for name, p in self.module.named_parameters()}, *args)
        if not self.compiled:
            return self._call(args, kwargs)
        # a compiled graph bumps the BatchNorm buffers' version counters where eager mode does not (_buffers.py)
        with version_counters_kept(self.module.buffers()):
            return self._call(args, kwargs)

    def _call(self, args: tuple, kwargs: dict) -> Any:
        if self.channels_last:
            args = tuple(_to_channels_last(a) for a in args)
            kwargs = {k: _to_channels_last(v) for k, v in kwargs.items()}
        if self.autocast_dtype is None:
            return self.forward(*args, **kwargs)
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)), None)
        device_type = first.device.type if first is not None else "cpu"
        out_dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
        # no cast cache: each weight is used once per pass anyway, and a cache outliving a CUDA-graph capture
        # would hand eager code tensors from the graph's memory pool
        with torch.autocast(device_type=device_type, dtype=self.autocast_dtype, cache_enabled=False):
            out = self.forward(*args, **kwargs)
        return _cast_floats(out, out_dtype)

    def __repr__(self) -> str:
        return (f"FastForward({type(self.module).__name__}, compiled={self.compiled}, "
                f"autocast={self.autocast_dtype}, channels_last={self.channels_last})")


def fast_forward(module: nn.Module, *, compile: bool = False, autocast: Optional[str] = None,
                 channels_last: bool = False, input_grads_only: bool = False) -> FastForward:
    """A callable with ``module``'s signature that runs it faster.

    Args:
        module: the network (energy, generator, encoder).
        compile: run it through ``torch.compile`` (compiled on the first call; the wrapper is not registered as a
            submodule, so ``module.state_dict()`` keys are unchanged).
        autocast: None, "bf16" or "fp16": the network pass runs under ``torch.autocast`` for the input's device
            type in that dtype; floating outputs come back in the input's dtype (float32 for a float32 chain).
        channels_last: convert the module's 4-D weights (now, once) and every 4-D input to ``torch.channels_last``.
        input_grads_only: the parameters enter the pass detached, so gradients reach the inputs only: what a
            Langevin chain needs (the methods' chains use it). A compiled backward then skips the weight gradients
            (on CPU, half the matrix products of an MLP chain).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"fast_forward: 'module' must be an nn.Module, got {type(module).__name__}")
    if autocast is not None and autocast not in AUTOCAST_DTYPES:
        raise ValueError(f"fast_forward: 'autocast' must be None or one of {tuple(AUTOCAST_DTYPES)}, got {autocast!r}")
    for name, value in (("compile", compile), ("channels_last", channels_last), ("input_grads_only", input_grads_only)):
        if not isinstance(value, bool):
            raise TypeError(f"fast_forward: '{name}' must be a bool, got {value!r}")
    return FastForward(module, compile, autocast, channels_last, input_grads_only)

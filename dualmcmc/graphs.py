"""CUDA-graph capture and replay of fixed-shape Langevin chains (``cuda_graph=True`` in :mod:`dualmcmc.samplers`).

A K-step chain launches about K * (forward + backward + 1) small kernels; with 2-D chains or a batch of 100 images
the launch overhead, not the arithmetic, sets the time. Captured once into a CUDA graph, the whole chain is
launched as one unit on every later call. The recipe is PyTorch's "whole network capture" (torch.cuda.graph):

* static tensors: the call's inputs (the start state; for the latent chain also the data it reconstructs) are
  copied into tensors the graph owns before each replay, and the graph's outputs are cloned out after it.
* warm-up: the chain runs eagerly on a side stream before capture (cuBLAS / cuDNN / autograd initialise lazily,
  which must not happen inside a capture). The buffers of the modules the potential reads (given explicitly:
  :class:`dualmcmc.samplers.Potential`'s ``modules``, as ``torch.cuda.make_graphed_callables`` takes them) and the
  generator's RNG state are saved before the warm-up and restored after the capture, so a first call
  returns, and leaves behind, what an eager chain would. (Buffers of modules the cache cannot see keep the
  warm-up's updates: a few extra spectral-norm iterations or BatchNorm statistics updates, once.)
* randomness: the fused op takes ``philox_cuda_state``, which during capture records offsets relative to the
  generator's offset at replay time; each replay advances the generator by the whole graph's increment, so a
  replay consumes the same Philox stream as the eager chain under the same seed.
* in-place state: spectral-norm power iterations (u, v) and BatchNorm running statistics are in-place ops on
  buffers inside the captured forward, so every replay updates them as eager mode does.

The cache keeps one graph per key (the samplers' key: potential identity, the chain's Langevin spec, shapes, dtypes,
device, whether a generator is given (it lends its state to :func:`capture_generator`, so a fresh
generator per call needs no new graph); plus, added here, the train/eval flags of the modules behind the potential
and the autocast state). A graph holds the addresses of the parameters and buffers it read. Optimizer steps and
``load_state_dict`` write into those tensors in place, so replays see the new values. Replacing the tensors
(``module.to(...)``, ``param.data = ...``, a new module object) would leave a graph reading stale memory: for the
modules it is given it notices the new addresses and captures again; for modules it
cannot see (e.g. reached through a global), call :func:`clear_cache`. Python control flow inside the potential
that depends on anything but these keys is frozen at capture time. Each graph keeps a private memory pool about the
size of one forward+backward pass's peak, so the cache holds at most MAX_CACHED_GRAPHS of them.
"""
from __future__ import annotations

import contextlib
import inspect
import warnings
from collections import OrderedDict
from typing import Callable, Hashable, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn

from ._buffers import buffers_restored

__all__ = ["CapturedChain", "cache_size", "callable_identity", "capture_generator", "clear_cache",
           "run_captured", "undone_afterwards",
           "CAPTURE_ERROR_MODE", "MAX_CACHED_GRAPHS"]

MAX_CACHED_GRAPHS = 16  # least recently used graphs beyond this are dropped (each holds a private memory pool)
# "thread_local": only this thread's unsafe CUDA calls abort the capture, so a DataLoader pin-memory thread that
# allocates pinned memory meanwhile does not (torch.compile's CUDA-graph trees capture the same way).
CAPTURE_ERROR_MODE = "thread_local"
WARMUP_PASSES = 3  # forward+backward passes run eagerly before capture (PyTorch's examples warm up 3 iterations)

Outputs = tuple[Optional[Tensor], ...]
_CACHE: "OrderedDict[Hashable, CapturedChain]" = OrderedDict()
_CAPTURE_STREAMS: dict[int, torch.cuda.Stream] = {}  # one side stream per device for warm-up and capture
_CAPTURE_GENERATORS: dict[str, torch.Generator] = {}  # capture_generator: one per device
_warned_eviction = False


def clear_cache() -> None:
    """Drop every captured chain (and its memory pool). Needed after replacing parameter tensors the cache cannot
    see; ``load_state_dict`` and optimizer steps keep tensors in place and need nothing."""
    _CACHE.clear()


def cache_size() -> int:
    """Number of captured chains held."""
    return len(_CACHE)


def callable_identity(fn: Callable) -> Hashable:
    """A key for "the same potential": the object itself, or (module, function) for a bound method, which Python
    creates anew on every attribute access."""
    if inspect.ismethod(fn):
        return (id(fn.__self__), id(fn.__func__))
    return id(fn)


def _address_signature(modules: Sequence[nn.Module]) -> tuple[int, ...]:
    """Where every parameter and buffer lives: a change means a captured graph would read stale memory."""
    return tuple(t.data_ptr() for m in modules for t in (*m.parameters(), *m.buffers()))


def _context_key(modules: Sequence[nn.Module]) -> tuple:
    """State that changes what a forward pass records: train/eval flags and the autocast setting."""
    flags = tuple(sub.training for m in modules for sub in m.modules())
    autocast = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
    return flags, autocast


@contextlib.contextmanager
def undone_afterwards(modules: Sequence[nn.Module], rng: torch.Generator) -> Iterator[None]:
    """Restore the modules' buffers (without bumping their version counters: :func:`buffers_restored`) and
    ``rng``'s state on exit, after the warm-up and capture."""
    rng_state = rng.get_state()
    try:
        with buffers_restored(modules):
            yield
    finally:
        rng.set_state(rng_state)


def capture_generator(device: torch.device) -> torch.Generator:
    """The generator that chains captured with an explicit generator draw from: one per device, owned here.

    A caller's generator lends it its state for each replay and takes the advanced state back, so one graph serves
    every generator object of a device (evaluations make a fresh generator each time; keyed by object, each would
    capture a new graph with its own memory pool).
    """
    key = str(device)
    if key not in _CAPTURE_GENERATORS:
        _CAPTURE_GENERATORS[key] = torch.Generator(device=device)
    return _CAPTURE_GENERATORS[key]


class CapturedChain:
    """One chain captured into a CUDA graph.

    ``chain(*static_inputs) -> tuple`` runs the chain on the static inputs (it may update them in place) and returns
    a tuple of tensors (or None) as outputs; it is run eagerly for warm-up and once under capture. Calling the
    object copies the inputs in, replays, and returns clones of the outputs.
    """

    def __init__(self, chain: Callable[..., Outputs], inputs: Sequence[Tensor], *, modules: Sequence[nn.Module] = (),
                 generator: Optional[torch.Generator] = None, warmup_runs: int = 1):
        device = inputs[0].device
        if device.type != "cuda":
            raise ValueError(f"cuda_graph needs CUDA tensors; the chain state is on {device}")
        self.chain = chain  # keeps the potential (and so its id in the cache key) alive
        self.signature = _address_signature(modules)
        with torch.cuda.device(device), torch.no_grad():
            self.static_inputs = [t.detach().clone(memory_format=torch.contiguous_format) for t in inputs]
            rng = generator if generator is not None else torch.cuda.default_generators[device.index]
            with undone_afterwards(modules, rng):  # warm-up ran the chain for real: undo its buffers and noise
                self.graph, self.static_outputs = self._capture(chain, device, generator, warmup_runs)

    def _capture(self, chain, device, generator, warmup_runs):
        if device.index not in _CAPTURE_STREAMS:  # torch.cuda.graph's own default stream lives on the first device
            _CAPTURE_STREAMS[device.index] = torch.cuda.Stream(device)
        side = _CAPTURE_STREAMS[device.index]
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup_runs):
                chain(*self.static_inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if generator is not None:  # the default generator is registered by capture itself; others must be named
            graph.register_generator_state(generator)
        caller_stream = torch.cuda.current_stream(device)
        try:
            with torch.cuda.graph(graph, stream=side, capture_error_mode=CAPTURE_ERROR_MODE):
                outputs = chain(*self.static_inputs)
        except RuntimeError as err:
            torch.cuda.set_stream(caller_stream)  # a failed capture_end leaves the side stream current
            raise RuntimeError(
                "cuda_graph: capturing the chain failed. The potential must run without CPU synchronisation "
                "(no .item(), .cpu(), printing tensors or data-dependent shapes) and without CPU tensors; "
                f"use cuda_graph=False for it. Cause: {err}") from err
        return graph, tuple(outputs)

    def __call__(self, *inputs: Tensor) -> Outputs:
        with torch.no_grad():  # a start state with a graph (x0 = G(z)) must not make the static input a non-leaf
            for static, given in zip(self.static_inputs, inputs):
                static.copy_(given)
            self.graph.replay()
            return tuple(None if out is None else out.clone() for out in self.static_outputs)


def run_captured(key: Hashable, chain: Callable[..., Outputs], inputs: Sequence[Tensor], *,
                 modules: Sequence[nn.Module] = (), generator: Optional[torch.Generator] = None,
                 lender: Optional[torch.Generator] = None, passes_per_run: int = 1) -> Outputs:
    """Replay the chain cached under ``key`` (captured on first use, or again when the modules' tensors moved).

    ``generator``: the one ``chain`` draws from (None: the device's default generator), e.g. :func:`capture_generator`;
    ``lender``: the caller's generator, whose state ``generator`` takes for the replay and hands back advanced.
    ``passes_per_run``: forward+backward passes in one run of ``chain`` (its steps), to size the warm-up.
    """
    global _warned_eviction
    full_key = (key, _context_key(modules))
    entry = _CACHE.get(full_key)
    if entry is not None and entry.signature != _address_signature(modules):
        del _CACHE[full_key]  # parameters were replaced (e.g. module.to()); the old graph reads freed memory
        entry = None
    if entry is None:
        warmup_runs = max(1, -(-WARMUP_PASSES // max(1, passes_per_run)))
        entry = CapturedChain(chain, inputs, modules=modules, generator=generator, warmup_runs=warmup_runs)
        _CACHE[full_key] = entry
        if len(_CACHE) > MAX_CACHED_GRAPHS:
            _CACHE.popitem(last=False)
            if not _warned_eviction:
                _warned_eviction = True
                warnings.warn(
                    f"dualmcmc.graphs: more than {MAX_CACHED_GRAPHS} chains captured; dropping the oldest. A potential "
                    "that is a new object on every call (a lambda made per call) is captured anew each time: pass a "
                    "module or a function made once.", RuntimeWarning, stacklevel=3)
    else:
        _CACHE.move_to_end(full_key)
    if lender is None or generator is None:
        return entry(*inputs)
    generator.set_state(lender.get_state())
    outputs = entry(*inputs)
    lender.set_state(generator.get_state())
    return outputs

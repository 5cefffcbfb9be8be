"""Langevin chains: :func:`run_chain` drives the kernels of :mod:`dualmcmc.kernels` for a potential and a
:class:`~dualmcmc.kernels.Langevin` spec, with per-chain diagnostics and optional CUDA-graph capture.

    spec = Langevin(steps=30, step_size=0.05, noise_std=1e-3, diagnostics=True)
    x, diag = run_chain(ebm, x0, spec)                                                # data space: U0 = E
    z, _ = run_chain(reconstruction_potential(G, sigma=0.3), z0, latent, data=(x,))    # generator posterior

The data-space and latent chains are two potentials, not two code paths. A potential is a callable
``U0(x, *data) -> (N,)`` (one value per chain, without the Gaussian prior term, which the spec's
``prior_precision`` adds through the fused op). :class:`Potential` wraps a function with the modules it reads,
which is what a CUDA-graph capture needs to know; a bare nn.Module is its own potential.

* data-space chain (EBM): ``U0 = E``, the network's per-sample energies;
* latent-posterior chain (generator): ``U0(z; x) = ||G(z) - x||**2 / sigma**2`` in the Dual-MCMC reference form
  (twice the textbook Gaussian term, docs/methods.md §2.3) or ``/(2 sigma**2)`` in the textbook form, with
  ``prior_precision = 1/prior_sigma**2``.

With ``cuda_graph=True`` (CUDA tensors only) the whole K-step chain is captured once into a CUDA graph per
(potential, spec, shapes, dtypes, device, whether a generator is given) and replayed; it returns what the eager
chain returns under the same seed (:mod:`dualmcmc.graphs` explains how, and when to call ``graphs.clear_cache()``).
The ``data`` tensors are static inputs of the graph too, so one graph serves every batch of a shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable, Optional, Sequence

import torch
from torch import Tensor, nn

from . import graphs
from .kernels import (ChainState, Langevin, jump_step, mala_step, per_chain_sum, prior_term, random_tensor,
                      replica_exchange_step, ula_step, value_and_grad)

__all__ = [
    "ChainDiagnostics",
    "ChainState",
    "Langevin",
    "LIKELIHOODS",
    "PersistentChains",
    "Potential",
    "energy_potential",
    "langevin_data_chain",
    "langevin_latent_chain",
    "reconstruction_energy",
    "reconstruction_potential",
    "run_chain",
    "run_jumps",
    "run_tempered",
    "run_langevin_chain",
    "random_tensor",
    "value_and_grad",
]

Clamp = Optional[tuple[Optional[float], Optional[float]]]
LIKELIHOODS = ("reference", "textbook")


@dataclass
class ChainDiagnostics:
    """Per-chain diagnostics, each a (N,) tensor; None where not computed.

    Energies are the full potential U (network term plus the Gaussian prior term), untempered.
    ``grad_norm_*`` is ||grad U|| at the states the updates were taken from.
    """

    steps: int
    energy_start: Optional[Tensor] = None
    energy_end: Optional[Tensor] = None
    grad_norm_last: Optional[Tensor] = None
    grad_norm_mean: Optional[Tensor] = None
    nonfinite: Optional[Tensor] = None
    acceptance: Optional[Tensor] = None
    swap_acceptance: Optional[Tensor] = None  # replica exchange: (R - 1,) accepted share of each adjacent pair's swaps
    extra: dict = field(default_factory=dict)

    def summary(self, prefix: str = "") -> dict[str, float]:
        """Means over chains as plain floats (for logging); fields that were not computed are left out."""
        out: dict[str, float] = {}
        for name in ("energy_start", "energy_end", "grad_norm_last", "grad_norm_mean", "acceptance"):
            value = getattr(self, name)
            if value is not None:
                out[prefix + name] = float(value.float().mean())
        if self.nonfinite is not None:
            out[prefix + "nonfinite"] = float(self.nonfinite.sum())
        if self.swap_acceptance is not None:
            out.update({f"{prefix}swap_acceptance_{r}": float(v) for r, v in enumerate(self.swap_acceptance)})
        return out


class Potential:
    """A chain's potential ``U0(x, *data) -> (N,)`` and the modules it reads.

    ``modules`` are what a CUDA-graph capture restores after its warm-up and watches for replaced tensors (as
    ``torch.cuda.make_graphed_callables`` is given its modules); ``key`` identifies "the same potential" across
    calls (a graph is reused for it). Make a potential once and pass it to every call.
    """

    def __init__(self, fn: Callable[..., Tensor], modules: Sequence[nn.Module] = (), key: Optional[Hashable] = None):
        self.fn = fn
        self.modules = tuple(modules)
        self.key = key if key is not None else ("potential", id(self))

    def __call__(self, x: Tensor, *data: Tensor) -> Tensor:
        return self.fn(x, *data)


def _modules_of(net: Callable) -> tuple[nn.Module, ...]:
    """The module a network callable is: itself, or the module behind an accel.fast_forward wrapper."""
    if isinstance(net, nn.Module):
        return (net,)
    module = getattr(net, "module", None)
    return (module,) if isinstance(module, nn.Module) else ()


def energy_potential(net: Callable[[Tensor], Tensor], modules: Optional[Sequence[nn.Module]] = None) -> Potential:
    """U0(x) = net(x): an energy network (or its fast_forward wrapper) as a potential."""
    return Potential(net, _modules_of(net) if modules is None else modules, ("energy", graphs.callable_identity(net)))


def reconstruction_potential(generator_fn: Callable[[Tensor], Tensor], sigma: float, likelihood: str = "reference",
                             modules: Optional[Sequence[nn.Module]] = None) -> Potential:
    """U0(z; x) per chain, the reconstruction term of the generator posterior (the data ``x`` is the chain's data):

    "reference": ``||G(z) - x||**2 / sigma**2`` (the Dual-MCMC code's gradient, twice the Gaussian term);
    "textbook": ``||G(z) - x||**2 / (2 sigma**2)`` (-log N(x; G(z), sigma**2 I) up to a constant).
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")
    if not sigma > 0:
        raise ValueError(f"'sigma' must be > 0, got {sigma}")
    scale = 1.0 / sigma**2 if likelihood == "reference" else 0.5 / sigma**2

    def energy(z: Tensor, target: Tensor) -> Tensor:
        return per_chain_sum((generator_fn(z) - target.detach()).square()) * scale

    key = ("reconstruction", graphs.callable_identity(generator_fn), float(sigma), likelihood)
    return Potential(energy, _modules_of(generator_fn) if modules is None else modules, key)


def reconstruction_energy(generator_fn: Callable[[Tensor], Tensor], x: Tensor, sigma: float,
                          likelihood: str = "reference") -> Callable[[Tensor], Tensor]:
    """z -> (N,): :func:`reconstruction_potential` with the data ``x`` bound."""
    potential = reconstruction_potential(generator_fn, sigma, likelihood)
    target = x.detach()
    return lambda z: potential(z, target)


# -- the chain ---------------------------------------------------------------------------------------------------
def run_chain(potential: Callable[..., Tensor], x0: Tensor, spec: Langevin, *, data: Sequence[Tensor] = (),
              generator: Optional[torch.Generator] = None, cuda_graph: bool = False) -> tuple[Tensor, ChainDiagnostics]:
    """``spec.steps`` Langevin (or MALA) updates on ``U = U0 + prior_precision/2 ||x||**2`` from ``x0``.

    Args:
        potential: ``U0(x, *data) -> (N,)``: a :class:`Potential`, an nn.Module or a function.
        x0: start states (N, ...); not modified.
        spec: the chain's settings (:class:`~dualmcmc.kernels.Langevin`).
        data: tensors the potential reads besides the state (the latent chain's data).
        generator: torch generator for the noise (and MALA's uniforms).
        cuda_graph: capture the chain into a CUDA graph once per (potential, spec, shapes, dtypes, device, whether a
            generator is given) and replay it; same result as the eager chain under the same seed. Needs CUDA
            tensors; not with ``spec.mala`` or ``spec.explicit_noise`` (ValueError). The modules it restores after
            the warm-up are the Potential's ``modules`` (a module potential: itself; a plain function: none).

    Returns:
        (x, diagnostics): the detached end states and a :class:`ChainDiagnostics`; with ``spec.diagnostics`` off
        only ``acceptance`` (MALA) is filled.
    """
    data = tuple(data)
    if spec.ladder is not None:
        if cuda_graph:
            raise ValueError("langevin chain: cuda_graph=True does not capture replica exchange (a 'ladder'); use "
                             "cuda_graph=False")
        return _run_tempered(potential, x0.detach(), spec, data, generator)
    if cuda_graph:
        _check_graphable(x0, data, spec, generator)
        if spec.steps > 0:
            return _run_graphed(potential, x0, spec, data, generator)
    return _run_eager(potential, x0.detach(), spec, data, generator)


def _run_eager(potential, x: Tensor, spec: Langevin, data: tuple, generator) -> tuple[Tensor, ChainDiagnostics]:
    """The chain's loop (also what a CUDA graph captures): the kernel K times, diagnostics accumulated."""
    kernel = mala_step if spec.mala else ula_step
    state, diag = ChainState(x), ChainDiagnostics(steps=spec.steps)
    grad_norm_sum = accepted = None
    for k in range(spec.steps):
        state, info = kernel(potential, state, spec, data=data, generator=generator)
        if k == 0:
            diag.energy_start = info.energy
        if info.grad_norm is not None:
            grad_norm_sum = info.grad_norm if grad_norm_sum is None else grad_norm_sum + info.grad_norm
            diag.grad_norm_last = info.grad_norm
        if info.accepted is not None:
            step_accepted = info.accepted.to(torch.get_default_dtype())
            accepted = step_accepted if accepted is None else accepted + step_accepted
    if spec.mala:
        diag.acceptance = accepted / spec.steps if spec.steps > 0 else torch.ones(x.shape[0], device=x.device)
    if spec.diagnostics:
        energy_end = state.energy
        if energy_end is None:
            with torch.no_grad():
                energy_end = potential(state.x, *data).detach() + prior_term(state.x, spec.prior_precision)
        diag.energy_end = energy_end
        if spec.steps == 0:
            diag.energy_start = energy_end
        else:
            diag.grad_norm_mean = grad_norm_sum / spec.steps
        diag.nonfinite = per_chain_sum((~torch.isfinite(state.x)).to(torch.int64))
    return state.x.detach(), diag


def _run_tempered(potential, x: Tensor, spec: Langevin, data: tuple, generator) -> tuple[Tensor, ChainDiagnostics]:
    """Replica exchange with every rung started at ``x``; the T rung's end states and diagnostics."""
    replicas, diag = run_tempered(potential, x.unsqueeze(0).expand(len(spec.ladder), *x.shape), spec, data=data,
                                  generator=generator)
    return replicas[0], diag


def run_tempered(potential: Callable[..., Tensor], replicas: Tensor, spec: Langevin, *, data: Sequence[Tensor] = (),
                 generator: Optional[torch.Generator] = None) -> tuple[Tensor, ChainDiagnostics]:
    """``spec.steps`` replica-exchange steps (:func:`~dualmcmc.kernels.replica_exchange_step`) from given states
    of every rung, so that the hot rungs can be persistent chains too (parallel tempering proper).

    Args:
        potential, spec, data, generator: as :func:`run_chain`; ``spec.ladder`` must be set.
        replicas: (R, N, ...) start states, rung r (temperature T * ladder[r]) in ``replicas[r]``; not modified.

    Returns:
        (replicas, diagnostics): the detached end states of every rung, (R, N, ...), and the diagnostics of the T
        rung (``replicas[0]``) with each adjacent pair's swap acceptance.
    """
    if spec.ladder is None:
        raise ValueError("run_tempered: spec.ladder is None; give the rungs' temperature multipliers (e.g. "
                         "ladder=(1, 4, 16)) or use run_chain")
    count = len(spec.ladder)
    if replicas.dim() < 2 or replicas.shape[0] != count:
        raise ValueError(f"run_tempered: 'replicas' must be (R, N, ...) with R = len(spec.ladder) = {count}, got "
                         f"shape {tuple(replicas.shape)}")
    data = tuple(data)
    n, event = replicas.shape[1], replicas.shape[2:]
    state = ChainState(replicas.detach().reshape(count * n, *event))
    stacked = tuple(t.repeat(count, *([1] * (t.dim() - 1))) for t in data)
    diag = ChainDiagnostics(steps=spec.steps)
    grad_norm_sum = None
    swaps, tries = torch.zeros(count - 1), torch.zeros(count - 1)
    for k in range(spec.steps):
        state, info = replica_exchange_step(potential, state, spec, data=stacked, generator=generator, parity=k)
        if k == 0:
            diag.energy_start = info.energy[:n] if spec.diagnostics else None
        if info.grad_norm is not None:
            grad_norm_sum = info.grad_norm[:n] if grad_norm_sum is None else grad_norm_sum + info.grad_norm[:n]
            diag.grad_norm_last = info.grad_norm[:n]
        swaps += info.swapped.sum(dim=1).cpu().to(swaps.dtype)
        tries[k % 2::2] += n
    ends = state.x.detach().reshape(count, n, *event)
    end = ends[0]
    diag.swap_acceptance = swaps / tries.clamp(min=1)
    if spec.diagnostics:
        with torch.no_grad():
            diag.energy_end = potential(end, *data).detach() + prior_term(end, spec.prior_precision)
        if spec.steps == 0:
            diag.energy_start = diag.energy_end
        else:
            diag.grad_norm_mean = grad_norm_sum / spec.steps
        diag.nonfinite = per_chain_sum((~torch.isfinite(end)).to(torch.int64))
    return ends, diag


def run_jumps(potential: Callable[..., Tensor], x0: Tensor, spec: Langevin, centers: Tensor, bandwidth: float,
              jumps: int = 1, *, data: Sequence[Tensor] = (), generator: Optional[torch.Generator] = None
              ) -> tuple[Tensor, Tensor]:
    """``jumps`` independence Metropolis-Hastings steps (:func:`~dualmcmc.kernels.jump_step`) for exp(-U/T) from
    ``x0``, proposing from a Gaussian kernel density of width ``bandwidth`` on ``centers`` (M, ...), e.g. a batch of
    the data: chains move between modes in one step where Langevin steps would need thousands, and land in each mode
    as often as the target weighs it. Run it before a Langevin chain (:func:`run_chain`), which refines the states.

    Returns:
        (x, acceptance): the detached end states and each chain's accepted share of the proposals, (N,).
    """
    if isinstance(jumps, bool) or not isinstance(jumps, int) or jumps < 0:
        raise ValueError(f"run_jumps: 'jumps' must be an int >= 0, got {jumps!r}")
    state = ChainState(x0.detach())
    accepted = torch.zeros(x0.shape[0], device=x0.device)
    for _ in range(jumps):
        state, info = jump_step(potential, state, spec, centers, bandwidth, data=tuple(data), generator=generator)
        accepted += info.accepted
    return state.x, accepted / max(jumps, 1)


_GRAPHED_FIELDS = ("energy_start", "energy_end", "grad_norm_last", "grad_norm_mean", "nonfinite")


def _check_graphable(x0: Tensor, data: tuple, spec: Langevin, generator, names=("x0", "data")) -> None:
    """ValueErrors for what a captured chain cannot do, naming the argument (``names``: the caller's for x0, data)."""
    if spec.mala:
        raise ValueError("langevin chain: cuda_graph=True does not support mala=True (the accept step is per-chain "
                         "control flow); use cuda_graph=False")
    if spec.explicit_noise:
        raise ValueError("langevin chain: cuda_graph=True does not support explicit_noise=True (the op's own Philox "
                         "stream is the graph-safe one); use cuda_graph=False")
    if not isinstance(x0, Tensor) or x0.device.type != "cuda":
        where = x0.device if isinstance(x0, Tensor) else type(x0).__name__
        raise ValueError(f"langevin chain: cuda_graph=True needs a CUDA tensor; '{names[0]}' is on {where}")
    for t in data:
        if not isinstance(t, Tensor) or t.device != x0.device:
            raise ValueError(f"langevin chain: '{names[1]}' must be on {x0.device} like '{names[0]}', got "
                             f"{t.device if isinstance(t, Tensor) else type(t).__name__}")
    if generator is not None and generator.device != x0.device:
        raise ValueError(f"langevin chain: cuda_graph=True needs 'generator' on {x0.device} like '{names[0]}', "
                         f"got one on {generator.device}")


def _potential_key_and_modules(potential) -> tuple[Hashable, tuple[nn.Module, ...]]:
    if isinstance(potential, Potential):
        return potential.key, potential.modules
    return graphs.callable_identity(potential), _modules_of(potential)


def _run_graphed(potential, x0: Tensor, spec: Langevin, data: tuple, generator) -> tuple[Tensor, ChainDiagnostics]:
    """The chain through a cached CUDA graph; the start state and the data are its static inputs."""
    identity, modules = _potential_key_and_modules(potential)
    inputs = (x0, *(t.detach() for t in data))
    key = (identity, spec, tuple((tuple(t.shape), t.dtype) for t in inputs), x0.device, generator is not None)
    # an explicit generator lends its state to the device's capture generator: one graph serves every generator
    rng = None if generator is None else graphs.capture_generator(x0.device)

    def chain(x: Tensor, *extras: Tensor) -> tuple:
        x_end, diag = _run_eager(potential, x, spec, extras, rng)
        return (x_end, *(getattr(diag, name) for name in _GRAPHED_FIELDS))

    x, *fields = graphs.run_captured(key, chain, inputs, modules=modules, generator=rng, lender=generator,
                                     passes_per_run=spec.steps)
    return x, ChainDiagnostics(steps=spec.steps, **dict(zip(_GRAPHED_FIELDS, fields)))


# -- the keyword forms (kept names) ---------------------------------------------------------------------------------
def run_langevin_chain(potential: Callable[[Tensor], Tensor], x0: Tensor, steps: int, step_size: float,
                       noise_std: float, *, prior_precision: float = 0.0, clamp: Clamp = None, mala: bool = False,
                       generator: Optional[torch.Generator] = None, explicit_noise: bool = False,
                       diagnostics: bool = False, cuda_graph: bool = False) -> tuple[Tensor, ChainDiagnostics]:
    """:func:`run_chain` with the spec's fields as keywords (the names of :class:`~dualmcmc.kernels.Langevin`)."""
    spec = Langevin(steps, step_size, noise_std, prior_precision, clamp, mala, explicit_noise, diagnostics)
    return run_chain(potential, x0, spec, generator=generator, cuda_graph=cuda_graph)


langevin_data_chain = run_langevin_chain  # data-space Langevin on U(x) = E(x) + prior_precision/2 ||x||**2


def langevin_latent_chain(generator_fn: Callable[[Tensor], Tensor], z0: Tensor, x: Tensor, steps: int,
                          step_size: float, noise_std: float, *, sigma: float, prior_sigma: float = 1.0,
                          likelihood: str = "reference", clamp: Clamp = None, mala: bool = False,
                          generator: Optional[torch.Generator] = None, explicit_noise: bool = False,
                          diagnostics: bool = False, cuda_graph: bool = False) -> tuple[Tensor, ChainDiagnostics]:
    """Langevin on the generator posterior p(z|x) from ``z0``: :func:`run_chain` on
    :func:`reconstruction_potential` with ``prior_precision = 1/prior_sigma**2`` and ``data=(x,)``."""
    if not prior_sigma > 0:
        raise ValueError(f"'prior_sigma' must be > 0, got {prior_sigma}")
    potential = reconstruction_potential(generator_fn, sigma, likelihood)
    spec = Langevin(steps, step_size, noise_std, 1.0 / prior_sigma**2, clamp, mala, explicit_noise, diagnostics)
    if cuda_graph:
        _check_graphable(z0, (x,), spec, generator, names=("z0", "x"))
    return run_chain(potential, z0, spec, data=(x,), generator=generator, cuda_graph=cuda_graph)


# -- persistent chains ------------------------------------------------------------------------------------------
class PersistentChains:
    """A buffer of chain states (persistent contrastive divergence / replay buffer).

    ``draw(n, init_fn)`` returns ``n`` stored states (a fraction ``reinit_fraction`` replaced by fresh ones from
    ``init_fn``) and their slots; after running the chain, ``store(slots, x)`` writes the end states back.
    ``init_fn(k)`` must return ``k`` fresh states, shape (k, *state_shape).
    """

    def __init__(self, capacity: int = 10_000, reinit_fraction: float = 0.05):
        if capacity < 1:
            raise ValueError(f"PersistentChains: 'capacity' must be >= 1, got {capacity}")
        if not 0.0 <= reinit_fraction <= 1.0:
            raise ValueError(f"PersistentChains: 'reinit_fraction' must be in [0, 1], got {reinit_fraction}")
        self.capacity = capacity
        self.reinit_fraction = reinit_fraction
        self.states: Optional[Tensor] = None

    def draw(self, n: int, init_fn: Callable[[int], Tensor], generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        """(x, slots): ``n`` states to continue and the buffer slots they came from, drawn with replacement (``n``
        may exceed the capacity; a slot drawn twice keeps one of its two end states)."""
        if self.states is None:
            self.states = init_fn(self.capacity).detach().clone()
        device = "cpu" if generator is None else generator.device  # a CUDA generator draws on its device
        slots = torch.randint(self.capacity, (n,), generator=generator, device=device).cpu()
        fresh = torch.rand(n, generator=generator, device=device).cpu() < self.reinit_fraction
        slots_dev = slots.to(self.states.device)
        x = self.states[slots_dev].clone()
        n_fresh = int(fresh.sum())
        if n_fresh:
            x[fresh.to(x.device)] = init_fn(n_fresh).to(x.dtype)
        return x, slots

    def store(self, slots: Tensor, x: Tensor) -> None:
        """Write the chains' end states back to their slots."""
        if self.states is None:
            raise RuntimeError("PersistentChains.store called before draw")
        self.states[slots.to(self.states.device)] = x.detach().to(self.states.dtype)

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "reinit_fraction": self.reinit_fraction, "states": self.states}

    def load_state_dict(self, state: dict, device: "torch.device | str | None" = None) -> None:
        """Restore a :meth:`state_dict`; ``device``: where the states go (checkpoints are read onto the CPU, and
        the chains must continue on the model's device)."""
        self.capacity = int(state["capacity"])
        self.reinit_fraction = float(state["reinit_fraction"])
        states = state["states"]
        self.states = states if states is None or device is None else states.to(device)


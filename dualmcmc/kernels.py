"""Langevin kernels as plain functions of a named chain state, in the manner of BlackJAX.

A chain is a frozen :class:`Langevin` value (its settings), a :class:`ChainState` (where it is) and a kernel that
maps a state to the next one and a :class:`StepInfo`::

    spec = Langevin(steps=30, step_size=0.05, noise_std=0.05, mala=True)
    state = ChainState(x0)
    for _ in range(spec.steps):
        state, info = mala_step(energy, state, spec)       # or ula_step: the two are interchangeable

Every update is the fused operator's (:func:`dualmcmc.ops.langevin_step`)::

    x <- clamp(x - a**2/2 * (grad U0(x) + prior_precision * x) + b * eps),   eps ~ N(0, I)

with drift step ``a = step_size`` and noise scale ``b = noise_std`` set apart. The potential is
``U(x) = U0(x) + prior_precision/2 * ||x||**2`` and the chain targets ``exp(-U/T)``, ``T = (b/a)**2``; ``b == a`` is
standard Langevin. ``mala_step`` accepts or rejects each proposal per chain (Metropolis-adjusted Langevin), so that
``exp(-U/T)`` is targeted exactly; its proposal is ``N(x - a**2/2 grad U(x), b**2 I)``.

A potential is any callable ``U0(x, *data) -> (N,)``: one value per chain, without the prior term. Gradients are
per sample (``autograd.grad(U0(x).sum(), x)``), so a chain never touches parameter ``.grad``.
:func:`dualmcmc.samplers.run_chain` drives these kernels (diagnostics, CUDA-graph capture).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from .ops import langevin_step, temperature

__all__ = ["ChainState", "Langevin", "StepInfo", "init_state", "jump_step", "mala_step", "random_tensor",
           "replica_exchange_step", "ula_step", "value_and_grad"]

Clamp = Optional[tuple[Optional[float], Optional[float]]]


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Langevin: {name!r} must be a number, got {type(value).__name__} {value!r}")
    return float(value)


@dataclass(frozen=True)
class Langevin:
    """The settings of one Langevin chain: a frozen, hashable value (a CUDA graph is keyed by it).

    steps: number of updates K. step_size, noise_std: drift step ``a`` and noise scale ``b``; the target is
    exp(-U/T), T = (b/a)**2. prior_precision: precision of the zero-mean Gaussian in U (applied by the fused op).
    clamp: optional (lo, hi) bounds applied after every update (with MALA the proposals are clamped and the
    correction ignores it, so the chain is then no longer exact at the bounds). mala: Metropolis-adjust each
    update (needs noise_std > 0). explicit_noise: draw the noise with ``torch.randn(..., generator=...)`` and pass
    it to the op instead of the op's own Philox stream (bit parity with an eager loop that calls randn; MALA always
    draws explicitly, its proposal density needs the noise). diagnostics: record per-chain energies and gradient
    norms (costs norms and, without MALA, one extra forward at the end). ladder: replica exchange (parallel
    tempering): temperature multipliers (1, l2, l3, ...) increasing from 1; each chain runs one replica per rung at
    T * l, adjacent replicas swap states by a Metropolis test every step, and the chain's result is the T replica
    (:func:`replica_exchange_step`). None: a single replica. temper_prior: whether the hot rungs temper the
    Gaussian prior term too (True: rung l targets exp(-U/(T l))) or only the rest of the potential (False: exp(-U0/(T l)
    - prior/T), so a hot rung stays as confined as the T rung while it crosses the barriers of U0).
    """

    steps: int
    step_size: float
    noise_std: float
    prior_precision: float = 0.0
    clamp: Clamp = None
    mala: bool = False
    explicit_noise: bool = False
    diagnostics: bool = False
    ladder: Optional[tuple[float, ...]] = None
    temper_prior: bool = True

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"Langevin: 'steps' must be an int >= 0, got {self.steps!r}")
        step, noise, prior = (_number(getattr(self, k), k) for k in ("step_size", "noise_std", "prior_precision"))
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"Langevin: 'step_size' must be finite and > 0, got {self.step_size!r}")
        if not (math.isfinite(noise) and noise >= 0):
            raise ValueError(f"Langevin: 'noise_std' must be finite and >= 0, got {self.noise_std!r}")
        if not (math.isfinite(prior) and prior >= 0):
            raise ValueError(f"Langevin: 'prior_precision' must be finite and >= 0, got {self.prior_precision!r}")
        if self.mala and noise == 0.0:
            raise ValueError("Langevin: mala=True needs noise_std > 0 (a noiseless chain has no proposal density)")
        if self.clamp is not None:
            bounds = tuple(self.clamp)
            if len(bounds) != 2 or not all(b is None or not isinstance(b, bool) and isinstance(b, (int, float))
                                           for b in bounds):
                raise ValueError(f"Langevin: 'clamp' must be (lo, hi) numbers or None, got {self.clamp!r}")
            lo, hi = (None if b is None else float(b) for b in bounds)
            if lo is not None and hi is not None and not lo < hi:
                raise ValueError(f"Langevin: 'clamp' must have lo < hi, got {self.clamp!r}")
            object.__setattr__(self, "clamp", (lo, hi))  # floats, so equal settings hash alike
        if not isinstance(self.temper_prior, bool):
            raise ValueError(f"Langevin: 'temper_prior' must be True or False, got {self.temper_prior!r}")
        if self.ladder is not None:
            rungs = tuple(_number(v, "ladder") for v in self.ladder)
            if not rungs or rungs[0] != 1.0 or any(not (math.isfinite(b) and b > a) for a, b in zip(rungs, rungs[1:])):
                raise ValueError(f"Langevin: 'ladder' must be increasing temperature multipliers starting at 1 "
                                 f"(e.g. (1, 4, 16)), got {self.ladder!r}")
            if self.mala or noise == 0.0:
                raise ValueError("Langevin: 'ladder' (replica exchange) runs unadjusted chains with noise: set mala "
                                 "False and noise_std > 0")
            object.__setattr__(self, "ladder", rungs)
        for name in ("step_size", "noise_std", "prior_precision"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def temperature(self) -> float:
        """T = (noise_std / step_size)**2: the chain targets exp(-U/T)."""
        return temperature(self.step_size, self.noise_std)

    def replace(self, **changes) -> "Langevin":
        return dataclasses.replace(self, **changes)

    def scaled(self, factor: float) -> "Langevin":
        """Step size and noise both times ``factor``: a slower chain at the same temperature (a recovery's backoff)."""
        if factor == 1.0:
            return self
        return self.replace(step_size=self.step_size * factor, noise_std=self.noise_std * factor)


class ChainState(NamedTuple):
    """Where a chain is: the states ``x`` (N, ...), and, when known at ``x``, the per-chain potential ``energy`` = U(x)
    (prior term included) and ``grad`` = grad U0(x) (prior term excluded; the op adds it). An unadjusted step leaves
    them unknown (None) at its new state, as computing them would cost a pass the next step may not need."""

    x: Tensor
    energy: Optional[Tensor] = None
    grad: Optional[Tensor] = None


class StepInfo(NamedTuple):
    """What one step saw: U at the state it started from (None for ULA without diagnostics), ||grad U|| there (with
    diagnostics), and for MALA the per-chain accept decisions."""

    energy: Optional[Tensor]
    grad_norm: Optional[Tensor] = None
    accepted: Optional[Tensor] = None
    swapped: Optional[Tensor] = None  # replica exchange: (R - 1, N) swap decisions of the adjacent pairs (False
                                      #   for the pairs this step did not try)


Potential = Callable[..., Tensor]


def per_chain_sum(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).sum(dim=1)


def prior_term(x: Tensor, prior_precision: float) -> Tensor:
    """(N,) prior_precision/2 * ||x||**2 per chain."""
    if prior_precision == 0.0:
        return x.new_zeros(x.shape[0])
    return 0.5 * prior_precision * per_chain_sum(x.square())


def value_and_grad(potential: Potential, x: Tensor, data: Sequence[Tensor] = ()) -> tuple[Tensor, Tensor]:
    """Per-chain U0(x) (N,) and its gradient, without building a graph into anything but a fresh leaf."""
    leaf = x.detach().requires_grad_(True)
    with torch.enable_grad():
        value = potential(leaf, *data)
        if value.shape != (x.shape[0],):
            raise ValueError(
                f"langevin chain: the energy function must return one energy per chain, shape ({x.shape[0]},); "
                f"got {tuple(value.shape)}"
            )
        (grad,) = torch.autograd.grad(value.sum(), leaf)
    return value.detach(), grad


def random_tensor(kind: str, shape, *, device, dtype=None, generator: Optional[torch.Generator] = None) -> Tensor:
    """``torch.randn`` ("normal") or ``torch.rand`` ("uniform") of ``shape`` on ``device``, drawn with ``generator``
    wherever it lives: a generator of another device (a CPU one for CUDA states) draws there and the result moves."""
    draw = {"normal": torch.randn, "uniform": torch.rand}[kind]
    if generator is not None and generator.device != torch.device(device):
        return draw(shape, dtype=dtype, generator=generator).to(device)
    return draw(shape, dtype=dtype, device=device, generator=generator)


def init_state(potential: Potential, x: Tensor, spec: Langevin, data: Sequence[Tensor] = ()) -> ChainState:
    """The state at ``x`` with its potential and gradient computed (what :func:`mala_step` carries)."""
    value, grad = value_and_grad(potential, x, data)
    return ChainState(x.detach(), value + prior_term(x, spec.prior_precision), grad)


def _grad_norm(state_x: Tensor, grad: Tensor, spec: Langevin) -> Tensor:
    return per_chain_sum((grad + spec.prior_precision * state_x).square()).sqrt()


def ula_step(potential: Potential, state: ChainState, spec: Langevin, *, data: Sequence[Tensor] = (),
             generator: Optional[torch.Generator] = None) -> tuple[ChainState, StepInfo]:
    """One unadjusted Langevin update (the fused op); the new state's energy and gradient are left unknown."""
    x = state.x
    if state.grad is None:
        value, grad = value_and_grad(potential, x, data)
        energy = value + prior_term(x, spec.prior_precision) if spec.diagnostics else None
    else:
        energy, grad = state.energy, state.grad
    grad_norm = _grad_norm(x, grad, spec) if spec.diagnostics else None
    noise = None
    if spec.explicit_noise and spec.noise_std != 0.0:
        noise = random_tensor("normal", x.shape, device=x.device, dtype=x.dtype, generator=generator)
    x_new = langevin_step(x, grad, spec.step_size, spec.noise_std, prior_precision=spec.prior_precision, noise=noise,
                          generator=generator, clamp=spec.clamp)
    return ChainState(x_new), StepInfo(energy, grad_norm)


def mala_step(potential: Potential, state: ChainState, spec: Langevin, *, data: Sequence[Tensor] = (),
              generator: Optional[torch.Generator] = None) -> tuple[ChainState, StepInfo]:
    """One Metropolis-adjusted Langevin step for exp(-U/T): proposal y = x - a**2/2 grad U(x) + b eps, accepted per
    chain with the asymmetric proposal ratio. The new state carries its energy and gradient."""
    if state.grad is None or state.energy is None:
        state = init_state(potential, state.x, spec, data)
    x, energy, grad = state
    prior, noise_std = spec.prior_precision, spec.noise_std
    drift = 0.5 * spec.step_size * spec.step_size
    full_grad = grad + prior * x
    grad_norm = per_chain_sum(full_grad.square()).sqrt() if spec.diagnostics else None
    eps = random_tensor("normal", x.shape, device=x.device, dtype=x.dtype, generator=generator)
    proposal = langevin_step(x, grad, spec.step_size, noise_std, prior_precision=prior, noise=eps, clamp=spec.clamp)
    value_p, grad_p = value_and_grad(potential, proposal, data)
    energy_p = value_p + prior_term(proposal, prior)
    full_grad_p = grad_p + prior * proposal
    # log q(y|x) uses the realised noise (exact also when clamped values are left aside); log q(x|y) is recomputed.
    log_q_forward = -0.5 * per_chain_sum(((proposal - x + drift * full_grad) / noise_std).square())
    log_q_backward = -0.5 * per_chain_sum(((x - proposal + drift * full_grad_p) / noise_std).square())
    log_alpha = -(energy_p - energy) / spec.temperature + log_q_backward - log_q_forward
    uniform = random_tensor("uniform", (x.shape[0],), device=x.device, dtype=log_alpha.dtype, generator=generator)
    accept = (uniform.log() < log_alpha) & torch.isfinite(log_alpha)
    mask = accept.view(-1, *([1] * (x.dim() - 1)))
    new = ChainState(torch.where(mask, proposal, x).detach(), torch.where(accept, energy_p, energy),
                     torch.where(mask, grad_p, grad))
    return new, StepInfo(energy, grad_norm, accept)


def kernel_log_density(x: Tensor, centers: Tensor, bandwidth: float) -> Tensor:
    """(N,) log of the Gaussian kernel density on ``centers`` (M, ...) at ``x`` (N, ...), up to one constant."""
    distances = torch.cdist(x.reshape(x.shape[0], -1), centers.reshape(centers.shape[0], -1))
    return torch.logsumexp(distances.square() / (-2.0 * bandwidth * bandwidth), dim=1)


def jump_step(potential: Potential, state: ChainState, spec: Langevin, centers: Tensor, bandwidth: float, *,
              data: Sequence[Tensor] = (), generator: Optional[torch.Generator] = None) -> tuple[ChainState, StepInfo]:
    """One independence Metropolis-Hastings step for exp(-U/T) with a kernel density on ``centers`` as proposal.

    Each chain proposes y = c + bandwidth * eps, c drawn uniformly from ``centers`` (M, ...), eps ~ N(0, I), and
    accepts it with probability min(1, exp(-(U(y) - U(x))/T) q(x)/q(y)), q the proposal's density: the target stays
    exact, while a chain can land in any region the centers cover in one step. With the data as centers the chains'
    shares of the modes follow the EBM's own weights, which local Langevin steps, unable to cross between modes, never
    do. Costs one forward pass (two when the state's energy is unknown), no gradients. The proposals are clamped
    by ``spec.clamp`` and the correction ignores that, as in :func:`mala_step`. The new state carries its energy.
    """
    if not (isinstance(bandwidth, (int, float)) and math.isfinite(bandwidth) and bandwidth > 0):
        raise ValueError(f"jump_step: 'bandwidth' must be finite and > 0, got {bandwidth!r}")
    x = state.x
    if centers.dim() != x.dim() or centers.shape[1:] != x.shape[1:] or centers.shape[0] < 1:
        raise ValueError(f"jump_step: 'centers' must be (M, {', '.join(map(str, x.shape[1:]))}) like the states, got "
                         f"shape {tuple(centers.shape)}")
    centers = centers.detach().to(x)
    pick = torch.randint(centers.shape[0], (x.shape[0],), generator=generator,
                         device="cpu" if generator is None else generator.device).to(x.device)
    eps = random_tensor("normal", x.shape, device=x.device, dtype=x.dtype, generator=generator)
    proposal = centers[pick] + bandwidth * eps
    if spec.clamp is not None:
        proposal = proposal.clamp(*spec.clamp)
    with torch.no_grad():
        energy = state.energy
        if energy is None:
            energy = potential(x, *data).detach() + prior_term(x, spec.prior_precision)
        energy_p = potential(proposal, *data).detach() + prior_term(proposal, spec.prior_precision)
        log_q = kernel_log_density(torch.cat([x, proposal]), centers, bandwidth)
    log_alpha = -(energy_p - energy) / spec.temperature + log_q[:x.shape[0]] - log_q[x.shape[0]:]
    uniform = random_tensor("uniform", (x.shape[0],), device=x.device, dtype=log_alpha.dtype, generator=generator)
    accept = (uniform.log() < log_alpha) & torch.isfinite(log_alpha)
    mask = accept.view(-1, *([1] * (x.dim() - 1)))
    new = ChainState(torch.where(mask, proposal, x).detach(), torch.where(accept, energy_p, energy))
    return new, StepInfo(energy, None, accept)


def replica_exchange_step(potential: Potential, state: ChainState, spec: Langevin, *, data: Sequence[Tensor] = (),
                          generator: Optional[torch.Generator] = None, parity: int = 0) -> tuple[ChainState, StepInfo]:
    """One replica-exchange (parallel-tempering) Langevin step on R = len(spec.ladder) stacked replicas.

    ``state.x`` holds the replicas stacked rung by rung, (R * N, ...), rung r at temperature T * ladder[r] (``data``
    stacked alike). First, adjacent rungs (r, r + 1) with r = parity, parity + 2, ... swap their states per chain,
    accepted with probability min(1, exp((U_r - U_{r+1}) (1/T_r - 1/T_{r+1}))): the swap leaves the product of the
    tempered targets invariant, so rung 0 still targets exp(-U/T) while the hot rungs carry states between modes.
    Then every replica takes an unadjusted Langevin step with the same drift and noise scaled by sqrt(ladder[r])
    (the fused op with explicit noise). Alternate ``parity`` between steps so that every pair is tried. With
    ``spec.temper_prior`` False the prior is left untempered: rung r targets exp(-U0/T_r - prior/T), its drift carries
    ladder[r] times the prior's gradient, and the swap test reads U0 alone (the prior terms cancel).
    """
    rungs = spec.ladder or (1.0,)
    count = len(rungs)
    x = state.x
    n = x.shape[0] // count
    if n * count != x.shape[0]:
        raise ValueError(f"replica_exchange_step: the state stacks {count} rungs of equal size, got {x.shape[0]} rows")
    value, grad = value_and_grad(potential, x, data)
    energy = value + prior_term(x, spec.prior_precision)
    swapped = torch.zeros(count - 1, n, dtype=torch.bool, device=x.device)
    fixed_prior = not spec.temper_prior and spec.prior_precision > 0
    if count > 1:
        inverse_t = [1.0 / (spec.temperature * r) for r in rungs]
        index = torch.arange(count * n, device=x.device).view(count, n)
        levels = (value if fixed_prior else energy).view(count, n)
        pairs = list(range(parity % 2, count - 1, 2))
        uniform = random_tensor("uniform", (len(pairs), n), device=x.device, dtype=energy.dtype, generator=generator)
        for row, r in enumerate(pairs):
            log_alpha = (levels[r] - levels[r + 1]) * (inverse_t[r] - inverse_t[r + 1])
            accept = (uniform[row].log() < log_alpha) & torch.isfinite(log_alpha)
            low, high = index[r].clone(), index[r + 1].clone()
            index[r], index[r + 1] = torch.where(accept, high, low), torch.where(accept, low, high)
            swapped[r] = accept
        order = index.reshape(-1)
        x, grad, energy = x[order], grad[order], energy[order]
    scale = torch.tensor(rungs, dtype=x.dtype, device=x.device).sqrt().repeat_interleave(n)
    if fixed_prior:  # the op adds prior_precision * x; rung r needs ladder[r] times that
        extra = (scale.square() - 1.0).mul_(spec.prior_precision).view(-1, *([1] * (x.dim() - 1)))
        grad = grad + extra * x
    noise = random_tensor("normal", x.shape, device=x.device, dtype=x.dtype, generator=generator)
    noise = noise * scale.view(-1, *([1] * (x.dim() - 1)))
    grad_norm = _grad_norm(x, grad, spec) if spec.diagnostics else None
    x_new = langevin_step(x, grad, spec.step_size, spec.noise_std, prior_precision=spec.prior_precision, noise=noise,
                          clamp=spec.clamp)
    return ChainState(x_new), StepInfo(energy, grad_norm, None, swapped)

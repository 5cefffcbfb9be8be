"""Langevin samplers built on the fused operator :func:`dualmcmc.ops.langevin_step_`.

Plain functions of state: a chain takes its start, returns its end state (detached) and diagnostics.

Every chain runs K updates of

    x <- clamp(x - a**2/2 * (grad U0(x) + prior_precision * x) + b * eps),   eps ~ N(0, I),

with drift step ``a = step_size`` and noise scale ``b = noise_std`` set apart. The potential is
``U(x) = U0(x) + prior_precision/2 * ||x||**2`` and the chain targets ``exp(-U/T)`` with ``T = (b/a)**2``
(:func:`dualmcmc.ops.temperature`); ``b == a`` is standard Langevin. With ``mala=True`` each update is a
proposal accepted or rejected per chain (Metropolis-adjusted Langevin) so that ``exp(-U/T)`` is targeted
exactly; the proposal is ``N(x - a**2/2 grad U(x), b**2 I)``, i.e. MALA with step ``b**2`` on the tempered target.

* data-space chain (EBM): ``U0 = E``, the network's per-sample energies;
* latent-posterior chain (generator): ``U0(z) = ||G(z) - x||**2 / sigma**2`` in the Dual-MCMC reference form
  (twice the textbook Gaussian term, see methods.md §2.3) or ``/(2 sigma**2)`` in the textbook form, with
  ``prior_precision = 1/prior_sigma**2``.

Gradients are per sample: ``autograd.grad(U0(x).sum(), x)`` never touches parameter ``.grad``.

With ``cuda_graph=True`` (CUDA tensors only) the whole K-step chain is captured once into a CUDA graph per
(potential, shapes, dtype, device, steps, step sizes, prior, clamp, generator) and replayed; it returns what the
eager chain returns under the same seed (:mod:`dualmcmc.graphs` explains how, and when to call
``graphs.clear_cache()``). Pass the same potential object every call (a module, or a function made once).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from . import graphs
from .ops import langevin_step, langevin_step_, temperature

__all__ = [
    "ChainDiagnostics",
    "PersistentChains",
    "langevin_data_chain",
    "langevin_latent_chain",
    "reconstruction_energy",
    "run_langevin_chain",
    "LIKELIHOODS",
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
        return out


def _per_chain_sum(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).sum(dim=1)


def _prior_term(x: Tensor, prior_precision: float) -> Tensor:
    if prior_precision == 0.0:
        return x.new_zeros(x.shape[0])
    return 0.5 * prior_precision * _per_chain_sum(x.square())


def _value_and_grad(potential: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-chain U0(x) (N,) and its gradient, without building a graph into anything but a fresh leaf."""
    leaf = x.detach().requires_grad_(True)
    with torch.enable_grad():
        value = potential(leaf)
        if value.shape != (x.shape[0],):
            raise ValueError(
                f"langevin chain: the energy function must return one energy per chain, shape ({x.shape[0]},); "
                f"got {tuple(value.shape)}"
            )
        (grad,) = torch.autograd.grad(value.sum(), leaf)
    return value.detach(), grad


def _draw_noise(x: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    if generator is not None and generator.device != x.device:  # e.g. a CPU generator for CUDA chains
        return torch.randn(x.shape, dtype=x.dtype, generator=generator).to(x.device)
    return torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)


def _draw_uniform(n: int, like: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    if generator is not None and generator.device != like.device:
        return torch.rand(n, dtype=like.dtype, generator=generator).to(like.device)
    return torch.rand(n, dtype=like.dtype, device=like.device, generator=generator)


def run_langevin_chain(
    potential: Callable[[Tensor], Tensor],
    x0: Tensor,
    steps: int,
    step_size: float,
    noise_std: float,
    *,
    prior_precision: float = 0.0,
    clamp: Clamp = None,
    mala: bool = False,
    generator: Optional[torch.Generator] = None,
    explicit_noise: bool = False,
    diagnostics: bool = False,
    cuda_graph: bool = False,
) -> tuple[Tensor, ChainDiagnostics]:
    """K Langevin (or MALA) steps on ``U = potential + prior_precision/2 ||x||**2`` from ``x0``.

    Args:
        potential: x (N, ...) -> (N,) per-chain potential U0 (without the prior term).
        x0: start states; not modified.
        steps: number of updates K (0 returns a detached copy of ``x0``).
        step_size, noise_std: drift step ``a`` and noise scale ``b``; the target is exp(-U/T), T = (b/a)**2.
        prior_precision: precision of a zero-mean Gaussian added to the potential (applied by the fused op).
        clamp: optional (lo, hi) bounds applied after every update (with MALA the proposals are clamped and the
            correction ignores it, so the chain is then no longer exact at the bounds).
        mala: Metropolis-adjust each update; needs ``noise_std > 0``.
        generator: torch generator for the noise (and MALA's uniforms).
        explicit_noise: draw the noise here with ``torch.randn(..., generator=generator)`` and pass it to the
            op, instead of the op's own Philox stream; bit-for-bit reproducible against an eager loop that
            calls ``torch.randn_like``. MALA always draws explicitly (the proposal density needs the noise).
        diagnostics: compute the per-chain diagnostics (costs norms and, without MALA, one extra forward).
        cuda_graph: capture the chain into a CUDA graph once per (potential, shape, dtype, device, steps, step
            sizes, prior, clamp, whether a generator is given) and replay it (:mod:`dualmcmc.graphs`); same result as the eager chain
            under the same seed. Needs a CUDA ``x0``; not with ``mala`` or ``explicit_noise`` (ValueError).

    Returns:
        (x, diagnostics): the detached end states and a :class:`ChainDiagnostics`; with ``diagnostics=False``
        only ``acceptance`` (MALA) is filled.
    """
    if steps < 0:
        raise ValueError(f"langevin chain: 'steps' must be >= 0, got {steps}")
    if mala and noise_std <= 0.0:
        raise ValueError("langevin chain: mala=True needs noise_std > 0 (a noiseless chain has no proposal density)")
    if cuda_graph:
        _check_graphable("x0", x0, mala, explicit_noise, generator)
        if steps > 0:
            return _run_graphed(potential, lambda: potential, (x0,), (), steps, step_size, noise_std,
                                prior_precision, clamp, generator, diagnostics)
    x = x0.detach().clone()
    diag = ChainDiagnostics(steps=steps)
    if mala:
        return _run_mala(potential, x, steps, step_size, noise_std, prior_precision, clamp, generator, diagnostics, diag)
    _run_ula(potential, x, steps, step_size, noise_std, prior_precision, clamp, generator, explicit_noise, diagnostics,
             diag)
    return x, diag


def _run_ula(potential, x, steps, step_size, noise_std, prior_precision, clamp, generator, explicit_noise,
             diagnostics, diag) -> None:
    """K unadjusted Langevin updates of ``x`` in place, filling ``diag``; the code the CUDA graph captures too."""
    grad_norm_sum = None
    for k in range(steps):
        value, grad = _value_and_grad(potential, x)
        if diagnostics:
            if k == 0:
                diag.energy_start = value + _prior_term(x, prior_precision)
            norm = _per_chain_sum((grad + prior_precision * x).square()).sqrt()
            grad_norm_sum = norm if grad_norm_sum is None else grad_norm_sum + norm
            diag.grad_norm_last = norm
        noise = _draw_noise(x, generator) if explicit_noise and noise_std != 0.0 else None
        langevin_step_(x, grad, step_size, noise_std, prior_precision=prior_precision, noise=noise,
                       generator=generator, clamp=clamp)
    if diagnostics:
        with torch.no_grad():
            end = potential(x).detach() + _prior_term(x, prior_precision)
        diag.energy_end = end
        if steps == 0:
            diag.energy_start = end
        else:
            diag.grad_norm_mean = grad_norm_sum / steps
        diag.nonfinite = _per_chain_sum((~torch.isfinite(x)).to(torch.int64))


_GRAPHED_FIELDS = ("energy_start", "energy_end", "grad_norm_last", "grad_norm_mean", "nonfinite")


def _check_graphable(name: str, x0: Tensor, mala: bool, explicit_noise: bool, generator) -> None:
    """ValueErrors for what a captured chain cannot do, naming the argument."""
    if mala:
        raise ValueError("langevin chain: cuda_graph=True does not support mala=True (the accept step is per-chain "
                         "control flow); use cuda_graph=False")
    if explicit_noise:
        raise ValueError("langevin chain: cuda_graph=True does not support explicit_noise=True (the op's own Philox "
                         "stream is the graph-safe one); use cuda_graph=False")
    if not isinstance(x0, Tensor) or x0.device.type != "cuda":
        where = x0.device if isinstance(x0, Tensor) else type(x0).__name__
        raise ValueError(f"langevin chain: cuda_graph=True needs a CUDA tensor; '{name}' is on {where}")
    if generator is not None and generator.device != x0.device:
        raise ValueError(f"langevin chain: cuda_graph=True needs 'generator' on {x0.device} like '{name}', "
                         f"got one on {generator.device}")


def _run_graphed(owner, make_potential, inputs, potential_key, steps, step_size, noise_std, prior_precision, clamp,
                 generator, diagnostics) -> tuple[Tensor, ChainDiagnostics]:
    """The ULA chain through a cached CUDA graph; ``make_potential(*inputs[1:])`` builds U0 on the static extras."""
    lo_hi = None if clamp is None else tuple(None if c is None else float(c) for c in clamp)
    key = (graphs.callable_identity(owner), potential_key, tuple((tuple(t.shape), t.dtype) for t in inputs),
           inputs[0].device, steps, float(step_size), float(noise_std), float(prior_precision), lo_hi,
           generator is not None, bool(diagnostics))
    # an explicit generator lends its state to the device's capture generator: one graph serves every generator
    rng = None if generator is None else graphs.capture_generator(inputs[0].device)

    def chain(x: Tensor, *extras: Tensor) -> tuple:
        diag = ChainDiagnostics(steps=steps)
        _run_ula(make_potential(*extras), x, steps, step_size, noise_std, prior_precision, clamp, rng, False,
                 diagnostics, diag)
        return (x, *(getattr(diag, name) for name in _GRAPHED_FIELDS))

    x, *fields = graphs.run_captured(key, chain, inputs, modules=graphs.modules_of(owner), generator=rng,
                                     lender=generator, passes_per_run=steps)
    return x, ChainDiagnostics(steps=steps, **dict(zip(_GRAPHED_FIELDS, fields)))


def _run_mala(potential, x, steps, step_size, noise_std, prior_precision, clamp, generator, diagnostics, diag):
    """MALA for exp(-U/T): proposal y = x - a**2/2 grad U(x) + b eps; accept with the asymmetric q ratio."""
    temp = temperature(step_size, noise_std)
    drift = 0.5 * step_size * step_size
    value, grad = _value_and_grad(potential, x)
    energy = value + _prior_term(x, prior_precision)
    full_grad = grad + prior_precision * x
    if diagnostics:
        diag.energy_start = energy.clone()
    accepted = torch.zeros(x.shape[0], device=x.device)
    grad_norm_sum = torch.zeros(x.shape[0], device=x.device)
    for _ in range(steps):
        if diagnostics:
            norm = _per_chain_sum(full_grad.square()).sqrt()
            grad_norm_sum += norm
            diag.grad_norm_last = norm
        eps = _draw_noise(x, generator)
        proposal = langevin_step(x, grad, step_size, noise_std, prior_precision=prior_precision, noise=eps, clamp=clamp)
        value_p, grad_p = _value_and_grad(potential, proposal)
        energy_p = value_p + _prior_term(proposal, prior_precision)
        full_grad_p = grad_p + prior_precision * proposal
        # log q(y|x) uses the realised noise (exact also when clamped values are left aside); log q(x|y) is recomputed.
        log_q_forward = -0.5 * _per_chain_sum(((proposal - x + drift * full_grad) / noise_std).square())
        log_q_backward = -0.5 * _per_chain_sum(((x - proposal + drift * full_grad_p) / noise_std).square())
        log_alpha = -(energy_p - energy) / temp + log_q_backward - log_q_forward
        uniform = _draw_uniform(x.shape[0], log_alpha, generator)
        accept = (uniform.log() < log_alpha) & torch.isfinite(log_alpha)
        accepted += accept.to(accepted.dtype)
        mask = accept.view(-1, *([1] * (x.dim() - 1)))
        x = torch.where(mask, proposal, x)
        grad = torch.where(mask, grad_p, grad)
        full_grad = torch.where(mask, full_grad_p, full_grad)
        energy = torch.where(accept, energy_p, energy)
    diag.acceptance = accepted / steps if steps > 0 else torch.ones_like(accepted)
    if diagnostics:
        diag.energy_end = energy
        if steps > 0:
            diag.grad_norm_mean = grad_norm_sum / steps
        diag.nonfinite = _per_chain_sum((~torch.isfinite(x)).to(torch.int64))
    return x.detach(), diag


def langevin_data_chain(
    energy_fn: Callable[[Tensor], Tensor],
    x0: Tensor,
    steps: int,
    step_size: float,
    noise_std: float,
    *,
    prior_precision: float = 0.0,
    clamp: Clamp = None,
    mala: bool = False,
    generator: Optional[torch.Generator] = None,
    explicit_noise: bool = False,
    diagnostics: bool = False,
    cuda_graph: bool = False,
) -> tuple[Tensor, ChainDiagnostics]:
    """Data-space Langevin on ``U(x) = E(x) + prior_precision/2 ||x||**2``; ``energy_fn`` returns (N,) energies.

    The chain targets exp(-U/T), T = (noise_std/step_size)**2. See :func:`run_langevin_chain` for the arguments.
    """
    return run_langevin_chain(energy_fn, x0, steps, step_size, noise_std, prior_precision=prior_precision,
                              clamp=clamp, mala=mala, generator=generator, explicit_noise=explicit_noise,
                              diagnostics=diagnostics, cuda_graph=cuda_graph)


def reconstruction_energy(
    generator_fn: Callable[[Tensor], Tensor], x: Tensor, sigma: float, likelihood: str = "reference"
) -> Callable[[Tensor], Tensor]:
    """z -> (N,) per-sample reconstruction term of the generator posterior.

    "reference": ``||G(z) - x||**2 / sigma**2`` (the Dual-MCMC code's gradient, twice the Gaussian term);
    "textbook": ``||G(z) - x||**2 / (2 sigma**2)`` (-log N(x; G(z), sigma**2 I) up to a constant).
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")
    if sigma <= 0:
        raise ValueError(f"'sigma' must be > 0, got {sigma}")
    scale = 1.0 / sigma**2 if likelihood == "reference" else 0.5 / sigma**2
    target = x.detach()

    def energy(z: Tensor) -> Tensor:
        return _per_chain_sum((generator_fn(z) - target).square()) * scale

    return energy


def langevin_latent_chain(
    generator_fn: Callable[[Tensor], Tensor],
    z0: Tensor,
    x: Tensor,
    steps: int,
    step_size: float,
    noise_std: float,
    *,
    sigma: float,
    prior_sigma: float = 1.0,
    likelihood: str = "reference",
    clamp: Clamp = None,
    mala: bool = False,
    generator: Optional[torch.Generator] = None,
    explicit_noise: bool = False,
    diagnostics: bool = False,
    cuda_graph: bool = False,
) -> tuple[Tensor, ChainDiagnostics]:
    """Langevin on the generator posterior p(z|x) from ``z0`` (e.g. a sample of the encoder's q(z|x)).

    ``U(z) = reconstruction_energy(G, x, sigma, likelihood)(z) + ||z||**2 / (2 prior_sigma**2)``; the prior goes
    through the fused op's ``prior_precision``. The reference form ("reference", the default) reproduces the
    Dual-MCMC code, whose posterior is that of a generator with noise sigma/sqrt(2).
    With ``cuda_graph=True`` the data ``x`` is a static input of the graph too, so one graph (per ``generator_fn``,
    shapes, steps, ...) serves every batch; see :func:`run_langevin_chain` for the other arguments.
    """
    if prior_sigma <= 0:
        raise ValueError(f"'prior_sigma' must be > 0, got {prior_sigma}")
    potential = reconstruction_energy(generator_fn, x, sigma, likelihood)  # checks sigma and likelihood
    if cuda_graph:
        _check_graphable("z0", z0, mala, explicit_noise, generator)
        if not isinstance(x, Tensor) or x.device != z0.device:
            raise ValueError(f"langevin_latent_chain: 'x' must be on {z0.device} like 'z0', got "
                             f"{x.device if isinstance(x, Tensor) else type(x).__name__}")
        if steps > 0:  # the data x is a static input too: one graph serves every batch of that shape

            def make_potential(target: Tensor) -> Callable[[Tensor], Tensor]:
                return reconstruction_energy(generator_fn, target, sigma, likelihood)

            return _run_graphed(generator_fn, make_potential, (z0, x.detach()), ("latent", float(sigma), likelihood),
                                steps, step_size, noise_std, 1.0 / prior_sigma**2, clamp, generator, diagnostics)
    return run_langevin_chain(potential, z0, steps, step_size, noise_std, prior_precision=1.0 / prior_sigma**2,
                              clamp=clamp, mala=mala, generator=generator, explicit_noise=explicit_noise,
                              diagnostics=diagnostics, cuda_graph=cuda_graph)


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
        slots = torch.randint(self.capacity, (n,), generator=generator)
        fresh = torch.rand(n, generator=generator) < self.reinit_fraction
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

"""Log-likelihoods of an EBM: annealed importance sampling (AIS, Neal 2001) of its normaliser.

An EBM defines ``p(x) = exp(-E(x)) / Z``; comparing two EBMs by held-out likelihood needs ``log Z``. AIS anneals
from a normalised base ``p0`` to the EBM along ``f_b(x) = p0(x)^(1-b) exp(-b E(x))``, b from 0 to 1, moving N chains
with MALA at each b (exact for each intermediate target) and accumulating importance weights::

    log w += (b_k - b_(k-1)) * (-E(x) - log p0(x))          then   x <- MALA step targeting f_(b_k)
    log Z ~= logsumexp(log w) - log N

The estimate of Z is unbiased; that of log Z is biased low by about its variance, and both shrink with more chains
and more temperatures. Its standard error is the delta-method one of the mean weight.

    result = ais_log_z(energy, base, n_chains=1000, n_temps=500, step_size=0.05)
    result.log_z, result.log_z_stderr
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from .kernels import ChainState, Langevin, mala_step

__all__ = ["AISResult", "ais_log_z", "data_base", "held_out_log_likelihood", "run_log_likelihood", "sigmoid_schedule",
           "tune_step_sizes"]


@dataclass(frozen=True)
class AISResult:
    """log_z and its standard error; ess: effective sample size of the final weights (N for a perfect anneal);
    acceptance: mean MALA acceptance over the anneal; log_weights: (N,) per chain."""

    log_z: float
    log_z_stderr: float
    ess: float
    acceptance: float
    log_weights: Tensor


def sigmoid_schedule(n_temps: int, sharpness: float = 4.0) -> Tensor:
    """n_temps inverse temperatures from 0 to 1, dense at both ends (Grosse et al. 2013's sigmoidal schedule)."""
    if isinstance(n_temps, bool) or not isinstance(n_temps, int) or n_temps < 2:
        raise ValueError(f"n_temps must be an integer >= 2, got {n_temps!r}")
    s = torch.sigmoid(torch.linspace(-sharpness, sharpness, n_temps, dtype=torch.float64))
    return (s - s[0]) / (s[-1] - s[0])


def ais_log_z(energy: Callable[[Tensor], Tensor], base: torch.distributions.Distribution, *, n_chains: int = 1000,
              n_temps: int = 500, schedule: Optional[Tensor] = None, step_size: "float | Tensor" = 0.1,
              steps_per_temp: int = 1, generator: Optional[torch.Generator] = None) -> AISResult:
    """log of Z = integral of exp(-energy(x)) dx, by AIS from ``base``.

    energy: callable (N, *shape) -> (N,), differentiable in x. base: a torch distribution over one x (its
    ``event_shape`` is x's shape, no batch shape) with ``sample`` and ``log_prob``, covering where exp(-energy) has
    mass. schedule: increasing inverse temperatures from 0 to 1 (default ``sigmoid_schedule(n_temps)``). step_size:
    MALA's step, one for every temperature or one per temperature (``tune_step_sizes`` finds them); aim for an
    acceptance of 0.5-0.9 (``result.acceptance``).
    """
    if isinstance(n_chains, bool) or not isinstance(n_chains, int) or n_chains < 2:
        raise ValueError(f"n_chains must be an integer >= 2, got {n_chains!r}")
    if isinstance(steps_per_temp, bool) or not isinstance(steps_per_temp, int) or steps_per_temp < 1:
        raise ValueError(f"steps_per_temp must be an integer >= 1, got {steps_per_temp!r}")
    if len(base.batch_shape) != 0:
        raise ValueError(f"base must be a distribution over one x (no batch shape), got batch shape "
                         f"{tuple(base.batch_shape)}; wrap it in torch.distributions.Independent")
    betas = sigmoid_schedule(n_temps) if schedule is None else torch.as_tensor(schedule, dtype=torch.float64).cpu()
    if betas.ndim != 1 or len(betas) < 2 or betas[0] != 0 or betas[-1] != 1 or (betas[1:] < betas[:-1]).any():
        raise ValueError("schedule must be a 1-D increasing sequence of inverse temperatures from 0 to 1")
    steps = _step_sizes(step_size, len(betas))

    with torch.no_grad():
        x = base.sample((n_chains,)) if generator is None else _sample_with(base, n_chains, generator)
    log_w = torch.zeros(n_chains, dtype=torch.float64, device=x.device)
    accepted, moves = 0.0, 0
    for k in range(1, len(betas)):
        beta, delta = float(betas[k]), float(betas[k] - betas[k - 1])
        with torch.no_grad():
            log_w += delta * (-energy(x) - base.log_prob(x)).double()
        x, acceptance = _transition(energy, base, beta, x, steps[k], steps_per_temp, generator)
        accepted, moves = accepted + acceptance, moves + 1
    return _result(log_w, accepted / max(moves, 1))


def _transition(energy, base, beta: float, x: Tensor, step_size: float, n_steps: int,
                generator: Optional[torch.Generator]) -> tuple[Tensor, float]:
    """n_steps MALA steps targeting f_beta = base^(1 - beta) exp(-beta E); (new x, mean acceptance)."""
    def annealed(y: Tensor) -> Tensor:  # -log f_beta(y)
        return beta * energy(y) - (1.0 - beta) * base.log_prob(y)

    spec = Langevin(steps=1, step_size=step_size, noise_std=step_size, mala=True)
    state, accepted = ChainState(x), 0.0
    for _ in range(n_steps):
        state, info = mala_step(annealed, state, spec, generator=generator)
        accepted += float(info.accepted.float().mean())
    return state.x, accepted / n_steps


def _step_sizes(step_size, n: int) -> list[float]:
    if isinstance(step_size, (int, float)) and not isinstance(step_size, bool):
        sizes = [float(step_size)] * n
    else:
        sizes = torch.as_tensor(step_size, dtype=torch.float64).reshape(-1).tolist()
        if len(sizes) != n:
            raise ValueError(f"step_size must be a number or one per temperature ({n}), got {len(sizes)} values")
    if not all(math.isfinite(a) and a > 0 for a in sizes):
        raise ValueError(f"step_size must be finite and > 0, got {step_size!r}")
    return sizes


def tune_step_sizes(energy: Callable[[Tensor], Tensor], base: torch.distributions.Distribution, schedule: Tensor, *,
                    n_chains: int = 100, start: float = 0.1, target: float = 0.65,
                    generator: Optional[torch.Generator] = None) -> Tensor:
    """MALA step sizes per temperature for ``ais_log_z``, from a pilot anneal of ``n_chains`` chains that grows or
    shrinks the step after each temperature toward an acceptance of ``target``. The main anneal then runs these
    fixed sizes on fresh chains, so its estimate stays unbiased (adapting inside it would not)."""
    with torch.no_grad():
        x = base.sample((n_chains,)) if generator is None else _sample_with(base, n_chains, generator)
    sizes, a = [start], start
    for k in range(1, len(schedule)):
        x, acceptance = _transition(energy, base, float(schedule[k]), x, a, 1, generator)
        sizes.append(a)
        a *= math.exp(2.0 * (acceptance - target))  # multiplicative Robbins-Monro step toward the target
    return torch.tensor(sizes, dtype=torch.float64)


def _sample_with(base: torch.distributions.Distribution, n: int, generator: torch.Generator) -> Tensor:
    """A seeded draw from a Normal-family base (torch distributions take no generator): loc + scale * eps."""
    inner = base.base_dist if isinstance(base, torch.distributions.Independent) else base
    if not isinstance(inner, torch.distributions.Normal):
        raise ValueError("a seeded AIS run (generator=...) needs a Normal or Independent(Normal) base")
    eps = torch.randn((n, *inner.loc.shape), generator=generator, device=generator.device, dtype=inner.loc.dtype)
    return inner.loc + inner.scale * eps.to(inner.loc.device)


def _result(log_w: Tensor, acceptance: float) -> AISResult:
    n = len(log_w)
    finite = torch.isfinite(log_w)
    if not finite.all():
        raise ValueError(f"AIS: {int((~finite).sum())} of {n} chains have non-finite weights; the base must cover "
                         "where the energy is finite, and the energy must be finite there")
    top = log_w.max()
    w = torch.exp(log_w - top)
    log_z = float(top + torch.log(w.mean()))
    stderr = float(w.std() / (w.mean() * math.sqrt(n)))  # delta method: sd(log mean w) = sd(w) / (mean(w) sqrt(N))
    ess = float(w.sum() ** 2 / w.square().sum())
    return AISResult(log_z, stderr, ess, acceptance, log_w.cpu())


def data_base(data: Tensor, widen: float = 1.5) -> torch.distributions.Distribution:
    """A diagonal Gaussian over one x, fitted to ``data`` (N, *shape) and widened by ``widen``: an AIS base that
    covers the data's region."""
    mean = data.mean(dim=0)
    std = data.std(dim=0).clamp_min(1e-3) * widen
    return torch.distributions.Independent(torch.distributions.Normal(mean, std), mean.dim())


def held_out_log_likelihood(log_prob_unnormalized: Callable[[Tensor], Tensor], data: Tensor,
                            ais: AISResult) -> tuple[float, float]:
    """(mean log p(x) over ``data``, its standard error): mean unnormalised log-density minus AIS's log Z, the two
    errors added in quadrature."""
    with torch.no_grad():
        values = log_prob_unnormalized(data).double()
    sem = float(values.std() / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return float(values.mean()) - ais.log_z, math.sqrt(sem ** 2 + ais.log_z_stderr ** 2)


def run_log_likelihood(method, train_data: Tensor, held_out: Tensor, *, n_chains: int = 1000, n_temps: int = 500,
                       seed: int = 0) -> dict[str, float]:
    """AIS of a trained method's EBM density exp(-U/T) (``method.unnormalized_log_density``) from a Gaussian fitted to
    its training data, with step sizes from a pilot anneal; returns log_z and its error, the held-out mean
    log-likelihood and its error, and the anneal's ESS and acceptance."""
    device = method.device
    base = data_base(train_data.to(device, torch.float32))
    generator = torch.Generator(device=device).manual_seed(seed)

    def energy(x: Tensor) -> Tensor:
        return -method.unnormalized_log_density(x)

    schedule = sigmoid_schedule(n_temps)
    start = float(base.base_dist.scale.mean()) * 0.1
    sizes = tune_step_sizes(energy, base, schedule, n_chains=max(2, n_chains // 10), start=start, generator=generator)
    result = ais_log_z(energy, base, n_chains=n_chains, schedule=schedule, step_size=sizes, generator=generator)
    mean, stderr = held_out_log_likelihood(method.log_prob_unnormalized, held_out.to(device, torch.float32), result)
    found = {"log_z": result.log_z, "log_z_stderr": result.log_z_stderr, "held_out_log_likelihood": mean,
             "held_out_log_likelihood_stderr": stderr, "n_held_out": len(held_out), "ess": result.ess,
             "acceptance": result.acceptance, "n_chains": n_chains, "n_temps": n_temps}
    if result.ess < max(10.0, 0.05 * n_chains):  # a few chains carry all the weight: the error bar is not to be trusted
        found["warning"] = (f"effective sample size {result.ess:.1f} of {n_chains} chains: the estimate and its error "
                            f"bar are unreliable; raise n_temps, or the density may not be normalisable (an energy "
                            f"that falls without bound, or a very low temperature T)")
    return found

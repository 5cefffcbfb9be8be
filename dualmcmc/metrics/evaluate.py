"""One call that scores a 2-D model on a data set: grid KL / TV, MMD, and mode coverage where modes are known."""
from __future__ import annotations

import inspect
import math
import os
from functools import lru_cache
from typing import Callable

import torch
from torch import Tensor

from ..data import is_toy, load_dataset, sample_toy, toy_log_density, toy_modes, toy_rings
from .density2d import kl_tv_from_log_masses
from .grid import (  # re-exported: plotting draws density maps with the same grid
    DEFAULT_BATCH,
    axis_bounds,
    grid_density,
    grid_log_density,
    grid_points,
    histogram_log_density,
)
from .samples import mmd, mode_coverage, ring_coverage

__all__ = ["evaluate_2d", "mode_masses", "true_grid_log_mass", "grid_points", "grid_density"]

# Truth histograms (only where no log-density exists) use this many samples: sampling noise ~1e-3 nats.
TRUTH_HISTOGRAM_SAMPLES = 1_000_000
# Fixed so that the cached truth grid does not depend on the evaluation seed.
_TRUTH_SEED = 1234
# Offset between the model's and the reference samples' seeds, so the two never share a stream.
_REFERENCE_SEED_OFFSET = 7_919


def true_grid_log_mass(dataset: str, bounds=(-4.0, 4.0), resolution: int = 500) -> Tensor:
    """Log cell masses (res, res) of the true density of ``dataset`` normalised on the grid (cached; do not modify).

    From the toy's log-density where it has one (exact or precise numerical, see dualmcmc.data.toy2d); else
    from a Gaussian-smoothed histogram of 1e6 toy samples, or of all rows of a .npy / .npz data file (2-D).
    """
    # A data file's modification time joins the cache key, so an edited file is read again.
    file_version = os.path.getmtime(dataset) if not is_toy(dataset) and os.path.exists(dataset) else None
    return _cached_true_grid(str(dataset), axis_bounds(bounds), int(resolution), file_version)


@lru_cache(maxsize=8)
def _cached_true_grid(dataset: str, bounds: tuple, resolution: int, file_version: float | None) -> Tensor:
    if is_toy(dataset):
        log_density = toy_log_density(dataset)
        if log_density is not None:
            return grid_log_density(log_density, bounds, resolution)
        samples = sample_toy(dataset, TRUTH_HISTOGRAM_SAMPLES, torch.Generator().manual_seed(_TRUTH_SEED))
    else:
        samples = _two_d_dataset(dataset)
    return histogram_log_density(samples, bounds, resolution)


def _two_d_dataset(dataset: str) -> Tensor:
    data = load_dataset(dataset)
    if data.shape[1] != 2:
        raise ValueError(f"evaluate_2d needs 2-D data, but {dataset!r} has {data.shape[1]} columns")
    return data


def _reference_samples(dataset: str, n: int, seed: int) -> Tensor:
    """n fresh true samples (toys), or a seeded random subset of at most n rows of a data file."""
    generator = torch.Generator().manual_seed(seed + _REFERENCE_SEED_OFFSET)
    if is_toy(dataset):
        return sample_toy(dataset, n, generator)
    data = _two_d_dataset(dataset)
    return data[torch.randperm(len(data), generator=generator)[:n]]


def _module_device(fn: Callable) -> torch.device | None:
    """The device of the nn.Module that ``fn`` is (or is a bound method of), if any."""
    owner = getattr(fn, "__self__", fn)
    if isinstance(owner, torch.nn.Module):
        for tensor in (*owner.parameters(), *owner.buffers()):
            return tensor.device
    return None


def _draw_samples(sample_fn: Callable, n: int, seed: int, device: torch.device | None) -> Tensor:
    """sample_fn(n, generator=...) when it takes a generator (seeded, on the model's device), else sample_fn(n)."""
    try:
        takes_generator = "generator" in inspect.signature(sample_fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        takes_generator = False
    # No torch.no_grad here: Langevin samplers need gradients of the energy with respect to x.
    if takes_generator:
        out = sample_fn(n, generator=torch.Generator(device=device or "cpu").manual_seed(seed))
    else:
        out = sample_fn(n)
    return torch.as_tensor(out).detach().to(device="cpu", dtype=torch.float32).reshape(len(out), -1)


def evaluate_2d(
    log_prob_fn: Callable[[Tensor], Tensor] | None,
    sample_fn: Callable[..., Tensor] | None,
    dataset: str,
    n_samples: int = 5000,
    seed: int = 0,
    *,
    bounds=(-4.0, 4.0),
    resolution: int = 500,
    batch: int = DEFAULT_BATCH,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Score a 2-D model against ``dataset`` (a toy name or a 2-D .npy / .npz file); a dict of floats.

    * ``log_prob_fn`` (x (N, 2) -> (N,), unnormalised is fine; None to skip): "grid_kl" = KL(true || model)
      in nats and "grid_tv", both normalised on the ``resolution``^2 grid over ``bounds`` (truth: see
      ``true_grid_log_mass``).
    * ``sample_fn`` (n -> (n, 2), or (n, generator=...) -> ..., seeded with ``seed``; None to skip): "mmd"
      (unbiased multi-bandwidth MMD^2 against ``n_samples`` fresh true samples), "nonfinite_fraction"
      (samples with NaN / Inf: left out of the MMD, counted off-mode in the coverage), and where the toy has modes
      (8gaussians, 25gaussians; rings count each ring as a mode) "modes_hit", "n_modes", "max_share_error",
      "off_mode_fraction" (see ``mode_coverage``).
    * Both scores on such a toy with a ``log_prob_fn``: "max_mass_error", the largest relative error of the
      model density's weight on a mode (``mode_masses``): the density's own mode weights, free of sampling noise.

    ``device`` is where grid points go (default: the device of the module ``log_prob_fn`` is bound to).
    """
    results: dict[str, float] = {}
    if log_prob_fn is not None:
        truth = true_grid_log_mass(dataset, bounds, resolution)
        model = grid_log_density(log_prob_fn, bounds, resolution, batch, device or _module_device(log_prob_fn))
        scores = kl_tv_from_log_masses(truth, model)
        results["grid_kl"], results["grid_tv"] = scores["kl"], scores["tv"]
        results.update(_mass_scores(dataset, model, bounds, resolution))
    if sample_fn is not None:
        samples = _draw_samples(sample_fn, n_samples, seed, device or _module_device(sample_fn))
        finite = torch.isfinite(samples).all(dim=1)
        results["nonfinite_fraction"] = 1.0 - finite.float().mean().item() if len(samples) else math.nan
        good = samples[finite]
        reference = _reference_samples(dataset, n_samples, seed)
        results["mmd"] = mmd(good, reference) if len(good) >= 2 else math.nan
        results.update(_coverage_scores(dataset, samples))
    return results


def mode_masses(dataset: str, log_masses: Tensor, bounds=(-4.0, 4.0), resolution: int = 500):
    """(model weights (M,), true weights (M,)) of the modes of toy ``dataset`` under a grid of log cell masses
    (res, res), or None for a toy without known modes. A cell counts for its nearest mode centre (8gaussians,
    25gaussians) or its nearest ring radius (rings), so the weights sum to the grid's whole mass (1). Weights
    only: mass spread evenly over a mode's cell counts as much as mass on the mode (the grid KL judges shape)."""
    if not is_toy(dataset):
        return None
    if log_masses.numel() != resolution * resolution:
        raise ValueError(f"mode_masses: log_masses has {log_masses.numel()} cells, a {resolution} x {resolution} grid "
                         f"has {resolution * resolution}; pass the resolution the grid was made with")
    modes, rings = toy_modes(dataset), toy_rings(dataset)
    points = grid_points(bounds, resolution)[2].to(torch.float64)
    if modes is not None:
        centers, weights, _ = modes
        nearest = torch.cdist(points, centers.to(torch.float64)).argmin(dim=1)
    elif rings is not None:
        radii, weights, _ = rings
        nearest = (points.norm(dim=1, keepdim=True) - radii.to(torch.float64)).abs().argmin(dim=1)
    else:
        return None
    cell_mass = log_masses.reshape(-1).to(device="cpu", dtype=torch.float64).exp()
    masses = torch.zeros(len(weights), dtype=torch.float64).index_add_(0, nearest, cell_mass)
    weights = weights.to(torch.float64)
    return masses, weights / weights.sum()


def _mass_scores(dataset: str, log_masses: Tensor, bounds, resolution: int) -> dict[str, float]:
    """{"max_mass_error": max over modes of |model weight - true weight| / true weight}, {} without modes."""
    found = mode_masses(dataset, log_masses, bounds, resolution)
    if found is None:
        return {}
    masses, weights = found
    return {"max_mass_error": ((masses - weights).abs() / weights).max().item()}


def _coverage_scores(dataset: str, samples: Tensor) -> dict[str, float]:
    """Mode (or ring) coverage of ``samples`` as floats, {} when the data set has no known modes."""
    if not is_toy(dataset) or len(samples) == 0:
        return {}
    modes, rings = toy_modes(dataset), toy_rings(dataset)
    if modes is not None:
        coverage = mode_coverage(samples, *modes)
    elif rings is not None:
        coverage = ring_coverage(samples, *rings)
    else:
        return {}
    return {key: float(coverage[key]) for key in ("modes_hit", "n_modes", "max_share_error", "off_mode_fraction")}

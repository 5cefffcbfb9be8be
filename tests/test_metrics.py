"""Tests for dualmcmc.metrics: the grid, grid KL / TV, MMD, mode coverage and evaluate_2d."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dualmcmc.data import sample_toy, toy_log_density, toy_modes, toy_rings
from dualmcmc.metrics import (
    cell_area,
    evaluate_2d,
    grid_density,
    grid_kl_tv,
    grid_points,
    histogram_log_density,
    kl_tv_from_log_masses,
    mmd,
    mode_coverage,
    mode_masses,
    ring_coverage,
)

RES = 120  # coarse grids keep the tests fast; the metrics do not depend on the resolution's size


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _shifted(log_prob, dx: float):
    return lambda x: log_prob(x - torch.tensor([dx, 0.0], dtype=x.dtype))


# ---- grid -------------------------------------------------------------------------------------------------


def test_grid_points_are_cell_centres_rows_over_y():
    xs, ys, points = grid_points((-4.0, 4.0), 4)
    assert xs.tolist() == [-3.0, -1.0, 1.0, 3.0] and torch.equal(xs, ys)
    assert points.shape == (16, 2) and points.dtype == torch.float32
    grid = points.reshape(4, 4, 2)
    assert grid[1, 2].tolist() == [xs[2].item(), ys[1].item()]
    xs, ys, _ = grid_points(((0.0, 1.0), (-2.0, 2.0)), 2)
    assert xs.tolist() == [0.25, 0.75] and ys.tolist() == [-1.0, 1.0]
    with pytest.raises(ValueError, match="lo < hi"):
        grid_points((1.0, -1.0), 3)
    with pytest.raises(ValueError, match="positive int"):
        grid_points((-1.0, 1.0), 0)


def test_grid_density_is_normalised_and_orientated():
    # A bump at (x, y) = (2, -2) lands in a late column and an early row.
    log_prob = lambda x: -((x - torch.tensor([2.0, -2.0])) ** 2).sum(1) / 0.1 + 500.0  # noqa: E731
    masses = grid_density(log_prob, (-4.0, 4.0), RES)
    assert masses.shape == (RES, RES) and masses.sum().item() == pytest.approx(1.0)
    row, col = divmod(int(masses.argmax()), RES)
    assert row < RES // 2 < col
    per_area = grid_density(log_prob, (-4.0, 4.0), RES, per_area=True)
    assert (per_area.sum() * cell_area((-4.0, 4.0), RES)).item() == pytest.approx(1.0)


def test_model_is_evaluated_in_batches_without_grad():
    calls = []

    def log_prob(x):
        calls.append((len(x), torch.is_grad_enabled()))
        return -x.square().sum(1)

    grid_density(log_prob, (-4.0, 4.0), 50, batch=1000)
    assert [n for n, _ in calls] == [1000, 1000, 500] and not any(grad for _, grad in calls)


# ---- grid KL / TV -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["8gaussians", "rings", "checkerboard"])
def test_grid_kl_of_truth_against_itself_is_zero(name):
    truth = toy_log_density(name)
    scores = grid_kl_tv(truth, true_log_prob=truth, resolution=RES)
    assert scores["kl"] == pytest.approx(0.0, abs=1e-12) and scores["tv"] == pytest.approx(0.0, abs=1e-12)
    # An additive constant (unnormalised model) changes nothing.
    scores = grid_kl_tv(lambda x: truth(x) + 123.0, true_log_prob=truth, resolution=RES)
    assert scores["kl"] == pytest.approx(0.0, abs=1e-9)


def test_grid_kl_against_shifted_density_is_positive_and_tv_bounded():
    truth = toy_log_density("8gaussians")
    near = grid_kl_tv(_shifted(truth, 0.1), true_log_prob=truth, resolution=RES)
    far = grid_kl_tv(_shifted(truth, 0.5), true_log_prob=truth, resolution=RES)
    # Shifting a Gaussian of std s by d costs d^2 / (2 s^2) nats: 0.125 for d = 0.1, s = 0.2.
    assert near["kl"] == pytest.approx(0.125, rel=0.05)
    assert far["kl"] > near["kl"] > 0.05
    assert 0.0 < near["tv"] < far["tv"] <= 1.0


def test_grid_kl_is_inf_where_model_misses_mass_and_nan_for_nan_model():
    truth = toy_log_density("8gaussians")
    half = lambda x: torch.where(x[:, 0] > 0, truth(x), torch.full_like(x[:, 0], -math.inf))  # noqa: E731
    scores = grid_kl_tv(half, true_log_prob=truth, resolution=RES)
    assert scores["kl"] == math.inf and 0.3 < scores["tv"] <= 1.0
    broken = grid_kl_tv(lambda x: torch.full_like(x[:, 0], math.nan), true_log_prob=truth, resolution=RES)
    assert math.isnan(broken["kl"]) and math.isnan(broken["tv"])
    with pytest.raises(ValueError, match="needs the truth"):
        grid_kl_tv(truth)


def test_grid_kl_from_true_samples_is_small_for_the_true_model():
    truth = toy_log_density("8gaussians")
    samples = sample_toy("8gaussians", 200_000, _gen(0))
    scores = grid_kl_tv(truth, true_samples=samples, resolution=RES)
    assert scores["kl"] < 0.02
    assert grid_kl_tv(_shifted(truth, 0.3), true_samples=samples, resolution=RES)["kl"] > 0.5


def test_kl_tv_from_log_masses_checks_sizes():
    with pytest.raises(ValueError, match="grids differ"):
        kl_tv_from_log_masses(torch.zeros(4), torch.zeros(9))


def test_histogram_log_density_is_normalised_and_drops_outside_points():
    samples = torch.tensor([[0.1, 0.1], [10.0, 0.0], [math.nan, 0.0]])
    log_mass = histogram_log_density(samples, (-1.0, 1.0), 10, bandwidth=0.0)
    assert log_mass.exp().sum().item() == pytest.approx(1.0) and log_mass.exp().max().item() == 1.0
    with pytest.raises(ValueError, match="inside the grid"):
        histogram_log_density(torch.tensor([[5.0, 5.0]]), (-1.0, 1.0), 10)


# ---- MMD --------------------------------------------------------------------------------------------------


def test_mmd_near_zero_for_same_distribution_and_larger_for_different():
    x = sample_toy("8gaussians", 600, _gen(0))
    y = sample_toy("8gaussians", 600, _gen(1))
    z = sample_toy("25gaussians", 600, _gen(2))
    same, different = mmd(x, y), mmd(x, z)
    assert abs(same) < 0.01
    assert different > 0.03 and different > 10 * abs(same)
    assert mmd(x, z) == pytest.approx(mmd(z, x), rel=1e-6, abs=1e-9)


def test_mmd_explicit_bandwidths_and_errors():
    x = torch.zeros(3, 2)
    y = torch.ones(3, 2)
    # One kernel, h = 1: within-set terms are 1, cross terms exp(-2 / 2).
    assert mmd(x, y, bandwidths=[1.0]) == pytest.approx(2.0 - 2.0 * math.exp(-1.0))
    with pytest.raises(ValueError, match="at least 2"):
        mmd(x[:1], y)
    with pytest.raises(ValueError, match="dimension"):
        mmd(x, torch.ones(3, 3))


# ---- mode coverage ----------------------------------------------------------------------------------------


def test_mode_coverage_counts_dropped_modes():
    centers, weights, radius = toy_modes("25gaussians")
    samples = sample_toy("25gaussians", 5000, _gen(0))
    full = mode_coverage(samples, centers, weights, radius)
    assert full["modes_hit"] == 25 and full["n_modes"] == 25
    assert full["off_mode_fraction"] < 0.03 and full["max_share_error"] < 0.02
    assert sum(full["shares"]) == pytest.approx(1.0 - full["off_mode_fraction"])
    nearest = torch.cdist(samples, centers).argmin(dim=1)
    kept = samples[(nearest != 0) & (nearest != 7) & (nearest != 24)]
    dropped = mode_coverage(kept, centers, weights, radius)
    assert dropped["modes_hit"] == 22
    assert [dropped["shares"][k] for k in (0, 7, 24)] == [0.0, 0.0, 0.0]
    assert dropped["max_share_error"] == pytest.approx(0.04)


def test_mode_coverage_threshold_off_mode_and_nan_samples():
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    # 100 samples: 96 on mode 0, 3 on mode 1 (< 10 % of its expected 50), one far away, one NaN.
    samples = torch.cat([torch.zeros(95, 2), torch.full((3, 2), 0.0) + torch.tensor([10.0, 0.0]),
                         torch.tensor([[50.0, 50.0], [math.nan, 0.0]])])
    assert len(samples) == 100
    out = mode_coverage(samples, centers, radius=1.0)
    assert out["modes_hit"] == 1
    assert out["off_mode_fraction"] == pytest.approx(0.02)
    assert out["shares"] == pytest.approx([0.95, 0.03])
    assert mode_coverage(samples, centers, radius=1.0, min_fraction=0.05)["modes_hit"] == 2


def test_ring_coverage_counts_dropped_ring():
    radii, weights, half_width = toy_rings("rings")
    samples = sample_toy("rings", 4000, _gen(0))
    assert ring_coverage(samples, radii, weights, half_width)["modes_hit"] == 4
    inner = samples[samples.norm(dim=1) > 1.1]
    out = ring_coverage(inner, radii, weights, half_width)
    assert out["modes_hit"] == 3 and out["shares"][0] == 0.0


# ---- evaluate_2d ------------------------------------------------------------------------------------------


def test_evaluate_2d_perfect_model_on_8gaussians():
    out = evaluate_2d(
        toy_log_density("8gaussians"),
        lambda n, generator=None: sample_toy("8gaussians", n, generator),
        "8gaussians",
        n_samples=500,
        resolution=RES,
    )
    assert set(out) == {"grid_kl", "grid_tv", "mmd", "nonfinite_fraction", "modes_hit", "n_modes",
                        "max_share_error", "off_mode_fraction", "max_mass_error"}
    assert all(isinstance(v, float) for v in out.values())
    assert out["grid_kl"] < 1e-9 and out["modes_hit"] == out["n_modes"] == 8.0 and abs(out["mmd"]) < 0.02


def test_evaluate_2d_bad_model_and_partial_inputs():
    def collapsed(n):  # no generator argument: called as sample_fn(n)
        x = torch.zeros(n, 2) + torch.tensor([2.0 * math.sqrt(2.0), 0.0])
        x[:10] = math.nan
        return x

    out = evaluate_2d(None, collapsed, "8gaussians", n_samples=400)
    assert "grid_kl" not in out and out["modes_hit"] == 1.0
    assert out["nonfinite_fraction"] == pytest.approx(10 / 400) and out["mmd"] > 0.1
    out = evaluate_2d(lambda x: -x.square().sum(1), None, "rings", resolution=RES)
    assert set(out) == {"grid_kl", "grid_tv", "max_mass_error"} and out["grid_kl"] > 0.1
    assert out["max_mass_error"] > 0.5  # a Gaussian at the centre weights the inner ring far above 1/4
    assert "max_mass_error" not in evaluate_2d(lambda x: -x.square().sum(1), None, "moons", resolution=RES)


@pytest.mark.parametrize("name", ["8gaussians", "25gaussians", "rings"])
def test_mode_masses_of_the_truth_are_the_true_weights(name):
    from dualmcmc.metrics.evaluate import true_grid_log_mass

    masses, weights = mode_masses(name, true_grid_log_mass(name, resolution=RES), resolution=RES)
    assert masses.sum().item() == pytest.approx(1.0, abs=1e-9)
    assert torch.allclose(masses, weights, atol=0.02 * weights.min().item())


def test_mode_masses_known_answer_for_a_doubled_mode():
    from dualmcmc.metrics.evaluate import true_grid_log_mass

    truth = true_grid_log_mass("8gaussians", resolution=RES).clone()
    centers = toy_modes("8gaussians")[0]
    nearest = torch.cdist(grid_points(resolution=RES)[2].double(), centers.double()).argmin(1).reshape(RES, RES)
    doubled = torch.where(nearest == 3, truth + math.log(2.0), truth)
    doubled = doubled - torch.logsumexp(doubled.reshape(-1), 0)
    masses, weights = mode_masses("8gaussians", doubled, resolution=RES)
    assert masses[3].item() == pytest.approx(2 / 9, rel=1e-3)  # 2w / (1 + w) for w = 1/8
    out = evaluate_2d(lambda x: torch.zeros(len(x)), None, "8gaussians", resolution=RES)
    assert out["max_mass_error"] > 0.1  # a flat density: the square's corners give the diagonal modes more area
    assert mode_masses("moons", doubled, resolution=RES) is None
    with pytest.raises(ValueError, match="resolution"):
        mode_masses("8gaussians", doubled, resolution=RES + 1)


def test_evaluate_2d_on_a_data_file(tmp_path):
    data = sample_toy("moons", 20_000, _gen(3)).numpy()
    np.save(tmp_path / "moons.npy", data)
    out = evaluate_2d(toy_log_density("moons"), lambda n: sample_toy("moons", n, _gen(4)),
                      str(tmp_path / "moons.npy"), n_samples=400, resolution=60)
    assert out["grid_kl"] < 0.05 and abs(out["mmd"]) < 0.02 and "modes_hit" not in out
    np.save(tmp_path / "three.npy", np.zeros((5, 3)))
    with pytest.raises(ValueError, match="2-D data"):
        evaluate_2d(None, lambda n: torch.zeros(n, 2), str(tmp_path / "three.npy"), n_samples=10)


def test_evaluate_2d_samples_with_grad_enabled_for_langevin_samplers():
    seen = []

    def sampler(n, generator=None):
        seen.append((torch.is_grad_enabled(), generator is not None))
        return sample_toy("8gaussians", n, generator)

    evaluate_2d(None, sampler, "8gaussians", n_samples=100)
    assert seen == [(True, True)]

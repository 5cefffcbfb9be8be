"""Tests for dualmcmc.data: toy samplers, their log-densities and modes, and load_dataset."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from dualmcmc.data import (
    ANALYTIC_TOYS,
    NUMERICAL_TOYS,
    TOY_DENSITIES,
    load_dataset,
    sample_toy,
    toy_log_density,
    toy_modes,
    toy_rings,
)
from dualmcmc.metrics import grid_log_density, grid_points, histogram_log_density, kl_tv_from_log_masses

WITH_DENSITY = ANALYTIC_TOYS + NUMERICAL_TOYS


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- samplers ---------------------------------------------------------------------------------------------


def test_registry_lists_all_seven_toys():
    assert set(TOY_DENSITIES) == {"8gaussians", "25gaussians", "rings", "2spirals", "checkerboard", "pinwheel", "moons"}


@pytest.mark.parametrize("name", TOY_DENSITIES)
def test_sampler_shape_dtype_and_reproducibility(name):
    x = sample_toy(name, 2000, _gen(0))
    assert x.shape == (2000, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert torch.equal(x, sample_toy(name, 2000, _gen(0)))
    assert not torch.equal(x, sample_toy(name, 2000, _gen(1)))
    assert (x.abs() > 4.0).any(dim=1).float().mean() < 0.005  # the data live in [-4, 4]^2


def test_sampler_zero_points_and_bad_n():
    assert sample_toy("moons", 0).shape == (0, 2)
    with pytest.raises(ValueError, match="non-negative int"):
        sample_toy("moons", -1)


def test_unknown_toy_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown toy density 'spiral'.*8gaussians.*moons"):
        sample_toy("spiral", 10)
    with pytest.raises(ValueError, match="valid names"):
        toy_log_density("nope")


# ---- log-densities ----------------------------------------------------------------------------------------


def test_which_toys_have_a_log_density():
    assert toy_log_density("pinwheel") is None
    for name in WITH_DENSITY:
        assert callable(toy_log_density(name))


@pytest.mark.parametrize("name", WITH_DENSITY)
def test_log_density_integrates_to_one_and_matches_sample_mean(name):
    # [-5, 5] with 300 cells puts the checkerboard's edges on cell edges, so its integral is exact there.
    _, _, points = grid_points((-5.0, 5.0), 300)
    log_p = toy_log_density(name)(points.double())
    assert log_p.shape == (len(points),) and log_p.dtype == torch.float64
    assert not torch.isnan(log_p).any()
    mass = log_p.exp() * (10.0 / 300) ** 2
    assert mass.sum().item() == pytest.approx(1.0, abs=2e-3)
    # E_p[log p] from the grid equals the mean log-density of the sampler's points iff they agree in scale.
    expected = torch.where(mass > 0, mass * log_p, torch.zeros_like(mass)).sum().item()
    observed = toy_log_density(name)(sample_toy(name, 50_000, _gen(2))).mean().item()
    assert observed == pytest.approx(expected, abs=0.03)


@pytest.mark.parametrize("name", WITH_DENSITY)
def test_samples_follow_the_log_density(name):
    # TV between a histogram of samples and the density on a 100x100 grid: within the Poisson noise of the
    # histogram (E TV <= 0.5 * sum_i sqrt(p_i / N)) plus a little binning error for the right toy, large for
    # a different toy (so the check can fail).
    bounds, res, n = (-4.0, 4.0), 100, 400_000
    truth = grid_log_density(toy_log_density(name), bounds, res)
    noise_bound = 0.5 * (truth.exp() / n).sqrt().sum().item()
    hist = histogram_log_density(sample_toy(name, n, _gen(5)), bounds, res, bandwidth=0.0)
    assert kl_tv_from_log_masses(truth, hist)["tv"] < noise_bound + 0.02
    other = "moons" if name != "moons" else "rings"
    wrong = histogram_log_density(sample_toy(other, n, _gen(5)), bounds, res, bandwidth=0.0)
    assert kl_tv_from_log_masses(truth, wrong)["tv"] > 0.4


@pytest.mark.parametrize("name, std", [("8gaussians", 0.2), ("25gaussians", 0.1)])
def test_mixture_mean_log_density_is_minus_entropy(name, std):
    # Well-separated equal mixture: entropy = log M + log(2 pi e std^2).
    n_modes = len(toy_modes(name)[0])
    entropy = math.log(n_modes) + math.log(2 * math.pi * math.e * std**2)
    x = sample_toy(name, 50_000, _gen(2))
    assert toy_log_density(name)(x).mean().item() == pytest.approx(-entropy, abs=0.02)


def test_log_density_keeps_input_dtype_and_handles_origin_and_far_points():
    x = torch.tensor([[0.0, 0.0], [100.0, -100.0], [2.0, 2.0]])
    for name in WITH_DENSITY:
        out = toy_log_density(name)(x)
        assert out.dtype == torch.float32 and out.shape == (3,)
        assert not torch.isnan(out).any() and not torch.isposinf(out).any()
    checker = toy_log_density("checkerboard")(torch.tensor([[-3.0, -3.0], [-1.0, -3.0], [5.0, 5.0]]))
    assert checker[0].item() == pytest.approx(-math.log(32.0))
    assert torch.isneginf(checker[1:]).all()


# ---- modes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, n_modes", [("8gaussians", 8), ("25gaussians", 25)])
def test_toy_modes_describe_separated_modes(name, n_modes):
    centers, weights, radius = toy_modes(name)
    assert centers.shape == (n_modes, 2) and weights.shape == (n_modes,)
    assert weights.sum().item() == pytest.approx(1.0)
    gaps = torch.cdist(centers, centers) + 1e9 * torch.eye(n_modes)
    assert gaps.min().item() > 2 * radius  # radius balls do not overlap
    assert centers.abs().max().item() + radius < 4.0


def test_toy_modes_and_rings_none_where_not_applicable():
    assert toy_modes("pinwheel") is None and toy_modes("rings") is None
    assert toy_rings("8gaussians") is None
    radii, weights, half_width = toy_rings("rings")
    assert radii.tolist() == [0.75, 1.5, 2.25, 3.0] and weights.sum().item() == pytest.approx(1.0)
    assert (radii[1:] - radii[:-1]).min().item() > 2 * half_width


# ---- load_dataset -----------------------------------------------------------------------------------------


def test_load_dataset_toy_is_seeded():
    a = load_dataset("8gaussians", n_samples=300, seed=3)
    assert a.shape == (300, 2) and a.dtype == torch.float32
    assert torch.equal(a, load_dataset("8gaussians", n_samples=300, seed=3))
    assert not torch.equal(a, load_dataset("8gaussians", n_samples=300, seed=4))


def test_load_dataset_npy_round_trip(tmp_path):
    data = np.random.default_rng(0).normal(size=(50, 3))
    np.save(tmp_path / "d.npy", data)
    out = load_dataset(str(tmp_path / "d.npy"))
    assert out.dtype == torch.float32 and out.shape == (50, 3)
    np.testing.assert_allclose(out.numpy(), data.astype(np.float32))
    ints = np.arange(12, dtype=np.int64).reshape(6, 2)
    np.save(tmp_path / "i.npy", ints)
    assert load_dataset(tmp_path / "i.npy").tolist() == ints.astype(np.float32).tolist()


def test_load_dataset_npz_single_array_and_named_key(tmp_path):
    data = np.random.default_rng(1).normal(size=(20, 2)).astype(np.float32)
    np.savez(tmp_path / "one.npz", whatever=data)
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "one.npz")).numpy(), data)
    np.savez(tmp_path / "named.npz", labels=np.zeros(20), x=data)
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "named.npz")).numpy(), data)
    np.savez(tmp_path / "alt.npz", labels=np.zeros(20), data=data)
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "alt.npz")).numpy(), data)


def test_load_dataset_npz_ambiguous_keys_are_listed(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 2)), b=np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"two\.npz.*\['a', 'b'\].*'x' or 'data'"):
        load_dataset(str(tmp_path / "two.npz"))


def test_load_dataset_missing_file(tmp_path):
    path = str(tmp_path / "missing.npy")
    with pytest.raises(FileNotFoundError, match="missing.npy.*does not exist"):
        load_dataset(path)


def test_load_dataset_unknown_toy_name():
    with pytest.raises(ValueError, match="unknown data set '9gaussians'.*8gaussians.*pinwheel"):
        load_dataset("9gaussians")


def test_load_dataset_unsupported_extension(tmp_path):
    (tmp_path / "d.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"d\.csv.*\.npy or \.npz"):
        load_dataset(str(tmp_path / "d.csv"))


@pytest.mark.parametrize("shape", [(10,), (2, 3, 4, 5, 6)])
def test_load_dataset_wrong_rank_names_the_accepted_layouts(tmp_path, shape):
    # 3-D and 4-D arrays are images now (tests/test_data_images.py); 1-D and 5-D fit no layout.
    np.save(tmp_path / "bad.npy", np.zeros(shape))
    with pytest.raises(ValueError, match=rf"bad\.npy.*shape {re.escape(str(shape))}.*expected a 2-D.*N x C x H x W"):
        load_dataset(str(tmp_path / "bad.npy"))


def test_load_dataset_nan_and_inf_rows_are_counted(tmp_path):
    data = np.zeros((10, 2))
    data[3, 0] = np.nan
    data[7, 1] = np.inf
    data[7, 0] = np.nan
    np.save(tmp_path / "nan.npy", data)
    with pytest.raises(ValueError, match=r"nan\.npy.*2 of 10 rows with NaN or Inf"):
        load_dataset(str(tmp_path / "nan.npy"))


def test_load_dataset_non_numeric_and_empty(tmp_path):
    np.save(tmp_path / "str.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(ValueError, match=r"str\.npy.*non-numeric dtype"):
        load_dataset(str(tmp_path / "str.npy"))
    np.save(tmp_path / "obj.npy", np.array([[1, None]], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"obj\.npy.*without pickle"):
        load_dataset(str(tmp_path / "obj.npy"))
    np.save(tmp_path / "empty.npy", np.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"empty\.npy.*is empty"):
        load_dataset(str(tmp_path / "empty.npy"))

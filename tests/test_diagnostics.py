"""Mixing diagnostics against chains whose answers are known: AR(1) processes, shifted chains, hand-made paths."""
import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from dualmcmc.diagnostics import acceptance_rate, autocorrelation, effective_sample_size, mode_switches, split_rhat


def ar1(rho, chains=4, draws=20_000, seed=0):
    """Stationary AR(1) chains x_t = rho x_{t-1} + e_t, unit marginal variance."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((chains, draws)) * np.sqrt(1 - rho**2)
    noise[:, 0] = rng.standard_normal(chains)  # start in the stationary distribution
    return torch.from_numpy(lfilter([1.0], [1.0, -rho], noise, axis=1))


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_ess_of_ar1_chains_is_n_times_1_minus_rho_over_1_plus_rho(rho):
    x = ar1(rho)
    expected = x.numel() * (1 - rho) / (1 + rho)
    assert effective_sample_size(x) == pytest.approx(expected, rel=0.15)


def test_ess_per_dimension_and_numpy_input():
    x = torch.stack([ar1(0.0, seed=1), ar1(0.9, seed=2)], dim=-1)
    ess = effective_sample_size(x.numpy())
    assert ess.shape == (2,) and ess[0] > 5 * ess[1]


def test_autocorrelation_of_ar1_decays_as_rho_to_the_lag():
    acf = autocorrelation(ar1(0.7), max_lag=5)
    np.testing.assert_allclose(acf.numpy(), 0.7 ** np.arange(6), atol=0.02)
    assert acf[0] == pytest.approx(1.0)


def test_split_rhat_is_one_for_mixed_chains_and_large_for_stuck_ones():
    assert split_rhat(ar1(0.5)) < 1.01
    stuck = ar1(0.5) + torch.tensor([0.0, 0.0, 3.0, 3.0]).unsqueeze(1)  # two chains in another mode
    assert split_rhat(stuck) > 1.1
    drifting = ar1(0.5, chains=2) + torch.linspace(0, 4, 20_000)  # a trend shows up between halves
    assert split_rhat(drifting) > 1.1


def test_split_rhat_of_constant_chains():
    assert split_rhat(torch.ones(2, 10)) == 1.0
    assert split_rhat(torch.tensor([[1.0] * 10, [2.0] * 10])) == float("inf")


def test_autocorrelation_names_a_bad_max_lag():
    with pytest.raises(ValueError, match="max_lag"):
        autocorrelation(torch.zeros(2, 10), max_lag=10)


def test_mode_switches_count_moves_between_neighbourhoods_with_hysteresis():
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    path = [[0, 0], [5, 0], [0, 0.5], [9.8, 0], [5, 0], [10, 0], [0, 0], [5, 5]]  # A, between, A, B, between, B, A
    still = [[0, 0]] * 8
    counts = mode_switches(torch.tensor([path, still], dtype=torch.float64), centers, radius=1.0)
    assert counts.tolist() == [2, 0] and counts.dtype == torch.int64


def test_acceptance_rate():
    assert acceptance_rate(torch.tensor([True, False, True, True])) == 0.75
    with pytest.raises(ValueError, match="0/1"):
        acceptance_rate(torch.tensor([0.5]))


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(3), "n_chains, n_draws"),
    (torch.zeros(2, 3), "at least 4 draws"),
    (torch.tensor([[0.0, 1.0, float("nan"), 2.0]]), "non-finite"),
])
def test_bad_chains_are_named(bad, message):
    for fn in (effective_sample_size, split_rhat, autocorrelation):
        with pytest.raises(ValueError, match=message):
            fn(bad)
    with pytest.raises(ValueError, match="radius"):
        mode_switches(torch.zeros(1, 4, 2), torch.zeros(1, 2), radius=0.0)
    with pytest.raises(ValueError, match="trajectory"):
        mode_switches(torch.full((1, 4, 2), float("nan")), torch.zeros(1, 2), radius=1.0)

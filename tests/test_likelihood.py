"""AIS estimates of log Z against known answers: Gaussians in several dimensions (log Z analytic), an 8-mode mixture
(log Z set by construction), and the 2-D grid normaliser of a trained model; error bars that cover the truth and
shrink with more chains."""
from __future__ import annotations

import math

import pytest
import torch

from dualmcmc.likelihood import ais_log_z, data_base, held_out_log_likelihood, sigmoid_schedule

Normal, Independent = torch.distributions.Normal, torch.distributions.Independent
Tensor = torch.Tensor


def gaussian_energy(mean: Tensor, precision_diag: Tensor, shift: float):
    """E(x) = (x - m)' diag(p) (x - m) / 2 + shift: log Z = d/2 log 2 pi - 1/2 sum log p - shift."""
    def energy(x):
        return 0.5 * ((x - mean).square() * precision_diag).sum(dim=1) + shift
    log_z = 0.5 * len(mean) * math.log(2 * math.pi) - 0.5 * precision_diag.log().sum().item() - shift
    return energy, log_z





@pytest.mark.parametrize("dim", [1, 3, 8])
def test_gaussian_log_z_within_the_error_bars(dim):
    g = torch.Generator().manual_seed(dim)
    mean = torch.randn(dim, generator=g, dtype=torch.float64) * 0.5
    precision = torch.rand(dim, generator=g, dtype=torch.float64) * 3 + 0.5
    energy, truth = gaussian_energy(mean, precision, shift=-2.5)
    base = Independent(Normal(torch.zeros(dim, dtype=torch.float64), 2.0 * torch.ones(dim, dtype=torch.float64)), 1)
    result = ais_log_z(energy, base, n_chains=500, n_temps=200, step_size=0.4, generator=torch.Generator().manual_seed(1))
    assert 0.3 < result.acceptance <= 1.0 and result.ess > 50
    assert abs(result.log_z - truth) < 4 * result.log_z_stderr + 0.02, (result.log_z, truth, result.log_z_stderr)


def test_the_error_bar_shrinks_with_more_chains():
    energy, truth = gaussian_energy(torch.zeros(2, dtype=torch.float64), torch.tensor([4.0, 0.25], dtype=torch.float64), 0.0)
    base = Independent(Normal(torch.zeros(2, dtype=torch.float64), 3.0 * torch.ones(2, dtype=torch.float64)), 1)
    few, many = (ais_log_z(energy, base, n_chains=n, n_temps=30, step_size=0.4, generator=torch.Generator().manual_seed(3))
                 for n in (200, 3200))
    assert many.log_z_stderr < 0.4 * few.log_z_stderr  # ~1/sqrt(16) = 0.25 expected
    assert abs(many.log_z - truth) < 4 * many.log_z_stderr + 0.01


def test_a_multimodal_log_z():
    """exp(-E) = 7 x (mixture of 8 Gaussians of std 0.2 on a circle of radius 2): log Z = log 7."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    centers = 2.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
    std = 0.2

    def energy(x):
        d2 = (x[:, None, :] - centers[None]).square().sum(dim=2)
        log_mix = torch.logsumexp(-d2 / (2 * std**2), dim=1) - math.log(8) - math.log(2 * math.pi * std**2)
        return -(log_mix + math.log(7.0))

    base = Independent(Normal(torch.zeros(2, dtype=torch.float64), 2.0 * torch.ones(2, dtype=torch.float64)), 1)
    result = ais_log_z(energy, base, n_chains=1000, n_temps=300, step_size=0.1, generator=torch.Generator().manual_seed(4))
    assert abs(result.log_z - math.log(7.0)) < 4 * result.log_z_stderr + 0.03, (result.log_z, result.log_z_stderr)


def test_held_out_log_likelihood_of_a_known_density():
    energy, truth = gaussian_energy(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64), 1.0)
    data = torch.randn(4000, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    result = ais_log_z(energy, data_base(data), n_chains=400, n_temps=100, step_size=0.5,
                       generator=torch.Generator().manual_seed(6))
    mean, stderr = held_out_log_likelihood(lambda x: -energy(x), data, result)
    exact = float(Normal(0.0, 1.0).log_prob(data).sum(dim=1).mean())  # the data's own N(0, I) log-density
    assert abs(mean - exact) < 4 * stderr + 0.02 and stderr < 0.05


def test_bad_arguments_name_themselves():
    energy, _ = gaussian_energy(torch.zeros(2), torch.ones(2), 0.0)
    base = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    with pytest.raises(ValueError, match="n_chains"):
        ais_log_z(energy, base, n_chains=1)
    with pytest.raises(ValueError, match="step_size"):
        ais_log_z(energy, base, step_size=-1.0)
    with pytest.raises(ValueError, match="schedule"):
        ais_log_z(energy, base, schedule=torch.tensor([0.0, 0.7, 0.5, 1.0]))
    with pytest.raises(ValueError, match="batch shape"):
        ais_log_z(energy, Normal(torch.zeros(2), torch.ones(2)))
    with pytest.raises(ValueError, match="n_temps"):
        sigmoid_schedule(1)
    with pytest.raises(ValueError, match="non-finite weights"):
        ais_log_z(lambda x: torch.where(x[:, 0] > 0, torch.inf, 0.0) + 0 * x.sum(dim=1), base, n_chains=50, n_temps=3)


def test_a_methods_log_z_agrees_with_the_grid_normaliser():
    """A 2-D dual_mcmc EBM (random MLP energy, Gaussian reference, T = 1): AIS against a fine grid over [-8, 8]^2."""
    from dualmcmc.likelihood import run_log_likelihood
    from dualmcmc.methods import build_method

    torch.manual_seed(0)
    method = build_method("dual_mcmc", {"ebm_hidden": 32, "ebm_layers": 2, "x_step_size": 0.05, "x_noise_std": 0.05,
                                        "x_ref_sigma": 1.5}, (2,))
    side = torch.linspace(-8, 8, 801)
    cell = float(side[1] - side[0]) ** 2
    grid = torch.stack(torch.meshgrid(side, side, indexing="ij"), dim=-1).reshape(-1, 2)
    grid_log_z = float(torch.logsumexp(method.log_prob_unnormalized(grid).double(), dim=0)) + math.log(cell)
    data = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1))
    found = run_log_likelihood(method, data, data[:500], n_chains=800, n_temps=200, seed=2)
    assert abs(found["log_z"] - grid_log_z) < 4 * found["log_z_stderr"] + 0.03, (found, grid_log_z)
    assert 0.4 < found["acceptance"] < 0.95 and found["held_out_log_likelihood_stderr"] > 0


def test_the_loglik_command_writes_its_estimate_and_refuses_bad_arguments(tmp_path, capsys):
    import json

    from test_train import small_config

    from dualmcmc.train import train
    from dualmcmc.cli import main
    from dualmcmc.run import log_likelihood_run

    config = small_config(tmp_path)
    config["model"].update(x_ref_sigma=1.5, x_noise_std=0.05)  # T = 1 and a Gaussian reference: a normalisable density
    run_dir = train(config)
    assert main(["loglik", str(run_dir), "--n-chains", "200", "--n-temps", "60"]) == 0
    found = json.loads((run_dir / "loglik.json").read_text())
    assert json.loads(capsys.readouterr().out) == found
    assert found["held_out_data"] == "8gaussians (fresh points)" and found["n_held_out"] == 5000
    # the grid over [-4, 4]^2 holds almost all of the mass: AIS agrees with it within its error bars
    assert abs(found["log_z"] - found["grid_log_z"]) < 4 * found["log_z_stderr"] + 0.05, found
    assert "warning" not in found and found["ess"] > 20
    assert found["held_out_log_likelihood"] < found["true_held_out_log_likelihood"]  # KL(true || model) >= 0
    # with log Z known, `score` also gives normalised log-densities
    assert main(["score", str(run_dir), "--data", "8gaussians"]) == 0
    capsys.readouterr()
    import numpy as np

    arrays = np.load(run_dir / "scores.npz")
    assert np.allclose(arrays["log_p"], -arrays["energy"] - found["log_z"])
    assert main(["loglik", str(run_dir), "--n-temps", "1"]) == 2
    assert "--n-temps must be an integer >= 2, got 1" in capsys.readouterr().err
    assert main(["loglik", str(run_dir), "--data", str(tmp_path / "missing.npy")]) == 2
    assert "missing.npy" in capsys.readouterr().err
    with pytest.raises(ValueError, match="n_chains must be an integer >= 2"):  # Python names its own argument
        log_likelihood_run(run_dir, n_chains=0)


def test_an_estimate_carried_by_a_few_chains_says_it_is_unreliable(tmp_path):
    from test_train import small_config

    from dualmcmc.run import log_likelihood_run
    from dualmcmc.train import train

    run_dir = train(small_config(tmp_path))  # the reference's cold chain: T = 4e-4, exp(-E/T) is needle-sharp
    found = log_likelihood_run(run_dir, n_chains=100, n_temps=20)
    assert found["ess"] < 10 and "unreliable" in found["warning"]

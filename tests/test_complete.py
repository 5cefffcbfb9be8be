"""Completion (issue 16): masks, observed entries that never move, the conditional of a known density sampled right,
and the `complete` command on a 2-D run and on digits."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dualmcmc.cli import main
from dualmcmc.complete import complete, completion_errors, make_mask
from dualmcmc.kernels import Langevin

REPO = Path(__file__).resolve().parents[1]


class CorrelatedGaussian:
    """Stands in for a trained method: exp(-U/T) is N(0, [[1, r], [r, 1]]), so x given y is N(r y, 1 - r^2)."""

    device = torch.device("cpu")
    EBM_CHAIN = "x"

    def __init__(self, r: float):
        self.precision = torch.linalg.inv(torch.tensor([[1.0, r], [r, 1.0]], dtype=torch.float64))

    def langevin(self, chain, test=False):
        return Langevin(steps=400, step_size=0.3, noise_std=0.3)

    def unnormalized_log_density(self, x):
        return -0.5 * ((x @ self.precision.to(x.dtype)) * x).sum(dim=1)

    def reconstruct(self, x):
        return None

    def sample(self, n, generator=None):
        return torch.randn(n, 2, generator=generator, dtype=torch.float64)


def test_masks():
    images = make_mask("center", (3, 1, 8, 8))
    assert images.shape == (3, 1, 8, 8) and (~images).sum() == 3 * 16 and not images[0, 0, 3, 3]
    assert (~make_mask("bottom", (2, 1, 8, 8))[:, :, 4:]).all() and make_mask("bottom", (2, 1, 8, 8))[:, :, :4].all()
    points = make_mask("left", (5, 2))
    assert (~points[:, 0]).all() and points[:, 1].all()
    share = (~make_mask("random:0.3", (100, 64), torch.Generator().manual_seed(0))).float().mean()
    assert abs(share - 0.3) < 0.02
    for bad, message in (("top", "needs images"), ("random:1.5", "probability P in"), ("diagonal", "unknown mask")):
        with pytest.raises(ValueError, match=message):
            make_mask(bad, (4, 2))


def test_the_conditional_of_a_known_density_is_sampled():
    r = 0.8
    method = CorrelatedGaussian(r)
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(4000, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(
        torch.tensor([[1.0, r], [r, 1.0]], dtype=torch.float64)).T
    mask = make_mask("left", truth.shape)  # x missing, y observed
    completed = complete(method, truth, mask, generator=torch.Generator().manual_seed(1))
    assert torch.equal(completed[:, 1], truth[:, 1])  # the observed coordinate never moves
    residual = completed[:, 0] - r * truth[:, 1]
    assert abs(residual.mean()) < 0.05 and abs(residual.var() - (1 - r * r)) < 0.04  # N(r y, 1 - r^2)
    errors = completion_errors(truth, completed, method.sample(4000, g), mask)
    # a sampler of the right conditional: MSE = 2 (1 - r^2) = 0.72 against the mean fill's 1; MMD about 0
    assert abs(errors["mse"] - 2 * (1 - r * r)) < 0.08 and abs(errors["mean_fill_mse"] - 1.0) < 0.08
    assert errors["mmd"] < 0.01 < errors["mean_fill_mmd"]
    with pytest.raises(ValueError, match="nothing to complete"):
        complete(method, truth, torch.ones_like(mask))


def test_the_complete_command(tmp_path, capsys):
    from test_train import small_config

    from dualmcmc.train import train

    run_dir = train(small_config(tmp_path))
    assert main(["complete", str(run_dir), "--mask", "left", "-n", "50", "--steps", "5"]) == 0
    printed = json.loads(capsys.readouterr().out.split("\n}")[0] + "\n}")
    assert printed["n"] == 50 and printed["data"] == "8gaussians (fresh points)" and "mmd" in printed
    completed = np.load(run_dir / "complete_left.npy")
    assert completed.shape == (50, 2) and (run_dir / "complete_left.png").exists()
    assert json.loads((run_dir / "complete.json").read_text())["8gaussians (fresh points) left"]["n"] == 50
    assert main(["complete", str(run_dir), "--mask", "center"]) == 2
    assert "--mask: mask 'center' needs images" in capsys.readouterr().err
    assert main(["complete", str(run_dir), "--mask", "left", "-n", "0"]) == 2
    assert "-n must be an integer >= 1" in capsys.readouterr().err


def test_digits_completion_keeps_the_observed_pixels(tmp_path, capsys):
    run_dir = tmp_path / "digits"
    tiny = ["model.arch=conv", "model.ebm_hidden=8", "model.generator_hidden=8", "model.encoder_hidden=8",
            "model.latent_dim=2", "model.x_steps=2", "model.z_steps=2", "iterations=2", "batch_size=16",
            "eval.n_samples=50", "log.progress=false", "log.tensorboard=false", "log.image_every=0", "device=cpu",
            f"out={run_dir}", "model.test_x_steps=3"]
    args = [item for pair in (("--set", s) for s in tiny) for item in pair]
    assert main(["train", str(REPO / "configs" / "digits_dual_mcmc.yaml"), *args]) == 0
    assert main(["complete", str(run_dir), "--mask", "bottom", "-n", "20"]) == 0
    capsys.readouterr()
    from dualmcmc.data import load_dataset

    completed = np.load(run_dir / "complete_bottom.npy")
    test = load_dataset("digits:test").numpy()
    assert completed.shape == (20, 1, 8, 8)
    # every completion's top half is exactly a held-out digit's top half
    assert all(any(np.array_equal(c[:, :4], t[:, :4]) for t in test) for c in completed)
    assert (run_dir / "complete_bottom.png").exists()

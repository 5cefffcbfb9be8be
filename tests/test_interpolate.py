"""Latent interpolation (issue 16): slerp against known answers, the codes' paths, and the `interpolate` command."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dualmcmc.cli import main
from dualmcmc.interpolate import interpolation_codes, slerp
from dualmcmc.methods import build_method


def test_slerp_known_answers():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    t = torch.linspace(0, 1, 5)
    path = slerp(a, b, t)[0]
    angles = torch.atan2(path[:, 1], path[:, 0])
    torch.testing.assert_close(angles, t * math.pi / 2)  # equal angles along the quarter circle
    torch.testing.assert_close(path.norm(dim=1), torch.ones(5))  # unit norm all the way (a line would dip to 0.71)
    same = slerp(a, 2 * a, t)[0]  # parallel codes: the straight line
    torch.testing.assert_close(same[:, 0], 1 + t)


@pytest.mark.parametrize("kind", ["linear", "spherical"])
def test_codes_walk_from_one_gaussian_code_to_another(kind):
    method = build_method("dual_mcmc", {"latent_dim": 3, "ebm_hidden": 8, "generator_hidden": 8, "encoder_hidden": 8},
                          (2,))
    codes = interpolation_codes(method, rows=4, steps=6, kind=kind, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (24, 3)
    again = interpolation_codes(method, rows=4, steps=6, kind=kind, generator=torch.Generator().manual_seed(0))
    assert torch.equal(codes, again)
    paths = codes.reshape(4, 6, 3)
    if kind == "linear":  # equal steps along a straight line
        steps = paths[:, 1:] - paths[:, :-1]
        torch.testing.assert_close(steps, steps[:, :1].expand_as(steps))
    assert method.decode(codes).shape == (24, 2)
    with pytest.raises(ValueError, match="steps must be an integer >= 2"):
        interpolation_codes(method, steps=1)
    with pytest.raises(ValueError, match="no generator"):
        interpolation_codes(build_method("short_run", {"ebm_hidden": 8}, (2,)))


def test_the_interpolate_command(tmp_path, capsys):
    from test_train import small_config

    from dualmcmc.train import train

    run_dir = train(small_config(tmp_path))
    assert main(["interpolate", str(run_dir), "--rows", "3", "--steps", "4", "--kind", "linear"]) == 0
    assert (run_dir / "interpolate_linear.png").exists()
    assert np.load(run_dir / "interpolate_linear.npy").shape == (12, 2)
    short = train(small_config(tmp_path, method="short_run", model={"ebm_hidden": 8, "x_steps": 2},
                               out=str(tmp_path / "short")))
    capsys.readouterr()
    assert main(["interpolate", str(short)]) == 2
    assert "has no generator" in capsys.readouterr().err
    assert main(["interpolate", str(run_dir), "--out", str(tmp_path / "x.jpg")]) == 2
    assert "--out must end in .png" in capsys.readouterr().err

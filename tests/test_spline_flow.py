"""NT-EBM's spline backbone (model.flow: spline, zuko's NSF): the Flow interface, exactness, and the error paths."""
import math
import sys
from pathlib import Path

import pytest
import torch

from dualmcmc.cli import main
from dualmcmc.methods import build_method
from dualmcmc.validation import ConfigError

pytest.importorskip("zuko")
from dualmcmc.nets.spline_flow import SplineFlow  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_SPLINE = {"flow": "spline", "flow_layers": 2, "flow_hidden": 16, "flow_pretrain_iterations": 3, "z_steps": 3,
               "ebm_hidden": 16, "ebm_layers": 2, "test_z_steps": 5}


def perturbed(seed=0, dim=2):
    """A float64 spline flow moved off the identity (zuko's conditioners start near it)."""
    torch.manual_seed(seed)
    flow = SplineFlow(dim, n_layers=3, hidden=16).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow


def test_spline_flow_is_invertible_both_ways_with_matching_log_dets():
    flow = perturbed()
    x = torch.randn(16, 2, dtype=torch.float64) * 2
    torch.testing.assert_close(flow(flow.inverse(x)), x, rtol=1e-8, atol=1e-8)
    z, ld_inv = flow.inverse_and_log_det(x)
    x_back, ld_fwd = flow.forward_and_log_det(z)
    torch.testing.assert_close(x_back, x, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(ld_inv, -ld_fwd, rtol=1e-8, atol=1e-8)


def test_spline_log_det_matches_autograd_jacobian():
    flow = perturbed(seed=1, dim=3)
    x = torch.randn(3, 3, dtype=torch.float64)
    _, log_det = flow.inverse_and_log_det(x)
    for k in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: flow.inverse(v.unsqueeze(0)).flatten(), x[k])
        assert torch.linalg.slogdet(jac)[1].item() == pytest.approx(log_det[k].item(), abs=1e-8)


def test_spline_density_integrates_to_one():
    flow = perturbed(seed=2)
    edge = torch.linspace(-12, 12, 801, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(edge, edge, indexing="ij"), dim=-1).reshape(-1, 2)
    with torch.no_grad():
        mass = flow.log_prob(grid).exp().sum() * (edge[1] - edge[0]) ** 2
    assert mass.item() == pytest.approx(1.0, abs=0.01)


def test_spline_flow_samples_reproducibly_and_differentiably():
    flow = SplineFlow(2, n_layers=2, hidden=8)
    a = flow.sample(50, generator=torch.Generator().manual_seed(3))
    b = flow.sample(50, generator=torch.Generator().manual_seed(3))
    assert a.shape == (50, 2) and torch.equal(a, b)
    z = torch.randn(4, 2, requires_grad=True)
    flow(z).square().sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match="dim >= 2"):
        SplineFlow(1)


def test_nt_ebm_learns_on_a_spline_backbone_and_samples():
    torch.manual_seed(0)
    method = build_method("nt_ebm", TINY_SPLINE, (2,))
    assert isinstance(method.flow, SplineFlow)
    x = torch.randn(32, 2)
    first = method.train_step(x)["flow_nll"]
    for _ in range(2):
        method.train_step(x)
    assert method.flow_fitted
    assert all(math.isfinite(method.train_step(x)["energy_gap"]) for _ in range(2))  # the EBM phase
    samples = method.sample(20, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (20, 2) and torch.isfinite(samples).all() and math.isfinite(first)
    assert torch.isfinite(method.log_prob_unnormalized(x)).all()


def test_spline_backbone_refuses_images_and_a_missing_zuko_by_name(monkeypatch, tmp_path, capsys):
    with pytest.raises(ConfigError, match="flow 'spline' is for vector data"):
        build_method("nt_ebm", {**TINY_SPLINE, "arch": "conv"}, (1, 8, 8))
    monkeypatch.setitem(sys.modules, "zuko", None)  # as if zuko were not installed
    with pytest.raises(ImportError, match="pip install zuko"):
        build_method("nt_ebm", TINY_SPLINE, (2,))
    out = tmp_path / "run"
    args = ["train", str(REPO / "configs" / "toy2d_nt_ebm.yaml"), "--set", "model.flow=spline", "--set",
            f"out={out}", "--set", "iterations=2", "--set", "log.progress=false"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "pip install zuko" in err and "Traceback" not in err and not out.exists()

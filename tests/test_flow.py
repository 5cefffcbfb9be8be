"""Normalizing flows: invertibility, log-determinants against autograd's Jacobian, normalisation, ActNorm init."""
import math

import pytest
import torch

from dualmcmc.nets.flow import ActNorm, ImageFlow, VectorFlow, make_flow


def perturbed(flow, shape, seed=0):
    """A float64 flow whose ActNorm was initialised on shifted data and whose weights were moved off the identity."""
    torch.manual_seed(seed)
    flow = flow.double()
    flow.log_prob(torch.randn(32, *shape, dtype=torch.float64) * 2 + 1)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return flow


FLOWS = [(lambda: VectorFlow(2, n_layers=4, hidden=16), (2,)), (lambda: VectorFlow(3, n_layers=3, hidden=16), (3,)),
         (lambda: ImageFlow(1, 4, n_steps=3, hidden=8), (1, 4, 4)), (lambda: ImageFlow(2, 4, n_steps=2, hidden=8), (2, 4, 4))]


@pytest.mark.parametrize("make, shape", FLOWS)
def test_flow_is_invertible_both_ways(make, shape):
    flow = perturbed(make(), shape)
    x = torch.randn(8, *shape, dtype=torch.float64)
    torch.testing.assert_close(flow(flow.inverse(x)), x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(flow.inverse(flow(x)), x, rtol=1e-10, atol=1e-10)
    z, ld_inv = flow.inverse_and_log_det(x)
    _, ld_fwd = flow.forward_and_log_det(z)
    torch.testing.assert_close(ld_inv, -ld_fwd, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("make, shape", FLOWS)
def test_log_det_matches_autograd_jacobian(make, shape):
    flow = perturbed(make(), shape, seed=1)
    x = torch.randn(3, *shape, dtype=torch.float64)
    _, log_det = flow.inverse_and_log_det(x)
    for k in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: flow.inverse(v.unsqueeze(0)).flatten(), x[k])
        d = x[k].numel()
        assert torch.linalg.slogdet(jac.reshape(d, d))[1].item() == pytest.approx(log_det[k].item(), abs=1e-8)


def test_vector_flow_density_integrates_to_one():
    flow = perturbed(VectorFlow(2, n_layers=4, hidden=16), (2,), seed=2)
    edge = torch.linspace(-12, 12, 801, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(edge, edge, indexing="ij"), dim=-1).reshape(-1, 2)
    with torch.no_grad():
        mass = flow.log_prob(grid).exp().sum() * (edge[1] - edge[0]) ** 2
    assert mass.item() == pytest.approx(1.0, abs=0.01)


def test_actnorm_standardises_the_first_batch_and_is_checkpointed():
    flow = VectorFlow(2, n_layers=1, hidden=8)
    assert not bool(flow.layers[0].initialized)
    x = torch.randn(500, 2) * torch.tensor([3.0, 0.5]) + torch.tensor([1.0, -2.0])
    z = flow.inverse(x)  # the zero-initialised coupling is the identity: z is the ActNorm output
    torch.testing.assert_close(z.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(2), atol=1e-5, rtol=0)
    other = VectorFlow(2, n_layers=1, hidden=8)
    other.load_state_dict(flow.state_dict())
    assert bool(other.layers[0].initialized)
    torch.testing.assert_close(other.inverse(x), z)


@pytest.mark.parametrize("make, shape", FLOWS[::2])
def test_forward_is_differentiable_in_latents_and_parameters(make, shape):
    flow = perturbed(make(), shape, seed=3)
    z = torch.randn(2, *shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: flow(v), (z,))  # NT-EBM differentiates E(g(z)) in z
    flow(z).square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in flow.parameters())


def test_image_actnorm_standardises_each_channel_of_the_first_batch():
    norm = ActNorm(3, image=True)
    x = torch.randn(64, 3, 4, 4) * torch.tensor([2.0, 0.1, 5.0]).view(1, 3, 1, 1) + torch.tensor([1.0, -1.0, 3.0]).view(1, 3, 1, 1)
    z, log_det = norm.inverse(x)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)
    assert bool(norm.initialized) and log_det.shape == (64,)


@pytest.mark.parametrize("make, shape", FLOWS[::2])
def test_fresh_flow_is_volume_preserving_and_samples_in_its_dtype(make, shape):
    """Before ActNorm's init: identity ActNorm and couplings; ImageFlow's 1x1 convs start as rotations."""
    flow = make().double()
    z = torch.randn(5, *shape, dtype=torch.float64)
    x, log_det = flow.forward_and_log_det(z)
    torch.testing.assert_close(log_det, torch.zeros(5, dtype=torch.float64))
    if len(shape) == 1:
        torch.testing.assert_close(x, z)
    samples = flow.sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, *shape) and samples.dtype == torch.float64


def test_untrained_flow_samples_are_standard_normal_and_eval_mode_does_not_initialise():
    flow = VectorFlow(2, n_layers=2, hidden=8).eval()
    flow.log_prob(torch.randn(10, 2) * 5)
    assert not bool(flow.layers[0].initialized)
    samples = flow.sample(4000, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4000, 2) and abs(samples.std().item() - 1.0) < 0.05


def test_maximum_likelihood_fit_raises_the_likelihood():
    torch.manual_seed(0)
    data = torch.randn(512, 2) * 0.3
    data[:, 0] += torch.where(torch.rand(512) < 0.5, -2.0, 2.0)  # two clusters: far from the Gaussian ActNorm fits
    flow = VectorFlow(2, n_layers=4, hidden=32)
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    first = -flow.log_prob(data).mean().item()
    for _ in range(200):
        opt.zero_grad()
        loss = -flow.log_prob(data).mean()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.4 and math.isfinite(loss.item())


def test_make_flow_picks_by_shape_and_names_bad_shapes():
    assert isinstance(make_flow((2,)), VectorFlow) and isinstance(make_flow((1, 8, 8), n_steps=1), ImageFlow)
    for shape in [(1, 8, 6), (1, 7, 7), (0, 4, 4), (4, 4), (1,)]:
        with pytest.raises(ValueError, match="data_shape"):
            make_flow(shape)
    with pytest.raises(ValueError, match="size"):
        ImageFlow(1, 5)


@pytest.mark.parametrize("make, shape", FLOWS)
def test_forward_is_the_map_of_forward_and_log_det_without_any_slogdet(make, shape, monkeypatch):
    flow = perturbed(make(), shape)
    z = torch.randn(6, *shape, dtype=torch.float64)
    want = flow.forward_and_log_det(z)[0]

    def no_slogdet(*args, **kwargs):  # a CUDA-graph capture of NT-EBM's chain may not take one
        raise AssertionError("Flow.forward computed a log-determinant")

    monkeypatch.setattr(torch.linalg, "slogdet", no_slogdet)
    torch.testing.assert_close(flow(z), want, rtol=0, atol=0)

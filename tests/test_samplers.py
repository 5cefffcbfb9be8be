"""Langevin samplers: stationary moments on known Gaussians, tempering, MALA, the latent posterior, buffers."""
import warnings

import pytest
import torch

from dualmcmc import samplers
from dualmcmc.samplers import PersistentChains, langevin_data_chain, langevin_latent_chain

warnings.filterwarnings("ignore", message="dualmcmc.ops", category=RuntimeWarning)


MU = torch.tensor([1.0, -2.0], dtype=torch.float64)
S = 0.5


def gaussian_energy(x):
    """E = ||x - mu||^2 / (2 s^2): exp(-E/T) is N(mu, T s^2 I)."""
    return ((x - MU.to(x.dtype)) ** 2).sum(1) / (2 * S**2)


def start(n=4000, seed=0):
    return 3.0 * torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("explicit_noise", [False, True])
def test_standard_langevin_reaches_the_gaussian_mean_and_variance(explicit_noise):
    torch.manual_seed(0)
    a = 0.1  # drift a^2/2 grad: ULA variance bias is a factor 1/(1 - a^2/(4 s^2)) = 1.01
    x, _ = langevin_data_chain(gaussian_energy, start(), 400, a, a, explicit_noise=explicit_noise)
    assert torch.allclose(x.mean(0), MU, atol=0.04)
    assert torch.allclose(x.var(0), torch.full((2,), S**2, dtype=x.dtype), rtol=0.08)


def test_tempered_chain_has_variance_T_times_s2():
    torch.manual_seed(1)
    a, b = 0.1, 0.05  # T = (b/a)^2 = 0.25
    x, _ = langevin_data_chain(gaussian_energy, start(), 400, a, b)
    assert torch.allclose(x.mean(0), MU, atol=0.03)
    assert torch.allclose(x.var(0), torch.full((2,), 0.25 * S**2, dtype=x.dtype), rtol=0.08)


def test_prior_precision_alone_gives_a_centred_gaussian():
    torch.manual_seed(2)
    zero = lambda x: x.sum(1) * 0.0  # noqa: E731
    x, _ = langevin_data_chain(zero, start(), 400, 0.1, 0.1, prior_precision=4.0)
    assert x.mean(0).abs().max() < 0.03
    assert torch.allclose(x.var(0), torch.full((2,), 0.25, dtype=x.dtype), rtol=0.08)


def test_mala_acceptance_near_one_for_tiny_steps_and_lower_for_big_ones():
    torch.manual_seed(3)
    x0 = MU + S * torch.randn(2000, 2, dtype=torch.float64)
    _, tiny = langevin_data_chain(gaussian_energy, x0, 20, 0.01, 0.01, mala=True)
    _, big = langevin_data_chain(gaussian_energy, x0, 20, 1.2, 1.2, mala=True)
    assert tiny.acceptance.mean() > 0.98
    assert big.acceptance.mean() < 0.5
    assert tiny.acceptance.shape == (2000,)


def test_mala_removes_the_discretisation_bias_of_a_large_tempered_step():
    # a = 0.6, b = 0.3 on s = 0.5: unadjusted Langevin settles at variance 0.0977, the target T s^2 is 0.0625.
    torch.manual_seed(4)
    a, b = 0.6, 0.3
    x_ula, _ = langevin_data_chain(gaussian_energy, start(), 150, a, b)
    x_mala, diag = langevin_data_chain(gaussian_energy, start(), 150, a, b, mala=True)
    target = 0.25 * S**2
    assert x_ula.var(0).mean() > 1.3 * target
    assert torch.allclose(x_mala.var(0), torch.full((2,), target, dtype=x_mala.dtype), rtol=0.1)
    assert torch.allclose(x_mala.mean(0), MU, atol=0.03)
    assert 0.3 < diag.acceptance.mean() < 1.0


def test_diagnostics_report_energy_drop_grad_norms_and_nonfinite_counts():
    x0 = start(64)
    x, diag = langevin_data_chain(gaussian_energy, x0, 50, 0.1, 0.01, diagnostics=True)
    for field in ("energy_start", "energy_end", "grad_norm_last", "grad_norm_mean", "nonfinite"):
        assert getattr(diag, field).shape == (64,)
    assert torch.allclose(diag.energy_start, gaussian_energy(x0))
    assert torch.allclose(diag.energy_end, gaussian_energy(x))
    assert diag.energy_end.mean() < diag.energy_start.mean()
    assert diag.nonfinite.sum() == 0
    summary = diag.summary("x/")
    assert set(summary) >= {"x/energy_start", "x/grad_norm_mean", "x/nonfinite"}
    assert all(isinstance(v, float) for v in summary.values())
    _, cheap = langevin_data_chain(gaussian_energy, x0, 5, 0.1, 0.01)
    assert cheap.energy_start is None and cheap.grad_norm_mean is None and cheap.summary() == {}


def test_chain_leaves_x0_and_parameter_grads_alone_and_returns_detached():
    net = torch.nn.Linear(2, 1)
    x0 = torch.randn(8, 2)
    before = x0.clone()
    x, _ = langevin_data_chain(lambda x: net(x).squeeze(1), x0, 3, 0.1, 0.1)
    assert torch.equal(x0, before) and not x.requires_grad
    assert all(p.grad is None for p in net.parameters())


def test_clamp_is_respected():
    x, _ = langevin_data_chain(gaussian_energy, start(200), 20, 0.5, 0.5, clamp=(-0.5, None))
    assert x.min() >= -0.5


def test_energy_function_must_return_one_energy_per_chain():
    with pytest.raises(ValueError, match="one energy per chain"):
        langevin_data_chain(lambda x: x.sum(), start(4), 1, 0.1, 0.1)
    with pytest.raises(ValueError, match="noise_std > 0"):
        langevin_data_chain(gaussian_energy, start(4), 1, 0.1, 0.0, mala=True)


def test_explicit_noise_matches_an_eager_loop_with_randn_like():
    x0 = start(16).float()
    torch.manual_seed(5)
    x, _ = langevin_data_chain(gaussian_energy, x0, 10, 0.3, 0.1, explicit_noise=True)
    torch.manual_seed(5)
    y = x0.clone().requires_grad_(True)
    for _ in range(10):
        (g,) = torch.autograd.grad(gaussian_energy(y).sum(), y)
        with torch.no_grad():
            y -= 0.5 * 0.3**2 * g
            y += 0.1 * torch.randn_like(y)
    assert torch.allclose(x, y.detach(), atol=1e-6)


# ---- latent-posterior chain on a fixed linear generator, where the posterior is Gaussian and known ----
W = torch.tensor([[1.0, 0.5], [-0.3, 0.8], [0.2, -1.0]], dtype=torch.float64)  # G(z) = W z + c, D = 3, d = 2
C = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
SIGMA = 0.3


def linear_generator(z):
    return z @ W.T + C


def exact_posterior(x, likelihood):
    """Mean and covariance of p(z|x) for U = ||Wz + c - x||^2 * k / sigma^2 + ||z||^2 / 2."""
    k = 1.0 if likelihood == "reference" else 0.5
    precision = 2 * k * W.T @ W / SIGMA**2 + torch.eye(2, dtype=W.dtype)
    cov = torch.linalg.inv(precision)
    return cov @ (2 * k * W.T @ (x - C) / SIGMA**2), cov


@pytest.mark.parametrize("likelihood", ["reference", "textbook"])
def test_latent_chain_samples_the_exact_posterior_of_a_linear_generator(likelihood):
    torch.manual_seed(6)
    x_obs = torch.tensor([0.7, -0.4, -0.9], dtype=torch.float64)
    n = 4000
    x = x_obs.expand(n, 3)
    z0 = torch.randn(n, 2, dtype=torch.float64)
    z, _ = langevin_latent_chain(linear_generator, z0, x, 300, 0.05, 0.05, sigma=SIGMA, likelihood=likelihood)
    mean, cov = exact_posterior(x_obs, likelihood)
    assert torch.allclose(z.mean(0), mean, atol=0.02)
    assert torch.allclose(torch.cov(z.T), cov, atol=0.15 * cov.diagonal().max())


def test_latent_chain_lowers_reconstruction_error_from_its_start():
    torch.manual_seed(7)
    z_true = torch.randn(256, 2, dtype=torch.float64)
    x = linear_generator(z_true) + 0.05 * torch.randn(256, 3, dtype=torch.float64)
    z0 = z_true + torch.randn(256, 2, dtype=torch.float64)  # a poor encoder's guess
    z, diag = langevin_latent_chain(linear_generator, z0, x, 10, 0.1, 0.1, sigma=SIGMA, diagnostics=True)
    err = lambda z: ((linear_generator(z) - x) ** 2).sum(1).mean()  # noqa: E731
    assert err(z) < 0.5 * err(z0)
    assert diag.energy_end.mean() < diag.energy_start.mean()


def test_latent_chain_rejects_unknown_likelihood():
    with pytest.raises(ValueError, match="reference"):
        langevin_latent_chain(linear_generator, torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2, 3), 1, 0.1,
                              0.1, sigma=0.3, likelihood="gaussian")


# ---- persistent chains ----
def test_persistent_chains_draw_store_and_round_trip():
    buffer = PersistentChains(capacity=50, reinit_fraction=0.0)
    init = lambda k: torch.zeros(k, 2)  # noqa: E731
    x, slots = buffer.draw(10, init)
    assert x.shape == (10, 2) and slots.shape == (10,)
    buffer.store(slots, x + 1.0)
    again, _ = buffer.draw(200, init)
    assert ((again == 0) | (again == 1)).all() and (again == 1).any()
    restored = PersistentChains()
    restored.load_state_dict(buffer.state_dict())
    assert restored.capacity == 50 and torch.equal(restored.states, buffer.states)
    elsewhere = PersistentChains()
    elsewhere.load_state_dict(buffer.state_dict(), device="meta")  # checkpoints load onto the CPU; chains go on
    assert elsewhere.states.device.type == "meta"                   # the model's device
    restored.reinit_fraction = 1.0
    fresh, _ = restored.draw(30, lambda k: torch.full((k, 2), 7.0))
    assert (fresh == 7.0).all()


def test_public_names():
    assert samplers.LIKELIHOODS == ("reference", "textbook")


# ---- chains captured into CUDA graphs (cuda_graph=True) ----
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="cuda_graph needs a CUDA device")


def test_cuda_graph_rejects_what_it_cannot_capture_naming_the_argument():
    with pytest.raises(ValueError, match="needs a CUDA tensor; 'x0' is on cpu"):
        langevin_data_chain(gaussian_energy, start(4), 1, 0.1, 0.1, cuda_graph=True)
    with pytest.raises(ValueError, match="mala=True"):
        langevin_data_chain(gaussian_energy, start(4), 1, 0.1, 0.1, mala=True, cuda_graph=True)
    with pytest.raises(ValueError, match="explicit_noise=True"):
        langevin_data_chain(gaussian_energy, start(4), 1, 0.1, 0.1, explicit_noise=True, cuda_graph=True)
    with pytest.raises(ValueError, match="'z0' is on cpu"):
        langevin_latent_chain(linear_generator, torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2, 3), 1, 0.1,
                              0.1, sigma=SIGMA, cuda_graph=True)


def _buffers(modules):
    return [b.detach().clone() for m in modules for b in m.buffers()]


def _restore(modules, saved):
    with torch.no_grad():
        for b, value in zip([b for m in modules for b in m.buffers()], saved):
            b.copy_(value)


def assert_replay_matches_eager(run, modules, seeds=(0, 1), generator=None):
    """``run(cuda_graph)`` -> (state, diag). For each seed, from the same module state: eager and graphed chains give
    the same state, the same buffers afterwards (spectral-norm u/v, BatchNorm statistics) and advance the random
    stream alike. The first seed captures the graph, the next ones replay it from the cache."""
    samplers.graphs.clear_cache()
    rng = generator if generator is not None else torch.cuda.default_generators[torch.cuda.current_device()]
    for seed in seeds:
        saved = _buffers(modules)
        rng.manual_seed(seed)
        eager, eager_diag = run(False)
        eager_buffers, eager_rng = _buffers(modules), rng.get_state()
        _restore(modules, saved)
        rng.manual_seed(seed)
        replayed, diag = run(True)
        assert replayed.device.type == "cuda" and not replayed.requires_grad
        torch.testing.assert_close(replayed, eager, rtol=1e-4, atol=1e-5)
        for got, want in zip(_buffers(modules), eager_buffers):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert torch.equal(rng.get_state(), eager_rng)
        for name in ("energy_start", "energy_end", "grad_norm_mean", "nonfinite"):
            if getattr(eager_diag, name) is not None:
                torch.testing.assert_close(getattr(diag, name), getattr(eager_diag, name), rtol=1e-4, atol=1e-4)
    assert samplers.graphs.cache_size() == 1


@needs_cuda
def test_cuda_graph_replay_equals_eager_for_an_mlp_energy_with_diagnostics():
    from dualmcmc.nets import MLPEnergy

    torch.manual_seed(0)
    net = MLPEnergy(2, 64, 3).cuda()
    x0 = torch.randn(256, 2, device="cuda")
    run = lambda graph: langevin_data_chain(net, x0, 20, 0.05, 0.01, diagnostics=True, cuda_graph=graph)  # noqa: E731
    assert_replay_matches_eager(run, [net])


@needs_cuda
def test_cuda_graph_replay_equals_eager_for_a_spectral_norm_conv_energy():
    from dualmcmc.nets import make_energy

    torch.manual_seed(1)
    net = make_energy("cifar10", (3, 32, 32), 16).cuda().train()  # spectral norm: u, v power-iterate per forward
    x0 = torch.rand(8, 3, 32, 32, device="cuda") * 2 - 1
    before = _buffers([net])
    run = lambda graph: langevin_data_chain(net, x0, 10, 0.5, 1e-3, cuda_graph=graph)  # noqa: E731
    assert_replay_matches_eager(run, [net])
    assert any(not torch.equal(a, b) for a, b in zip(_buffers([net]), before))  # the replay did update u, v


@needs_cuda
def test_cuda_graph_latent_chain_with_a_batchnorm_generator_updates_running_stats_as_eager():
    from dualmcmc.nets import make_generator

    torch.manual_seed(2)
    gen = make_generator("cifar10", (3, 32, 32), 16, 16).cuda().train()
    z0 = torch.randn(8, 16, device="cuda")
    x = torch.rand(8, 3, 32, 32, device="cuda") * 2 - 1
    tracked = gen.out[0].num_batches_tracked.clone()
    run = lambda graph: langevin_latent_chain(gen, z0, x, 5, 0.1, 0.1, sigma=0.3, cuda_graph=graph)  # noqa: E731
    assert_replay_matches_eager(run, [gen])
    assert gen.out[0].num_batches_tracked > tracked


@needs_cuda
def test_cuda_graph_sees_in_place_weight_updates_and_recaptures_replaced_ones():
    from dualmcmc.nets import MLPEnergy

    torch.manual_seed(3)
    net = MLPEnergy(2, 32, 2).cuda()
    x0 = torch.randn(64, 2, device="cuda")
    run = lambda graph: langevin_data_chain(net, x0, 5, 0.1, 0.1, cuda_graph=graph)  # noqa: E731
    assert_replay_matches_eager(run, [net])
    with torch.no_grad():  # what an optimizer step does: same tensors, new values
        for p in net.parameters():
            p.mul_(1.5)
    torch.manual_seed(4)
    eager, _ = run(False)
    torch.manual_seed(4)
    torch.testing.assert_close(run(True)[0], eager, rtol=1e-4, atol=1e-5)
    net.to(torch.float64).to(torch.float32)  # new parameter tensors: the cache notices and captures again
    torch.manual_seed(5)
    eager, _ = run(False)
    torch.manual_seed(5)
    torch.testing.assert_close(run(True)[0], eager, rtol=1e-4, atol=1e-5)
    assert samplers.graphs.cache_size() == 1


@needs_cuda
def test_cuda_graph_with_an_explicit_generator_and_a_start_state_that_has_a_graph():
    from dualmcmc.nets import MLPEnergy, MLPGenerator

    torch.manual_seed(6)
    net, gen_net = MLPEnergy(2, 32, 2).cuda(), MLPGenerator(4, 2, 32, 2).cuda()
    x0 = gen_net(torch.randn(64, 4, device="cuda"))  # requires grad, as in the Dual-MCMC G step
    rng = torch.Generator(device="cuda")
    run = lambda graph: langevin_data_chain(net, x0, 5, 0.1, 0.1, generator=rng, cuda_graph=graph)  # noqa: E731
    assert_replay_matches_eager(run, [net], generator=rng)
    assert x0.requires_grad and x0.grad_fn is not None


class EagerStandIn:
    """Stands in for graphs.CapturedChain on CPU: static inputs, the chain run on every call, outputs cloned. Lets
    the samplers' graph plumbing (keys, static extras, diagnostics, recapture) run without a GPU."""

    made = 0

    def __init__(self, chain, inputs, *, modules=(), generator=None, warmup_runs=1):
        EagerStandIn.made += 1
        self.chain, self.signature = chain, samplers.graphs._address_signature(modules)
        self.static_inputs = [t.detach().clone() for t in inputs]

    def __call__(self, *inputs):
        with torch.no_grad():
            for static, given in zip(self.static_inputs, inputs):
                static.copy_(given)
            return tuple(None if out is None else out.clone() for out in self.chain(*self.static_inputs))


@pytest.fixture
def graphs_on_cpu(monkeypatch):
    monkeypatch.setattr(samplers.graphs, "CapturedChain", EagerStandIn)
    monkeypatch.setattr(samplers, "_check_graphable", lambda *args, **kwargs: None)
    samplers.graphs.clear_cache()
    EagerStandIn.made = 0
    yield
    samplers.graphs.clear_cache()


def test_graph_path_plumbing_matches_eager_and_caches_per_key(graphs_on_cpu):
    torch.manual_seed(8)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1), torch.nn.Flatten(0))
    for seed in (0, 1):
        x0 = torch.randn(32, 2)
        torch.manual_seed(seed)
        eager, eager_diag = langevin_data_chain(net, x0, 4, 0.1, 0.05, diagnostics=True)
        torch.manual_seed(seed)
        graphed, diag = langevin_data_chain(net, x0, 4, 0.1, 0.05, diagnostics=True, cuda_graph=True)
        assert torch.equal(graphed, eager)
        assert torch.equal(diag.energy_end, eager_diag.energy_end) and diag.steps == 4
        assert torch.equal(diag.grad_norm_mean, eager_diag.grad_norm_mean)
    assert EagerStandIn.made == 1 and samplers.graphs.cache_size() == 1
    langevin_data_chain(net, x0, 5, 0.1, 0.05, cuda_graph=True)  # another step count: another graph
    net.eval()  # other train/eval flags: another graph
    langevin_data_chain(net, x0, 5, 0.1, 0.05, cuda_graph=True)
    assert EagerStandIn.made == 3
    net.to(torch.float64).to(torch.float32)  # replaced parameter tensors: captured again, the stale graph dropped
    langevin_data_chain(net, x0, 5, 0.1, 0.05, cuda_graph=True)
    assert EagerStandIn.made == 4 and samplers.graphs.cache_size() == 3


def test_graph_path_plumbing_for_the_latent_chain_takes_the_data_as_a_static_input(graphs_on_cpu):
    z0 = torch.randn(16, 2, dtype=torch.float64)
    for seed in (0, 1):
        x = torch.randn(16, 3, dtype=torch.float64)  # new data each call, one graph
        torch.manual_seed(seed)
        eager, _ = langevin_latent_chain(linear_generator, z0, x, 3, 0.1, 0.1, sigma=SIGMA)
        torch.manual_seed(seed)
        graphed, _ = langevin_latent_chain(linear_generator, z0, x, 3, 0.1, 0.1, sigma=SIGMA, cuda_graph=True)
        assert torch.equal(graphed, eager)
    assert EagerStandIn.made == 1
    langevin_data_chain(linear_generator_energy, z0, 3, 0.1, 0.1, cuda_graph=True)
    assert EagerStandIn.made == 2  # a data chain never shares the latent chain's graph


def linear_generator_energy(z):
    return linear_generator(z).sum(1)


def test_graph_path_one_graph_serves_every_explicit_generator(graphs_on_cpu):
    # Evaluations make a fresh generator each time: it lends its state to the capture generator, no new graph.
    torch.manual_seed(9)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1), torch.nn.Flatten(0))
    x0 = torch.randn(16, 2)
    for seed in (3, 4):
        eager_rng, graph_rng = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        eager, _ = langevin_data_chain(net, x0, 4, 0.1, 0.05, generator=eager_rng)
        graphed, _ = langevin_data_chain(net, x0, 4, 0.1, 0.05, generator=graph_rng, cuda_graph=True)
        assert torch.equal(graphed, eager)
        assert torch.equal(graph_rng.get_state(), eager_rng.get_state())  # the lender's stream advanced as eager
    assert EagerStandIn.made == 1


def test_undoing_the_warm_up_keeps_a_kept_graph_able_to_backward():
    # Dual-MCMC keeps x0 = G(z0) across the latent chain on G; the warm-up before a capture runs G for real and its
    # BatchNorm statistics are restored afterwards, which must not bump the version counters x0's graph saved.
    torch.manual_seed(10)
    gen = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x0 = gen(torch.randn(16, 4))
    before = [b.clone() for b in gen.buffers()]
    rng = torch.Generator().manual_seed(1)
    state = rng.get_state()
    with samplers.graphs.undone_afterwards([gen], rng):
        for _ in range(3):
            gen(torch.randn(16, 4, generator=rng))
    assert all(torch.equal(a, b) for a, b in zip(before, gen.buffers()))
    assert torch.equal(rng.get_state(), state)
    x0.sum().backward()  # raised "modified by an inplace operation" when the restore bumped the counters


@needs_cuda
def test_cuda_graph_latent_chain_on_a_generator_whose_output_graph_is_kept():
    torch.manual_seed(11)
    gen = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 3)).cuda()
    z0 = torch.randn(32, 4, device="cuda")
    x0 = gen(z0)  # kept, as Dual-MCMC's errSample keeps it
    langevin_latent_chain(gen, z0, torch.randn(32, 3, device="cuda"), 5, 0.1, 0.1, sigma=0.3, cuda_graph=True)
    x0.sum().backward()
    assert all(p.grad is not None for p in gen.parameters())


# ---- replica exchange (a Langevin spec with a temperature ladder) ----
def bimodal_energy(x):
    """-log of 0.2 N(-3, 0.5^2) + 0.8 N(3, 0.5^2) in 1-D (a ~16-nat barrier between the modes at T = 1)."""
    left = torch.log(torch.tensor(0.2)) - 0.5 * ((x[:, 0] + 3) / 0.5) ** 2
    right = torch.log(torch.tensor(0.8)) - 0.5 * ((x[:, 0] - 3) / 0.5) ** 2
    return -torch.logaddexp(left, right)


def test_replica_exchange_moves_mass_between_modes_that_langevin_cannot_cross():
    torch.manual_seed(0)
    x0 = torch.full((2000, 1), -3.0)  # every chain starts in the light mode
    plain, _ = samplers.run_chain(bimodal_energy, x0, samplers.Langevin(300, 0.2, 0.2))
    tempered, diag = samplers.run_chain(bimodal_energy, x0, samplers.Langevin(300, 0.2, 0.2, ladder=(1, 3, 9, 27, 81)))
    assert (plain > 0).float().mean() < 0.01  # unadjusted Langevin at T = 1 never crosses the barrier
    assert abs((tempered > 0).float().mean().item() - 0.8) < 0.05  # the cold rung has the true mode weights
    left = tempered[tempered < 0]
    assert abs(left.mean().item() + 3) < 0.1 and abs(left.std().item() - 0.5) < 0.08  # and the right shape
    assert diag.swap_acceptance.shape == (4,) and (diag.swap_acceptance > 0.05).all()


def test_replica_exchange_without_swaps_is_the_plain_chain_on_each_rung():
    # a one-rung ladder is the explicit-noise ULA chain, draw for draw
    x0 = torch.randn(64, 2, dtype=torch.float64)
    torch.manual_seed(4)
    plain, _ = samplers.run_chain(gaussian_energy, x0, samplers.Langevin(10, 0.1, 0.05, explicit_noise=True))
    torch.manual_seed(4)
    one, _ = samplers.run_chain(gaussian_energy, x0, samplers.Langevin(10, 0.1, 0.05, ladder=(1,)))
    torch.testing.assert_close(one, plain, rtol=0, atol=1e-12)


def test_run_tempered_from_equal_rungs_is_run_chain_with_the_ladder():
    x0 = torch.randn(64, 2, dtype=torch.float64)
    spec = samplers.Langevin(10, 0.1, 0.1, ladder=(1, 4, 16))
    torch.manual_seed(4)
    cold, diag = samplers.run_chain(gaussian_energy, x0, spec)
    torch.manual_seed(4)
    starts = x0.unsqueeze(0).expand(3, -1, -1)
    replicas, diag_r = samplers.run_tempered(gaussian_energy, starts, spec)
    assert replicas.shape == (3, 64, 2) and torch.equal(starts[1], x0)  # the starts are not modified
    torch.testing.assert_close(replicas[0], cold, rtol=0, atol=0)
    torch.testing.assert_close(diag_r.swap_acceptance, diag.swap_acceptance)
    assert not torch.equal(replicas[2], replicas[0])  # every rung's end state comes back, to be continued
    own = replicas.clone()
    samplers.run_tempered(gaussian_energy, own, spec)
    assert torch.equal(own, replicas)  # a contiguous input is not written to either


def test_persistent_hot_rungs_carry_mass_between_modes_faster_than_restarted_ones():
    # five short calls of 10 steps: continuing every rung (parallel tempering) against restarting the hot rungs
    # from the cold states each call (run_chain with a ladder); the true weight of the right mode is 0.8
    torch.manual_seed(0)
    spec = samplers.Langevin(10, 0.2, 0.2, ladder=(1, 3, 9, 27, 81))
    restarted = torch.full((2000, 1), -3.0)
    replicas = restarted.unsqueeze(0).expand(5, -1, -1)
    for _ in range(5):
        restarted, _ = samplers.run_chain(bimodal_energy, restarted, spec)
        replicas, _ = samplers.run_tempered(bimodal_energy, replicas, spec)
    right_restarted, right_persistent = (restarted > 0).float().mean(), (replicas[0] > 0).float().mean()
    assert right_persistent > right_restarted + 0.1 and right_persistent < 0.85  # measured: 0.58 against 0.39


@pytest.mark.parametrize("temper_prior", [True, False])
def test_every_rung_samples_its_own_target_with_or_without_a_tempered_prior(temper_prior):
    # U0 bimodal, a Gaussian prior of std 2 (precision 1/4); rung l targets exp(-(U0 + prior) / l) when the prior
    # is tempered, exp(-U0 / l - prior) when it is not; compare each rung's mean, std and right-mode share to the
    # target's own on a fine grid
    torch.manual_seed(0)
    spec = samplers.Langevin(4000, 0.1, 0.1, prior_precision=0.25, ladder=(1, 4, 16), temper_prior=temper_prior)
    replicas, _ = samplers.run_tempered(bimodal_energy, torch.full((3, 2000, 1), -3.0), spec)
    grid = torch.linspace(-40, 40, 16001).unsqueeze(1)
    prior = 0.125 * grid[:, 0] ** 2
    for rung, level in enumerate(spec.ladder):
        log_p = -(bimodal_energy(grid) + prior) / level if temper_prior else -bimodal_energy(grid) / level - prior
        p = (log_p - log_p.max()).exp()
        p = p / p.sum()
        mean = (p * grid[:, 0]).sum()
        std = ((p * (grid[:, 0] - mean) ** 2).sum()).sqrt()
        x = replicas[rung, :, 0]
        assert abs(x.mean() - mean) < 0.1 * std + 0.1, (rung, x.mean(), mean)
        assert abs(x.std() - std) < 0.1 * std, (rung, x.std(), std)
        assert abs((x > 0).float().mean() - (p * (grid[:, 0] > 0)).sum()) < 0.04


def test_an_untempered_prior_keeps_the_hot_rungs_near_the_modes_and_mixes_faster():
    # with the prior tempered, the 16x rung spreads over a Gaussian of std 8 and rarely hands back a state near a
    # mode; untempered it stays within the prior's std 2 (measured, 250 steps: right share 0.51 against 0.29)
    shares = {}
    for temper_prior in (True, False):
        torch.manual_seed(0)
        spec = samplers.Langevin(250, 0.1, 0.1, prior_precision=0.25, ladder=(1, 4, 16), temper_prior=temper_prior)
        replicas, _ = samplers.run_tempered(bimodal_energy, torch.full((3, 2000, 1), -3.0), spec)
        shares[temper_prior] = (replicas[0] > 0).float().mean().item()
    assert shares[False] > shares[True] + 0.1


def test_run_tempered_refuses_states_that_do_not_match_the_ladder():
    with pytest.raises(ValueError, match=r"'replicas' must be \(R, N, ...\) with R = len\(spec.ladder\) = 3"):
        samplers.run_tempered(gaussian_energy, torch.zeros(2, 8, 2), samplers.Langevin(5, 0.1, 0.1, ladder=(1, 2, 4)))
    with pytest.raises(ValueError, match="spec.ladder is None"):
        samplers.run_tempered(gaussian_energy, torch.zeros(1, 8, 2), samplers.Langevin(5, 0.1, 0.1))
    with pytest.raises(ValueError, match="'temper_prior' must be True or False"):
        samplers.Langevin(5, 0.1, 0.1, ladder=(1, 2), temper_prior="no")


@pytest.mark.parametrize("ladder, message", [
    ((2, 4), "starting at 1"), ((1, 4, 2), "increasing"), ((1, float("nan")), "increasing"), ((), "starting at 1"),
])
def test_a_bad_ladder_is_refused_naming_it(ladder, message):
    with pytest.raises(ValueError, match=f"'ladder'.*{message}"):
        samplers.Langevin(5, 0.1, 0.1, ladder=ladder)
    with pytest.raises(ValueError, match="'ladder'.*noise_std > 0"):
        samplers.Langevin(5, 0.1, 0.0, ladder=(1, 2))


# ---- independence jumps from a kernel density (run_jumps) ----
def test_jumps_from_the_data_give_the_modes_their_true_weights_in_a_few_steps():
    # every chain starts in the light mode (true weight 0.2); the centers weigh both modes equally, the jumps'
    # Metropolis-Hastings test corrects that to the target's 0.8
    torch.manual_seed(0)
    spec = samplers.Langevin(10, 0.1, 0.1)
    x0 = -3.0 + 0.5 * torch.randn(4000, 1)
    centers = torch.cat([torch.full((50, 1), -3.0), torch.full((50, 1), 3.0)]) + 0.5 * torch.randn(100, 1)
    one, acceptance = samplers.run_jumps(bimodal_energy, x0, spec, centers, 0.5, 1)
    many, _ = samplers.run_jumps(bimodal_energy, x0, spec, centers, 0.5, 20)
    assert 0.3 < (one > 0).float().mean() < 0.6 and acceptance.shape == (4000,)  # measured 0.45: one jump moves
    assert abs((many > 0).float().mean().item() - 0.8) < 0.03
    right = many[many > 0]
    assert abs(right.mean().item() - 3) < 0.05 and abs(right.std().item() - 0.5) < 0.04  # the mode's own shape
    plain, _ = samplers.run_chain(bimodal_energy, x0, samplers.Langevin(20, 0.2, 0.2))
    assert (plain > 0).float().mean() < 0.01  # what 20 Langevin steps do instead


def test_jumps_keep_the_target_with_a_prior_a_temperature_and_poor_centers():
    # exact samples of exp(-(U0 + prior)/T) stay exact, whatever the centers (here all on one side): the test
    # corrects any proposal; T = 4 and prior precision 1/4 change the target, which a wrong ratio would miss
    torch.manual_seed(1)
    spec = samplers.Langevin(1, 0.1, 0.2, prior_precision=0.25)
    grid = torch.linspace(-20, 20, 8001).unsqueeze(1)
    log_p = -(bimodal_energy(grid) + 0.125 * grid[:, 0] ** 2) / spec.temperature
    p = (log_p - log_p.max()).exp()
    exact = grid[torch.multinomial(p / p.sum(), 20000, replacement=True)] + 0.0025 * (torch.rand(20000, 1) - 0.5)
    x, acceptance = samplers.run_jumps(bimodal_energy, exact, spec, torch.full((10, 1), 2.0), 1.0, 10)
    right = (p * (grid[:, 0] > 0)).sum() / p.sum()
    assert abs((x > 0).float().mean() - right) < 0.015
    assert abs(x.std() - exact.std()) < 0.03 * exact.std() and acceptance.mean() > 0.05


def test_run_jumps_leaves_its_inputs_alone_and_refuses_bad_arguments():
    x0, centers = torch.randn(16, 2), torch.randn(8, 2)
    kept = x0.clone()
    x, acceptance = samplers.run_jumps(gaussian_energy, x0, samplers.Langevin(1, 0.1, 0.1), centers, 0.3, 0)
    assert torch.equal(x, kept) and torch.equal(x0, kept) and torch.equal(acceptance, torch.zeros(16))
    samplers.run_jumps(gaussian_energy, x0, samplers.Langevin(1, 0.1, 0.1), centers, 0.3, 3)
    assert torch.equal(x0, kept)
    spec = samplers.Langevin(1, 0.1, 0.1)
    with pytest.raises(ValueError, match="'jumps' must be an int >= 0"):
        samplers.run_jumps(gaussian_energy, x0, spec, centers, 0.3, -1)
    with pytest.raises(ValueError, match="'bandwidth' must be finite and > 0"):
        samplers.run_jumps(gaussian_energy, x0, spec, centers, 0.0, 1)
    with pytest.raises(ValueError, match=r"'centers' must be \(M, 2\) like the states"):
        samplers.run_jumps(gaussian_energy, x0, spec, torch.randn(8, 3), 0.3, 1)

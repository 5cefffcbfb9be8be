"""Learning methods: build errors, a few finite iterations each, and Dual-MCMC against the reference loop."""
import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from dualmcmc.methods import METHODS, DualMCMC, build_method

warnings.filterwarnings("ignore", message="dualmcmc.ops", category=RuntimeWarning)

TINY_NETS = {"ebm_hidden": 16, "ebm_layers": 2}
TINY = {
    "dual_mcmc": {**TINY_NETS, "generator_hidden": 16, "generator_layers": 2, "encoder_hidden": 16,
                  "encoder_layers": 2, "latent_dim": 2, "x_steps": 3, "z_steps": 2},
    "coopnets": {**TINY_NETS, "generator_hidden": 16, "generator_layers": 2, "latent_dim": 2, "x_steps": 3},
    "short_run": {**TINY_NETS, "x_steps": 3},
}


@pytest.fixture(autouse=True)
def one_thread():
    # Small ops on a shared 2-core machine run far faster single-threaded.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])
    return centers[torch.randint(2, (n,), generator=g)] + 0.1 * torch.randn(n, 2, generator=g)


# ---- building ----
def test_registry_holds_the_three_methods():
    assert set(METHODS) >= {"dual_mcmc", "coopnets", "short_run"}


def test_unknown_method_lists_the_methods():
    with pytest.raises(ValueError, match="unknown method 'dual'.*coopnets.*dual_mcmc.*short_run"):
        build_method("dual", {}, (2,))


def test_unknown_parameter_lists_the_valid_keys():
    with pytest.raises(ValueError, match=r"\['x_stepz'\].*valid keys.*x_step_size"):
        build_method("dual_mcmc", {"x_stepz": 3}, (2,))


def test_image_shapes_are_not_supported_yet():
    with pytest.raises(NotImplementedError, match="image shape"):
        build_method("dual_mcmc", {}, (3, 32, 32))


def test_yaml_lists_become_tuples_and_bad_choices_raise():
    method = build_method("dual_mcmc", {**TINY["dual_mcmc"], "betas": [0.0, 0.9], "x_clamp": [-4, 4]}, (2,))
    assert method.config.betas == (0.0, 0.9) and method.config.x_clamp == (-4, 4)
    with pytest.raises(ValueError, match="z_likelihood"):
        build_method("dual_mcmc", {"z_likelihood": "exact"}, (2,))


def test_dual_mcmc_defaults_keep_the_reference_structure():
    c = DualMCMC.Config()
    assert (c.x_steps, c.x_noise_std, c.z_steps, c.z_step_size, c.z_noise_std) == (30, 1e-3, 10, 0.1, 0.1)
    assert (c.sigma, c.prior_sigma, c.g_factor, c.s_factor, c.i_factor) == (0.3, 1.0, 1.0, 50.0, 0.1)
    assert (c.lr_ebm, c.lr_generator, c.lr_encoder, c.betas) == (1e-4, 3e-4, 1e-4, (0.0, 0.9))
    assert (c.weight_decay_ebm, c.weight_decay_generator, c.weight_decay_encoder, c.lr_decay) == (0.0, 5e-4, 5e-4, 0.998)
    assert c.use_temp and c.fine_tune and c.z_likelihood == "reference" and c.x_clamp is None


# ---- a few iterations of every method ----
@pytest.mark.parametrize("name", ["dual_mcmc", "coopnets", "short_run"])
def test_a_few_iterations_are_finite_and_move_every_network(name):
    torch.manual_seed(0)
    method = build_method(name, TINY[name], (2,))
    nets = {k: getattr(method, k) for k in ("ebm", "generator", "encoder") if getattr(method, k) is not None}
    before = {k: [p.detach().clone() for p in net.parameters()] for k, net in nets.items()}
    x = tiny_data()
    for _ in range(3):
        out = method.train_step(x)
    assert "energy_gap" in out and "x_chain/grad_norm_mean" in out
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values()), out
    for k, net in nets.items():
        assert any(not torch.equal(p, q) for p, q in zip(net.parameters(), before[k])), f"{name}: {k} did not change"

    assert method.log_prob_unnormalized(x).shape == (16,)
    samples = method.sample(5, generator=torch.Generator().manual_seed(1))
    assert samples.shape == (5, 2) and not samples.requires_grad
    gen = method.generator_sample(5)
    assert (gen is None) == (name == "short_run")
    rec = method.reconstruct(x[:4])
    assert (rec is None) == (name != "dual_mcmc") and (rec is None or rec.shape == (4, 2))
    lrs = [opt.param_groups[0]["lr"] for opt in method.optimizers.values()]
    method.on_epoch_end()
    assert len(method.schedulers) == len(method.optimizers) and all(
        opt.param_groups[0]["lr"] <= lr for opt, lr in zip(method.optimizers.values(), lrs))


def test_mala_flags_report_acceptance():
    torch.manual_seed(0)
    method = build_method("dual_mcmc", {**TINY["dual_mcmc"], "x_mala": True, "z_mala": True}, (2,))
    out = method.train_step(tiny_data())
    assert 0.0 <= out["x_chain/acceptance"] <= 1.0 and 0.0 <= out["z_chain/acceptance"] <= 1.0


def test_short_run_persistent_chains_survive_extra_state():
    torch.manual_seed(0)
    method = build_method("short_run", {**TINY["short_run"], "persistent": True, "buffer_size": 32}, (2,))
    method.train_step(tiny_data())
    state = method.extra_state()
    assert state["chains"]["states"].shape == (32, 2)
    other = build_method("short_run", {**TINY["short_run"], "persistent": True, "buffer_size": 32}, (2,))
    other.load_extra_state(state)
    assert torch.equal(other.chains.states, method.chains.states)


def test_dual_mcmc_updates_in_the_order_generator_encoder_ebm():
    method = build_method("dual_mcmc", TINY["dual_mcmc"], (2,))
    order = []
    for key, opt in method.optimizers.items():
        opt.register_step_post_hook(lambda *_, key=key: order.append(key))
    method.train_step(tiny_data())
    assert order == ["generator", "encoder", "ebm"]


# ---- parity with a direct transcription of the reference loop (methods.md §2.2, §2.3, §2.11) ----
def reference_langevin_x(x, netE, steps, a, b, ref_precision=0.0):
    x = x.clone().detach()
    x.requires_grad = True
    for _ in range(steps):
        g = torch.autograd.grad(netE(x).sum(), x)[0]
        x.data = x.data - 0.5 * a**2 * (g + ref_precision * x.data)
        x.data = x.data + b * torch.randn_like(x)
    return x.detach()


def reference_langevin_z(z, x, netG, steps, a, b, sig, prior_sig):
    z = z.clone().detach()
    z.requires_grad = True
    for _ in range(steps):
        err = ((netG(z) - x) ** 2).sum()
        g = torch.autograd.grad(err, z)[0]
        z.data = z.data - 0.5 * a**2 * (g / sig**2 + z.data / prior_sig**2) + b * torch.randn_like(z)
    return z.detach()


def diag_normal_NLL(z, mu, logvar):
    return 0.5 * logvar.sum(1) + 0.5 * ((z - mu) ** 2 / (1e-6 + torch.exp(logvar))).sum(1)


def reference_iteration(netE, netG, netI, optE, optG, optI, x, c):
    B = x.shape[0]
    mcmc_temp = (c.x_noise_std / c.x_step_size) ** 2
    prec = 0.0 if c.x_ref_sigma is None else 1.0 / c.x_ref_sigma**2  # our switches, off in the reference
    z0 = torch.randn(B, c.latent_dim)
    x0 = netG(z0)
    x_t = reference_langevin_x(x0, netE, c.x_steps, c.x_step_size, c.x_noise_std, prec)
    optG.zero_grad()
    mu, logvar = netI(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    z_t = reference_langevin_z(z, x, netG, c.z_steps, c.z_step_size, c.z_noise_std, c.sigma, c.prior_sigma)
    errRecon = F.mse_loss(netG(z_t.detach()), x, reduction="sum") / B
    errSample = F.mse_loss(x0, x_t.detach(), reduction="sum") / B
    errG = c.g_factor * errRecon + c.s_factor * errSample
    errG.backward()
    optG.step()

    optI.zero_grad()
    neg_log_q_z = diag_normal_NLL(z_t.detach(), mu, logvar).mean()
    mu_g, logvar_g = netI(x_t.detach())
    errLatent = diag_normal_NLL(z0, mu_g, logvar_g).mean()
    errI = c.g_factor * neg_log_q_z + c.i_factor * errLatent
    errI.backward()
    optI.step()

    optE.zero_grad()
    E_T = torch.mean(netE(x))
    x0 = netG(z0)
    if c.fine_tune:
        x0 = reference_langevin_x(x0, netE, c.x_steps, c.x_step_size, c.x_noise_std, prec)
    E_F = torch.mean(netE(x0.detach()))
    errE = E_T - E_F
    loss = errE / mcmc_temp if c.use_temp else errE
    loss = loss + c.energy_l2 * (netE(x).square().mean() + netE(x0.detach()).square().mean())
    loss.backward()
    optE.step()
    return float(errE.detach()), float(errG.detach()), float(errI.detach())


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("fine_tune, switches", [
    (True, {}), (False, {}),
    (True, {"x_ref_sigma": 2.0, "energy_l2": 0.1, "x_noise_std": 0.3, "s_factor": 1.0}),  # configs/toy2d.yaml's
])
def test_dual_mcmc_iteration_matches_the_reference_loop(float64, fine_tune, switches):
    params = {**TINY["dual_mcmc"], "x_steps": 4, "z_steps": 3, "explicit_noise": True, "fine_tune": fine_tune,
              "x_step_size": 0.3, "lr_ebm": 1e-3, "lr_generator": 1e-3, "lr_encoder": 1e-3, **switches}
    torch.manual_seed(0)
    method = build_method("dual_mcmc", params, (2,))
    c = method.config
    netE, netG, netI = (copy.deepcopy(m) for m in (method.ebm, method.generator, method.encoder))
    adam = lambda net, lr, wd: torch.optim.Adam(net.parameters(), lr=lr, betas=c.betas, weight_decay=wd)  # noqa: E731
    optE, optG, optI = adam(netE, c.lr_ebm, 0.0), adam(netG, c.lr_generator, 5e-4), adam(netI, c.lr_encoder, 5e-4)
    x = tiny_data(8, seed=3).double()

    for it in range(2):  # two iterations: the second also checks the Adam states
        torch.manual_seed(100 + it)
        out = method.train_step(x)
        torch.manual_seed(100 + it)
        errE, errG, errI = reference_iteration(netE, netG, netI, optE, optG, optI, x, c)
        assert out["energy_gap"] == pytest.approx(errE, rel=1e-9, abs=1e-12)
        assert out["loss_generator"] == pytest.approx(errG, rel=1e-9)
        assert out["loss_encoder"] == pytest.approx(errI, rel=1e-9)
        for mine, ref in ((method.ebm, netE), (method.generator, netG), (method.encoder, netI)):
            for p, q in zip(mine.parameters(), ref.parameters()):
                torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)


def test_dual_mcmc_density_includes_the_reference_gaussian_and_the_temperature():
    params = {**TINY["dual_mcmc"], "x_ref_sigma": 2.0, "x_step_size": 0.1, "x_noise_std": 0.05}
    method = build_method("dual_mcmc", params, (2,))
    x = torch.randn(5, 2)
    expected = -(method.ebm(x) + x.square().sum(1) / (2 * 2.0**2)) / (0.05 / 0.1) ** 2
    torch.testing.assert_close(method.log_prob_unnormalized(x), expected.detach())
    with pytest.raises(ValueError, match="x_ref_sigma must be > 0"):
        build_method("dual_mcmc", {**TINY["dual_mcmc"], "x_ref_sigma": 0.0}, (2,))

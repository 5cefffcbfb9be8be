"""Learning methods: build errors, a few finite iterations each, and Dual-MCMC against the reference loop."""
import copy
import dataclasses
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from dualmcmc.methods import METHODS, DualMCMC, build_method
from dualmcmc.validation import ConfigError

warnings.filterwarnings("ignore", message="dualmcmc.ops", category=RuntimeWarning)

TINY_NETS = {"ebm_hidden": 16, "ebm_layers": 2}
TINY = {
    "dual_mcmc": {**TINY_NETS, "generator_hidden": 16, "generator_layers": 2, "encoder_hidden": 16,
                  "encoder_layers": 2, "latent_dim": 2, "x_steps": 3, "z_steps": 2},
    "coopnets": {**TINY_NETS, "generator_hidden": 16, "generator_layers": 2, "latent_dim": 2, "x_steps": 3},
    "short_run": {**TINY_NETS, "x_steps": 3},
    "vae_mcmc": {**TINY_NETS, "generator_hidden": 16, "generator_layers": 2, "encoder_hidden": 16,
                 "encoder_layers": 2, "latent_dim": 2, "x_steps": 3},
    "nt_ebm": {**TINY_NETS, "flow_layers": 2, "flow_hidden": 8, "flow_pretrain_iterations": 2, "z_steps": 3},
}
ALL_METHODS = ["dual_mcmc", "vae_mcmc", "nt_ebm", "coopnets", "short_run"]
HAS_GENERATOR = {"dual_mcmc", "vae_mcmc", "nt_ebm", "coopnets"}  # nt_ebm: the flow's own samples
HAS_RECONSTRUCTION = {"dual_mcmc", "vae_mcmc"}


def tiny_data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])
    return centers[torch.randint(2, (n,), generator=g)] + 0.1 * torch.randn(n, 2, generator=g)


# ---- building ----
def test_registry_holds_the_five_methods():
    assert set(METHODS) == set(ALL_METHODS)


def test_unknown_method_lists_the_methods():
    with pytest.raises(ValueError, match="unknown method 'dual'.*coopnets.*dual_mcmc.*short_run"):
        build_method("dual", {}, (2,))


def test_unknown_parameter_lists_the_valid_keys():
    with pytest.raises(ValueError, match=r"\['x_stepz'\].*valid keys.*x_step_size"):
        build_method("dual_mcmc", {"x_stepz": 3}, (2,))


TINY_CONV = {"ebm_hidden": 8, "generator_hidden": 8, "encoder_hidden": 8}


@pytest.mark.parametrize("name", ALL_METHODS)
def test_image_shapes_build_conv_nets_and_train(name):
    torch.manual_seed(0)
    params = {k: v for k, v in TINY[name].items() if not k.endswith("_hidden") and not k.endswith("_layers")}
    params.update({k: v for k, v in TINY_CONV.items() if k in {f for f in METHODS[name].Config.__dataclass_fields__}})
    method = build_method(name, params, (1, 8, 8))
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    for _ in range(3):
        out = method.train_step(x)
    assert all(math.isfinite(v) for v in out.values()), out
    assert method.sample(3).shape == (3, 1, 8, 8)
    assert method.log_prob_unnormalized(x).shape == (6,)


def test_mlp_arch_refuses_images():
    with pytest.raises(ValueError, match="arch"):
        build_method("dual_mcmc", {"arch": "mlp"}, (1, 8, 8))


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
@pytest.mark.parametrize("name", ALL_METHODS)
def test_a_few_iterations_are_finite_and_move_every_network(name):
    torch.manual_seed(0)
    method = build_method(name, TINY[name], (2,))
    nets = {k: getattr(method, k) for k in ("ebm", "generator", "encoder", "flow") if getattr(method, k, None) is not None}
    before = {k: [p.detach().clone() for p in net.parameters()] for k, net in nets.items()}
    x = tiny_data()
    for _ in range(3 + (name == "nt_ebm") * TINY["nt_ebm"]["flow_pretrain_iterations"]):
        out = method.train_step(x)
    chain = "z_chain" if name == "nt_ebm" else "x_chain"
    assert "energy_gap" in out and f"{chain}/grad_norm_mean" in out
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values()), out
    for k, net in nets.items():
        assert any(not torch.equal(p, q) for p, q in zip(net.parameters(), before[k])), f"{name}: {k} did not change"

    assert method.log_prob_unnormalized(x).shape == (16,)
    samples = method.sample(5, generator=torch.Generator().manual_seed(1))
    assert samples.shape == (5, 2) and not samples.requires_grad
    gen = method.generator_sample(5)
    assert (gen is not None) == (name in HAS_GENERATOR)
    rec = method.reconstruct(x[:4])
    assert (rec is not None) == (name in HAS_RECONSTRUCTION) and (rec is None or rec.shape == (4, 2))
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


def test_dual_mcmc_replay_continues_buffered_chains_and_stores_every_end_state(monkeypatch):
    torch.manual_seed(0)
    config = {**TINY["dual_mcmc"], "replay_fraction": 0.25, "buffer_size": 8}
    method = build_method("dual_mcmc", config, (2,))
    starts = []
    real_run_chain = method.run_chain
    monkeypatch.setattr(method, "run_chain", lambda potential, x0, spec, **kw: (starts.append(x0.clone()),
                                                                              real_run_chain(potential, x0, spec, **kw))[1])
    method.train_step(tiny_data(n=16))
    buffer = method.chains.states.clone()
    method.train_step(tiny_data(n=16))
    negatives_start = starts[-1]  # the E-step chain of the second iteration
    # its last 4 of 16 starts (a quarter) are buffered end states; the first 12 are fresh generator samples
    assert all(any(torch.equal(row, b) for b in buffer) for row in negatives_start[12:])
    assert not any(torch.equal(row, b) for row in negatives_start[:12] for b in buffer)
    assert method.chains.states.shape == (8, 2) and not torch.equal(method.chains.states, buffer)
    other = build_method("dual_mcmc", config, (2,))
    other.load_extra_state(method.extra_state())  # resumes with the buffer
    assert torch.equal(other.chains.states, method.chains.states)
    with pytest.raises(ConfigError, match=r"replay_fraction must be in \[0, 1\], got 1.5"):
        build_method("dual_mcmc", {"replay_fraction": 1.5}, (2,))


def test_dual_mcmc_test_chain_can_start_from_the_replay_buffer():
    torch.manual_seed(0)
    config = {**TINY["dual_mcmc"], "replay_fraction": 0.5, "buffer_size": 4, "test_x_start": "buffer",
              "test_x_steps": 1, "test_x_step_size": 1e-4, "test_x_noise_std": 1e-4}
    method = build_method("dual_mcmc", config, (2,))
    seeded = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    untrained = method.sample(8, generator=seeded(0))  # no buffer yet: from G(z), and none is made
    assert method.chains.states is None and untrained.shape == (8, 2)
    method.train_step(tiny_data(n=16))
    method.chains.states = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])
    buffer = method.chains.states.clone()
    x = method.sample(64, generator=seeded(0))
    nearest = torch.cdist(x, buffer).min(1)
    # one tiny step from a buffered state each, all four states drawn, the buffer untouched, the draw seeded
    assert nearest.values.max() < 0.01 and set(nearest.indices.tolist()) == {0, 1, 2, 3}
    assert torch.equal(method.chains.states, buffer)
    assert torch.equal(x, method.sample(64, generator=seeded(0)))
    method.config = dataclasses.replace(method.config, test_x_start="generator")  # the reference: from G(z)
    assert torch.cdist(method.sample(64, generator=seeded(0)), buffer).min() > 1.0
    with pytest.raises(ConfigError, match=r"test_x_start: buffer .* set replay_fraction > 0"):
        build_method("dual_mcmc", {"test_x_start": "buffer"}, (2,))
    with pytest.raises(ConfigError, match=r"test_x_start must be one of \['buffer', 'generator'\]"):
        build_method("dual_mcmc", {"test_x_start": "data"}, (2,))


def test_dual_mcmc_replay_replicas_keeps_every_rung_of_the_ladder_in_the_buffer():
    torch.manual_seed(0)
    config = {**TINY["dual_mcmc"], "replay_fraction": 0.5, "buffer_size": 6, "x_ladder": [1, 4, 16],
              "x_noise_std": 0.05, "x_step_size": 0.05, "replay_replicas": True, "test_x_start": "buffer",
              "test_x_steps": 1, "test_x_step_size": 1e-4, "test_x_noise_std": 1e-4}
    method = build_method("dual_mcmc", config, (2,))
    method.train_step(tiny_data(n=16))
    states = method.chains.states
    assert states.shape == (6, 3, 2) and torch.isfinite(states).all()
    written = ~torch.isclose(states[:, 0], states[:, 2]).all(dim=1)
    assert written.any()  # slots the chain wrote hold rungs that went their own ways
    cold = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0], [5.0, 0.0], [0.0, 5.0]])
    method.chains.states = torch.stack([cold, -cold, 0 * cold], dim=1)
    x = method.sample(64, generator=torch.Generator().manual_seed(0))
    assert torch.cdist(x, cold).min(1).values.max() < 0.01  # the test chain starts from the T rung only
    for bad in ({"replay_replicas": True, "replay_fraction": 0.5},
                {"replay_replicas": True, "x_ladder": [1, 4], "x_noise_std": 0.05}):
        with pytest.raises(ConfigError, match=r"replay_replicas: true .* needs both x_ladder .* replay_fraction > 0"):
            build_method("dual_mcmc", bad, (2,))


def test_dual_mcmc_x_temper_prior_reaches_the_chain_spec():
    config = {"x_ladder": [1, 4], "x_noise_std": 0.05, "x_ref_sigma": 2.0}
    assert build_method("dual_mcmc", config, (2,)).langevin("x").temper_prior is True  # the default
    spec = build_method("dual_mcmc", {**config, "x_temper_prior": False}, (2,)).langevin("x", test=True)
    assert spec.temper_prior is False and spec.prior_precision == 0.25 and spec.ladder == (1.0, 4.0)


def test_dual_mcmc_updates_in_the_order_generator_encoder_ebm():
    method = build_method("dual_mcmc", TINY["dual_mcmc"], (2,))
    order = []
    for key, opt in method.optimizers.items():
        opt.register_step_post_hook(lambda *_, key=key: order.append(key))
    method.train_step(tiny_data())
    assert order == ["generator", "encoder", "ebm"]


# ---- parity with a direct transcription of the reference loop (docs/methods.md §2.2, §2.3, §2.11) ----
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


# ---- backoff (the loop's recovery lowers learning rates and chain steps) ----
@pytest.mark.parametrize("name", ALL_METHODS)
def test_backoff_scales_rates_and_chain_steps_keeping_the_temperature(name):
    method = build_method(name, TINY[name], (2,))
    chain = method.EBM_CHAIN
    step, noise = method.langevin(chain).step_size, method.langevin(chain).noise_std
    temperature = method.temperature
    lrs = [g["lr"] for o in method.optimizers.values() for g in o.param_groups]
    given = method.config
    method.backoff(0.5)
    method.backoff(0.5)
    assert [g["lr"] for o in method.optimizers.values() for g in o.param_groups] == pytest.approx([lr / 4 for lr in lrs])
    assert method.langevin(chain).step_size == pytest.approx(step / 4)
    assert method.langevin(chain).noise_std == pytest.approx(noise / 4)
    assert method.langevin(chain, test=True).step_size == pytest.approx(step / 4)  # the test chain slows too
    assert method.temperature == pytest.approx(temperature)
    assert method.config is given  # the config stays as given
    fresh = build_method(name, TINY[name], (2,))
    fresh.load_extra_state(method.extra_state())  # a resumed run keeps the slower chain
    assert fresh.langevin(chain).step_size == pytest.approx(step / 4) and fresh.backoff_scale == 0.25
    with pytest.raises(ValueError, match="factor"):
        method.backoff(0.0)


def test_backoff_scales_scheduler_base_rates():
    method = build_method("dual_mcmc", TINY["dual_mcmc"], (2,))
    base = {k: list(s.base_lrs) for k, s in method.schedulers.items()}
    method.backoff(0.1)
    for key, sched in method.schedulers.items():
        assert sched.base_lrs == pytest.approx([lr * 0.1 for lr in base[key]])


# ---- CoopVAEBM against a transcription of the reference loop (docs/methods.md §3.2) ----
def reference_coop_vaebm_iteration(netE, netG, netI, optE, optVAE, obs, c):
    """jianwen-xie/CoopVAEBM model.py train loop, in PyTorch: Langevin without noise -> EBM -> VAE on the revised x."""
    z = torch.randn(c.n_chains or obs.shape[0], c.latent_dim)
    with torch.no_grad():
        syn = netG(z)
    for _ in range(c.x_steps):  # syn = syn - 0.5 * delta^2 * (syn / sigma^2 - grad f), f = -E
        syn = syn.detach().requires_grad_(True)
        grad_f = -torch.autograd.grad(netE(syn).sum(), syn)[0]
        syn = syn.detach() - 0.5 * c.x_step_size**2 * (syn.detach() / c.ref_sigma**2 - grad_f)
    optE.zero_grad()
    des_loss = (-netE(syn)).mean() - (-netE(obs)).mean()  # mean f(syn) - mean f(obs)
    des_loss.backward()
    optE.step()
    optVAE.zero_grad()
    mu, logvar = netI(syn)
    log_sigma = 0.5 * logvar
    z_hat = mu + torch.exp(log_sigma) * torch.randn_like(mu)
    recon = ((netG(z_hat) - syn) ** 2).sum(1)
    kl = -0.5 * (1 + 2 * log_sigma - mu**2 - torch.exp(2 * log_sigma)).sum(1)
    vae_loss = (recon + c.w_lat * kl).mean()
    vae_loss.backward()
    optVAE.step()
    return float(des_loss.detach()), float(vae_loss.detach())


@pytest.mark.parametrize("n_chains", [None, 5])
def test_vae_mcmc_iteration_matches_the_reference_loop(float64, n_chains):
    params = {**TINY["vae_mcmc"], "x_steps": 4, "x_step_size": 0.3, "n_chains": n_chains}
    torch.manual_seed(0)
    method = build_method("vae_mcmc", params, (2,))
    c = method.config
    netE, netG, netI = (copy.deepcopy(m) for m in (method.ebm, method.generator, method.encoder))
    optE = torch.optim.Adam(netE.parameters(), lr=c.lr_ebm, betas=c.betas)
    optVAE = torch.optim.Adam([*netI.parameters(), *netG.parameters()], lr=c.lr_vae, betas=c.betas)
    x = tiny_data(8, seed=3).double()
    order = []
    for key, opt in method.optimizers.items():
        opt.register_step_post_hook(lambda *_, key=key: order.append(key))
    for it in range(2):
        torch.manual_seed(100 + it)
        out = method.train_step(x)
        torch.manual_seed(100 + it)
        des_loss, vae_loss = reference_coop_vaebm_iteration(netE, netG, netI, optE, optVAE, x, c)
        # our energy gap is mean E(data) - mean E(syn) = mean f(syn) - mean f(obs), the reference's des_loss
        assert out["energy_gap"] == pytest.approx(des_loss, rel=1e-9, abs=1e-12)
        assert out["loss_vae"] == pytest.approx(vae_loss, rel=1e-9)
        for mine, ref in ((method.ebm, netE), (method.generator, netG), (method.encoder, netI)):
            for p, q in zip(mine.parameters(), ref.parameters()):
                torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)
    assert order == ["ebm", "vae"] * 2


def test_vae_mcmc_defaults_and_switches():
    c = METHODS["vae_mcmc"].Config()
    assert c.x_noise_std == 0.0 and c.x_steps == 15 and c.w_lat == 2.0 and c.betas[0] == 0.5
    assert c.lr_decay == pytest.approx(0.98 ** (1 / 20))
    noiseless = build_method("vae_mcmc", TINY["vae_mcmc"], (2,))
    assert noiseless.temperature == 1.0
    noisy = build_method("vae_mcmc", {**TINY["vae_mcmc"], "x_noise_std": 0.025, "x_step_size": 0.05}, (2,))
    assert noisy.temperature == pytest.approx(0.25)
    x = torch.randn(4, 2)
    expected = -(noisy.ebm(x) + x.square().sum(1) / (2 * 2.0**2)) / 0.25
    torch.testing.assert_close(noisy.log_prob_unnormalized(x), expected.detach())
    with pytest.raises(ValueError, match="x_mala needs a noisy chain"):
        build_method("vae_mcmc", {"x_mala": True}, (2,))
    with pytest.raises(ValueError, match="n_chains"):
        build_method("vae_mcmc", {"n_chains": 0}, (2,))


# ---- NT-EBM ----
def test_nt_ebm_fits_the_flow_first_then_the_ebm():
    torch.manual_seed(0)
    method = build_method("nt_ebm", TINY["nt_ebm"], (2,))
    x = tiny_data()
    ebm_before = [p.detach().clone() for p in method.ebm.parameters()]
    first = method.train_step(x)
    assert "flow_nll" in first and first["energy_gap"] == 0.0
    assert all(torch.equal(p, q) for p, q in zip(method.ebm.parameters(), ebm_before))
    method.train_step(x)
    flow_fitted = [p.detach().clone() for p in method.flow.parameters()]
    out = method.train_step(x)
    assert "z_chain/energy_end" in out and "flow_nll" not in out
    assert all(torch.equal(p, q) for p, q in zip(method.flow.parameters(), flow_fitted))  # the backbone stays fixed
    assert int(method.flow_iterations_done) == 2


def test_nt_ebm_latent_target_is_tilt_of_the_flow_up_to_a_constant(float64):
    """log p(z) = -E(g(z)) - ||z||^2/2 and log_prob_unnormalized(g(z)) = that + log|det dz/dx| (Jacobians cancel)."""
    torch.manual_seed(0)
    method = build_method("nt_ebm", TINY["nt_ebm"], (2,))
    x = tiny_data(32).double()
    for _ in range(4):
        method.train_step(x)  # fit the flow a little (actnorm initialised) and move the EBM
    z = torch.randn(10, 2)
    with torch.no_grad():
        xz, log_det_forward = method.flow.forward_and_log_det(z)
    latent_log_target = -(method.latent_energy(z) + 0.5 * z.square().sum(1)).detach()
    # the push-forward density at x = g(z): latent target - log|det dx/dz|
    torch.testing.assert_close(method.log_prob_unnormalized(xz), latent_log_target - log_det_forward, rtol=1e-7, atol=1e-7)
    # and at T = 1 that is -E(x) + log q_flow(x) up to the constant log(2 pi)
    with torch.no_grad():
        tilt = -method.ebm(xz) + method.flow.log_prob(xz)
    difference = method.log_prob_unnormalized(xz) - tilt
    torch.testing.assert_close(difference, torch.full_like(difference, math.log(2 * math.pi)), rtol=0, atol=1e-7)


def test_nt_ebm_loads_a_fitted_flow(tmp_path):
    torch.manual_seed(0)
    fitted = build_method("nt_ebm", TINY["nt_ebm"], (2,))
    for _ in range(2):
        fitted.train_step(tiny_data())
    torch.save(fitted.flow.state_dict(), tmp_path / "flow.pt")
    method = build_method("nt_ebm", {**TINY["nt_ebm"], "flow_checkpoint": str(tmp_path / "flow.pt")}, (2,))
    out = method.train_step(tiny_data())
    assert "z_chain/energy_end" in out  # straight to the EBM
    for p, q in zip(method.flow.parameters(), fitted.flow.parameters()):
        assert torch.equal(p, q)
    missing = build_method("nt_ebm", {**TINY["nt_ebm"], "flow_checkpoint": str(tmp_path / "nope.pt")}, (2,))
    with pytest.raises(FileNotFoundError, match="flow_checkpoint"):
        missing.train_step(tiny_data())
    # with flow_pretrain_iterations 0 the flow counts as fitted from the start: it must be loaded all the same
    params = {**TINY["nt_ebm"], "flow_pretrain_iterations": 0, "flow_checkpoint": str(tmp_path / "flow.pt")}
    method = build_method("nt_ebm", params, (2,))
    method.train_step(tiny_data())
    assert all(torch.equal(p, q) for p, q in zip(method.flow.parameters(), fitted.flow.parameters()))
    assert method.extra_state()["flow_loaded"]
    resumed = build_method("nt_ebm", params, (2,))
    resumed.load_extra_state(method.extra_state())  # a resumed run keeps its checkpointed flow, no second read
    assert resumed.flow_loaded


def test_nt_ebm_data_space_potential_targets_the_push_forward_at_any_temperature(float64):
    torch.manual_seed(1)
    method = build_method("nt_ebm", {**TINY["nt_ebm"], "z_noise_std": 0.05}, (2,))  # T = (0.05 / 0.1)^2 = 0.25
    for _ in range(3):
        method.train_step(tiny_data(32).double())
    x = tiny_data(12, seed=3).double()
    with torch.no_grad():
        from_potential = -method.data_space_potential(x) / method.temperature
    torch.testing.assert_close(from_potential, method.log_prob_unnormalized(x), rtol=1e-10, atol=1e-10)


def test_nt_ebm_options_mala_persistent_joint_flow():
    torch.manual_seed(0)
    params = {**TINY["nt_ebm"], "z_mala": True, "persistent": True, "buffer_size": 32, "train_flow": True}
    method = build_method("nt_ebm", params, (2,))
    for _ in range(4):
        out = method.train_step(tiny_data())
    assert 0.0 <= out["z_chain/acceptance"] <= 1.0 and "flow_nll" in out
    assert method.extra_state()["chains"]["states"].shape == (32, 2)
    with pytest.raises(ValueError, match="T = 1"):
        build_method("nt_ebm", {"train_flow": True, "z_noise_std": 0.01}, (2,))


# ---- sampling with an explicit generator on the model's device (short_run once drew its starts on the CPU) ----
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ALL_METHODS)
def test_sample_and_evaluation_take_a_generator_on_the_models_device(name, device):
    from dualmcmc.config import load_config
    from dualmcmc.run import evaluate_method

    torch.manual_seed(0)
    params = {**TINY[name], "flow_pretrain_iterations": 0} if name == "nt_ebm" else TINY[name]
    method = build_method(name, params, (2,)).to(device)
    method.train_step(tiny_data().to(device))  # short_run: the data range its starts span
    seeded = lambda seed: torch.Generator(device=device).manual_seed(seed)  # noqa: E731
    first, again, other = (method.sample(8, generator=seeded(s)) for s in (0, 0, 1))
    assert first.device.type == device and first.shape == (8, 2)
    assert torch.equal(first, again) and not torch.equal(first, other)  # the generator alone decides the draw
    drawn = method.generator_sample(8, generator=seeded(0))
    assert drawn is None or drawn.device.type == device
    cfg = load_config({"method": name, "data": "8gaussians", "model": params, "device": device,
                       "eval": {"n_samples": 64, "resolution": 20}})
    scores = evaluate_method(method, cfg)
    assert all(math.isfinite(v) for v in scores.values()), scores


def test_random_draws_go_to_the_state_device_whatever_the_generator_device():
    # the stand-in for a CPU generator with CUDA chains: drawn on the generator's device, then moved
    from dualmcmc.kernels import random_tensor

    cpu = torch.Generator().manual_seed(3)
    moved = random_tensor("normal", (4, 2), device="meta", generator=cpu)
    assert moved.device.type == "meta" and moved.shape == (4, 2)
    here = random_tensor("uniform", (5,), device="cpu", generator=torch.Generator().manual_seed(3))
    assert torch.equal(here, torch.rand(5, generator=torch.Generator().manual_seed(3)))


def test_a_run_written_before_a_model_key_existed_still_resumes():
    # identity_changes fills keys the saved config lacks with their defaults (x_ladder came after many runs)
    from dualmcmc.config import identity_changes, load_config

    cfg = load_config({"method": "dual_mcmc", "data": "8gaussians", "model": {"x_steps": 3}})
    saved = cfg.to_dict()
    del saved["model"]["x_ladder"]
    assert identity_changes(saved, cfg) == []
    changed = load_config({"method": "dual_mcmc", "data": "8gaussians", "model": {"x_steps": 3, "x_ladder": [1, 4]}})
    assert identity_changes(saved, changed) == ["model.x_ladder: None -> [1, 4]"]


# ---- an exponential moving average of the weights (model.ema) ----
@pytest.mark.parametrize("name", ALL_METHODS)
def test_ema_averages_each_net_after_its_optimizer_steps_and_serves_sampling(name):
    params = {**TINY[name], "flow_pretrain_iterations": 0} if name == "nt_ebm" else TINY[name]
    torch.manual_seed(0)
    plain = build_method(name, params, (2,))
    assert len(plain.averages) == 0 and not any(k.startswith("averages.") for k in plain.state_dict())
    torch.manual_seed(0)
    method = build_method(name, {**params, "ema": 0.5}, (2,))
    start = {k: v.clone() for k, v in method.ebm.state_dict().items()}
    method.train_step(tiny_data())
    live = {k: v.clone() for k, v in method.ebm.state_dict().items()}
    averaged = dict(method.averages["ebm"].module.state_dict())
    key = next(k for k in live if live[k].is_floating_point() and not torch.equal(live[k], start[k]))
    # AveragedModel's first update copies; the decay applies from the second step on
    torch.testing.assert_close(averaged[key], live[key])
    method.train_step(tiny_data(seed=1))
    newer = method.ebm.state_dict()[key]
    torch.testing.assert_close(method.averages["ebm"].module.state_dict()[key], 0.5 * live[key] + 0.5 * newer)
    with method.averaged_weights():
        assert torch.equal(method.ebm.state_dict()[key], method.averages["ebm"].module.state_dict()[key])
        method.sample(4)
    assert torch.equal(method.ebm.state_dict()[key], newer)  # the live weights are back
    if method.generator is not None and name != "nt_ebm":
        assert "generator" in method.averages
    fresh = build_method(name, {**params, "ema": 0.5}, (2,))
    fresh.load_state_dict(method.state_dict())  # checkpoints carry the averages
    assert torch.equal(fresh.averages["ebm"].module.state_dict()[key], method.averages["ebm"].module.state_dict()[key])


def test_ema_out_of_range_is_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"model\.ema must be in \[0, 1\]"):
        from dualmcmc.config import load_config
        load_config({"method": "dual_mcmc", "data": "8gaussians", "model": {"ema": 1.5}})


def test_dual_mcmc_x_jumps_move_the_negatives_starts_to_the_data_and_log_their_acceptance(monkeypatch):
    torch.manual_seed(0)
    config = {**TINY["dual_mcmc"], "x_jumps": 3, "x_jump_bandwidth": 0.05, "x_noise_std": 0.05,
              "x_step_size": 0.05}
    method = build_method("dual_mcmc", config, (2,))
    starts = []
    real_run_chain = method.run_chain
    monkeypatch.setattr(method, "run_chain", lambda potential, x0, spec, **kw: (starts.append(x0.clone()),
                                                                              real_run_chain(potential, x0, spec, **kw))[1])
    with torch.no_grad():
        blob = method.generator(torch.randn(8, method.config.latent_dim))  # where the untrained generator samples
    # half the data where the chains start, half in a second mode that only a jump reaches
    data = torch.cat([blob, blob + 1.0]) + 0.01 * torch.randn(16, 2)
    out = method.train_step(data)
    assert 0.0 < out["x_chain/jump_acceptance"] <= 1.0
    far = (torch.cdist(starts[-1], data[8:]).min(1).values < 0.2).float().mean()
    assert far > 0.2  # the E step's chain starts where the jumps landed: measured 0.31
    for replicas in (False, True):  # the buffer's two layouts
        extra = {"replay_fraction": 0.5, "buffer_size": 8, "x_ladder": [1, 4], "replay_replicas": replicas}
        assert "x_chain/jump_acceptance" in build_method("dual_mcmc", {**config, **extra}, (2,)).train_step(data)
    with pytest.raises(ConfigError, match=r"x_jumps: 3 jumps the E step's chain, which fine_tune: false"):
        build_method("dual_mcmc", {"x_jumps": 3, "fine_tune": False}, (2,))
    with pytest.raises(ConfigError, match=r"x_jump_bandwidth must be > 0"):
        build_method("dual_mcmc", {"x_jumps": 1, "x_jump_bandwidth": 0.0}, (2,))

"""Dual-MCMC teaching (Cui & Han, NeurIPS 2023): EBM + generator + inference model, taught by two MCMC chains.

One iteration, in the order of the reference code (docs/methods.md §2.2), G -> I -> E:

    z0 ~ N(0, I);  x0 = G(z0)                       generator proposals (graph kept for errSample)
    x_t = LangevinX_E(x0)                           EBM-revised samples  (data-space chain, temperature T)
    z   = mu + exp(logvar/2) eps, (mu, logvar) = I(x)
    z_t = LangevinZ_G(z | x)                        MCMC-revised posterior codes of the data
    G:  errG = g_factor * sum(G(z_t) - x)^2 / B  +  s_factor * sum(x0 - x_t)^2 / B
    I:  errI = g_factor * mean NLL(z_t | I(x))   +  i_factor * mean NLL(z0 | I(x_t))
    E:  errE = mean E(x) - mean E(LangevinX_E(G_new(z0)))    (a fresh chain from the UPDATED G, same z0)
        loss_E = errE / T  (use_temp),  T = (x_noise_std / x_step_size)**2
        (replay_fraction f > 0: a share f of that chain's starts are earlier end states from a replay buffer)
    Sampling: the EBM chain with the test_x_* settings from G(z) (test_x_start: buffer: from the replay buffer)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .. import samplers
from .base import (Method, adam, build_nets_for, diag_normal_nll, exponential_schedulers, randn,
                   squared_error_per_batch)
from ..validation import ConfigError
from .settings import CommonSettings, EncoderNetSettings, EnergyNetSettings, GeneratorNetSettings, setting


@dataclass
class DualMCMCConfig(EncoderNetSettings, GeneratorNetSettings, EnergyNetSettings, CommonSettings):
    """Hyper-parameters of Dual-MCMC. Defaults are for vector data such as the 2-D toys.

    Same as the CIFAR-10 reference (jcui1224/dual-MCMC config.py): sigma 0.3, prior_sigma 1, x_steps 30,
    x_noise_std 1e-3 (a cold chain), z-chain 10 steps with a = b = 0.1, g/s/i factors 1 / 50 / 0.1,
    learning rates 1e-4 / 3e-4 / 1e-4 (E / G / I), Adam betas (0, 0.9), weight decay 0 / 5e-4 / 5e-4,
    ExponentialLR gamma 0.998 per epoch, use_temp and fine_tune on, reference ("doubled") z-likelihood,
    no clamp, no MALA.

    Different from the reference, and why:
      * latent_dim 8 (reference 128): 2-D data need only a few latent dimensions; 8 lets the generator split
        its mass over many modes.
      * x_step_size 0.05 (reference 0.5 on CIFAR, 0.3 on CelebA): the reference step is tuned for images in
        [-1, 1]^3072 with a spectral-norm ResNet; the 2-D toys have modes of std 0.1-0.2 and an MLP energy
        whose gradients there are O(10-100), for which a drift of 0.5**2/2 * grad overshoots. The noise stays
        1e-3, so the chain is cold (T = 4e-4) and the EBM loss is divided by T as in the reference.
      * nets: ``arch`` "auto" picks MLPs of 256 units and 3 hidden layers for vectors and small conv nets for
        images; "cifar10" / "celeba64" build the reference ResNets, whose widths (ngf / ndf / nif = 512 / 512 /
        128 on CIFAR-10) are ``generator_hidden`` / ``ebm_hidden`` / ``encoder_hidden`` (configs/cifar10_*.yaml).
    Switches for density estimation (off by default, so the iteration is the reference's; configs/toy2d.yaml
    turns them on, see there):
      * x_noise_std = x_step_size gives T = 1, a chain that samples exp(-E) instead of the reference's
        cold, almost noiseless descent; then exp(-E) is a density estimate and not only a sample refiner.
      * x_ref_sigma adds a Gaussian reference ||x||^2/(2 s^2) to the energy (as CoopNets does): the data are
        bounded, but an MLP energy trained only where data and samples lie can fall off linearly beyond them,
        which puts mass in empty space that no chain ever visits to correct.
    Test-time sampling (reference task_fid.py: 70 steps, step 0.4, noise 1e-3): ``test_x_*`` fields, None =
    the training values; ``test_x_start: buffer`` starts that chain from the replay buffer instead of G(z).
    """

    latent_dim: int = setting(8, check="count")
    sigma: float = setting(0.3, check="positive")
    prior_sigma: float = setting(1.0, chain="z", role="prior_sigma")
    # data-space (EBM) chain
    x_steps: int = setting(30, chain="x", role="steps")
    x_step_size: float = setting(0.05, chain="x", role="step_size")
    x_noise_std: float = setting(1e-3, chain="x", role="noise_std")
    x_clamp: Optional[tuple] = setting(None, chain="x", role="clamp")
    x_mala: bool = setting(False, chain="x", role="mala")
    x_ladder: Optional[tuple] = setting(None, chain="x", role="ladder")  # replica exchange rungs [1, ...]
    # None: the reference (no Gaussian); else the EBM is E(x) + ||x||^2/(2 s^2)
    x_ref_sigma: Optional[float] = setting(None, chain="x", role="prior_sigma")
    # with x_ladder and x_ref_sigma: True tempers the Gaussian reference on the hot rungs too (rung l: exp(-(E + ref)
    # / (T l))); False keeps it at full strength there, so hot rungs cross between modes without running far out
    x_temper_prior: bool = setting(True, chain="x", role="temper_prior")
    # latent (generator posterior) chain
    z_steps: int = setting(10, chain="z", role="steps")
    z_step_size: float = setting(0.1, chain="z", role="step_size")
    z_noise_std: float = setting(0.1, chain="z", role="noise_std")
    z_likelihood: str = setting("reference", choices=samplers.LIKELIHOODS)
    z_mala: bool = setting(False, chain="z", role="mala")
    # test-time sampling (None: as in training)
    test_x_steps: Optional[int] = setting(None, chain="x", role="test_steps")
    test_x_step_size: Optional[float] = setting(None, chain="x", role="test_step_size")
    test_x_noise_std: Optional[float] = setting(None, chain="x", role="test_noise_std")
    # where the test chain starts: "generator" (the reference: G(z)), or "buffer": end states of the persistent
    # E-step chains (replay_fraction > 0), already near exp(-E) across modes, as JEM and IGEBM sample
    test_x_start: str = setting("generator", choices=("generator", "buffer"))
    # loss weights
    g_factor: float = setting(1.0, check="non_negative")
    s_factor: float = setting(50.0, check="non_negative")
    i_factor: float = setting(0.1, check="non_negative")
    # optimisation
    lr_ebm: float = setting(1e-4, check="positive")
    lr_generator: float = setting(3e-4, check="positive")
    lr_encoder: float = setting(1e-4, check="positive")
    betas: tuple = setting((0.0, 0.9))
    weight_decay_ebm: float = setting(0.0, check="non_negative")
    weight_decay_generator: float = setting(5e-4, check="non_negative")
    weight_decay_encoder: float = setting(5e-4, check="non_negative")
    lr_decay: float = setting(0.998, check="positive")
    use_temp: bool = True
    fine_tune: bool = True
    energy_l2: float = setting(0.0, check="non_negative")  # 0: the reference; else + energy_l2 * mean(E(data)^2 +
                                                           #   E(samples)^2) in the EBM loss
    # 0: the reference (every E-step negative starts at G_new(z0)); else this share of them continues earlier EBM
    # chains from a replay buffer (as JEM / IGEBM do), so chains run for many iterations and can cross between modes
    replay_fraction: float = setting(0.0, check="fraction")
    buffer_size: int = setting(10_000, check="count")
    # False: the reference-style ladder, whose hot rungs restart from the cold state every chain; True: the buffer
    # keeps every rung of x_ladder, so the hot rungs are persistent chains too and wander between modes for as long
    # as the slot lives (parallel tempering proper); needs x_ladder and replay_fraction > 0
    replay_replicas: bool = False
    # 0: the reference; else each E-step chain first takes this many independence Metropolis-Hastings jumps proposed
    # from a Gaussian kernel density (width x_jump_bandwidth) on the batch's data: exact for exp(-E), and a chain
    # lands in each mode as often as the EBM weighs it, so a mode the EBM over-weights gets more negatives and its
    # level is pushed back (the restoring force chains that never cross between modes lack). Measured on the 2-D
    # toys, not on images (acceptance is logged as x_chain/jump_acceptance)
    x_jumps: int = setting(0, check="non_negative_count")
    x_jump_bandwidth: float = setting(0.1, check="positive")

    def check(self, prefix: str = "") -> None:
        if self.x_jumps > 0 and not (self.fine_tune or self.replay_fraction > 0):
            raise ConfigError(f"{prefix}x_jumps: {self.x_jumps} jumps the E step's chain, which {prefix}fine_tune: false "
                              f"without a replay buffer does not run: set {prefix}fine_tune: true or {prefix}x_jumps: 0")
        if self.replay_replicas and (self.x_ladder is None or not self.replay_fraction > 0):
            raise ConfigError(f"{prefix}replay_replicas: true keeps every rung of {prefix}x_ladder in the replay buffer; "
                              f"it needs both {prefix}x_ladder (e.g. [1, 4, 16]) and {prefix}replay_fraction > 0 (e.g. "
                              f"0.97), or set {prefix}replay_replicas: false")
        if self.test_x_start == "buffer" and not self.replay_fraction > 0:
            raise ConfigError(f"{prefix}test_x_start: buffer starts the test chain from the replay buffer, which "
                              f"{prefix}replay_fraction 0 does not keep: set {prefix}replay_fraction > 0 (e.g. 0.9) or "
                              f"{prefix}test_x_start: generator")


class DualMCMC(Method):
    name = "dual_mcmc"
    Config = DualMCMCConfig

    def __init__(self, config: DualMCMCConfig, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        c = config
        nets = build_nets_for(c, self.data_shape)
        self.ebm, self.generator, self.encoder = nets["ebm"], nets["generator"], nets["encoder"]
        self.optimizers = {
            "ebm": adam(self.ebm.parameters(), c.lr_ebm, c.betas, c.weight_decay_ebm),
            "generator": adam(self.generator.parameters(), c.lr_generator, c.betas, c.weight_decay_generator),
            "encoder": adam(self.encoder.parameters(), c.lr_encoder, c.betas, c.weight_decay_encoder),
        }
        self.schedulers = exponential_schedulers(self.optimizers, c.lr_decay)
        # the generator posterior's potential ||G(z) - x||^2 / sigma^2 (reference form): the latent chain's target
        self.posterior = samplers.reconstruction_potential(self.chain_net(self.generator), c.sigma, c.z_likelihood,
                                                           modules=(self.generator,))
        if c.replay_fraction > 0:  # end states of the E-step chains, continued by later ones
            self.chains = samplers.PersistentChains(c.buffer_size, reinit_fraction=0.0)
        self.average_weights()  # an EMA of the nets for sampling and evaluation, when config.ema is set

    # -- one iteration --------------------------------------------------------------------------------------

    def train_step(self, x: Tensor) -> dict[str, float]:
        c = self.config
        G, I, E = self.generator, self.encoder, self.ebm
        opt = self.optimizers
        x = x.to(self.device)
        x_chain, z_chain = self.langevin("x"), self.langevin("z")

        # ---- G step: MLE on EBM-revised samples (known z0) and on data with MCMC-revised posterior codes ----
        z0 = randn(x.shape[0], c.latent_dim, x)
        x0 = G(z0)  # keeps its graph: errSample teaches G through x0
        x_t, diag_x = self.run_chain(self.energy_potential(), x0, x_chain)
        opt["generator"].zero_grad()
        mu, logvar = I(x)  # logvar is a log-VARIANCE
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        z_t, diag_z = self.run_chain(self.posterior, z, z_chain, data=(x,))
        err_recon = squared_error_per_batch(G(z_t), x)
        err_sample = squared_error_per_batch(x0, x_t)
        err_g = c.g_factor * err_recon + c.s_factor * err_sample
        err_g.backward()
        opt["generator"].step()

        # ---- I step: infer the revised codes of the data, and the known codes of the revised samples ----
        opt["encoder"].zero_grad()
        neg_log_q_z = diag_normal_nll(z_t, mu, logvar).mean()
        mu_g, logvar_g = I(x_t)  # x_t came from the OLD generator, z0 is its code
        err_latent = diag_normal_nll(z0, mu_g, logvar_g).mean()
        err_i = c.g_factor * neg_log_q_z + c.i_factor * err_latent
        err_i.backward()
        opt["encoder"].step()

        # ---- E step: contrastive loss against a fresh chain from the UPDATED generator with the same z0 ----
        energy_data = E(x)
        with torch.no_grad():
            x_neg = G(z0)
        jump_acceptance = None
        if c.fine_tune or self.chains is not None:  # the reference's second chain; no diagnostics (a pass on E)
            x_neg, jump_acceptance = self.negatives_chain(x_neg, x_chain.replace(diagnostics=False), x)
        out = self.update_ebm(energy_data, E(x_neg), use_temp=c.use_temp, energy_l2=c.energy_l2)
        if jump_acceptance is not None:
            out["x_chain/jump_acceptance"] = jump_acceptance

        out.update({
            "loss_generator": float(err_g.detach()),
            "err_recon": float(err_recon.detach()),
            "err_sample": float(err_sample.detach()),
            "loss_encoder": float(err_i.detach()),
            "neg_log_q_z": float(neg_log_q_z.detach()),
            "err_latent": float(err_latent.detach()),
        })
        out.update(diag_x.summary("x_chain/"))
        out.update(diag_z.summary("z_chain/"))
        return out

    def negatives_chain(self, x_new: Tensor, spec, data: Tensor) -> tuple[Tensor, Optional[float]]:
        """The E step's chain from G_new(z0), and the x_jumps' acceptance (None without jumps); with replay_fraction
        f, a share f of the starts are instead earlier end states from the buffer, and every end state goes back
        into it (fresh ones into random slots). With replay_replicas a slot holds one state per rung of the ladder,
        (R, ...), so the hot rungs continue too (fresh chains start every rung at G_new(z0)); the T rung's end states
        are the negatives. With x_jumps the T rung's starts first jump between modes (proposals around ``data``)."""
        if self.chains is None:
            x, acceptance = self._jump(x_new, spec, data)
            return self.run_chain(self.energy_potential(), x, spec)[0], acceptance
        n_old = int(round(self.config.replay_fraction * len(x_new)))
        replicas = self.config.replay_replicas
        x_old, old_slots = self.chains.draw(n_old, self._replica_fill if replicas else self._buffer_fill)
        fresh = x_new[n_old:]
        if replicas:
            fresh = fresh.unsqueeze(1).expand(-1, len(self.config.x_ladder), *x_new.shape[1:])
            starts = torch.cat([fresh, x_old.to(x_new)]).transpose(0, 1)  # (R, N, ...), as run_tempered takes
            cold, acceptance = self._jump(starts[0], spec, data)
            starts = torch.cat([cold.unsqueeze(0), starts[1:]])
            ends = samplers.run_tempered(self.energy_potential(), starts, spec)[0].transpose(0, 1)
            x = ends[:, 0]
        else:
            starts, acceptance = self._jump(torch.cat([fresh, x_old.to(x_new)]), spec, data)
            x = ends = self.run_chain(self.energy_potential(), starts, spec)[0]
        new_slots = torch.randint(self.chains.capacity, (len(x_new) - n_old,))
        self.chains.store(torch.cat([new_slots, old_slots]), ends)
        return x, acceptance

    def _jump(self, x: Tensor, spec, data: Tensor) -> tuple[Tensor, Optional[float]]:
        """x_jumps independence jumps of the states ``x`` with proposals around ``data`` (none: ``x`` as it is)."""
        if self.config.x_jumps == 0:
            return x, None
        x, acceptance = samplers.run_jumps(self.energy_potential(), x, spec, data, self.config.x_jump_bandwidth,
                                           self.config.x_jumps)
        return x, float(acceptance.mean())

    @torch.no_grad()
    def _buffer_fill(self, k: int) -> Tensor:
        return self.generator_sample(k)

    @torch.no_grad()
    def _replica_fill(self, k: int) -> Tensor:
        x = self.generator_sample(k)
        return x.unsqueeze(1).expand(-1, len(self.config.x_ladder), *x.shape[1:])

    def _buffered_states(self, n: int, generator: Optional[torch.Generator]) -> Tensor:
        """``n`` T-rung states of the buffer, drawn with replacement."""
        fill = self._replica_fill if self.config.replay_replicas else self._buffer_fill
        start, _ = self.chains.draw(n, fill, generator)
        return start[:, 0] if self.config.replay_replicas else start

    # -- evaluation -----------------------------------------------------------------------------------------
    # log_prob_unnormalized (the base class's): -U(x)/T, U = E (+ the Gaussian reference when x_ref_sigma is set),
    # T the x-chain temperature, whether or not use_temp is set. The negatives come from a chain that targets
    # exp(-E/T), and the contrastive loss stops moving when they look like the data, so exp(-E/T) is the density
    # fitted to the data; use_temp makes the loss its exact maximum-likelihood gradient, and without it the
    # gradient is the same up to the factor T, which Adam normalises away.

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` samples of the EBM: the test_x_* chain from G(z), z ~ N(0, I), or with ``test_x_start: buffer``
        from ``n`` end states of the persistent chains drawn with replacement (the buffer itself is left as it is;
        before the first E step there is none, and the chain starts from G(z))."""
        if self.config.test_x_start == "generator" or self.chains is None or self.chains.states is None:
            return super().sample(n, generator)
        start = self._buffered_states(n, generator)
        x, _ = self.run_chain(self.energy_potential(), start.to(self.device), self.langevin("x", test=True),
                              generator=generator)
        return x

    def reconstruct(self, x: Tensor) -> Tensor:
        """G(z_t): z_t from the latent chain started at a sample of q(z|x)."""
        x = x.to(self.device)
        with torch.no_grad():
            mu, logvar = self.encoder(x)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        z_t, _ = self.run_chain(self.posterior, z, self.langevin("z", test=True), data=(x,))
        with torch.no_grad():
            return self.generator(z_t)

"""Dual-MCMC teaching (Cui & Han, NeurIPS 2023): EBM + generator + inference model, taught by two MCMC chains.

One iteration, in the order of the reference code (methods.md §2.2), G -> I -> E:

    z0 ~ N(0, I);  x0 = G(z0)                       generator proposals (graph kept for errSample)
    x_t = LangevinX_E(x0)                           EBM-revised samples  (data-space chain, temperature T)
    z   = mu + exp(logvar/2) eps, (mu, logvar) = I(x)
    z_t = LangevinZ_G(z | x)                        MCMC-revised posterior codes of the data
    G:  errG = g_factor * sum(G(z_t) - x)^2 / B  +  s_factor * sum(x0 - x_t)^2 / B
    I:  errI = g_factor * mean NLL(z_t | I(x))   +  i_factor * mean NLL(z0 | I(x_t))
    E:  errE = mean E(x) - mean E(LangevinX_E(G_new(z0)))    (a fresh chain from the UPDATED G, same z0)
        loss_E = errE / T  (use_temp),  T = (x_noise_std / x_step_size)**2
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .. import samplers
from ..ops import temperature
from .base import Method, SpeedOptions, adam, diag_normal_nll, exponential_schedulers, randn, squared_error_per_batch


@dataclass
class DualMCMCConfig(SpeedOptions):
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
    the training values.
    """

    latent_dim: int = 8
    sigma: float = 0.3
    prior_sigma: float = 1.0
    # data-space (EBM) chain
    x_steps: int = 30
    x_step_size: float = 0.05
    x_noise_std: float = 1e-3
    x_clamp: Optional[tuple] = None
    x_mala: bool = False
    x_ref_sigma: Optional[float] = None  # None: the reference (no Gaussian); else the EBM is E(x) + ||x||^2/(2 s^2)
    # latent (generator posterior) chain
    z_steps: int = 10
    z_step_size: float = 0.1
    z_noise_std: float = 0.1
    z_likelihood: str = "reference"
    z_mala: bool = False
    # test-time sampling (None: as in training)
    test_x_steps: Optional[int] = None
    test_x_step_size: Optional[float] = None
    test_x_noise_std: Optional[float] = None
    # loss weights
    g_factor: float = 1.0
    s_factor: float = 50.0
    i_factor: float = 0.1
    # optimisation
    lr_ebm: float = 1e-4
    lr_generator: float = 3e-4
    lr_encoder: float = 1e-4
    betas: tuple = (0.0, 0.9)
    weight_decay_ebm: float = 0.0
    weight_decay_generator: float = 5e-4
    weight_decay_encoder: float = 5e-4
    lr_decay: float = 0.998
    use_temp: bool = True
    fine_tune: bool = True
    energy_l2: float = 0.0  # 0: the reference; else + energy_l2 * mean(E(data)^2 + E(samples)^2) in the EBM loss
    # networks
    ebm_hidden: int = 256
    ebm_layers: int = 3
    ebm_activation: str = "silu"
    generator_hidden: int = 256
    generator_layers: int = 3
    encoder_hidden: int = 256
    encoder_layers: int = 3
    # chains draw their noise with torch.randn (bit-parity with eager reference loops) instead of the op's stream
    explicit_noise: bool = False
    chain_diagnostics: bool = True
    arch: str = "auto"  # nets: "auto" (MLP for vectors, conv for images), "mlp", "conv", "cifar10", "celeba64"


class DualMCMC(Method):
    name = "dual_mcmc"
    Config = DualMCMCConfig
    CHAIN_STEPS = (("x_step_size", "x_noise_std"), ("test_x_step_size", "test_x_noise_std"))

    def __init__(self, config: DualMCMCConfig, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        c = config
        if c.x_ref_sigma is not None and not c.x_ref_sigma > 0:
            raise ValueError(f"x_ref_sigma must be > 0 (or None for no reference Gaussian), got {c.x_ref_sigma!r}")
        if c.z_likelihood not in samplers.LIKELIHOODS:
            raise ValueError(f"z_likelihood must be one of {samplers.LIKELIHOODS}, got {c.z_likelihood!r}")
        self.ebm, self.generator, self.encoder = self.make_ebm(), self.make_generator(), self.make_encoder()
        self.optimizers = {
            "ebm": adam(self.ebm.parameters(), c.lr_ebm, c.betas, c.weight_decay_ebm),
            "generator": adam(self.generator.parameters(), c.lr_generator, c.betas, c.weight_decay_generator),
            "encoder": adam(self.encoder.parameters(), c.lr_encoder, c.betas, c.weight_decay_encoder),
        }
        self.schedulers = exponential_schedulers(self.optimizers, c.lr_decay)

    @property
    def ref_precision(self) -> float:
        """Precision of the optional Gaussian reference in the EBM's density (0 without one)."""
        s = self.config.x_ref_sigma
        return 0.0 if s is None else 1.0 / s**2

    @property
    def temperature(self) -> float:
        """T = (x_noise_std / x_step_size)**2: the x-chain targets exp(-E/T)."""
        return temperature(self.config.x_step_size, self.config.x_noise_std)

    # -- the two chains -------------------------------------------------------------------------------------
    def revise_x(self, x0: Tensor, steps=None, step_size=None, noise_std=None, generator=None, diagnostics=False):
        """EBM Langevin in data space from ``x0`` (detached result)."""
        c = self.config
        return samplers.langevin_data_chain(
            self.chain_net(self.ebm), x0, c.x_steps if steps is None else steps,
            c.x_step_size if step_size is None else step_size, c.x_noise_std if noise_std is None else noise_std,
            prior_precision=self.ref_precision, clamp=c.x_clamp, mala=c.x_mala, generator=generator,
            explicit_noise=c.explicit_noise, diagnostics=diagnostics, cuda_graph=self.chain_cuda_graph(x0))

    def revise_z(self, z0: Tensor, x: Tensor, generator=None, diagnostics=False):
        """Generator-posterior Langevin for the codes of ``x`` from ``z0`` (detached result)."""
        c = self.config
        return samplers.langevin_latent_chain(
            self.chain_net(self.generator), z0, x, c.z_steps, c.z_step_size, c.z_noise_std, sigma=c.sigma,
            prior_sigma=c.prior_sigma, likelihood=c.z_likelihood, mala=c.z_mala, generator=generator,
            explicit_noise=c.explicit_noise, diagnostics=diagnostics, cuda_graph=self.chain_cuda_graph(z0))

    # -- one iteration --------------------------------------------------------------------------------------
    def train_step(self, x: Tensor) -> dict[str, float]:
        c = self.config
        G, I, E = self.generator, self.encoder, self.ebm
        opt = self.optimizers
        diagnose = c.chain_diagnostics
        x = x.to(self.device)
        batch = x.shape[0]

        # ---- G step: MLE on EBM-revised samples (known z0) and on data with MCMC-revised posterior codes ----
        z0 = randn(batch, c.latent_dim, x)
        x0 = G(z0)  # keeps its graph: errSample teaches G through x0
        x_t, diag_x = self.revise_x(x0, diagnostics=diagnose)
        opt["generator"].zero_grad()
        mu, logvar = I(x)  # logvar is a log-VARIANCE
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        z_t, diag_z = self.revise_z(z, x, diagnostics=diagnose)
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
        opt["ebm"].zero_grad()
        energy_data = E(x)
        e_data = energy_data.mean()
        with torch.no_grad():
            x_neg = G(z0)
        if c.fine_tune:
            x_neg, _ = self.revise_x(x_neg)
        energy_syn = E(x_neg)
        e_syn = energy_syn.mean()
        err_e = e_data - e_syn
        loss_e = err_e / self.temperature if c.use_temp else err_e
        if c.energy_l2:
            loss_e = loss_e + c.energy_l2 * (energy_data.square().mean() + energy_syn.square().mean())
        loss_e.backward()
        opt["ebm"].step()

        out = {
            "energy_gap": float(err_e.detach()),
            "loss_ebm": float(loss_e.detach()),
            "energy_data": float(e_data.detach()),
            "energy_samples": float(e_syn.detach()),
            "loss_generator": float(err_g.detach()),
            "err_recon": float(err_recon.detach()),
            "err_sample": float(err_sample.detach()),
            "loss_encoder": float(err_i.detach()),
            "neg_log_q_z": float(neg_log_q_z.detach()),
            "err_latent": float(err_latent.detach()),
        }
        out.update(diag_x.summary("x_chain/"))
        out.update(diag_z.summary("z_chain/"))
        return out

    # -- evaluation -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def log_prob_unnormalized(self, x: Tensor) -> Tensor:
        """-U(x)/T: U = E (+ the Gaussian reference when x_ref_sigma is set), T the x-chain temperature,
        whether or not use_temp is set.

        The negatives come from a chain that targets exp(-E/T), and the contrastive loss stops moving when
        those negatives look like the data, so exp(-E/T) is the density fitted to the data. use_temp (divide
        the loss by T) makes the loss the exact maximum-likelihood gradient of that density; without it the
        gradient is the same up to the factor T, which Adam normalises away.
        """
        x = x.to(self.device)
        energy = self.ebm(x)
        if self.ref_precision:
            energy = energy + 0.5 * self.ref_precision * x.flatten(1).square().sum(dim=1)
        return -energy / self.temperature

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """G(z), z ~ N(0, I), revised by the EBM chain with the test_x_* settings (training ones when None)."""
        c = self.config
        x0 = self.generator_sample(n, generator)
        x, _ = self.revise_x(x0, c.test_x_steps, c.test_x_step_size, c.test_x_noise_std, generator=generator)
        return x

    @torch.no_grad()
    def generator_sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        return self.generator(randn(n, self.config.latent_dim, next(self.generator.parameters()), generator))

    def reconstruct(self, x: Tensor) -> Tensor:
        """G(z_t): z_t from the latent chain started at a sample of q(z|x)."""
        x = x.to(self.device)
        with torch.no_grad():
            mu, logvar = self.encoder(x)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        z_t, _ = self.revise_z(z, x)
        with torch.no_grad():
            return self.generator(z_t)

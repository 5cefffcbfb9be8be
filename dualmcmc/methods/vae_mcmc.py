"""Variational MCMC teaching / CoopVAEBM (Xie, Zheng & Li, AAAI 2021): a VAE as the amortized sampler of an EBM.

One iteration, in the order of the reference code (jianwen-xie/CoopVAEBM model.py, docs/methods.md §3.2),
Langevin -> EBM -> VAE:

    z ~ N(0, I) (n_chains of them);  x0 = G(z)
    x = Langevin on U(x) = E(x) + ||x||^2 / (2 ref_sigma^2) from x0       (the reference runs it WITHOUT noise)
    EBM: loss = mean E(data) - mean E(x)                                  (= mean f(x) - mean f(obs), E = -f)
    VAE: (mu, logvar) = I(x);  z_hat = mu + exp(logvar / 2) eps
         loss = mean_chains [ sum (G(z_hat) - x)^2 + w_lat * KL(q(z|x) || N(0, I)) ]
                                                                          (the VAE's data are the revised x only)

The model density is exp(-U/T) with the Gaussian reference included: T = (x_noise_std / x_step_size)**2 when the
chain has noise, and T = 1 for the reference's noiseless chain, a gradient descent on U whose loss is the
maximum-likelihood gradient of exp(-U).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .base import Method, adam, build_nets_for, exponential_schedulers, kl_to_standard_normal, randn
from .settings import CommonSettings, EncoderNetSettings, EnergyNetSettings, GeneratorNetSettings, setting


@dataclass
class VAEMCMCConfig(EncoderNetSettings, GeneratorNetSettings, EnergyNetSettings, CommonSettings):
    """Hyper-parameters of CoopVAEBM. Defaults are for vector data such as the 2-D toys.

    Same as the reference (CIFAR-10 flags of jianwen-xie/CoopVAEBM main.py): x_steps 15, a noiseless chain
    (x_noise_std 0), w_lat 2 (KL weight; the reconstruction is a plain sum of squares), Adam beta1 0.5,
    order Langevin -> EBM -> VAE, the VAE trained on the revised samples only, learning rates
    decayed by 0.98 every 20 epochs continuously (lr_decay = 0.98**(1/20) per epoch), no latent Langevin.

    Different from the reference, and why (as for CoopNets, whose chain this is):
      * ref_sigma 2.0 (reference 0.016) and x_step_size 0.05 (reference 0.002): the reference values are tuned
        to images in [-1, 1] with thousands of pixels; on 2-D toys spread over [-4, 4] a reference Gaussian of
        std 0.016 would pin every chain to the origin.
      * lr_ebm 1e-3 (reference 0.009, which oscillates with the MLP energy) and lr_vae 1e-3 (reference 2e-4):
        a few thousand iterations instead of thousands of epochs of CIFAR-10.
      * n_chains None = one chain per data point (the reference runs 900 chains against batches of 250).
      * latent_dim 8 (reference 100); MLPs (``arch`` auto) for vectors, conv nets for images.
    Switch: x_noise_std > 0 adds the Langevin noise the reference comments out (T = (x_noise_std/x_step_size)^2).
    """

    latent_dim: int = setting(8, check="count")
    ref_sigma: float = setting(2.0, chain="x", role="prior_sigma")
    x_steps: int = setting(15, chain="x", role="steps")
    x_step_size: float = setting(0.05, chain="x", role="step_size")
    x_noise_std: float = setting(0.0, chain="x", role="noise_std")  # 0: the reference's noiseless chain
    x_clamp: Optional[tuple] = setting(None, chain="x", role="clamp")
    x_mala: bool = setting(False, chain="x", role="mala")
    x_ladder: Optional[tuple] = setting(None, chain="x", role="ladder")  # replica exchange rungs [1, ...]
    test_x_steps: Optional[int] = setting(None, chain="x", role="test_steps")
    n_chains: Optional[int] = setting(None, check="count")  # None: one chain per data point
    w_lat: float = setting(2.0, check="non_negative")
    lr_ebm: float = setting(1e-3, check="positive")
    lr_vae: float = setting(1e-3, check="positive")
    betas: tuple = setting((0.5, 0.999))
    weight_decay_ebm: float = setting(0.0, check="non_negative")
    weight_decay_vae: float = setting(0.0, check="non_negative")
    lr_decay: float = setting(0.98 ** (1 / 20), check="positive")


class VAEMCMC(Method):
    name = "vae_mcmc"
    Config = VAEMCMCConfig

    def __init__(self, config: VAEMCMCConfig, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        c = config
        nets = build_nets_for(c, self.data_shape)
        self.ebm, self.generator, self.encoder = nets["ebm"], nets["generator"], nets["encoder"]
        vae_params = [*self.encoder.parameters(), *self.generator.parameters()]
        self.optimizers = {
            "ebm": adam(self.ebm.parameters(), c.lr_ebm, c.betas, c.weight_decay_ebm),
            "vae": adam(vae_params, c.lr_vae, c.betas, c.weight_decay_vae),
        }
        self.schedulers = exponential_schedulers(self.optimizers, c.lr_decay)
        self.average_weights()  # an EMA of the nets for sampling and evaluation, when config.ema is set

    @property
    def temperature(self) -> float:
        """T of the density exp(-U/T) the EBM defines: (b/a)^2 for a noisy chain, 1 for the noiseless one."""
        return super().temperature if self.config.x_noise_std > 0 else 1.0

    def train_step(self, x: Tensor) -> dict[str, float]:
        c = self.config
        x = x.to(self.device)
        n_chains = c.n_chains or x.shape[0]

        # ---- Langevin revision of the VAE's samples ----
        with torch.no_grad():
            x0 = self.generator(randn(n_chains, c.latent_dim, x))
        x_syn, diag_x = self.run_chain(self.energy_potential(), x0, self.langevin("x"))

        # ---- EBM: lower the energy of data, raise it on the revised samples ----
        out = self.update_ebm(self.ebm(x), self.ebm(x_syn))

        # ---- VAE: an ordinary VAE whose training data are the revised samples (it never sees the data) ----
        self.optimizers["vae"].zero_grad()
        mu, logvar = self.encoder(x_syn)
        z_hat = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        recon = (self.generator(z_hat) - x_syn).square().reshape(n_chains, -1).sum(dim=1)
        kl = kl_to_standard_normal(mu, logvar)
        loss_vae = (recon + c.w_lat * kl).mean()
        loss_vae.backward()
        self.optimizers["vae"].step()

        out.update({
            "loss_vae": float(loss_vae.detach()),
            "vae_recon": float(recon.detach().mean()),
            "vae_kl": float(kl.detach().mean()),
            "revision_distance": float((x_syn - x0).reshape(n_chains, -1).norm(dim=1).mean()),
        })
        out.update(diag_x.summary("x_chain/"))
        return out

    # log_prob_unnormalized (the base class's): -(E(x) + ||x||^2/(2 ref_sigma^2)) / T (T = 1 for the noiseless
    # reference chain); sample: G(z), z ~ N(0, I), revised by the EBM chain (test_x_steps, else x_steps).

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """G(mu(x)): the VAE's reconstruction through the posterior mean."""
        mu, _ = self.encoder(x.to(self.device))
        return self.generator(mu)

"""CoopNets (Xie et al., AAAI 2018): a generator and an EBM ("descriptor") taught cooperatively.

One iteration, in the reference order (methods.md §5), Langevin -> EBM -> G:

    z ~ N(0, I);  x0 = G(z)
    x = Langevin on U(x) = E(x) + ||x||^2 / (2 ref_sigma^2), noise on   (E = -f, our energy convention)
    EBM: loss = mean E(data) - mean E(x)                                 (= mean f(x) - mean f(obs))
    G:   loss = mean_batch sum (x - G(z))^2 / (2 gen_sigma^2)             (the KNOWN z; G never sees data)

The model density is exp(-U/T) with the Gaussian reference included, T = (x_noise_std/x_step_size)**2 (1 by
default, as in the reference where the noise equals the step).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .. import samplers
from ..ops import temperature
from .base import Method, SpeedOptions, adam, exponential_schedulers, randn


@dataclass
class CoopNetsConfig(SpeedOptions):
    """Hyper-parameters of CoopNets. Defaults are for vector data such as the 2-D toys.

    Same as the reference (jianwen-xie/CoopNets): x_steps 15, noise on with noise_std = step_size (T = 1),
    gen_sigma 0.3, Adam beta1 0.5, generator lr 1e-4, order Langevin -> EBM -> G, no latent revision.

    Different from the reference, and why:
      * ref_sigma 2.0 (reference 0.016): 0.016 is tuned for images in [-1, 1] with thousands of pixels; on
        2-D toys spread over [-4, 4] it would put a prior precision of ~3900 against the data, so the EBM would
        spend its capacity undoing it. 2.0 is a weak reference Gaussian of the data's scale.
      * x_step_size = x_noise_std 0.05 (reference 0.002): the reference step is for the descriptor's scale on
        images; 0.05 is half the std of the narrowest toy modes.
      * lr_ebm 1e-3 (reference 0.007): for the MLP energy 0.007 oscillates.
      * latent_dim 8 (reference 100); MLP widths instead of the reference conv nets.
      * one chain per data point of the batch (the reference runs M = 144 chains against batches of 100).
    """

    latent_dim: int = 8
    ref_sigma: float = 2.0
    gen_sigma: float = 0.3
    x_steps: int = 15
    x_step_size: float = 0.05
    x_noise_std: float = 0.05
    x_clamp: Optional[tuple] = None
    x_mala: bool = False
    test_x_steps: Optional[int] = None
    lr_ebm: float = 1e-3
    lr_generator: float = 1e-4
    betas: tuple = (0.5, 0.999)
    weight_decay_ebm: float = 0.0
    weight_decay_generator: float = 0.0
    lr_decay: float = 1.0
    ebm_hidden: int = 256
    ebm_layers: int = 3
    ebm_activation: str = "silu"
    generator_hidden: int = 256
    generator_layers: int = 3
    explicit_noise: bool = False
    chain_diagnostics: bool = True
    arch: str = "auto"  # nets: "auto" (MLP for vectors, conv for images), "mlp", "conv", "cifar10", "celeba64"


class CoopNets(Method):
    name = "coopnets"
    Config = CoopNetsConfig

    def __init__(self, config: CoopNetsConfig, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        c = config
        self.ebm, self.generator = self.make_ebm(), self.make_generator()
        self.optimizers = {
            "ebm": adam(self.ebm.parameters(), c.lr_ebm, c.betas, c.weight_decay_ebm),
            "generator": adam(self.generator.parameters(), c.lr_generator, c.betas, c.weight_decay_generator),
        }
        self.schedulers = exponential_schedulers(self.optimizers, c.lr_decay)

    @property
    def temperature(self) -> float:
        return temperature(self.config.x_step_size, self.config.x_noise_std)

    def revise_x(self, x0: Tensor, steps=None, generator=None, diagnostics=False):
        """Langevin on E(x) + ||x||^2/(2 ref_sigma^2) from ``x0`` (detached result)."""
        c = self.config
        return samplers.langevin_data_chain(
            self.chain_net(self.ebm), x0, c.x_steps if steps is None else steps, c.x_step_size, c.x_noise_std,
            prior_precision=1.0 / c.ref_sigma**2, clamp=c.x_clamp, mala=c.x_mala, generator=generator,
            explicit_noise=c.explicit_noise, diagnostics=diagnostics, cuda_graph=self.chain_cuda_graph(x0))

    def train_step(self, x: Tensor) -> dict[str, float]:
        c = self.config
        x = x.to(self.device)
        batch = x.shape[0]

        # ---- Langevin revision of the generator's proposals ----
        z = randn(batch, c.latent_dim, x)
        with torch.no_grad():
            x0 = self.generator(z)
        x_syn, diag_x = self.revise_x(x0, diagnostics=c.chain_diagnostics)

        # ---- EBM: lower the energy of data, raise it on the revised samples ----
        self.optimizers["ebm"].zero_grad()
        e_data = self.ebm(x).mean()
        e_syn = self.ebm(x_syn).mean()
        loss_e = e_data - e_syn
        loss_e.backward()
        self.optimizers["ebm"].step()

        # ---- G: regress the revised samples on their known codes ----
        self.optimizers["generator"].zero_grad()
        loss_g = (x_syn - self.generator(z)).square().reshape(batch, -1).sum(1).mean() / (2 * c.gen_sigma**2)
        loss_g.backward()
        self.optimizers["generator"].step()

        out = {
            "energy_gap": float(loss_e.detach()),
            "loss_ebm": float(loss_e.detach()),
            "energy_data": float(e_data.detach()),
            "energy_samples": float(e_syn.detach()),
            "loss_generator": float(loss_g.detach()),
        }
        out.update(diag_x.summary("x_chain/"))
        return out

    @torch.no_grad()
    def log_prob_unnormalized(self, x: Tensor) -> Tensor:
        """-(E(x) + ||x||^2/(2 ref_sigma^2)) / T: the density the Langevin chain targets and the EBM loss fits."""
        x = x.to(self.device)
        reference = x.reshape(x.shape[0], -1).square().sum(1) / (2 * self.config.ref_sigma**2)
        return -(self.ebm(x) + reference) / self.temperature

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        x, _ = self.revise_x(self.generator_sample(n, generator), self.config.test_x_steps, generator=generator)
        return x

    @torch.no_grad()
    def generator_sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        return self.generator(randn(n, self.config.latent_dim, next(self.generator.parameters()), generator))

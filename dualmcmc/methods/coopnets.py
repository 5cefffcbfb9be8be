"""CoopNets (Xie et al., AAAI 2018): a generator and an EBM ("descriptor") taught cooperatively.

One iteration, in the reference order (docs/methods.md §5), Langevin -> EBM -> G:

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

from .base import Method, adam, build_nets_for, exponential_schedulers, randn
from .settings import CommonSettings, EnergyNetSettings, GeneratorNetSettings, setting


@dataclass
class CoopNetsConfig(GeneratorNetSettings, EnergyNetSettings, CommonSettings):
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

    latent_dim: int = setting(8, check="count")
    ref_sigma: float = setting(2.0, chain="x", role="prior_sigma")
    gen_sigma: float = setting(0.3, check="positive")
    x_steps: int = setting(15, chain="x", role="steps")
    x_step_size: float = setting(0.05, chain="x", role="step_size")
    x_noise_std: float = setting(0.05, chain="x", role="noise_std")
    x_clamp: Optional[tuple] = setting(None, chain="x", role="clamp")
    x_mala: bool = setting(False, chain="x", role="mala")
    x_ladder: Optional[tuple] = setting(None, chain="x", role="ladder")  # replica exchange rungs [1, ...]
    test_x_steps: Optional[int] = setting(None, chain="x", role="test_steps")
    lr_ebm: float = setting(1e-3, check="positive")
    lr_generator: float = setting(1e-4, check="positive")
    betas: tuple = setting((0.5, 0.999))
    weight_decay_ebm: float = setting(0.0, check="non_negative")
    weight_decay_generator: float = setting(0.0, check="non_negative")
    lr_decay: float = setting(1.0, check="positive")


class CoopNets(Method):
    name = "coopnets"
    Config = CoopNetsConfig

    def __init__(self, config: CoopNetsConfig, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        c = config
        nets = build_nets_for(c, self.data_shape)
        self.ebm, self.generator = nets["ebm"], nets["generator"]
        self.optimizers = {
            "ebm": adam(self.ebm.parameters(), c.lr_ebm, c.betas, c.weight_decay_ebm),
            "generator": adam(self.generator.parameters(), c.lr_generator, c.betas, c.weight_decay_generator),
        }
        self.schedulers = exponential_schedulers(self.optimizers, c.lr_decay)
        self.average_weights()  # an EMA of the nets for sampling and evaluation, when config.ema is set

    def train_step(self, x: Tensor) -> dict[str, float]:
        c = self.config
        x = x.to(self.device)
        batch = x.shape[0]

        # ---- Langevin revision of the generator's proposals ----
        z = randn(batch, c.latent_dim, x)
        with torch.no_grad():
            x0 = self.generator(z)
        x_syn, diag_x = self.run_chain(self.energy_potential(), x0, self.langevin("x"))

        # ---- EBM: lower the energy of data, raise it on the revised samples ----
        out = self.update_ebm(self.ebm(x), self.ebm(x_syn))

        # ---- G: regress the revised samples on their known codes ----
        self.optimizers["generator"].zero_grad()
        loss_g = (x_syn - self.generator(z)).square().reshape(batch, -1).sum(1).mean() / (2 * c.gen_sigma**2)
        loss_g.backward()
        self.optimizers["generator"].step()

        out["loss_generator"] = float(loss_g.detach())
        out.update(diag_x.summary("x_chain/"))
        return out

    # log_prob_unnormalized (the base class's): -(E(x) + ||x||^2/(2 ref_sigma^2)) / T, the density the Langevin chain
    # targets and the EBM loss fits; sample: G(z) revised by the EBM chain (test_x_steps, else x_steps).

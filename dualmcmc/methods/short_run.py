"""Short-run Langevin EBM (Nijkamp et al., NeurIPS 2019): an EBM alone, negatives from noise-initialised chains.

One iteration:

    x0 ~ U[data_low, data_high] (the range of the data seen so far) or N(0, init_std^2 I)
         (or, with persistent=True, states from a buffer with a fraction re-initialised from that noise)
    x  = K Langevin steps on E, drift step a, noise b (target exp(-E/T), T = (b/a)^2)
    EBM: loss = (mean E(data) - mean E(x)) / T  [+ energy_l2 * mean(E(data)^2 + E(x)^2)]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .. import samplers
from ..kernels import random_tensor
from .base import Method, adam, build_nets_for
from .settings import CommonSettings, EnergyNetSettings, setting


@dataclass
class ShortRunConfig(EnergyNetSettings, CommonSettings):
    """Hyper-parameters of the short-run EBM baseline, for vector data such as the 2-D toys.

    The reference trains on images with 100 steps from U[-1, 1]; here x_steps 60 with a = b = 0.05 (T = 1), which
    on the 2-D toys travels far enough from uniform noise to the modes while keeping the drift stable for modes of
    std 0.1. Adam lr 1e-3, betas (0.9, 0.999); no persistent chains unless asked.
    """

    init: str = setting("uniform", choices=("uniform", "normal"))  # "uniform" over the data range seen so far |
                                                                    #   "normal" N(0, init_std^2 I)
    init_std: float = setting(1.0, check="positive")
    x_steps: int = setting(60, chain="x", role="steps")
    x_step_size: float = setting(0.05, chain="x", role="step_size")
    x_noise_std: float = setting(0.05, chain="x", role="noise_std")
    x_clamp: Optional[tuple] = setting(None, chain="x", role="clamp")
    x_mala: bool = setting(False, chain="x", role="mala")
    x_ladder: Optional[tuple] = setting(None, chain="x", role="ladder")  # replica exchange rungs [1, ...]
    test_x_steps: Optional[int] = setting(None, chain="x", role="test_steps")
    use_temp: bool = True
    energy_l2: float = setting(0.0, check="non_negative")
    persistent: bool = False
    buffer_size: int = setting(10_000, check="count")
    reinit_fraction: float = setting(0.05, check="fraction")
    lr_ebm: float = setting(1e-3, check="positive")
    betas: tuple = setting((0.9, 0.999))
    weight_decay_ebm: float = setting(0.0, check="non_negative")
    lr_decay: float = setting(1.0, check="positive")


class ShortRun(Method):
    name = "short_run"
    Config = ShortRunConfig

    def __init__(self, config: ShortRunConfig, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        c = config
        self.ebm = build_nets_for(c, self.data_shape)["ebm"]
        # Range of the data seen so far (saved with the model): the uniform init spans it.
        self.register_buffer("data_low", torch.full(self.data_shape, float("inf")))
        self.register_buffer("data_high", torch.full(self.data_shape, float("-inf")))
        self.optimizers = {"ebm": adam(self.ebm.parameters(), c.lr_ebm, c.betas, c.weight_decay_ebm)}
        self.schedulers = {"ebm": torch.optim.lr_scheduler.ExponentialLR(self.optimizers["ebm"], gamma=c.lr_decay)}
        self.chains = samplers.PersistentChains(c.buffer_size, c.reinit_fraction) if c.persistent else None
        self.average_weights()  # an EMA of the nets for sampling and evaluation, when config.ema is set

    def noise_init(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` chain starts on the model's device: uniform over the data range seen so far ([-1, 1] before any
        data), or normal; drawn with ``generator`` on whatever device it lives."""
        shape = (n, *self.data_shape)
        if self.config.init == "normal":
            return self.config.init_std * random_tensor("normal", shape, device=self.device, generator=generator)
        u = random_tensor("uniform", shape, device=self.device, generator=generator)
        seen = torch.isfinite(self.data_low).all()
        low = self.data_low if seen else torch.full_like(self.data_low, -1.0)
        high = self.data_high if seen else torch.full_like(self.data_high, 1.0)
        return low + (high - low) * u

    def train_step(self, x: Tensor) -> dict[str, float]:
        c = self.config
        x = x.to(self.device)
        with torch.no_grad():
            self.data_low.copy_(torch.minimum(self.data_low, x.min(0).values))
            self.data_high.copy_(torch.maximum(self.data_high, x.max(0).values))

        # ---- negatives: short-run chains from noise (or continued from the persistent buffer) ----
        x_neg, diag_x = self.persistent_chain(self.energy_potential(), x.shape[0], self.noise_init,
                                              self.langevin("x"))

        # ---- EBM: contrastive loss, scaled to the chain's temperature ----
        out = self.update_ebm(self.ebm(x), self.ebm(x_neg), use_temp=c.use_temp, energy_l2=c.energy_l2)
        out.update(diag_x.summary("x_chain/"))
        return out

    # log_prob_unnormalized (the base class's): -E(x)/T, the density the x-chain targets (T = 1 by default).

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Fresh short-run chains from noise (test_x_steps, else x_steps): the training chains unless
        ``persistent`` is on, whose training chains continue from a buffer instead."""
        x, _ = self.run_chain(self.energy_potential(), self.noise_init(n, generator), self.langevin("x", test=True),
                              generator=generator)
        return x

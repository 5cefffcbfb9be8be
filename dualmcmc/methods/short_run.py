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
from ..ops import temperature
from .base import Method, SpeedOptions, adam


@dataclass
class ShortRunConfig(SpeedOptions):
    """Hyper-parameters of the short-run EBM baseline, for vector data such as the 2-D toys.

    The reference trains on images with 100 steps from U[-1, 1]; here x_steps 60 with a = b = 0.05 (T = 1), which
    on the 2-D toys travels far enough from uniform noise to the modes while keeping the drift stable for modes of
    std 0.1. Adam lr 1e-3, betas (0.9, 0.999); no persistent chains unless asked.
    """

    init: str = "uniform"  # "uniform" over the data range seen so far | "normal" N(0, init_std^2 I)
    init_std: float = 1.0
    x_steps: int = 60
    x_step_size: float = 0.05
    x_noise_std: float = 0.05
    x_clamp: Optional[tuple] = None
    x_mala: bool = False
    test_x_steps: Optional[int] = None
    use_temp: bool = True
    energy_l2: float = 0.0
    persistent: bool = False
    buffer_size: int = 10_000
    reinit_fraction: float = 0.05
    lr_ebm: float = 1e-3
    betas: tuple = (0.9, 0.999)
    weight_decay_ebm: float = 0.0
    lr_decay: float = 1.0
    ebm_hidden: int = 256
    ebm_layers: int = 3
    ebm_activation: str = "silu"
    explicit_noise: bool = False
    chain_diagnostics: bool = True
    arch: str = "auto"  # energy net: "auto" (MLP for vectors, conv for images), "mlp", "conv", "cifar10", "celeba64"


class ShortRun(Method):
    name = "short_run"
    Config = ShortRunConfig

    def __init__(self, config: ShortRunConfig, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        c = config
        if c.init not in ("uniform", "normal"):
            raise ValueError(f"short_run: init must be 'uniform' or 'normal', got {c.init!r}")
        self.ebm = self.make_ebm()
        # Range of the data seen so far (saved with the model): the uniform init spans it.
        self.register_buffer("data_low", torch.full(self.data_shape, float("inf")))
        self.register_buffer("data_high", torch.full(self.data_shape, float("-inf")))
        self.optimizers = {"ebm": adam(self.ebm.parameters(), c.lr_ebm, c.betas, c.weight_decay_ebm)}
        self.schedulers = {"ebm": torch.optim.lr_scheduler.ExponentialLR(self.optimizers["ebm"], gamma=c.lr_decay)}
        self.chains = samplers.PersistentChains(c.buffer_size, c.reinit_fraction) if c.persistent else None

    @property
    def temperature(self) -> float:
        return temperature(self.config.x_step_size, self.config.x_noise_std)

    def noise_init(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` chain starts: uniform over the data range seen so far ([-1, 1] before any data), or normal."""
        shape = (n, *self.data_shape)
        if self.config.init == "normal":
            return self.config.init_std * torch.randn(shape, generator=generator).to(self.device)
        u = torch.rand(shape, generator=generator).to(self.device)
        seen = torch.isfinite(self.data_low).all()
        low = self.data_low if seen else torch.full_like(self.data_low, -1.0)
        high = self.data_high if seen else torch.full_like(self.data_high, 1.0)
        return low + (high - low) * u

    def revise_x(self, x0: Tensor, steps=None, generator=None, diagnostics=False):
        c = self.config
        return samplers.langevin_data_chain(
            self.chain_net(self.ebm), x0, c.x_steps if steps is None else steps, c.x_step_size, c.x_noise_std,
            clamp=c.x_clamp, mala=c.x_mala, generator=generator, explicit_noise=c.explicit_noise,
            diagnostics=diagnostics, cuda_graph=self.chain_cuda_graph(x0))

    def train_step(self, x: Tensor) -> dict[str, float]:
        c = self.config
        x = x.to(self.device)
        with torch.no_grad():
            self.data_low.copy_(torch.minimum(self.data_low, x.min(0).values))
            self.data_high.copy_(torch.maximum(self.data_high, x.max(0).values))

        # ---- negatives: short-run chains from noise (or from the persistent buffer) ----
        if self.chains is not None:
            x0, slots = self.chains.draw(x.shape[0], self.noise_init)
        else:
            x0 = self.noise_init(x.shape[0])
        x_neg, diag_x = self.revise_x(x0, diagnostics=c.chain_diagnostics)
        if self.chains is not None:
            self.chains.store(slots, x_neg)

        # ---- EBM: contrastive loss, scaled to the chain's temperature ----
        self.optimizers["ebm"].zero_grad()
        e_data_all, e_neg_all = self.ebm(x), self.ebm(x_neg)
        err_e = e_data_all.mean() - e_neg_all.mean()
        loss = err_e / self.temperature if c.use_temp else err_e
        if c.energy_l2 > 0:
            loss = loss + c.energy_l2 * (e_data_all.square().mean() + e_neg_all.square().mean())
        loss.backward()
        self.optimizers["ebm"].step()

        out = {
            "energy_gap": float(err_e.detach()),
            "loss_ebm": float(loss.detach()),
            "energy_data": float(e_data_all.detach().mean()),
            "energy_samples": float(e_neg_all.detach().mean()),
        }
        out.update(diag_x.summary("x_chain/"))
        return out

    @torch.no_grad()
    def log_prob_unnormalized(self, x: Tensor) -> Tensor:
        """-E(x)/T: the density the x-chain targets (T = 1 by default)."""
        return -self.ebm(x.to(self.device)) / self.temperature

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Fresh short-run chains from noise (test_x_steps, else x_steps): the training chains unless
        ``persistent`` is on, whose training chains continue from a buffer instead."""
        x, _ = self.revise_x(self.noise_init(n, generator), self.config.test_x_steps, generator=generator)
        return x

    def extra_state(self) -> dict:
        state = super().extra_state()
        if self.chains is not None:
            state["chains"] = self.chains.state_dict()
        return state

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        if self.chains is not None and "chains" in state:
            self.chains.load_state_dict(state["chains"], device=self.device)  # checkpoints load onto the CPU

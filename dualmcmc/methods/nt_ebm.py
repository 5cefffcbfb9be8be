"""EBM on a flow backbone, MCMC in the flow's latent space (Nijkamp et al., ICLR 2022, "MCMC should mix").

The EBM is an exponential tilting of a normalizing flow x = g(z), z ~ N(0, I):

    p(x) ∝ exp(-E(x)) q_flow(x)        pulled back to z:   p(z) ∝ exp(-E(g(z)) - ||z||^2 / 2)

(the flow's Jacobians cancel), so the chains run on z, where the target is close to N(0, I) and mixes, and are
pushed forward through g. One iteration (docs/methods.md §4.2; no public code exists, so this follows the paper's
abstract and derivation):

    phase 1, the first flow_pretrain_iterations iterations (or load flow_checkpoint):
        flow: loss = -mean log q_flow(data)                                      (maximum likelihood)
    phase 2, the EBM:
        z0 = persistent chains (a few re-drawn from N(0, I));  z = Langevin on E(g(z)) + ||z||^2/2  (fused op)
        EBM:  loss = (mean E(data) - mean E(g(z))) / T + energy_l2 * mean(E(data)^2 + E(g(z))^2)
        flow (train_flow only): loss = -mean log q_flow(data) - mean E(g(z))     (the joint MLE gradient)

With a chain temperature T = (z_noise_std / z_step_size)^2 the latent target is exp(-(E(g(z)) + ||z||^2/2)/T),
whose push-forward has log-density -E(x)/T - ||g^-1(x)||^2/(2T) + log|det dg^-1/dx| (= -E(x) + log q_flow(x) at
T = 1, the default): that is ``log_prob_unnormalized``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from .. import samplers
from ..kernels import random_tensor
from ..nets.flow import ImageFlow, VectorFlow
from ..nets.spline_flow import SplineFlow
from ..ops import temperature
from ..validation import ConfigError
from .base import Method, adam, build_nets_for, exponential_schedulers
from .settings import CommonSettings, EnergyNetSettings, setting


@dataclass
class NTEBMConfig(EnergyNetSettings, CommonSettings):
    """Hyper-parameters of the flow-backbone EBM. Defaults are for vector data such as the 2-D toys.

    The paper's code is not public (docs/methods.md §4): there is no reference iteration to follow, so these are
    our choices, measured on 8gaussians (benchmarks/RESULTS.md, "nt_ebm settings"). The flow is fitted first and
    then kept fixed (the paper's set-up as far as it is known); ``train_flow`` learns it jointly. Latent chains
    run at T = 1 (a = b = z_step_size) and are persistent: short-run chains from N(0, I) barely leave the flow's
    samples in 20 steps, so the EBM pushes down on the data without its negatives following and the energies run
    away (grid KL 54 to 2900). ``energy_l2`` anchors the energy levels as in configs/toy2d.yaml, and a small
    EBM rate (1e-4) keeps the tilt a correction of the flow. ``z_mala`` Metropolis-adjusts the chain.
    ``flow: spline`` replaces the affine couplings of vectors by zuko's rational-quadratic spline couplings (an
    optional dependency), which can bend a Gaussian into rings and spirals that affine couplings only approximate
    (a plain fit's held-out NLL on rings 3.50 -> 3.12, pinwheel 3.00 -> 2.39: benchmarks/flow_fit.py).
    """

    # flow backbone
    flow: str = setting("affine", choices=("affine", "spline"))  # affine couplings (VectorFlow / ImageFlow), or
                                  #   for vectors rational-quadratic spline couplings (zuko's NSF, needs zuko)
    flow_layers: int = setting(8, check="count")  # coupling layers (VectorFlow) or flow steps (ImageFlow)
    flow_hidden: int = setting(64, check="count")
    flow_activation: str = "silu"  # VectorFlow conditioners; every nt_ebm number in RESULTS.md used silu (a plain
                                   #   VectorFlow fit of 8gaussians reaches -2.11 nats with relu, -2.57 with silu)
    flow_pretrain_iterations: int = setting(1000, check="non_negative_count")  # loop iterations spent fitting the
                                                                              #   flow before the EBM learns
    flow_checkpoint: Optional[str] = None  # a flow state_dict (.pt) or an nt_ebm run directory: skips the fit
    lr_flow: float = setting(1e-3, check="positive")
    train_flow: bool = False
    # latent chain (its Gaussian prior ||z||^2/2 is the flow's base density: NTEBM.PRIOR_PRECISION)
    z_steps: int = setting(20, chain="z", role="steps")
    z_step_size: float = setting(0.1, chain="z", role="step_size")
    z_noise_std: float = setting(0.1, chain="z", role="noise_std")
    z_mala: bool = setting(False, chain="z", role="mala")
    z_ladder: Optional[tuple] = setting(None, chain="z", role="ladder")  # replica exchange rungs [1, ...]
    test_z_steps: Optional[int] = setting(200, chain="z", role="test_steps")  # sample(): fresh chains from N(0, I);
                                       #   20 steps barely leave the flow's samples (2-D MMD 0.0107 / 0.0052 / 0.0051
                                       #   on 2spirals / checkerboard / pinwheel; 200 steps 0.0015 / 0.0035 / 0.0025;
                                       #   RESULTS.md). None: z_steps
    persistent: bool = True
    buffer_size: int = setting(10_000, check="count")
    reinit_fraction: float = setting(0.05, check="fraction")
    # EBM
    use_temp: bool = True
    energy_l2: float = setting(0.1, check="non_negative")  # + energy_l2 * mean(E(data)^2 + E(samples)^2)
    lr_ebm: float = setting(1e-4, check="positive")
    betas: tuple = setting((0.9, 0.999))
    weight_decay_ebm: float = setting(0.0, check="non_negative")
    lr_decay: float = setting(1.0, check="positive")

    def check(self, prefix: str = "") -> None:
        if self.train_flow and temperature(self.z_step_size, self.z_noise_std) != 1.0:
            raise ConfigError(f"{prefix}train_flow's joint gradient holds at T = 1: set {prefix}z_noise_std equal to "
                              f"{prefix}z_step_size")


class NTEBM(Method):
    name = "nt_ebm"
    Config = NTEBMConfig
    EBM_CHAIN = "z"
    PRIOR_PRECISION = {"z": 1.0}  # the flow's base density N(0, I) in the latent target

    def __init__(self, config: NTEBMConfig, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        c = config
        self.ebm = build_nets_for(c, self.data_shape)["ebm"]
        if c.flow == "spline":
            if len(self.data_shape) != 1:
                raise ConfigError(f"flow 'spline' is for vector data; images {self.data_shape} use the Glow-style "
                                  f"flow (flow: affine)")
            self.flow = SplineFlow(self.data_shape[0], n_layers=c.flow_layers, hidden=c.flow_hidden)
        elif len(self.data_shape) == 1:
            self.flow = VectorFlow(self.data_shape[0], n_layers=c.flow_layers, hidden=c.flow_hidden,
                                   activation=c.flow_activation)
        else:
            channels, size = self.data_shape[0], self.data_shape[1]
            self.flow = ImageFlow(channels, size, n_steps=c.flow_layers, hidden=c.flow_hidden)
        # How many flow-fitting iterations are done (a buffer, so checkpoints carry the phase).
        self.register_buffer("flow_iterations_done", torch.zeros((), dtype=torch.long))
        self.optimizers = {
            "ebm": adam(self.ebm.parameters(), c.lr_ebm, c.betas, c.weight_decay_ebm),
            "flow": adam(self.flow.parameters(), c.lr_flow, c.betas),
        }
        self.schedulers = exponential_schedulers(self.optimizers, c.lr_decay)
        self.chains = samplers.PersistentChains(c.buffer_size, c.reinit_fraction) if c.persistent else None
        self.flow_loaded = False  # flow_checkpoint read in (extra_state: a resumed run does not read it again)
        # E(g(z)): the tilt pulled back to the latent space, the chains' potential (the op adds ||z||^2/2)
        ebm, flow = self.chain_net(self.ebm), self.chain_net(self.flow)
        self.latent_potential = samplers.Potential(lambda z: ebm(flow(z)), modules=(self.ebm, self.flow))
        self.average_weights()  # an EMA of the nets for sampling and evaluation, when config.ema is set

    @property
    def flow_fitted(self) -> bool:
        return int(self.flow_iterations_done) >= self.config.flow_pretrain_iterations

    def on_epoch_end(self) -> None:
        """Per-epoch decay of the rate of the phase that is learning (the EBM's waits for the flow's fit)."""
        self.schedulers["flow" if not self.flow_fitted else "ebm"].step()
        if self.flow_fitted and self.config.train_flow:
            self.schedulers["flow"].step()

    # -- the latent chain ---------------------------------------------------------------------------------------
    def latent_energy(self, z: Tensor) -> Tensor:
        """E(g(z)) (the latent chain's potential, through the speed options)."""
        return self.latent_potential(z)

    def latent_noise(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` draws of N(0, I) in the latent space (the flow's base distribution)."""
        return random_tensor("normal", (n, *self.data_shape), device=self.device, generator=generator)

    def data_space_potential(self, x: Tensor) -> Tensor:
        """U(x) = E(x) + ||g^-1(x)||^2/2 - T log|det dg^-1/dx|: Langevin on x at temperature T with this potential
        targets the push-forward of the latent chain's target (= E(x) - log q_flow(x) + const at T = 1), the
        comparison benchmarks/mixing.py makes."""
        z, log_det = self.flow.inverse_and_log_det(x)
        return self.ebm(x) + 0.5 * z.reshape(z.shape[0], -1).square().sum(1) - self.temperature * log_det

    # -- one iteration ------------------------------------------------------------------------------------------
    def train_step(self, x: Tensor) -> dict[str, float]:
        x = x.to(self.device)
        if self.config.flow_checkpoint and not self.flow_loaded:
            self.load_flow(self.config.flow_checkpoint)
        if not self.flow_fitted:
            return self.flow_step(x)
        return self.ebm_step(x)

    def flow_step(self, x: Tensor) -> dict[str, float]:
        """Phase 1: the flow's maximum-likelihood step."""
        self.optimizers["flow"].zero_grad()
        loss = -self.flow.log_prob(x).mean()
        loss.backward()
        self.optimizers["flow"].step()
        self.flow_iterations_done += 1
        return {"energy_gap": 0.0, "flow_nll": float(loss.detach())}

    def ebm_step(self, x: Tensor) -> dict[str, float]:
        """Phase 2: latent chains (persistent by default, else from N(0, I)), pushed through the flow, are the
        EBM's negatives."""
        c = self.config
        z, diag_z = self.persistent_chain(self.latent_potential, x.shape[0], self.latent_noise, self.langevin("z"))
        with torch.no_grad():
            x_neg = self.flow(z)

        out = self.update_ebm(self.ebm(x), self.ebm(x_neg), use_temp=c.use_temp, energy_l2=c.energy_l2)
        if c.train_flow:  # d/d(flow) log p(data) = d log q(data) + E_p[d E(g(z))]
            self.optimizers["flow"].zero_grad()
            nll = -self.flow.log_prob(x).mean()
            loss_flow = nll - self.ebm(self.flow(z)).mean()
            loss_flow.backward()
            self.optimizers["flow"].step()
            out["flow_nll"] = float(nll.detach())
        out.update(diag_z.summary("z_chain/"))
        return out

    def load_flow(self, source: "str | Path") -> None:
        """Load a fitted flow: a .pt holding the flow's state_dict, or an nt_ebm run directory."""
        path = Path(source)
        if path.is_dir():
            path = path / "checkpoint.pt"
        if not path.is_file():
            raise FileNotFoundError(f"flow_checkpoint {str(source)!r}: no such file (give a flow state_dict .pt "
                                    f"or an nt_ebm run directory holding checkpoint.pt)")
        state = torch.load(path, map_location=self.device, weights_only=False)
        if "method" in state:  # a dualmcmc checkpoint: the flow's entries of the method's state_dict
            model = state["method"]["model"]
            state = {k[len("flow."):]: v for k, v in model.items() if k.startswith("flow.")}
            if not state:
                raise ValueError(f"flow_checkpoint {str(source)!r} holds no flow (is it an nt_ebm run?)")
        self.flow.load_state_dict(state)
        self.flow_iterations_done.fill_(self.config.flow_pretrain_iterations)
        self.flow_loaded = True

    # -- evaluation ---------------------------------------------------------------------------------------------
    def unnormalized_log_density(self, x: Tensor) -> Tensor:
        """-E(x)/T - ||g^-1(x)||^2/(2T) + log|det dg^-1/dx|: the push-forward of the latent chain's target
        (-E(x) + log q_flow(x) at T = 1)."""
        x = x.to(self.device)
        z, log_det = self.flow.inverse_and_log_det(x)
        half_sq_norm = 0.5 * z.reshape(z.shape[0], -1).square().sum(1)
        return -(self.ebm(x) + half_sq_norm) / self.temperature + log_det

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Fresh latent chains from N(0, I), test_z_steps long (z_steps when None), pushed forward through the
        flow. Training continues persistent chains instead; fresh ones need the longer run to reach the EBM."""
        z, _ = self.run_chain(self.latent_potential, self.latent_noise(n, generator), self.langevin("z", test=True),
                              generator=generator)
        with torch.no_grad():
            return self.flow(z)

    @torch.no_grad()
    def generator_sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """The flow backbone's own samples (the EBM's starting point)."""
        return self.flow(self.latent_noise(n, generator))

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.data_shape  # the flow's latent space has the data's shape

    def decode(self, z: Tensor) -> Tensor:
        """The flow's push-forward of latent codes ``z`` (detached)."""
        with torch.no_grad():
            return self.flow(z.to(self.device))

    def extra_state(self) -> dict:
        return {**super().extra_state(), "flow_loaded": self.flow_loaded}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.flow_loaded = bool(state.get("flow_loaded", self.flow_fitted))  # older checkpoints: loaded once fitted

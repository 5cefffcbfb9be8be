"""The Method base class (one learning method = EBM + helpers + one training iteration), and the pieces the methods
share: the chains they run, the contrastive loss, the optimisers."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ClassVar, Iterator, Optional

import torch
from torch import Tensor, nn

from .. import nets, samplers
from ..accel import fast_forward
from ..kernels import Langevin, random_tensor
from .settings import SpeedOptions, check_config, langevin_spec, validate_params

__all__ = ["Method", "SpeedOptions", "adam", "build_nets_for", "contrastive_loss", "diag_normal_nll",
           "exponential_schedulers", "kl_to_standard_normal", "randn", "squared_error_per_batch"]


class Method(nn.Module):
    """One learning method. Subclasses set ``name`` and ``Config`` (a dataclass of :func:`settings.setting` fields)
    and build their nets.

    Attributes: ``ebm`` (energy net, (N, *data_shape) -> (N,)), ``generator`` / ``encoder`` (or None),
    ``optimizers`` and ``schedulers`` (dicts keyed "ebm", "generator", "encoder"; schedulers step per epoch),
    ``chains`` (a PersistentChains buffer, or None). ``EBM_CHAIN`` names the chain that samples the EBM (its
    Config fields have that ``chain``): a recovery's :meth:`backoff` slows it, and its temperature is the model's.
    ``PRIOR_PRECISION`` gives the Gaussian prior of chains that have no prior_sigma field.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    EBM_CHAIN: ClassVar[str] = "x"
    PRIOR_PRECISION: ClassVar[dict[str, float]] = {}

    def __init__(self, config: Any, data_shape: tuple[int, ...]):
        super().__init__()
        check_config(config)
        self.config = config  # as given; a recovery's slow-down lives in backoff_scale and reaches the chain specs
        self.backoff_scale = 1.0
        self.data_shape = tuple(int(d) for d in data_shape)
        self.generator: Optional[nn.Module] = None
        self.encoder: Optional[nn.Module] = None
        self.chains: Optional[samplers.PersistentChains] = None
        self.averages = nn.ModuleDict()  # name -> AveragedModel of that net (average_weights, config key ema)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self._chain_nets: dict[int, Callable] = {}  # id(module) -> its fast_forward wrapper (made once)

    @classmethod
    def config_from_params(cls, params: dict | None) -> Any:
        """The method's Config from a flat dict, every value checked; unknown keys raise a ValueError listing the
        valid ones."""
        return validate_params(cls.Config, params, f"model (method {cls.name!r})")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- chains ----------------------------------------------------------------------------------------------
    def langevin(self, chain: str, *, test: bool = False) -> Langevin:
        """The settings of ``chain`` ("x" or "z") as this method runs it now: from the config, with the backoff
        scale on the EBM's chain; diagnostics on for training chains when ``chain_diagnostics`` is set."""
        scale = self.backoff_scale if chain == self.EBM_CHAIN else 1.0
        diagnostics = not test and bool(getattr(self.config, "chain_diagnostics", False))
        return langevin_spec(self.config, chain, test=test, scale=scale,
                             prior_precision=self.PRIOR_PRECISION.get(chain), diagnostics=diagnostics)

    @property
    def temperature(self) -> float:
        """T of the density exp(-U/T) the EBM defines: the temperature of the EBM's chain."""
        return self.langevin(self.EBM_CHAIN).temperature

    def energy_potential(self) -> samplers.Potential:
        """The EBM as its chains' potential (through the speed options); made once, so graphs are reused."""
        if not hasattr(self, "_energy_potential"):
            self._energy_potential = samplers.energy_potential(self.chain_net(self.ebm), modules=(self.ebm,))
        return self._energy_potential

    def run_chain(self, potential: Callable[..., Tensor], x0: Tensor, spec: Langevin, *, data: tuple = (),
                  generator: Optional[torch.Generator] = None) -> tuple[Tensor, samplers.ChainDiagnostics]:
        """Every chain of every method: :func:`dualmcmc.samplers.run_chain`, captured as a CUDA graph when the
        config asks for it."""
        return samplers.run_chain(potential, x0, spec, data=data, generator=generator,
                                  cuda_graph=self.chain_cuda_graph(x0))

    def persistent_chain(self, potential: Callable[..., Tensor], n: int, init: Callable[[int], Tensor],
                         spec: Langevin) -> tuple[Tensor, samplers.ChainDiagnostics]:
        """``n`` chains continued from the persistent buffer (a fraction restarted from ``init``), their end states
        stored back; without a buffer, ``n`` fresh chains from ``init``."""
        if self.chains is None:
            return self.run_chain(potential, init(n), spec)
        x0, slots = self.chains.draw(n, init)
        x, diag = self.run_chain(potential, x0, spec)
        self.chains.store(slots, x)
        return x, diag

    def update_ebm(self, energy_data: Tensor, energy_samples: Tensor, *, use_temp: bool = False,
                   energy_l2: float = 0.0) -> dict[str, float]:
        """One optimizer step of the EBM on :func:`contrastive_loss` (divided by the temperature with ``use_temp``);
        returns what every method logs of it: energy_gap, loss_ebm, energy_data, energy_samples (means)."""
        self.optimizers["ebm"].zero_grad()
        loss, gap = contrastive_loss(energy_data, energy_samples, temperature=self.temperature if use_temp else None,
                                     energy_l2=energy_l2)
        loss.backward()
        self.optimizers["ebm"].step()
        return {"energy_gap": float(gap.detach()), "loss_ebm": float(loss.detach()),
                "energy_data": float(energy_data.detach().mean()), "energy_samples": float(energy_samples.detach().mean())}

    # -- an exponential moving average of the weights (config key ``ema``) -----------------------------------
    AVERAGED: ClassVar[tuple[str, ...]] = ("ebm", "generator", "encoder", "flow")

    def average_weights(self) -> None:
        """With ``config.ema`` set, keep an EMA of each net (torch.optim.swa_utils.AveragedModel, buffers too),
        updated after every step of the optimizer that trains it; subclasses call this at the end of __init__."""
        decay = getattr(self.config, "ema", None)
        self.averages = nn.ModuleDict()
        if decay is None:
            return
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        for name in self.AVERAGED:
            net = getattr(self, name, None)
            if not isinstance(net, nn.Module):
                continue
            self.averages[name] = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
            first = next(net.parameters())
            for optimizer in self.optimizers.values():
                if any(p is first for group in optimizer.param_groups for p in group["params"]):
                    optimizer.register_step_post_hook(lambda *_, name=name: self._update_average(name))

    def _update_average(self, name: str) -> None:
        self.averages[name].update_parameters(getattr(self, name))

    @contextlib.contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """The averaged weights in the nets for the duration (sampling, pictures, evaluation), the live ones back
        afterwards; nothing changes without ``ema``. Written through ``.data`` (no autograd version bump)."""
        pairs = [(t, a) for name, average in self.averages.items()
                 for t, a in zip(_tensors(getattr(self, name)), _tensors(average.module))]
        saved = [t.detach().clone() for t, _ in pairs]
        with torch.no_grad():
            for t, a in pairs:
                t.data.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for (t, _), value in zip(pairs, saved):
                    t.data.copy_(value)

    def use_averaged_weights(self) -> None:
        """Put the averaged weights in the nets for good (a loaded run that is sampled or evaluated)."""
        with torch.no_grad():
            for name, average in self.averages.items():
                for t, a in zip(_tensors(getattr(self, name)), _tensors(average.module)):
                    t.data.copy_(a)

    # -- speed options for the chains (SpeedOptions) --------------------------------------------------------
    def chain_net(self, module: nn.Module) -> Callable:
        """``module`` as the chains call it: itself, or its accel.fast_forward wrapper (compile / autocast /
        channels_last), made once so that compiled code and captured graphs are reused."""
        c = self.config
        if not (getattr(c, "compile", False) or getattr(c, "autocast", None) or getattr(c, "channels_last", False)):
            return module
        if id(module) not in self._chain_nets:
            self._chain_nets[id(module)] = fast_forward(module, compile=c.compile, autocast=c.autocast,
                                                        channels_last=c.channels_last, input_grads_only=True)
        return self._chain_nets[id(module)]

    def chain_cuda_graph(self, state: Tensor) -> bool:
        """Whether the chains run as CUDA graphs; a ValueError naming the key when the model is not on CUDA."""
        if not getattr(self.config, "cuda_graph", False):
            return False
        self.check_device(state.device)
        return True

    def check_device(self, device: torch.device | str) -> None:
        """A ValueError naming the key when an option cannot run on ``device`` (the loop checks before training)."""
        if getattr(self.config, "cuda_graph", False) and torch.device(device).type != "cuda":
            raise ValueError(f"cuda_graph: true needs a CUDA device, and this model runs on {device}: "
                             "set device: cuda, or cuda_graph: false")

    # -- the interface --------------------------------------------------------------------------------------
    def train_step(self, x: Tensor) -> dict[str, float]:
        """One training iteration on the batch ``x``; returns plain floats including "energy_gap"."""
        raise NotImplementedError

    def on_epoch_end(self) -> None:
        """Step the per-epoch learning-rate schedulers."""
        for scheduler in self.schedulers.values():
            scheduler.step()

    @torch.no_grad()
    def log_prob_unnormalized(self, x: Tensor) -> Tensor:
        """(N,) unnormalised log-density of the model at ``x`` (no graph): -U(x)/T, U = E plus the EBM chain's
        Gaussian prior/reference term, T its temperature: the density that chain targets and the loss fits."""
        return self.unnormalized_log_density(x)

    def unnormalized_log_density(self, x: Tensor) -> Tensor:
        """:meth:`log_prob_unnormalized` with its graph (differentiable in ``x``: what AIS and completion need)."""
        x = x.to(self.device)
        energy = self.ebm(x)
        precision = self.langevin(self.EBM_CHAIN).prior_precision
        if precision:
            energy = energy + 0.5 * precision * x.flatten(1).square().sum(dim=1)
        return -energy / self.temperature

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` samples of the EBM as the method draws them (detached): the generator's samples revised by the
        test-time EBM chain (methods without a generator override this)."""
        x, _ = self.run_chain(self.energy_potential(), self.generator_sample(n, generator),
                              self.langevin(self.EBM_CHAIN, test=True), generator=generator)
        return x

    @torch.no_grad()
    def generator_sample(self, n: int, generator: Optional[torch.Generator] = None) -> Optional[Tensor]:
        """``n`` samples of the generator alone, G(z) with z ~ N(0, I), or None for methods without a generator."""
        if self.generator is None:
            return None
        return self.generator(randn(n, self.config.latent_dim, next(self.generator.parameters()), generator))

    @property
    def latent_shape(self) -> Optional[tuple[int, ...]]:
        """The shape of one latent code that :meth:`decode` maps to data, or None without a generator."""
        return None if self.generator is None else (self.config.latent_dim,)

    def decode(self, z: Tensor) -> Tensor:
        """Data of latent codes ``z`` (N, *latent_shape): the generator's output (detached)."""
        if self.generator is None:
            raise ValueError(f"method {self.name!r} has no generator to decode latent codes")
        with torch.no_grad():
            return self.generator(z.to(self.device))

    def reconstruct(self, x: Tensor) -> Optional[Tensor]:
        """Reconstructions of ``x`` through the encoder (+ latent chain) and generator, or None."""
        return None

    # -- recovery and checkpoints ---------------------------------------------------------------------------
    def backoff(self, factor: float) -> None:
        """Slow learning down after a divergence: every learning rate (optimizer groups and the schedulers' base
        rates) and the EBM chain's step size AND noise std are multiplied by ``factor``.

        Step and noise move together so that the chain's temperature, and so the density the EBM defines, stays
        the same. Cumulative; the scale is part of :meth:`extra_state`, so a resumed run keeps it (the learning
        rates come back with the optimizer and scheduler states). The config stays as given.
        """
        if not 0.0 < factor <= 1.0:
            raise ValueError(f"backoff: 'factor' must be in (0, 1], got {factor!r}")
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] *= factor
        for scheduler in self.schedulers.values():
            scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
        self.backoff_scale *= factor

    def extra_state(self) -> dict:
        """State outside parameters/buffers/optimizers that a checkpoint must keep: the backoff scale and the
        persistent chains. Subclasses extend the dict of the base class (``{**super().extra_state(), ...}``)."""
        state = {"backoff_scale": self.backoff_scale}
        if self.chains is not None:
            state["chains"] = self.chains.state_dict()
        return state

    def load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`extra_state` returned (subclasses call ``super().load_extra_state(state)``)."""
        self.backoff_scale = float(state.get("backoff_scale", 1.0))
        if self.chains is not None and "chains" in state:
            self.chains.load_state_dict(state["chains"], device=self.device)  # checkpoints load onto the CPU


def _tensors(module: nn.Module) -> list[Tensor]:
    return [*module.parameters(), *module.buffers()]


def build_nets_for(config: Any, data_shape: tuple[int, ...]) -> dict[str, Optional[nn.Module]]:
    """{"ebm", "generator", "encoder"} for a method's Config (nets its Config has no keys for are None), built in
    that order (the order every method draws their initial weights in)."""
    c = config
    return {
        "ebm": nets.make_energy(c.arch, data_shape, c.ebm_hidden, c.ebm_layers, getattr(c, "ebm_activation", "silu")),
        "generator": nets.make_generator(c.arch, data_shape, c.latent_dim, c.generator_hidden, c.generator_layers)
        if hasattr(c, "generator_hidden") else None,
        "encoder": nets.make_encoder(c.arch, data_shape, c.latent_dim, c.encoder_hidden, c.encoder_layers)
        if hasattr(c, "encoder_hidden") else None,
    }


def contrastive_loss(energy_data: Tensor, energy_samples: Tensor, *, temperature: Optional[float] = None,
                     energy_l2: float = 0.0) -> tuple[Tensor, Tensor]:
    """(loss, gap) of the EBM's maximum-likelihood update: gap = mean E(data) - mean E(samples); loss = gap / T when
    a temperature is given (the exact gradient of exp(-E/T)), plus energy_l2 * mean(E(data)^2 + E(samples)^2)."""
    gap = energy_data.mean() - energy_samples.mean()
    loss = gap / temperature if temperature is not None else gap
    if energy_l2 > 0:
        loss = loss + energy_l2 * (energy_data.square().mean() + energy_samples.square().mean())
    return loss, gap


def adam(params, lr: float, betas: tuple[float, float], weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with L2 weight decay in the gradient (as the reference codes use it, not AdamW)."""
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


def kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """(N,) KL(N(mu, diag(exp(logvar))) || N(0, I)), summed over latent dimensions."""
    return -0.5 * (1.0 + logvar - mu.square() - logvar.exp()).sum(dim=1)


def exponential_schedulers(optimizers: dict, gamma: float) -> dict:
    """One ExponentialLR (stepped per epoch) for each optimizer."""
    return {k: torch.optim.lr_scheduler.ExponentialLR(o, gamma=gamma) for k, o in optimizers.items()}


def randn(n: int, dim: int, like: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """(n, dim) standard normals with the device and dtype of ``like``, drawn with ``generator``."""
    return random_tensor("normal", (n, dim), device=like.device, dtype=like.dtype, generator=generator)


def diag_normal_nll(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """(N,) -log N(z; mu, diag(exp(logvar))) without the log(2 pi) constant, with the reference's 1e-6 guard."""
    return 0.5 * logvar.sum(dim=1) + 0.5 * ((z - mu).square() / (1e-6 + logvar.exp())).sum(dim=1)


def squared_error_per_batch(a: Tensor, b: Tensor) -> Tensor:
    """sum((a - b)**2) / B: MSELoss(reduction='sum') divided by the batch size, as in the Dual-MCMC code."""
    return (a - b).square().sum() / a.shape[0]

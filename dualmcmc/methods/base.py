"""The Method base class (one learning method = EBM + helpers + one training iteration) and build_method."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Optional

import torch
from torch import Tensor, nn

from .. import nets
from ..accel import AUTOCAST_DTYPES, fast_forward


@dataclasses.dataclass
class SpeedOptions:
    """Speed options for the chains, shared by every method's Config (README, "Speed").

    They apply to the networks the Langevin chains call (about 70 of the ~77 network passes of a Dual-MCMC
    iteration); the loss passes stay eager float32, so the learning itself is unchanged up to bf16 rounding of the
    chains' gradients. Off by default: the reference iteration.

    cuda_graph: capture each fixed-shape chain into a CUDA graph once and replay it (:mod:`dualmcmc.graphs`); needs a
        CUDA device, and neither MALA nor explicit_noise.
    compile: ``torch.compile`` the networks the chains call.
    autocast: "bf16" or "fp16": run those networks under autocast; the chain state and the update stay float32.
    channels_last: NHWC weights and inputs for conv nets (faster convolutions on tensor cores).
    """

    cuda_graph: bool = False
    compile: bool = False
    autocast: Optional[str] = None
    channels_last: bool = False


def check_speed_options(config: Any) -> None:
    """ValueErrors naming the keys for speed options that cannot work together."""
    if config.autocast is not None and config.autocast not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast must be one of {sorted(AUTOCAST_DTYPES)} or null, got {config.autocast!r}")
    for key in ("cuda_graph", "compile", "channels_last"):
        if not isinstance(getattr(config, key), bool):
            raise ValueError(f"{key} must be true or false, got {getattr(config, key)!r}")
    if config.cuda_graph:
        malas = [f.name for f in dataclasses.fields(config) if f.name.endswith("_mala") and getattr(config, f.name)]
        if malas:
            raise ValueError(f"cuda_graph: true cannot capture a MALA chain ({', '.join(malas)}: true): the accept "
                             "step is per-chain control flow; turn one of them off")
        if getattr(config, "explicit_noise", False):
            raise ValueError("cuda_graph: true needs the op's own (graph-safe) noise: set explicit_noise: false")


class Method(nn.Module):
    """One learning method. Subclasses set ``name`` and ``Config`` (a dataclass) and build their nets.

    Attributes: ``ebm`` (energy net, (N, *data_shape) -> (N,)), ``generator`` / ``encoder`` (or None),
    ``optimizers`` and ``schedulers`` (dicts keyed "ebm", "generator", "encoder"; schedulers step per epoch).
    ``CHAIN_STEPS`` names the (step size, noise std) Config fields of the chain :meth:`backoff` slows down.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    CHAIN_STEPS: ClassVar[tuple[tuple[str, str], ...]] = (("x_step_size", "x_noise_std"),)

    def __init__(self, config: Any, data_shape: tuple[int, ...]):
        super().__init__()
        self.config = config
        self.base_config = config  # the config as given; ``config`` is this with the backoff applied
        self.backoff_scale = 1.0
        self.data_shape = tuple(int(d) for d in data_shape)
        self.generator: Optional[nn.Module] = None
        self.encoder: Optional[nn.Module] = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        if isinstance(config, SpeedOptions):
            check_speed_options(config)
        self._chain_nets: dict[int, Callable] = {}  # id(module) -> its fast_forward wrapper (made once)

    # -- construction helpers -------------------------------------------------------------------------------
    @classmethod
    def config_from_params(cls, params: dict | None) -> Any:
        """The method's Config from a flat dict; unknown keys raise a ValueError listing the valid ones."""
        params = dict(params or {})
        fields = {f.name: f for f in dataclasses.fields(cls.Config)}
        unknown = sorted(set(params) - set(fields))
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {unknown} for method {cls.name!r}; valid keys: {sorted(fields)}"
            )
        for key, value in params.items():
            if isinstance(value, list):  # YAML gives lists where the dataclass holds tuples (betas, clamp)
                params[key] = tuple(value)
        return cls.Config(**params)

    def make_ebm(self) -> nn.Module:
        """The energy net for ``config.arch`` and the data shape (MLP for vectors, conv / ResNet for images)."""
        c = self.config
        return nets.make_energy(c.arch, self.data_shape, c.ebm_hidden, c.ebm_layers, c.ebm_activation)

    def make_generator(self) -> nn.Module:
        c = self.config
        return nets.make_generator(c.arch, self.data_shape, c.latent_dim, c.generator_hidden, c.generator_layers)

    def make_encoder(self) -> nn.Module:
        c = self.config
        return nets.make_encoder(c.arch, self.data_shape, c.latent_dim, c.encoder_hidden, c.encoder_layers)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

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

    def log_prob_unnormalized(self, x: Tensor) -> Tensor:
        """(N,) unnormalised log-density of the model at ``x`` (no graph)."""
        raise NotImplementedError

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` samples of the EBM as the method draws them (detached)."""
        raise NotImplementedError

    def generator_sample(self, n: int, generator: Optional[torch.Generator] = None) -> Optional[Tensor]:
        """``n`` samples of the generator alone, or None for methods without a generator."""
        return None

    def reconstruct(self, x: Tensor) -> Optional[Tensor]:
        """Reconstructions of ``x`` through the encoder (+ latent chain) and generator, or None."""
        return None

    def backoff(self, factor: float) -> None:
        """Slow learning down after a divergence: every learning rate (optimizer groups and the schedulers' base
        rates) and the chain's step size AND noise std (``CHAIN_STEPS``) are multiplied by ``factor``.

        Step and noise move together so that the chain's temperature, and so the density the EBM defines, stays
        the same. Cumulative; the scale is part of :meth:`extra_state`, so a resumed run keeps it (the learning
        rates come back with the optimizer and scheduler states).
        """
        if not 0.0 < factor <= 1.0:
            raise ValueError(f"backoff: 'factor' must be in (0, 1], got {factor!r}")
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] *= factor
        for scheduler in self.schedulers.values():
            scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
        self._set_chain_scale(self.backoff_scale * factor)

    def _set_chain_scale(self, scale: float) -> None:
        self.backoff_scale = float(scale)
        changes = {}
        for pair in self.CHAIN_STEPS:
            for name in pair:
                value = getattr(self.base_config, name)
                if value is not None:
                    changes[name] = value * self.backoff_scale
        self.config = dataclasses.replace(self.base_config, **changes)

    def extra_state(self) -> dict:
        """State outside parameters/buffers/optimizers that a checkpoint must keep (e.g. persistent chains).

        Subclasses extend the dict of the base class (``{**super().extra_state(), ...}``).
        """
        return {"backoff_scale": self.backoff_scale}

    def load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`extra_state` returned (subclasses call ``super().load_extra_state(state)``)."""
        self._set_chain_scale(float(state.get("backoff_scale", 1.0)))


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
    if generator is not None and generator.device != like.device:
        return torch.randn(n, dim, generator=generator, dtype=like.dtype).to(like.device)
    return torch.randn(n, dim, device=like.device, dtype=like.dtype, generator=generator)


def diag_normal_nll(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """(N,) -log N(z; mu, diag(exp(logvar))) without the log(2 pi) constant, with the reference's 1e-6 guard."""
    return 0.5 * logvar.sum(dim=1) + 0.5 * ((z - mu).square() / (1e-6 + logvar.exp())).sum(dim=1)


def squared_error_per_batch(a: Tensor, b: Tensor) -> Tensor:
    """sum((a - b)**2) / B: MSELoss(reduction='sum') divided by the batch size, as in the Dual-MCMC code."""
    return (a - b).square().sum() / a.shape[0]


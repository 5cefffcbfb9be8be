"""The Method base class (one learning method = EBM + helpers + one training iteration) and build_method."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import torch
from torch import Tensor, nn

from ..nets import is_vector_shape


class Method(nn.Module):
    """One learning method. Subclasses set ``name`` and ``Config`` (a dataclass) and build their nets.

    Attributes: ``ebm`` (energy net, (N, *data_shape) -> (N,)), ``generator`` / ``encoder`` (or None),
    ``optimizers`` and ``schedulers`` (dicts keyed "ebm", "generator", "encoder"; schedulers step per epoch).
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object

    def __init__(self, config: Any, data_shape: tuple[int, ...]):
        super().__init__()
        self.config = config
        self.data_shape = tuple(int(d) for d in data_shape)
        self.generator: Optional[nn.Module] = None
        self.encoder: Optional[nn.Module] = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}

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

    def require_vector_data(self) -> int:
        """D for vector data (D,); image shapes need the conv nets, which are not written yet."""
        if not is_vector_shape(self.data_shape):
            raise NotImplementedError(
                f"{self.name}: data_shape {self.data_shape} is an image shape; only vector data (D,) is supported "
                f"until the conv nets (dualmcmc/nets/conv.py) land"
            )
        return self.data_shape[0]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

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

    def extra_state(self) -> dict:
        """State outside parameters/buffers/optimizers that a checkpoint must keep (e.g. persistent chains)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`extra_state` returned."""


def adam(params, lr: float, betas: tuple[float, float], weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with L2 weight decay in the gradient (as the reference codes use it, not AdamW)."""
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


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


"""Learning methods: one file per method, each a :class:`Method` whose ``train_step`` is one iteration."""
from __future__ import annotations

from .base import Method, build_nets_for
from .settings import SpeedOptions
from .coopnets import CoopNets, CoopNetsConfig
from .dual_mcmc import DualMCMC, DualMCMCConfig
from .nt_ebm import NTEBM, NTEBMConfig
from .short_run import ShortRun, ShortRunConfig
from .vae_mcmc import VAEMCMC, VAEMCMCConfig

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (DualMCMC, VAEMCMC, NTEBM, CoopNets, ShortRun)}


def build_method(name: str, params: dict | None, data_shape: tuple[int, ...]) -> Method:
    """The method ``name`` configured by ``params`` (Config field -> value) for data of ``data_shape``.

    Unknown method names and unknown parameter keys raise a ValueError listing the valid ones.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available methods: {sorted(METHODS)}")
    cls = METHODS[name]
    return cls(cls.config_from_params(params), tuple(data_shape))


def build_nets(name: str, params: dict | None, data_shape: tuple[int, ...]) -> dict:
    """{"ebm", "generator", "encoder"} of the method ``name`` configured by ``params``, for data of ``data_shape``,
    as :func:`build_method` would build them (a net the method lacks is None). ``dualmcmc.build_nets(config)`` takes
    a whole training config instead."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available methods: {sorted(METHODS)}")
    return build_nets_for(METHODS[name].config_from_params(params), tuple(int(d) for d in data_shape))


__all__ = ["METHODS", "Method", "SpeedOptions", "build_method", "build_nets", "DualMCMC", "DualMCMCConfig", "VAEMCMC",
           "VAEMCMCConfig", "NTEBM", "NTEBMConfig", "CoopNets", "CoopNetsConfig", "ShortRun", "ShortRunConfig"]

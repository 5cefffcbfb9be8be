"""dualmcmc: learning energy-based models by MCMC teaching, on fused Langevin operators."""
from __future__ import annotations

from . import ops
from .ops import langevin_step, langevin_step_

__version__ = "0.1.0"


def __getattr__(name):  # lazy: the training stack pulls in optional dependencies
    if name == "load_run":
        from .run import load_run

        return load_run
    if name == "build_nets":
        from .build import build_nets

        return build_nets
    if name == "train":
        from .train import train

        return train
    raise AttributeError(f"module 'dualmcmc' has no attribute {name!r}")

"""``dualmcmc.build_nets(config)``: the networks a training config describes, without training anything.

    nets = dualmcmc.build_nets("configs/cifar10_dual_mcmc.yaml")   # {"ebm": ..., "generator": ..., "encoder": ...}

The layer above the config, the data sets and the methods (none of which imports this one)."""
from __future__ import annotations

from pathlib import Path

from .config import TrainConfig, load_config
from .data import dataset_shape
from .methods import build_nets as build_method_nets
from .nets import REFERENCE_SHAPES


def build_nets(config: "str | Path | dict | TrainConfig") -> dict:
    """{"ebm", "generator", "encoder"} for the method a config (YAML path, dict or TrainConfig) names, built from its
    model keys for its data; a net the method lacks is None (e.g. short_run: EBM only). The data shape comes from
    ``dualmcmc.data.dataset_shape`` (no pass over named data sets); the reference archs fix it instead."""
    cfg = load_config(config)
    arch = cfg.model.get("arch", "auto")
    shape = REFERENCE_SHAPES[arch] if arch in REFERENCE_SHAPES else dataset_shape(cfg.data)
    return build_method_nets(cfg.method, cfg.model, shape)

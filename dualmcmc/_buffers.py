"""Putting modules' buffers back after passes that must leave no trace (a CUDA-graph warm-up, pictures drawn during
training)."""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn


@contextlib.contextmanager
def buffers_restored(modules: Sequence[nn.Module]) -> Iterator[None]:
    """On exit, every buffer of ``modules`` holds its value from the entry again.

    Written through ``.data``, so that the autograd version counters stay as they were: eager BatchNorm updates its
    running statistics without bumping them, and a graph built before (Dual-MCMC keeps x0 = G(z0) across the latent
    chain on G) that saved them must still be able to backward.
    """
    unique = {id(b): b for module in modules for b in module.buffers()}
    buffers = list(unique.values())
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved):
                buffer.data.copy_(value)

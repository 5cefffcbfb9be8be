"""Putting modules' buffers back after passes that must leave no trace (a CUDA-graph warm-up, pictures drawn during
training), and keeping autograd's version counters of buffers that a compiled pass writes: the one place that touches
either."""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Sequence

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


_set_version_counters = getattr(torch._C._autograd, "_unsafe_set_version_counter", None)  # torch >= 2.3


@contextlib.contextmanager
def version_counters_kept(tensors: Iterable[torch.Tensor]) -> Iterator[None]:
    """On exit, the tensors' autograd version counters are what they were on entry (their values are not touched).

    Eager BatchNorm updates its running statistics without bumping their version counters; a compiled graph writes
    them back with copy_, which does. An eager graph that saved them earlier (Dual-MCMC keeps x0 = G(z0) for
    errSample across the latent chain) would then refuse to backward, although a training-mode backward never reads
    them. Keeping the counters keeps the eager semantics.
    """
    tensors = tuple(tensors)
    versions = tuple(t._version for t in tensors)
    try:
        yield
    finally:
        if tensors and _set_version_counters is not None:
            _set_version_counters(tensors, versions)

"""Data-parallel training under ``torchrun --nproc_per_node=N``: the same loop on every rank, one shard of each batch.

Methods own their networks and optimizers and step them inside ``train_step``, so instead of wrapping every network
in DistributedDataParallel (which would rename state_dict keys and need one wrapper per pass), each optimizer gets a
step pre-hook that averages its parameters' gradients across ranks in one coalesced all-reduce: the same update
DDP makes. Parameters start equal (broadcast from rank 0) and get equal updates, so they stay equal; buffers
(BatchNorm statistics, spectral-norm vectors) are broadcast from rank 0 before every checkpoint. Rank 0 alone writes
metrics, pictures, evaluations and checkpoints; the losses it logs are its own (its shard of the batch). NCCL on GPUs,
gloo on CPUs.

    torchrun --nproc_per_node=4 -m dualmcmc train configs/digits_dual_mcmc.yaml

``batch_size`` is the global batch: every rank draws the same permutation and trains on its own contiguous
``batch_size / N`` rows (an error when N does not divide it), so N processes make the same number of updates on
the same data as one. Each rank's chains draw their own noise (torch seeded with seed + 7919 * rank). Resuming
under torchrun works (every rank loads rank 0's checkpoint, then reseeds by rank), but unlike a single-process
resume it does not continue bit for bit: the checkpoint holds rank 0's random streams and persistent chains only.

Outside torchrun (WORLD_SIZE unset or 1) every function here is a no-op and the loop runs exactly as before.
"""
from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Iterable

import torch
import torch.distributed as dist


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return dist.get_rank() if active() else 0


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that writes files."""
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun (or use the caller's, when one is set up already); returns
    this rank's device (cuda:LOCAL_RANK on GPUs)."""
    global _FINISH_GROUP, _CREATED_GROUP
    if world_size() <= 1 and not active():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    _CREATED_GROUP = not active()
    if _CREATED_GROUP:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    # a CPU group that may wait long: rank 0's pictures and evaluations can outlast NCCL's timeout
    _FINISH_GROUP = dist.new_group(backend="gloo", timeout=datetime.timedelta(hours=24))
    return device


_FINISH_GROUP = None
_CREATED_GROUP = False  # whether setup() made the default group (then cleanup() destroys it; else only ours)


def wait_for_main() -> None:
    """Every rank waits until rank 0 is done with its pictures or scores, on a CPU group with a long timeout (an
    evaluation can outlast NCCL's, which the others would otherwise spend in the next collective)."""
    if active() and _FINISH_GROUP is not None:
        dist.barrier(group=_FINISH_GROUP)


def finish() -> None:
    """Every rank waits until rank 0 has drawn its pictures and written its scores, so all ranks leave together
    (a rank tearing down its process group while a peer still holds it can abort)."""
    wait_for_main()


def cleanup() -> None:
    """Leave what setup() joined: the whole group if it made it, else only its own CPU group."""
    global _FINISH_GROUP, _CREATED_GROUP
    if active():
        if _CREATED_GROUP:
            dist.destroy_process_group()
        elif _FINISH_GROUP is not None:
            dist.destroy_process_group(_FINISH_GROUP)
    _FINISH_GROUP, _CREATED_GROUP = None, False


def barrier() -> None:
    if active():
        dist.barrier()


def per_rank_batch(batch_size: int) -> int:
    """Each rank's share of the global batch; ``batch_size`` must divide evenly."""
    n = world_size()
    if batch_size % n:
        from .config import ConfigError

        raise ConfigError(f"batch_size {batch_size} does not divide among {n} processes; use a multiple of {n}")
    return batch_size // n


def shard(indices: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous slice of a global batch (every rank drew the same global permutation)."""
    if not active():
        return indices
    size = per_rank_batch(len(indices))
    return indices[rank() * size:(rank() + 1) * size]


def broadcast_state(module: torch.nn.Module, buffers_only: bool = False) -> None:
    """Rank 0's parameters (unless ``buffers_only``) and buffers on every rank."""
    if not active():
        return
    tensors = list(module.buffers()) if buffers_only else [*module.parameters(), *module.buffers()]
    for tensor in tensors:
        dist.broadcast(tensor.data, src=0)


def _average_gradients(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])  # one all-reduce instead of one per tensor
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def average_gradients_before_steps(optimizers: Iterable[torch.optim.Optimizer]) -> None:
    """Every ``optimizer.step()`` first averages the gradients across ranks (the methods give every rank the same
    pattern of parameters with gradients, so all ranks reduce the same tensors)."""
    if not active():
        return
    for optimizer in optimizers:
        optimizer.register_step_pre_hook(_average_gradients)


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is true on any rank (a divergence on one rank stops or recovers every rank)."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def check_parameters_agree(module: torch.nn.Module) -> float:
    """A float64 checksum of all parameters, compared across ranks (RuntimeError when they differ); written to
    $DUALMCMC_CHECKSUM_DIR/rank<k>.txt when that variable is set (tests)."""
    total = sum(float(p.detach().double().sum()) + float(p.detach().double().square().sum()) for p in module.parameters())
    if os.environ.get("DUALMCMC_CHECKSUM_DIR"):
        Path(os.environ["DUALMCMC_CHECKSUM_DIR"], f"rank{rank()}.txt").write_text(repr(total))
    if active():
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, total)
        if len(set(gathered)) != 1:
            raise RuntimeError(f"ranks ended with different parameters (checksums {gathered}); please report this")
    return total

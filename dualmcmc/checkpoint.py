"""Checkpoints of a training run: the whole state a bit-exact resume needs, written atomically."""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"


def atomic_write_bytes(path: "str | Path", write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, then rename it over ``path``.

    A crash at any point leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a run's files should read like any other file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: "str | Path", text: str) -> None:
    atomic_write_bytes(path, lambda handle: handle.write(text.encode()))


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (not supported on every platform: best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rng_states(device: "torch.device | None" = None) -> dict:
    """The states of every random stream training draws from: torch (CPU, and ``device`` when it is a GPU), numpy,
    python. Only the training GPU's stream: a resume may see other GPUs, or fewer."""
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device is not None and torch.device(device).type == "cuda":
        states["cuda_device"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict, device: "torch.device | None" = None) -> None:
    torch.set_rng_state(states["torch"].cpu())
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if device is not None and torch.device(device).type == "cuda":
        if "cuda_device" in states:
            torch.cuda.set_rng_state(states["cuda_device"].cpu(), device)
        elif "cuda" in states:  # checkpoints before 2026-12: every visible GPU's state, by position
            index = torch.device(device).index or 0
            if index < len(states["cuda"]):
                torch.cuda.set_rng_state(states["cuda"][index].cpu(), device)


def method_state(method) -> dict:
    """Parameters/buffers, optimizers, schedulers and the method's extra state (persistent chains...)."""
    return {
        "model": method.state_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in method.optimizers.items()},
        "schedulers": {name: sched.state_dict() for name, sched in method.schedulers.items()},
        "extra": method.extra_state(),
    }


def load_method_state(method, state: dict, *, training_state: bool = True) -> None:
    """Restore what :func:`method_state` saved; ``training_state=False`` skips optimizers and schedulers."""
    method.load_state_dict(state["model"])
    method.load_extra_state(state.get("extra", {}))
    if not training_state:
        return
    for name, opt in method.optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    for name, sched in method.schedulers.items():
        sched.load_state_dict(state["schedulers"][name])


def save_checkpoint(path: "str | Path", method, *, iteration: int, config: dict, data_shape, **extra: Any) -> None:
    payload = {
        "format": 1,
        "iteration": int(iteration),
        "config": config,
        "data_shape": list(data_shape),
        "method": method_state(method),
        "rng": rng_states(next(method.parameters()).device),
        **extra,
    }
    atomic_write_bytes(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: "str | Path", map_location="cpu") -> dict:
    # weights_only=False: the payload holds numpy / python RNG states; only load checkpoints you wrote.
    return torch.load(path, map_location=map_location, weights_only=False)

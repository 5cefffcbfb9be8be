"""The files of a run directory: checkpoints (the whole state a bit-exact resume needs, written atomically, the
previous one kept), the lock that gives a run directory one owner, and atomic writes of the other files."""
from __future__ import annotations

import datetime
import os
import random
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .config import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover  (Windows: no OS lock; a run directory is then not protected)
    fcntl = None

CHECKPOINT_NAME = "checkpoint.pt"
PREVIOUS_NAME = "checkpoint.prev.pt"  # the checkpoint before the latest: one bad write is never the end of a run
LOCK_NAME = ".lock"
FORMAT = 1
CHECKPOINT_KEYS = ("format", "iteration", "config", "data_shape", "method", "rng")


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used: unreadable, truncated, not a dualmcmc checkpoint, or not this run's. The
    message names the file and what is wrong; callers add what to do."""

    def __init__(self, path: "str | Path", problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path} {problem}")


class RunBusy(ConfigError):
    """Another process holds the run directory (it is training there)."""


def atomic_write_bytes(path: "str | Path", write, *, keep_previous: "str | Path | None" = None) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, then rename it over ``path``.

    A crash at any point leaves either the old file or the new one, never a torn one. With ``keep_previous``, the
    file ``path`` held until now becomes that file (a hard link, so ``path`` never goes missing in between). An
    error says which file could not be written (not the temporary file's name).
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise type(err)(err.errno, err.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a run's files should read like any other file
        if keep_previous is not None and path.exists():
            _link_or_copy(path, Path(keep_previous))
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None and err.filename != str(path):
            raise type(err)(err.errno, err.strerror, str(path)) from None
        raise
    _fsync_dir(path.parent)


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` becomes a copy of ``source`` atomically: a hard link where the file system has them."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


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


def save_checkpoint(path: "str | Path", method, *, iteration: int, config: dict, data_shape,
                    keep_previous: "str | Path | None" = None, **extra: Any) -> None:
    """Write a checkpoint atomically; ``keep_previous``: where the checkpoint it replaces goes (checkpoint.prev.pt)."""
    payload = {
        "format": FORMAT,
        "iteration": int(iteration),
        "config": config,
        "data_shape": list(data_shape),
        "method": method_state(method),
        "rng": rng_states(next(method.parameters()).device),
        **extra,
    }
    atomic_write_bytes(path, lambda handle: torch.save(payload, handle), keep_previous=keep_previous)


def load_checkpoint(path: "str | Path", map_location="cpu") -> dict:
    """The payload of a dualmcmc checkpoint; CheckpointError (naming the file and what is wrong) for a missing,
    unreadable, truncated or foreign file."""
    # weights_only=False: the payload holds numpy / python RNG states; only load checkpoints you wrote.
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(path, "does not exist") from None
    except PermissionError:
        raise CheckpointError(path, "cannot be read (permission denied); make it readable (chmod u+r)") from None
    except IsADirectoryError:
        raise CheckpointError(path, "is a directory, not a checkpoint file") from None
    except Exception as err:  # torch.load raises many types: RuntimeError, OSError, EOFError, UnpicklingError...
        what = "is empty" if _size(path) == 0 else "is truncated or damaged"
        raise CheckpointError(path, f"{what} ({type(err).__name__}: {_first_line(err)})") from None
    if not isinstance(state, dict) or not all(key in state for key in CHECKPOINT_KEYS):
        held = f"a dict with keys {sorted(map(str, state))[:6]}" if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(path, f"is not a dualmcmc checkpoint (it holds {held})")
    if state["format"] != FORMAT:
        raise CheckpointError(path, f"has checkpoint format {state['format']!r}; this dualmcmc reads format {FORMAT} "
                                    f"(a newer dualmcmc wrote it? upgrade dualmcmc)")
    return state


def _size(path: Path) -> Optional[int]:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _first_line(err: BaseException) -> str:
    """The first sentence of an error's first line (torch's loaders append paragraphs of advice)."""
    text = str(err).strip().splitlines()
    if not text:
        return "no details"
    sentence = text[0].split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= 160 else sentence[:157] + "..."


def checkpoint_iteration(path: "str | Path") -> Optional[int]:
    """The iteration of an intact checkpoint at ``path``, or None (missing or damaged)."""
    try:
        return int(load_checkpoint(path)["iteration"])
    except ConfigError:
        return None


# -- the owner of a run directory ------------------------------------------------------------------------------
class RunLock:
    """An exclusive OS lock (``flock``) on RUN/.lock for as long as a process trains in RUN. The kernel drops it
    when the process ends, however it ends, so a killed run leaves no stale lock behind; the file itself stays
    (removing it would let a third process lock a different file). It holds the owner's PID, host and command,
    which a refused second process prints."""

    def __init__(self, run_dir: "str | Path"):
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        """Take the lock or raise RunBusy naming the directory and its holder; PermissionError when RUN is not
        writable."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                raise RunBusy(f"run directory {self.path.parent} is in use by {holder}; wait until it has finished, "
                              f"stop it, or train into another directory") from None
        os.ftruncate(fd, 0)
        since = datetime.datetime.now().isoformat(timespec="seconds")
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()} (since {since}: "
                     f"{' '.join(sys.argv)[:300]})\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            if fcntl is not None:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

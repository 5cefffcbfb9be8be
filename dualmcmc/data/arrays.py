"""Loading a data set from a toy name or a user's .npy / .npz array, with errors that say what to fix."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .toy2d import TOY_DENSITIES, is_toy, sample_toy

ARRAY_SUFFIXES = (".npy", ".npz")
NPZ_PREFERRED_KEYS = ("x", "data")


def load_dataset(spec: str | os.PathLike, n_samples: int = 50_000, seed: int = 0) -> Tensor:
    """A float32 (N, D) tensor of data points.

    ``spec`` is either a toy name (see ``TOY_DENSITIES``): ``n_samples`` points drawn with a generator seeded
    by ``seed``; or a path to a ``.npy`` / ``.npz`` file holding an N x D numeric array: all its rows are
    returned (``n_samples`` and ``seed`` are ignored).  A ``.npz`` must hold a single array or one under the
    key ``'x'`` or ``'data'``.

    Raises FileNotFoundError for a missing file, ValueError for an unknown toy name, an unsupported
    extension, or an array that is not 2-D, not numeric, empty, or holds NaN / Inf.
    """
    if is_toy(spec):
        generator = torch.Generator().manual_seed(int(seed))
        return sample_toy(spec, n_samples, generator)
    path = Path(spec)
    if not path.exists():
        if path.suffix or os.sep in str(spec) or "/" in str(spec):
            raise FileNotFoundError(
                f"data file {str(path)!r} does not exist; pass an existing .npy/.npz path "
                f"or one of the toy names: {', '.join(TOY_DENSITIES)}"
            )
        raise ValueError(
            f"unknown data set {str(spec)!r}: not a toy density and no such file; "
            f"valid toy names: {', '.join(TOY_DENSITIES)}, or give a path to a .npy/.npz file"
        )
    if path.is_dir():
        raise ValueError(f"data path {str(path)!r} is a directory; give a .npy or .npz file (N x D array)")
    if path.suffix.lower() not in ARRAY_SUFFIXES:
        raise ValueError(
            f"unsupported data file {str(path)!r}: expected a {' or '.join(ARRAY_SUFFIXES)} file "
            f"holding an N x D array (save one with numpy.save / numpy.savez)"
        )
    array = _read_array(path)
    return _validated_tensor(array, path)


def _read_array(path: Path) -> np.ndarray:
    """The array stored in a .npy file, or the data array of a .npz file."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as err:  # object arrays need pickle, which we refuse to run from a data file
        raise ValueError(
            f"cannot read {str(path)!r} without pickle ({err}); save a plain numeric array, e.g. "
            f"numpy.save(path, x.astype('float32'))"
        ) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return loaded
    with loaded:
        keys = list(loaded.files)
        if len(keys) == 1:
            return loaded[keys[0]]
        for key in NPZ_PREFERRED_KEYS:
            if key in keys:
                return loaded[key]
    raise ValueError(
        f"cannot choose the data array in {str(path)!r}: it holds keys {keys}; store a single array or "
        f"name the data 'x' or 'data' (numpy.savez(path, x=data))"
    )


def _validated_tensor(array: np.ndarray, path: Path) -> Tensor:
    """Check shape, dtype, size and finiteness, then convert to float32."""
    if array.ndim != 2:
        raise ValueError(
            f"data in {str(path)!r} has shape {tuple(array.shape)} ({array.ndim}-D); expected a 2-D N x D "
            f"array (one row per point): reshape it, e.g. x.reshape(len(x), -1)"
        )
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(
            f"data in {str(path)!r} has non-numeric dtype {array.dtype}; expected integers or floats "
            f"(convert with x.astype('float32'))"
        )
    if array.size == 0:
        raise ValueError(f"data in {str(path)!r} is empty (shape {tuple(array.shape)}); it needs N >= 1 rows of D >= 1")
    if np.issubdtype(array.dtype, np.floating):
        bad_rows = int((~np.isfinite(array)).any(axis=1).sum())
        if bad_rows:
            raise ValueError(
                f"data in {str(path)!r} has {bad_rows} of {len(array)} rows with NaN or Inf values; "
                f"drop them first, e.g. x[np.isfinite(x).all(axis=1)]"
            )
    converted = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if not torch.isfinite(converted).all():  # float64 values beyond float32's range become inf
        bad_rows = int((~torch.isfinite(converted)).any(dim=1).sum())
        raise ValueError(
            f"data in {str(path)!r} has {bad_rows} rows whose values overflow float32 (|x| > 3.4e38); rescale them"
        )
    return converted

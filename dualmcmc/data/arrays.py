"""A user's .npy / .npz array: N x D points, or images (N x C x H x W, N x H x W x C, N x H x W)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .images import ACCEPTED_LAYOUTS, images_to_nchw, images_to_storage

ARRAY_SUFFIXES = (".npy", ".npz")
NPZ_PREFERRED_KEYS = ("x", "data")


def load_array(path: Path) -> Tensor:
    """The data in a .npy / .npz file: N x D -> float32 (N, D); 3-D / 4-D -> images (N, C, H, W).

    Images keep 8-bit pixels as uint8 (integers must lie in 0..255) and floats as float32, which must already be
    in [-1, 1].  A ``.npz`` must hold a single array or one under the key ``'x'`` or ``'data'``.
    """
    array = _read_array(path)
    if array.ndim in (3, 4):
        return images_to_storage(images_to_nchw(array, repr(str(path))), repr(str(path)))
    return _validated_tensor(array, path)


def _read_array(path: Path) -> np.ndarray:
    """The array stored in a .npy file, or the data array of a .npz file; ValueError naming the file when it cannot
    be read (unreadable, empty, truncated, not a numpy file, pickled objects)."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return loaded
        with loaded:
            keys = list(loaded.files)
            if len(keys) == 1:
                return loaded[keys[0]]
            for key in NPZ_PREFERRED_KEYS:
                if key in keys:
                    return loaded[key]
    except PermissionError:
        raise ValueError(f"cannot read data file {str(path)!r}: permission denied; make it readable "
                         f"(chmod u+r) or point `data` at a copy you can read") from None
    except ValueError as err:
        if "pickle" in str(err):  # object arrays need pickle, which we refuse to run from a data file
            raise ValueError(
                f"cannot read {str(path)!r} without pickle (it holds Python objects, or it is not a numpy file); "
                f"save a plain numeric array, e.g. numpy.save(path, x.astype('float32'))"
            ) from None
        raise _damaged(path, err) from None
    except Exception as err:  # EOFError, zipfile.BadZipFile, OSError, zlib.error ...: a truncated or foreign file
        raise _damaged(path, err) from None
    raise ValueError(
        f"cannot choose the data array in {str(path)!r}: it holds keys {keys}; store a single array or "
        f"name the data 'x' or 'data' (numpy.savez(path, x=data))"
    )


def _damaged(path: Path, err: Exception) -> ValueError:
    detail = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
    return ValueError(f"cannot read data file {str(path)!r}: it is empty, truncated or not a numpy file ({detail}); "
                      f"write it again (numpy.save / numpy.savez) or point `data` at an intact copy")


def _validated_tensor(array: np.ndarray, path: Path) -> Tensor:
    """Check an N x D array's shape, dtype, size and finiteness, then convert it to float32."""
    if array.ndim != 2:
        raise ValueError(
            f"data in {str(path)!r} has shape {tuple(array.shape)} ({array.ndim}-D); expected a 2-D N x D "
            f"array (one row per point) or images; accepted layouts: {ACCEPTED_LAYOUTS}"
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

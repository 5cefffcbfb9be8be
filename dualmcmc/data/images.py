"""What an image batch is in dualmcmc: (N, C, H, W), stored as uint8 (8-bit sources) or float32 in [-1, 1].

Models always see float32 in [-1, 1]; ``to_model_range`` maps a stored batch there.  Keeping 8-bit data as uint8
until a batch is drawn saves 4x memory (CelebA-64 train: 2 GB instead of 8 GB).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

IMAGE_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA
FLOAT_RANGE_SLACK = 1e-3  # float images may overshoot [-1, 1] by rounding, not by a wrong scale
ACCEPTED_LAYOUTS = "N x D (points), N x C x H x W or N x H x W x C with C in 1, 3, 4 (images), N x H x W (grey images)"


def is_image_shape(shape: Sequence[int]) -> bool:
    """True when ``shape`` (one data point's shape, without N) is an image's (C, H, W)."""
    return len(tuple(shape)) == 3


def to_model_range(batch: Tensor) -> Tensor:
    """A batch as the models take it: uint8 -> float32 x / 127.5 - 1 in [-1, 1]; floating tensors unchanged.

    Float data is stored in [-1, 1] already (load_dataset checks that), so only 8-bit data needs mapping.
    """
    if batch.dtype == torch.uint8:
        return batch.to(torch.float32).div_(127.5).sub_(1.0)
    if batch.is_floating_point():
        return batch
    raise ValueError(
        f"to_model_range: batch has dtype {batch.dtype}; expected uint8 (0..255 pixels) or a floating dtype "
        f"already in [-1, 1]"
    )


def images_to_nchw(array: np.ndarray, source: str) -> np.ndarray:
    """A 3-D (N, H, W) or 4-D (N, C, H, W) / (N, H, W, C) array as (N, C, H, W), contiguous.

    Channels-last when the last dim is 1, 3 or 4 and dim 1 is not (so N x 3 x 32 x 32 stays channels-first).
    """
    shape = tuple(array.shape)
    if array.ndim == 3:
        return np.ascontiguousarray(array[:, None])
    if array.ndim == 4:
        if shape[1] in IMAGE_CHANNELS:
            return np.ascontiguousarray(array)
        if shape[3] in IMAGE_CHANNELS:
            return np.ascontiguousarray(array.transpose(0, 3, 1, 2))
        raise ValueError(
            f"images in {source} have shape {shape}: neither dim 1 nor the last dim is a channel count "
            f"(1, 3 or 4); store N x C x H x W or N x H x W x C, or N x H x W for grey images"
        )
    raise ValueError(f"data in {source} has shape {shape} ({array.ndim}-D); accepted layouts: {ACCEPTED_LAYOUTS}")


def images_to_storage(array: np.ndarray, source: str) -> Tensor:
    """Checked (N, C, H, W) images as a tensor: uint8 for integer pixels in 0..255, float32 for floats in [-1, 1]."""
    if array.shape[0] == 0 or array.size == 0:
        raise ValueError(f"images in {source} are empty (shape {tuple(array.shape)}); they need N >= 1 images")
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"integer images in {source} hold values in [{low}, {high}]; 8-bit pixels must lie in 0..255 "
                f"(or store floats in [-1, 1], e.g. x / 127.5 - 1 for 0..255 data)"
            )
        return torch.from_numpy(array.astype(np.uint8, copy=False))
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"images in {source} have non-numeric dtype {array.dtype}; expected uint8 pixels or floats in [-1, 1]"
        )
    converted = array.astype(np.float32, copy=False)
    bad = int((~np.isfinite(converted)).reshape(len(converted), -1).any(axis=1).sum())
    if bad:
        raise ValueError(
            f"images in {source}: {bad} of {len(converted)} images hold NaN or Inf values; drop them first"
        )
    low, high = float(converted.min()), float(converted.max())
    if low < -1.0 - FLOAT_RANGE_SLACK or high > 1.0 + FLOAT_RANGE_SLACK:
        raise ValueError(
            f"float images in {source} hold values in [{low:.4g}, {high:.4g}]; float images must already be in "
            f"[-1, 1]: rescale them (x / 127.5 - 1 for 0..255, 2 * x - 1 for 0..1) or store 0..255 as uint8"
        )
    return torch.from_numpy(np.ascontiguousarray(converted))

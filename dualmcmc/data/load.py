"""load_dataset: one entry point from a data spec (toy name, image set name, file or folder) to a tensor;
dataset_shape: the shape of one of its points."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from .arrays import ARRAY_SUFFIXES, load_array
from .digits import DIGITS_SPLITS, load_digits_spec, parse_digits_spec
from .folders import IMAGE_SUFFIXES, load_image_folder
from .toy2d import TOY_DENSITIES, is_toy, sample_toy
from .torchvision_sets import CELEBA_SIZE, TORCHVISION_SETS, checked_root, load_torchvision_set

DIGITS_NAMES = {"digits": "train", **{f"digits:{split}": split for split in DIGITS_SPLITS}}
IMAGE_SET_HELP = "digits, digits:test, cifar10:ROOT, celeba:ROOT"
TORCHVISION_SHAPES = {"cifar10": (3, 32, 32), "celeba": (3, CELEBA_SIZE, CELEBA_SIZE)}


def load_dataset(spec: str | os.PathLike, n_samples: int = 50_000, seed: int = 0) -> Tensor:
    """The data set ``spec`` names: (N, D) points or (N, C, H, W) images.

    ``spec`` is one of (names win over a file or folder of the same name; write ``./digits`` for a folder):

    * a toy name (``TOY_DENSITIES``): ``n_samples`` float32 points (N, 2) drawn with a generator seeded by ``seed``;
    * ``"digits"`` / ``"digits:train"`` (1497 images) or ``"digits:test"`` (the 300 held-out ones): sklearn's
      bundled 8x8 digits as float32 (N, 1, 8, 8) in [-1, 1] (pixel / 8 - 1); the split: dualmcmc.data.digits;
    * ``"cifar10:ROOT"`` / ``"celeba:ROOT"``: the training split from a local copy through torchvision (needed;
      never downloads), uint8 (N, 3, 32, 32) / (N, 3, 64, 64), CelebA cropped and resized as the reference;
    * a ``.npy`` / ``.npz`` path: an N x D array -> float32 (N, D); images N x C x H x W, N x H x W x C (C in 1, 3,
      4) or N x H x W (grey) -> (N, C, H, W), uint8 when stored as integers 0..255, else float32 that must
      already be in [-1, 1];
    * a folder of images (png, jpg, jpeg, bmp, webp; searched recursively; all one size) -> uint8 (N, C, H, W),
      C = 1 when all are grey, else 3.

    For everything but toys all images / rows are returned, and ``n_samples`` and ``seed`` are ignored.  8-bit data
    stays uint8 to save memory: map batches with ``to_model_range``.

    Raises FileNotFoundError for a missing file, folder or root; ValueError for an unknown name, an unsupported
    file, or data of the wrong shape, type or range (each message names the path and the fix);
    ModuleNotFoundError for cifar10 / celeba without torchvision.
    """
    if is_toy(spec):
        generator = torch.Generator().manual_seed(int(seed))
        return sample_toy(spec, n_samples, generator)
    if isinstance(spec, str):
        if parse_digits_spec(spec) is not None:  # digits, digits:SPLIT, digits:SPLIT:classes=LIST
            return load_digits_spec(spec)
        name, _, root = spec.partition(":")
        if name in TORCHVISION_SETS:
            return load_torchvision_set(name, root)
    path = Path(spec)
    if not path.exists():
        if path.suffix or os.sep in str(spec) or "/" in str(spec):
            raise FileNotFoundError(
                f"data file {str(path)!r} does not exist; pass an existing .npy/.npz file or image folder, "
                f"an image set ({IMAGE_SET_HELP}) or one of the toy names: {', '.join(TOY_DENSITIES)}"
            )
        raise ValueError(
            f"unknown data set {str(spec)!r}: not a toy density, an image set or an existing file; "
            f"valid toy names: {', '.join(TOY_DENSITIES)}; image sets: {IMAGE_SET_HELP}; "
            f"or give a path to a .npy/.npz file or a folder of images"
        )
    if path.is_dir():
        return load_image_folder(path)
    if path.suffix.lower() not in ARRAY_SUFFIXES:
        raise ValueError(
            f"unsupported data file {str(path)!r}: expected a {' or '.join(ARRAY_SUFFIXES)} file "
            f"holding an N x D array or images (save one with numpy.save / numpy.savez), or a folder of "
            f"{'/'.join(s[1:] for s in IMAGE_SUFFIXES)} images"
        )
    return load_array(path)


def resolved_spec(spec: str) -> str:
    """``spec`` with its file system path made absolute (a file, a folder, the ROOT of ``cifar10:ROOT``), so that a
    run's stored config finds its data from any working directory; names (toys, digits) stay as they are."""
    if is_toy(spec) or spec in DIGITS_NAMES or spec.startswith("digits:"):
        return spec
    name, sep, root = spec.partition(":")
    if sep and name in TORCHVISION_SETS:
        return f"{name}:{os.path.abspath(os.path.expanduser(root))}" if root else spec
    return os.path.abspath(os.path.expanduser(spec))


def dataset_shape(spec: str | os.PathLike) -> tuple[int, ...]:
    """The shape of one data point of ``spec`` ((2,), (D,) or (C, H, W)), cheap for the named sets.

    Toys, digits, cifar10 and celeba answer without reading their data (building nets should not cost a pass over
    162 770 CelebA images); files and folders are loaded.  Errors as in load_dataset.
    """
    if is_toy(spec):
        return (2,)
    if isinstance(spec, str):
        if parse_digits_spec(spec) is not None:
            return (1, 8, 8)
        name, _, root = spec.partition(":")
        if name in TORCHVISION_SETS:
            checked_root(name, root)
            return TORCHVISION_SHAPES[name]
    return tuple(load_dataset(spec).shape[1:])

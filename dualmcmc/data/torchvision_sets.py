"""CIFAR-10 and CelebA-64 from a local copy through torchvision, as uint8 (N, 3, H, W).  Never downloads.

Preprocessing follows the Dual-MCMC reference (docs/methods.md §2.6): CIFAR-10 train split as is;
CelebA train split cropped to the box (15, 40, 163, 188) (PIL's left, upper, right, lower), then resized to
64 x 64 (bilinear, as torchvision's Resize on PIL images).  The reference's random flip is augmentation, left to
training.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

TORCHVISION_SETS = ("cifar10", "celeba")
CELEBA_CROP_BOX = (15, 40, 163, 188)
CELEBA_SIZE = 64


def _torchvision_datasets(name: str, root: Path):
    """torchvision.datasets, or an error saying how to do without it."""
    try:
        from torchvision import datasets
    except ImportError:
        raise ModuleNotFoundError(
            f"data set '{name}:{root}' needs torchvision, which is not installed: pip install torchvision, "
            f"or export the images to a .npz (N x H x W x C uint8 under the key 'x') and give its path"
        ) from None
    return datasets


def checked_root(name: str, root: str) -> Path:
    """``root`` as a Path to an existing folder, or an error naming it."""
    if not root:
        raise ValueError(f"data set '{name}:' has no root folder; write '{name}:/path/to/the/data'")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{name} root folder {str(path)!r} does not exist (nothing is ever downloaded)")
    return path


def _not_found(name: str, root: Path, expected: str, err: Exception) -> FileNotFoundError:
    return FileNotFoundError(
        f"{name} files not found under {str(root)!r}: expected {expected} ({err}); nothing is ever downloaded, "
        f"so copy the data there first"
    )


def load_cifar10(root: str) -> Tensor:
    """CIFAR-10's 50 000 training images under ``root`` (torchvision layout: ROOT/cifar-10-batches-py)."""
    path = checked_root("cifar10", root)
    datasets = _torchvision_datasets("cifar10", path)
    try:
        dataset = datasets.CIFAR10(str(path), train=True, download=False)
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
        raise _not_found("cifar10", path, "cifar-10-batches-py/ (the python version)", err) from None
    return torch.from_numpy(np.ascontiguousarray(np.asarray(dataset.data, dtype=np.uint8).transpose(0, 3, 1, 2)))


def celeba_preprocess(image) -> np.ndarray:
    """A PIL CelebA image cropped and resized as the reference does, as uint8 (3, 64, 64)."""
    from PIL import Image

    face = image.convert("RGB").crop(CELEBA_CROP_BOX).resize((CELEBA_SIZE, CELEBA_SIZE), Image.BILINEAR)
    return np.asarray(face, dtype=np.uint8).transpose(2, 0, 1)


def load_celeba(root: str) -> Tensor:
    """CelebA's 162 770 training images under ``root`` (torchvision layout: ROOT/celeba/...) as (N, 3, 64, 64)."""
    path = checked_root("celeba", root)
    datasets = _torchvision_datasets("celeba", path)
    try:
        dataset = datasets.CelebA(str(path), split="train", target_type=[], download=False)
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
        raise _not_found("celeba", path, "celeba/img_align_celeba/ and celeba/list_eval_partition.txt", err) from None
    out = np.empty((len(dataset), 3, CELEBA_SIZE, CELEBA_SIZE), dtype=np.uint8)
    for i in range(len(dataset)):
        image, _ = dataset[i]
        out[i] = celeba_preprocess(image)
    return torch.from_numpy(out)


def load_torchvision_set(name: str, root: str) -> Tensor:
    """``name`` in TORCHVISION_SETS from the local folder ``root``."""
    if name == "cifar10":
        return load_cifar10(root)
    if name == "celeba":
        return load_celeba(root)
    raise ValueError(f"unknown torchvision data set {name!r}; valid: {', '.join(TORCHVISION_SETS)}")

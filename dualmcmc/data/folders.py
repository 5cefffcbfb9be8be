"""A folder of image files (searched recursively, so an ImageFolder-style class tree works) as uint8 images."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")  # PIL modes without colour


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` in a fixed order (sorted relative paths), hidden files left out."""
    found = [
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def load_image_folder(folder: str | Path) -> Tensor:
    """All images under ``folder`` as uint8 (N, C, H, W): C = 1 when every image is grey, else 3 (RGB).

    Every image must have the same size.  Raises FileNotFoundError for a missing folder, ValueError for a folder
    without images, images of different sizes, or a file PIL cannot read.
    """
    from PIL import Image  # imported here: only image folders need PIL

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist")
    try:
        files = image_files(folder)
    except PermissionError as err:
        raise ValueError(f"cannot read image folder {str(err.filename or folder)!r}: permission denied; make it "
                         f"readable (chmod -R u+rX)") from None
    if not os.access(folder, os.R_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        raise ValueError(f"cannot read image folder {str(folder)!r}: permission denied; make it readable "
                         f"(chmod -R u+rX)")
    if not files:
        raise ValueError(
            f"image folder {str(folder)!r} holds no image files ({', '.join(IMAGE_SUFFIXES)}); "
            f"put the images there, or give a .npy/.npz array instead"
        )
    sizes, modes = {}, set()
    for path in files:  # headers only: sizes and modes decide the array before any pixel is decoded
        with _open(Image, path) as img:
            sizes.setdefault(img.size, path)
            modes.add(img.mode)
        if len(sizes) > 1:
            (size_a, file_a), (size_b, file_b) = list(sizes.items())[:2]
            raise ValueError(
                f"images in {str(folder)!r} differ in size: {file_a.name} is {size_a[0]}x{size_a[1]}, "
                f"{file_b.name} is {size_b[0]}x{size_b[1]} (width x height); resize them to one size first"
            )
    width, height = next(iter(sizes))
    grey = modes <= set(GREY_MODES)
    channels, target_mode = (1, "L") if grey else (3, "RGB")
    out = np.empty((len(files), channels, height, width), dtype=np.uint8)
    for i, path in enumerate(files):
        with _open(Image, path) as img:
            try:  # the pixels are decoded here: a truncated or damaged file fails now, not when opened
                pixels = np.asarray(img.convert(target_mode), dtype=np.uint8)
            except Exception as err:
                raise _unreadable(path, err) from None
        out[i] = pixels[None] if grey else pixels.transpose(2, 0, 1)
    return torch.from_numpy(out)


def _open(image_module, path: Path):
    """PIL.Image.open with an error that names the file."""
    try:
        return image_module.open(path)
    except Exception as err:  # PIL raises several types (UnidentifiedImageError, OSError, ...)
        raise _unreadable(path, err) from None


def _unreadable(path: Path, err: Exception) -> ValueError:
    if isinstance(err, PermissionError):
        return ValueError(f"cannot read image {str(path)!r}: permission denied; make it readable (chmod u+r) or "
                          f"remove it")
    return ValueError(f"cannot read image {str(path)!r}: {err}; remove or replace the file")

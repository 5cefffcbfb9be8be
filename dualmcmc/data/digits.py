"""sklearn's bundled 8x8 digits (1797 images, pixel values 0..16) with a fixed train / held-out split.

The split: ``numpy.random.RandomState(0).permutation(1797)``; its first 300 indices are the held-out ("test")
images, the other 1497 the training images, each kept in sklearn's order.  RandomState's stream is frozen by
NumPy's compatibility policy, so the split is the same on every machine and NumPy version.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

DIGITS_SPLITS = ("train", "test")
DIGITS_N_TOTAL = 1797
DIGITS_N_TEST = 300
DIGITS_SPLIT_SEED = 0
DIGITS_MAX_VALUE = 16.0  # sklearn's digits count 4x4 blocks of on-pixels: 0..16


def digits_split_indices(split: str) -> np.ndarray:
    """Sorted row indices into sklearn's digits of the ``split`` ("train": 1497, "test": 300)."""
    if split not in DIGITS_SPLITS:
        raise ValueError(f"unknown digits split {split!r}; valid splits: {', '.join(DIGITS_SPLITS)}")
    order = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(DIGITS_N_TOTAL)
    chosen = order[:DIGITS_N_TEST] if split == "test" else order[DIGITS_N_TEST:]
    return np.sort(chosen)


def _sklearn_digits():
    from sklearn.datasets import load_digits  # imported here: sklearn is slow to import and only digits need it

    bunch = load_digits()
    if len(bunch.images) != DIGITS_N_TOTAL:
        raise RuntimeError(f"sklearn's digits hold {len(bunch.images)} images, expected {DIGITS_N_TOTAL}")
    return bunch


def load_digits(split: str = "train") -> Tensor:
    """The ``split`` of the digits as float32 (N, 1, 8, 8) in [-1, 1] (pixel / 8 - 1)."""
    index = digits_split_indices(split)
    images = _sklearn_digits().images[index].astype(np.float32)
    scaled = images * (2.0 / DIGITS_MAX_VALUE) - 1.0
    return torch.from_numpy(np.ascontiguousarray(scaled[:, None]))


def load_digits_labels(split: str = "train") -> Tensor:
    """The class labels 0..9 (int64, (N,)) of the ``split``, aligned with ``load_digits(split)``."""
    index = digits_split_indices(split)
    return torch.from_numpy(_sklearn_digits().target[index].astype(np.int64))


def parse_digits_spec(spec: str) -> "tuple[str, tuple[int, ...] | None] | None":
    """("train" | "test", classes or None) for ``digits``, ``digits:SPLIT`` and ``digits:SPLIT:classes=LIST``
    (LIST: digits and ranges, ``0-8`` or ``1,3,7``); None when ``spec`` is not a digits name. ValueError for a
    digits name that is malformed, naming the form it wants."""
    if spec == "digits":
        return "train", None
    if not spec.startswith("digits:"):
        return None
    parts = spec.split(":")
    form = "digits, digits:train, digits:test or digits:SPLIT:classes=LIST (e.g. digits:train:classes=0-8)"
    if len(parts) > 3 or parts[1] not in DIGITS_SPLITS:
        raise ValueError(f"unknown digits data {spec!r}; valid: {form}")
    if len(parts) == 2:
        return parts[1], None
    key, _, listed = parts[2].partition("=")
    classes: set[int] = set()
    try:
        if key != "classes" or not listed:
            raise ValueError
        for item in listed.split(","):
            lo, _, hi = item.partition("-")
            first, last = int(lo), int(hi or lo)
            if not 0 <= first <= last <= 9:
                raise ValueError
            classes.update(range(first, last + 1))
    except ValueError:
        raise ValueError(f"unknown digits data {spec!r}; valid: {form}, with classes among 0..9") from None
    return parts[1], tuple(sorted(classes))


def load_digits_spec(spec: str) -> Tensor:
    """The digits a digits name selects (a split, and optionally only some classes)."""
    split, classes = parse_digits_spec(spec)
    images = load_digits(split)
    if classes is None:
        return images
    keep = torch.isin(load_digits_labels(split), torch.tensor(classes))
    return images[keep]

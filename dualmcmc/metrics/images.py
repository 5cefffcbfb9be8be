"""Image metrics: a digits classifier the package trains itself, Frechet distance and kernel MMD of features,
and evaluate_images, which scores a method's EBM / generator samples and reconstructions on image data.

* digits: features of ``digits_classifier`` (a small CNN trained on the 1497 training digits, cached on disk);
  samples are compared with the 300 held-out digits ("digits:test"), never with the data the model saw.
* other images: kernel MMD in pixel space against a seeded subset of the data, and FID through torchmetrics when
  it is installed and its Inception weights are already on disk (dualmcmc never downloads).
"""
from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ..data import load_dataset, load_digits, load_digits_labels, to_model_range

CLASSIFIER_FILE = "digits_classifier_v1.pt"  # bump the version when the net or its training changes
CLASSIFIER_SEED = 0
CLASSIFIER_EPOCHS = 12
CLASSIFIER_BATCH = 64
CLASSIFIER_LR = 3e-3
FEATURE_DIM = 64
DIGITS_DATASETS = ("digits", "digits:train", "digits:test")
FID_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"  # what torchmetrics' FID loads via torch.hub
_ROWS_PER_BATCH = 500
_KERNEL_ROWS_PER_BLOCK = 2048
_ALREADY_SAID: set[str] = set()


# ---- the digits classifier ----------------------------------------------------------------------------------


class DigitsClassifier(nn.Module):
    """A small CNN for 1 x 8 x 8 digits in [-1, 1]: features (N, 64) from the penultimate layer, logits (N, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4 x 4
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 2 x 2
            nn.Flatten(), nn.Linear(64 * 2 * 2, FEATURE_DIM), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, 10)
        self.test_accuracy: float = math.nan  # on the 300 held-out digits, set by digits_classifier
        self.train_seconds: float | None = None  # None when the weights came from the cache

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features (N, 64) of digits x: (N, 1, 8, 8) or (N, 64), in [-1, 1]."""
        if x.ndim == 2 and x.shape[1] == 64:
            x = x.reshape(len(x), 1, 8, 8)
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
            raise ValueError(f"digits classifier: x must be (N, 1, 8, 8) digits in [-1, 1], got shape {tuple(x.shape)}")
        return self.body(to_model_range(x).to(torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def train_digits_classifier(seed: int = CLASSIFIER_SEED, epochs: int = CLASSIFIER_EPOCHS) -> DigitsClassifier:
    """Train a DigitsClassifier on the digits training split, deterministically (own RNG, one thread)."""
    x, y = load_digits("train"), load_digits_labels("train")
    threads = torch.get_num_threads()
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # leaves the caller's random streams untouched
        torch.manual_seed(seed)
        torch.set_num_threads(1)  # one thread: the same float sums, hence the same weights, on every run
        try:
            model = DigitsClassifier()
            optimizer = torch.optim.Adam(model.parameters(), lr=CLASSIFIER_LR)
            order = torch.Generator().manual_seed(seed)
            for _ in range(epochs):
                for batch in torch.randperm(len(x), generator=order).split(CLASSIFIER_BATCH):
                    loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
        finally:
            torch.set_num_threads(threads)
    model.train_seconds = time.perf_counter() - start
    return _frozen(model)


def digits_classifier(cache_dir: str | os.PathLike | None = None) -> DigitsClassifier:
    """The package's digits classifier, in eval mode without gradients, from the cache or trained (a few seconds).

    Cached as a state_dict at ``cache_dir`` / ``$DUALMCMC_CACHE`` / ``~/.cache/dualmcmc`` (first set wins), file
    ``digits_classifier_v1.pt``, written atomically.  An unreadable cache file is retrained and replaced; a cache
    that cannot be written only costs the retraining next time.  ``.test_accuracy`` holds its accuracy on the
    300 held-out digits, ``.train_seconds`` its training time (None when loaded).
    """
    path = classifier_cache_dir(cache_dir) / CLASSIFIER_FILE
    model = _load_cached(path)
    if model is None:
        model = train_digits_classifier()
        _save_atomically(model, path)
    model.test_accuracy = classifier_accuracy(model, load_digits("test"), load_digits_labels("test"))
    return model


def classifier_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the classifier is cached: ``cache_dir``, else $DUALMCMC_CACHE, else ~/.cache/dualmcmc."""
    chosen = cache_dir or os.environ.get("DUALMCMC_CACHE") or Path.home() / ".cache" / "dualmcmc"
    return Path(chosen).expanduser()


def classifier_accuracy(model: nn.Module, x: Tensor, labels: Tensor) -> float:
    """Fraction of ``x`` the classifier labels correctly."""
    with torch.no_grad():
        return (model(x).argmax(dim=1) == labels).float().mean().item()


def _frozen(model: DigitsClassifier) -> DigitsClassifier:
    model.eval()
    model.requires_grad_(False)
    return model


def _load_cached(path: Path) -> DigitsClassifier | None:
    """The cached classifier, or None when there is none or it cannot be read (then it says why)."""
    if not path.exists():
        return None
    model = DigitsClassifier()
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:  # a truncated / foreign / stale file: torch raises many types
        warnings.warn(f"digits classifier cache {str(path)!r} is unreadable ({type(err).__name__}); retraining it")
        return None
    return _frozen(model)


def _save_atomically(model: nn.Module, path: Path) -> None:
    """torch.save to a temp file in the same folder, then os.replace: readers never see half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                torch.save(model.state_dict(), out)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as err:
        warnings.warn(f"cannot cache the digits classifier at {str(path)!r} ({err}); it is retrained next time")


# ---- distances between feature sets -------------------------------------------------------------------------


def _features(x, name: str) -> np.ndarray:
    array = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
    if array.ndim != 2 or len(array) < 2:
        raise ValueError(f"{name} must be a 2-D (N, F) array with N >= 2 rows, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or Inf values; drop those rows first")
    return array


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    fa, fb = _features(a, "feats_a"), _features(b, "feats_b")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feats_a has {fa.shape[1]} features per row but feats_b has {fb.shape[1]}")
    return fa, fb


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(0.5 * (matrix + matrix.T))
    return (vectors * np.sqrt(values.clip(min=0.0))) @ vectors.T


def frechet_distance(feats_a, feats_b) -> float:
    """Frechet distance of Gaussians fitted to two feature sets (N, F), (M, F); N, M >= 2; float64.

    ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), with Tr (S_a S_b)^(1/2) computed as the trace of
    (S_a^(1/2) S_b S_a^(1/2))^(1/2): a symmetric PSD matrix, so eigh is stable where sqrtm of S_a S_b is not.
    """
    a, b = _pair(feats_a, feats_b)
    mean_gap = a.mean(axis=0) - b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    trace_root = np.sqrt(np.linalg.eigvalsh(0.5 * (middle + middle.T)).clip(min=0.0)).sum()
    distance = mean_gap @ mean_gap + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root
    return max(float(distance), 0.0)  # >= 0 exactly; rounding can leave -1e-12


def kernel_mmd(feats_a, feats_b) -> float:
    """Unbiased MMD^2 between feature sets (N, F), (M, F), N, M >= 2, with KID's kernel (a.b / F + 1)^3."""
    a, b = _pair(feats_a, feats_b)
    n, m = len(a), len(b)
    within_a = (_kernel_sum(a, a) - _kernel_trace(a)) / (n * (n - 1))
    within_b = (_kernel_sum(b, b) - _kernel_trace(b)) / (m * (m - 1))
    return float(within_a + within_b - 2.0 * _kernel_sum(a, b) / (n * m))


def _kernel_sum(x: np.ndarray, y: np.ndarray) -> float:
    """sum_ij (x_i . y_j / F + 1)^3, in row blocks so 50 000 samples need no 20 GB matrix."""
    total = 0.0
    for start in range(0, len(x), _KERNEL_ROWS_PER_BLOCK):
        total += ((x[start : start + _KERNEL_ROWS_PER_BLOCK] @ y.T / x.shape[1] + 1.0) ** 3).sum()
    return total


def _kernel_trace(x: np.ndarray) -> float:
    return float(((np.einsum("ij,ij->i", x, x) / x.shape[1] + 1.0) ** 3).sum())


# ---- evaluation of a method ---------------------------------------------------------------------------------


def evaluate_images(method, dataset: str, n_samples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Scores of ``method``'s samples and reconstructions on image data ``dataset``; a dict of floats.

    ``method`` needs ``.device``, ``.sample(n, generator=g)``; ``.generator_sample(n, generator=g)`` and
    ``.reconstruct(x)`` may return None (or be missing).  Samples come from a torch.Generator seeded by ``seed`` on
    the method's device, in batches of 500.  Keys (a set that cannot be scored is left out):

    * digits ("digits", "digits:train", "digits:test"), always against the 300 held-out digits: "fd" / "mmd"
      (Frechet distance / KID-style MMD^2 in digits_classifier features of the EBM samples; the features are
      divided by their RMS over the held-out digits, one fixed number), "generator_fd" /
      "generator_mmd", "recon_mse" (per pixel, [-1, 1] units, of the held-out digits), "train_fd" (the
      training digits' fd: the floor a perfect model reaches), "classifier_test_accuracy";
    * other images: "mmd" / "generator_mmd" in pixel space against ``n_samples`` data images (seeded subset),
      "recon_mse" of those images, "fid" / "generator_fid" when torchmetrics can compute FID offline;
    * "nonfinite_fraction" / "generator_nonfinite_fraction": samples with NaN / Inf (left out of the scores).
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"evaluate_images: n_samples must be an int >= 2, got {n_samples!r}")
    device = torch.device(getattr(method, "device", "cpu"))
    digits = dataset in DIGITS_DATASETS
    reference = load_digits("test") if digits else _data_subset(dataset, n_samples, seed)
    results: dict[str, float] = {}
    sets = {}
    for prefix, name in (("", "sample"), ("generator_", "generator_sample")):
        samples = _draw(getattr(method, name, None), n_samples, seed, device, reference.shape[1:], name)
        if samples is not None:
            finite = torch.isfinite(samples.reshape(len(samples), -1)).all(dim=1)
            results[f"{prefix}nonfinite_fraction"] = 1.0 - finite.float().mean().item()
            sets[prefix] = samples[finite]
    if digits:
        results.update(_digits_scores(sets))
    else:
        results.update(_pixel_scores(sets, reference))
        results.update(_fid_scores(sets, reference, device))
    recon = _recon_mse(getattr(method, "reconstruct", None), reference, device)
    if recon is not None:
        results["recon_mse"] = recon
    return results


def _data_subset(dataset: str, n: int, seed: int) -> Tensor:
    data = load_dataset(dataset)
    if data.ndim != 4:
        raise ValueError(
            f"evaluate_images needs image data (N, C, H, W), but {dataset!r} has shape {tuple(data.shape)}"
        )
    chosen = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    return to_model_range(data[chosen])


def _draw(sample_fn: Callable | None, n: int, seed: int, device, shape, name: str) -> Tensor | None:
    """n samples from sample_fn in batches, one generator seeded by seed; float32 on the CPU, or None."""
    if sample_fn is None:
        return None
    generator = torch.Generator(device=device).manual_seed(seed)
    parts = []
    for count in _batches(n):
        out = sample_fn(count, generator=generator)  # no torch.no_grad: Langevin chains need gradients
        if out is None:
            return None
        parts.append(to_model_range(torch.as_tensor(out).detach()).to("cpu", torch.float32))
    samples = torch.cat(parts)
    if tuple(samples.shape) != (n, *shape):
        raise ValueError(f"method.{name}({n}) returned shape {tuple(samples.shape)}; the data are {(n, *shape)}")
    return samples


def _batches(n: int) -> list[int]:
    return [min(_ROWS_PER_BATCH, n - start) for start in range(0, n, _ROWS_PER_BATCH)]


def _digits_scores(sets: dict[str, Tensor]) -> dict[str, float]:
    classifier = digits_classifier()
    with torch.no_grad():
        test_feats = classifier.features(load_digits("test"))
        # One fixed scale for every set: real digits get E|f|^2 / F = 1, so KID's kernel sees O(1) dot products.
        scale = test_feats.square().mean().sqrt()
        test_feats = test_feats / scale
        train_feats = classifier.features(load_digits("train")) / scale
        scores = {"classifier_test_accuracy": classifier.test_accuracy,
                  "train_fd": frechet_distance(train_feats, test_feats)}
        for prefix, samples in sets.items():
            if len(samples) < 2:
                scores[f"{prefix}fd"] = scores[f"{prefix}mmd"] = math.nan
                continue
            feats = classifier.features(samples) / scale
            scores[f"{prefix}fd"] = frechet_distance(feats, test_feats)
            scores[f"{prefix}mmd"] = kernel_mmd(feats, test_feats)
    return scores


def _pixel_scores(sets: dict[str, Tensor], reference: Tensor) -> dict[str, float]:
    flat_reference = reference.reshape(len(reference), -1)
    return {f"{prefix}mmd": kernel_mmd(samples.reshape(len(samples), -1), flat_reference) if len(samples) >= 2
            else math.nan for prefix, samples in sets.items()}


def _recon_mse(reconstruct: Callable | None, x: Tensor, device) -> float | None:
    if reconstruct is None:
        return None
    total = 0.0
    for batch in x.split(_ROWS_PER_BATCH):
        out = reconstruct(batch.to(device))
        if out is None:
            return None
        recon = to_model_range(torch.as_tensor(out).detach()).to("cpu", torch.float32)
        total += (recon.reshape(batch.shape) - batch).square().sum().item()
    return total / x.numel()


def _say_once(message: str) -> None:
    if message not in _ALREADY_SAID:
        _ALREADY_SAID.add(message)
        warnings.warn(message)


def _fid_scores(sets: dict[str, Tensor], reference: Tensor, device) -> dict[str, float]:
    """FID through torchmetrics, {} (and why, once) when it is missing or cannot run offline."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except Exception as err:  # not installed, or an install that fails to import
        _say_once(f"evaluate_images: FID left out: torchmetrics' FID is unavailable ({err}); pip install "
                  f"torchmetrics[image] to get it")
        return {}
    weights = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE
    if not weights.exists():
        _say_once(f"evaluate_images: FID left out: its Inception weights are not at {str(weights)!r} and dualmcmc "
                  f"never downloads; put torch-fidelity's {FID_WEIGHTS_FILE} there to get FID")
        return {}
    scores = {}
    try:
        metric = FrechetInceptionDistance(feature=2048, normalize=True, reset_real_features=False).to(device)
        for batch in reference.split(100):
            metric.update(_fid_input(batch, device), real=True)
        for prefix, samples in sets.items():
            metric.reset()
            for batch in samples.split(100):
                metric.update(_fid_input(batch, device), real=False)
            scores[f"{prefix}fid"] = float(metric.compute())
    except Exception as err:  # torchmetrics / torch-fidelity versions differ in what they raise
        _say_once(f"evaluate_images: FID left out: torchmetrics failed ({type(err).__name__}: {err})")
        return {}
    return scores


def _fid_input(batch: Tensor, device) -> Tensor:
    """[-1, 1] images as torchmetrics' FID takes them with normalize=True: 3 channels in [0, 1]."""
    images = ((batch + 1.0) / 2.0).clamp(0.0, 1.0)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images[:, :3].to(device)

"""Image metrics: a digits classifier the package trains itself, Frechet distance and kernel MMD of features,
precision / recall / density / coverage (through the ``prdc`` package), the class histogram of samples, and
evaluate_images, which scores a method's EBM / generator samples and reconstructions on image data.

* digits: features of ``digits_classifier`` (a small CNN trained on the 1497 training digits, cached on disk) and,
  as a second, independent feature space, the hidden layer of ``digits_mlp`` (a scikit-learn MLPClassifier trained
  on the same 1497 digits, cached as plain arrays); samples are compared with the 300 held-out digits
  ("digits:test"), never with the data the model saw, and neither feature net has seen those 300 digits.
* other images: kernel MMD in pixel space against a seeded subset of the data, and FID through torchmetrics when
  it is installed and its Inception weights are already on disk (dualmcmc never downloads).
"""
from __future__ import annotations

import contextlib
import io
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
MLP_FILE = "digits_mlp_v1.npz"  # bump the version when the MLP or its training changes
MLP_SEED = 0
MLP_HIDDEN = 128
MLP_MAX_ITER = 300  # adam reaches sklearn's tol after about 170 epochs
PRDC_NEAREST_K = 5  # Naeem et al. 2020's k
CLASS_MIN_SHARE = 0.05  # a class counts as covered with at least half the uniform share (1/10)
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
    _write_atomically(path, lambda out: torch.save(model.state_dict(), out), "the digits classifier")


def _write_atomically(path: Path, write: Callable, what: str) -> None:
    """write(binary file) into a temp file in path's folder, then os.replace; an OSError only warns."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                write(out)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as err:
        warnings.warn(f"cannot cache {what} at {str(path)!r} ({err}); it is retrained next time")


# ---- the second feature space: a scikit-learn MLP ---------------------------------------------------------------


class DigitsMLP(nn.Module):
    """The hidden layer of a scikit-learn MLPClassifier (64 pixels -> MLP_HIDDEN ReLU units -> 10) as a module.

    A second feature space for the digits, independent of DigitsClassifier: another model family (dense, no
    convolutions), another library's training (sklearn's adam, its own initialisation and stopping rule).  Only the
    weights are kept (``coefs_`` / ``intercepts_``), so the cache is plain arrays and needs no pickle.
    """

    def __init__(self, hidden: int = MLP_HIDDEN) -> None:
        super().__init__()
        self.hidden = nn.Linear(64, hidden)
        self.head = nn.Linear(hidden, 10)
        self.test_accuracy: float = math.nan  # on the 300 held-out digits, set by digits_mlp
        self.train_seconds: float | None = None  # None when the weights came from the cache

    def features(self, x: Tensor) -> Tensor:
        """Hidden-layer activations (N, hidden) of digits x: (N, 1, 8, 8) or (N, 64), in [-1, 1]."""
        if not (x.ndim == 2 and x.shape[1] == 64) and not (x.ndim == 4 and tuple(x.shape[1:]) == (1, 8, 8)):
            raise ValueError(f"digits MLP: x must be (N, 1, 8, 8) or (N, 64) digits in [-1, 1], got shape "
                             f"{tuple(x.shape)}")
        return torch.relu(self.hidden(to_model_range(x).to(torch.float32).reshape(len(x), 64)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: value.detach().numpy() for name, value in self.state_dict().items()}

    @classmethod
    def from_arrays(cls, arrays) -> "DigitsMLP":
        weights = {name: torch.from_numpy(np.asarray(arrays[name], dtype=np.float32))
                   for name in ("hidden.weight", "hidden.bias", "head.weight", "head.bias")}
        model = cls(hidden=weights["hidden.bias"].shape[0])
        model.load_state_dict(weights)
        return _frozen(model)


def train_digits_mlp(seed: int = MLP_SEED, hidden: int = MLP_HIDDEN) -> DigitsMLP:
    """Fit sklearn's MLPClassifier on the 1497 training digits (pixels in [-1, 1]), seeded, one BLAS thread.

    The 300 held-out digits are left out on purpose: they are the reference that samples are scored against, and
    a feature net that has fitted them maps them closer to its class prototypes than any unseen image (its
    training loss pulls them there), so every sample would look farther from them than it is, and the floor
    (training digits against held-out ones) would no longer measure what a perfect sampler reaches.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    x = load_digits("train").reshape(-1, 64).numpy().astype(np.float64)
    y = load_digits_labels("train").numpy()
    start = time.perf_counter()
    with threadpool_limits(1), warnings.catch_warnings():  # one thread: the same sums, hence the same weights
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = MLPClassifier(hidden_layer_sizes=(hidden,), random_state=seed, max_iter=MLP_MAX_ITER).fit(x, y)
    if list(fitted.classes_) != list(range(10)):
        raise RuntimeError(f"digits MLP: expected classes 0..9, sklearn found {list(fitted.classes_)}")
    model = DigitsMLP.from_arrays({"hidden.weight": fitted.coefs_[0].T, "hidden.bias": fitted.intercepts_[0],
                                   "head.weight": fitted.coefs_[1].T, "head.bias": fitted.intercepts_[1]})
    model.train_seconds = time.perf_counter() - start
    return model


def digits_mlp(cache_dir: str | os.PathLike | None = None) -> DigitsMLP:
    """The second digits feature net (DigitsMLP), from the cache or trained (a few seconds), like digits_classifier.

    Cached beside the classifier (``cache_dir`` / ``$DUALMCMC_CACHE`` / ``~/.cache/dualmcmc``) as ``digits_mlp_v1.npz``
    (plain arrays, loaded without pickle), written atomically; an unreadable file is retrained and replaced.
    ``.test_accuracy``: accuracy on the 300 held-out digits; ``.train_seconds``: training time (None when loaded).
    """
    path = classifier_cache_dir(cache_dir) / MLP_FILE
    model = None
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as arrays:
                model = DigitsMLP.from_arrays(arrays)
        except Exception as err:  # truncated / foreign file: numpy and torch raise many types
            warnings.warn(f"digits MLP cache {str(path)!r} is unreadable ({type(err).__name__}); retraining it")
    if model is None:
        model = train_digits_mlp()
        _write_atomically(path, lambda out: np.savez(out, **model.arrays()), "the digits MLP")
    model.test_accuracy = classifier_accuracy(model, load_digits("test"), load_digits_labels("test"))
    return model


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


def precision_recall_density_coverage(real_feats, fake_feats, nearest_k: int = PRDC_NEAREST_K) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020) of fake features against real ones, by ``prdc``.

    k-nearest-neighbour balls around each real (fake) point stand for the real (fake) manifold.  Precision: share of
    fakes inside some real ball (fidelity, "sharpness"); recall: share of reals inside some fake ball (diversity);
    density: mean number of real balls holding a fake, / k (about 1 for fakes spread like the data, above 1 for
    fakes crowded in dense regions); coverage: share of real balls holding at least one fake (the robust recall).
    Both sets need more than ``nearest_k`` rows.  Raises ImportError (saying how to install it) without ``prdc``.
    """
    real, fake = _pair(real_feats, fake_feats)
    if isinstance(nearest_k, bool) or not isinstance(nearest_k, int) or nearest_k < 1:
        raise ValueError(f"nearest_k must be an int >= 1, got {nearest_k!r}")
    if min(len(real), len(fake)) <= nearest_k:
        raise ValueError(f"precision/recall/density/coverage with nearest_k={nearest_k} need more than {nearest_k} "
                         f"rows in each set, got {len(real)} real and {len(fake)} fake")
    try:
        from prdc import compute_prdc
    except ImportError as err:
        raise ImportError(f"precision/recall/density/coverage need the prdc package ({err}); pip install prdc") from err
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes on every call
        scores = compute_prdc(real_features=real, fake_features=fake, nearest_k=nearest_k)
    return {name: float(scores[name]) for name in ("precision", "recall", "density", "coverage")}


def class_coverage(logits, reference_labels, min_share: float = CLASS_MIN_SHARE) -> dict[str, float]:
    """How samples spread over the classes, from a classifier's ``logits`` (N, C) of them: the histogram of argmax
    labels against the histogram of ``reference_labels`` (M,) (ints in 0..C-1).

    "classes_covered": classes holding at least ``min_share`` of the samples; "class_min_share": the rarest class's
    share; "class_tv": total variation between the two histograms (0..1); "class_kl": KL(reference || samples) in
    nats, the sample histogram smoothed by half a count per class (so a missing class costs a finite amount, about
    log(2N) times its reference share); "confidence": mean max-softmax probability, how sure the classifier is of
    the samples (sharpness: blurred or in-between digits score low).
    """
    logits = torch.as_tensor(logits).detach().to("cpu", torch.float64)
    labels = torch.as_tensor(reference_labels).detach().to("cpu")
    if logits.ndim != 2 or len(logits) < 1 or logits.shape[1] < 2:
        raise ValueError(f"logits must be (N, C) with N >= 1 and C >= 2 classes, got shape {tuple(logits.shape)}")
    if not torch.isfinite(logits).all():
        raise ValueError("logits hold NaN or Inf values; drop those rows first")
    classes = logits.shape[1]
    if labels.ndim != 1 or len(labels) < 1 or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"reference_labels must be a 1-D integer array with at least one label, got "
                         f"{labels.dtype} of shape {tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"reference_labels must lie in 0..{classes - 1} (logits have {classes} classes), got "
                         f"{labels.min().item()}..{labels.max().item()}")
    if not 0.0 < min_share <= 1.0:
        raise ValueError(f"min_share must be in (0, 1], got {min_share!r}")
    counts = torch.bincount(logits.argmax(dim=1), minlength=classes).double()
    share = counts / counts.sum()
    reference = torch.bincount(labels.long(), minlength=classes).double()
    reference = reference / reference.sum()
    smoothed = (counts + 0.5) / (counts.sum() + 0.5 * classes)
    present = reference > 0
    return {
        "classes_covered": float((share >= min_share).sum()),
        "class_min_share": float(share.min()),
        "class_tv": float(0.5 * (share - reference).abs().sum()),
        "class_kl": float((reference[present] * (reference[present] / smoothed[present]).log()).sum()),
        "confidence": float(logits.softmax(dim=1).amax(dim=1).mean()),
    }


# ---- evaluation of a method ---------------------------------------------------------------------------------


def evaluate_images(method, dataset: str, n_samples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Scores of ``method``'s samples and reconstructions on image data ``dataset``; a dict of floats.

    ``method`` needs ``.device``, ``.sample(n, generator=g)``; ``.generator_sample(n, generator=g)`` and
    ``.reconstruct(x)`` may return None (or be missing).  Samples come from a torch.Generator seeded by ``seed`` on
    the method's device, in batches of 500.  Keys (a set that cannot be scored is left out):

    * digits ("digits", "digits:train", "digits:test"), always against the 300 held-out digits; each EBM-sample
      key below has a "generator_" twin for the generator's samples:

      - "fd" / "mmd": Frechet distance / KID-style MMD^2 in digits_classifier (CNN) features; features are divided
        by their RMS over the held-out digits, one fixed number per feature space;
      - "mlp_fd": Frechet distance in the second, independent feature space, the hidden layer of digits_mlp (a
        scikit-learn MLP; like the CNN, trained on the training digits only);
      - "precision" / "recall" / "density" / "coverage" and "mlp_precision" / ... : Naeem et al.'s scores
        (precision_recall_density_coverage, k = 5, the held-out digits as the real set) in the CNN / MLP features:
        precision and density measure fidelity (samples on the data manifold), recall and coverage diversity;
        left out, with one warning, when the ``prdc`` package is not installed;
      - "classes_covered", "class_min_share", "class_tv", "class_kl", "confidence": class_coverage of the CNN's
        argmax labels of the samples against its labels of the held-out digits (at least 5 % of the samples
        count as covered; 10 is all), and its mean max-softmax confidence (sharpness);
      - floors, what the 1497 training digits score in the same places (a perfect model's level): "train_fd",
        "train_mlp_fd", "train_precision" ... "train_mlp_coverage" (a seeded subset of n_samples training digits,
        as prdc's scores depend on the set size), "train_class_tv"; "test_confidence": the classifier's mean
        confidence on the held-out digits; "classifier_test_accuracy" / "mlp_test_accuracy" of the feature nets;
      - "recon_mse": per pixel, [-1, 1] units, of the held-out digits;
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
        results.update(_digits_scores(sets, n_samples, seed))
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


def _digits_scores(sets: dict[str, Tensor], n_samples: int, seed: int) -> dict[str, float]:
    classifier, mlp = digits_classifier(), digits_mlp()
    test, train = load_digits("test"), load_digits("train")
    scores = {"classifier_test_accuracy": classifier.test_accuracy, "mlp_test_accuracy": mlp.test_accuracy}
    with_prdc = _prdc_available()
    # prdc's recall and coverage grow with the fake set's size: the floor uses as many training digits as samples
    floor_rows = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n_samples]
    with torch.no_grad():
        for space, net in (("", classifier), ("mlp_", mlp)):
            test_feats = net.features(test)
            # One fixed scale for every set: real digits get E|f|^2 / F = 1, so KID's kernel sees O(1) dot products.
            scale = test_feats.square().mean().sqrt()
            test_feats = test_feats / scale
            train_feats = net.features(train) / scale
            scores[f"train_{space}fd"] = frechet_distance(train_feats, test_feats)
            if with_prdc:
                floor = precision_recall_density_coverage(test_feats, train_feats[floor_rows])
                scores.update({f"train_{space}{name}": value for name, value in floor.items()})
            for prefix, samples in sets.items():
                feats = net.features(samples) / scale if len(samples) else None
                enough = len(samples) >= 2
                scores[f"{prefix}{space}fd"] = frechet_distance(feats, test_feats) if enough else math.nan
                if not space:
                    scores[f"{prefix}mmd"] = kernel_mmd(feats, test_feats) if enough else math.nan
                if with_prdc:
                    if len(samples) > PRDC_NEAREST_K:
                        found = precision_recall_density_coverage(test_feats, feats)
                    else:
                        found = dict.fromkeys(("precision", "recall", "density", "coverage"), math.nan)
                    scores.update({f"{prefix}{space}{name}": value for name, value in found.items()})
        test_logits = classifier(test)
        test_labels = test_logits.argmax(dim=1)  # the classifier's labels: its few errors cancel in the comparison
        scores["test_confidence"] = class_coverage(test_logits, test_labels)["confidence"]
        scores["train_class_tv"] = class_coverage(classifier(train), test_labels)["class_tv"]
        for prefix, samples in sets.items():
            if len(samples):
                found = class_coverage(classifier(samples), test_labels)
            else:
                found = dict.fromkeys(("classes_covered", "class_min_share", "class_tv", "class_kl", "confidence"),
                                      math.nan)
            scores.update({f"{prefix}{name}": value for name, value in found.items()})
    return scores


def _prdc_available() -> bool:
    try:
        import prdc  # noqa: F401
    except ImportError as err:
        _say_once(f"evaluate_images: precision/recall/density/coverage left out: the prdc package is missing "
                  f"({err}); pip install prdc (or dualmcmc[test]) to get them")
        return False
    return True


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

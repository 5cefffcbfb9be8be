"""Tests for dualmcmc.metrics.images: the digits classifier and its cache, Frechet distance, kernel MMD and
evaluate_images on small fake methods."""
from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pytest
import torch

import dualmcmc.metrics.images as image_metrics
from dualmcmc.data import load_digits
from dualmcmc.metrics import digits_classifier, evaluate_images, frechet_distance, kernel_mmd
from dualmcmc.metrics.images import CLASSIFIER_FILE


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache folder for the module, so the classifier trains once for all evaluate_images tests."""
    return tmp_path_factory.mktemp("dualmcmc_cache")


@pytest.fixture(autouse=True)
def _cache_env(shared_cache, monkeypatch):
    monkeypatch.setenv("DUALMCMC_CACHE", str(shared_cache))


# ---- the classifier -----------------------------------------------------------------------------------------


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_classifier_is_accurate_frozen_and_cached(shared_cache):
    first = digits_classifier()
    assert (shared_cache / CLASSIFIER_FILE).exists()
    assert first.test_accuracy > 0.95 and first.train_seconds is not None
    assert not first.training and not any(p.requires_grad for p in first.parameters())
    x = load_digits("test")[:5]
    assert first(x).shape == (5, 10) and first.features(x).shape == (5, 64)
    assert first.features(x.reshape(5, 64)).shape == (5, 64)
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\).*\(5, 3, 8, 8\)"):
        first.features(torch.zeros(5, 3, 8, 8))
    second = digits_classifier()
    assert second.train_seconds is None  # loaded, not trained
    assert _same_weights(first, second) and second.test_accuracy == first.test_accuracy


def test_corrupt_cache_is_retrained_to_the_same_weights(shared_cache):
    good = digits_classifier()  # trained by the test above, or now
    (shared_cache / CLASSIFIER_FILE).write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable.*retraining"):
        retrained = digits_classifier()
    assert retrained.train_seconds is not None
    assert _same_weights(good, retrained)  # training is deterministic
    assert digits_classifier().train_seconds is None  # the cache was rewritten
    assert not list(shared_cache.glob("*.tmp"))  # no temp files left behind


def test_cache_dir_argument_wins_over_the_environment(tmp_path, shared_cache):
    digits_classifier()  # make sure the shared cache holds a classifier
    (tmp_path / CLASSIFIER_FILE).write_bytes((shared_cache / CLASSIFIER_FILE).read_bytes())
    assert digits_classifier(cache_dir=tmp_path).train_seconds is None
    assert image_metrics.classifier_cache_dir(tmp_path) == tmp_path


# ---- distances ----------------------------------------------------------------------------------------------


def _with_exact_moments(n, mean, cov, seed):
    """n points whose sample mean and (ddof 1) covariance are exactly ``mean`` and ``cov``."""
    z = np.random.default_rng(seed).normal(size=(n, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return mean + z @ np.linalg.cholesky(cov).T


def test_frechet_distance_zero_for_the_same_set_and_symmetric():
    a = np.random.default_rng(0).normal(size=(200, 6))
    b = np.random.default_rng(1).normal(loc=0.5, size=(150, 6))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    assert frechet_distance(torch.from_numpy(a).float(), b) == pytest.approx(frechet_distance(a, b), rel=1e-5)


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    mean_a, mean_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    a = _with_exact_moments(500, mean_a, np.diag(var_a), 0)
    b = _with_exact_moments(400, mean_b, np.diag(var_b), 1)
    expected = ((mean_a - mean_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()  # 5 + 4 + 1
    assert expected == pytest.approx(10.0)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_sqrtm_for_full_covariances():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(3)
    m_a, m_b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    cov_a, cov_b = m_a @ m_a.T + 0.1 * np.eye(4), m_b @ m_b.T + 0.1 * np.eye(4)
    a = _with_exact_moments(300, np.zeros(4), cov_a, 4)
    b = _with_exact_moments(300, np.ones(4), cov_b, 5)
    expected = 4.0 + np.trace(cov_a + cov_b - 2.0 * sqrtm(cov_a @ cov_b).real)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_distances_reject_bad_input():
    good = np.zeros((5, 3))
    with pytest.raises(ValueError, match=r"feats_a must be a 2-D \(N, F\) array with N >= 2 rows.*\(1, 3\)"):
        frechet_distance(np.zeros((1, 3)), good)
    with pytest.raises(ValueError, match="feats_a has 3 features per row but feats_b has 4"):
        kernel_mmd(good, np.zeros((5, 4)))
    bad = np.zeros((5, 3))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="feats_b holds NaN"):
        kernel_mmd(good, bad)


def test_kernel_mmd_near_zero_for_one_distribution_and_larger_when_shifted():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    same, shifted = kernel_mmd(a, b), kernel_mmd(a, b + 1.0)
    assert abs(same) < 0.05 and shifted > 1.0 and shifted > 50 * abs(same)
    assert kernel_mmd(a, b) == pytest.approx(kernel_mmd(b, a), rel=1e-9)


# ---- evaluate_images ----------------------------------------------------------------------------------------


class FakeMethod:
    """Stands in for a trained Method: samples are rows of ``pool`` (real data) or uniform noise."""

    device = torch.device("cpu")

    def __init__(self, pool=None, shape=(1, 8, 8), generator=False, reconstruct_identity=False):
        self.pool, self.shape = pool, shape
        self.has_generator, self.reconstruct_identity = generator, reconstruct_identity

    def sample(self, n, generator=None):
        if self.pool is None:
            return torch.rand(n, *self.shape, generator=generator) * 2 - 1
        return self.pool[torch.randint(len(self.pool), (n,), generator=generator)]

    def generator_sample(self, n, generator=None):
        return torch.rand(n, *self.shape, generator=generator) * 2 - 1 if self.has_generator else None

    def reconstruct(self, x):
        return x.clone() if self.reconstruct_identity else None


def test_real_digits_score_far_better_than_noise():
    real = evaluate_images(FakeMethod(load_digits("train"), reconstruct_identity=True), "digits", 300, seed=0)
    noise = evaluate_images(FakeMethod(generator=True), "digits", 300, seed=0)
    sample_keys = {"fd", "mmd", "mlp_fd", "precision", "recall", "density", "coverage", "mlp_precision", "mlp_recall",
                   "mlp_density", "mlp_coverage", "classes_covered", "class_min_share", "class_tv", "class_kl",
                   "confidence", "nonfinite_fraction"}
    floors = {"train_fd", "train_mlp_fd", "train_class_tv", "test_confidence", "classifier_test_accuracy",
              "mlp_test_accuracy"} | {f"train_{space}{name}" for space in ("", "mlp_")
                                      for name in ("precision", "recall", "density", "coverage")}
    assert set(real) == sample_keys | floors | {"recon_mse"}
    assert {f"generator_{key}" for key in sample_keys} <= set(noise)
    # Both feature spaces, the class histogram and prdc tell real digits from noise, by far.
    assert real["mlp_fd"] < noise["mlp_fd"] / 10 and real["classes_covered"] == 10 and noise["classes_covered"] < 10
    for name in ("precision", "recall", "density", "coverage", "mlp_precision", "mlp_coverage"):
        assert real[name] > 0.9 and noise[name] < 0.05, name
    assert real["class_tv"] < 0.15 < noise["class_tv"] and real["confidence"] > noise["confidence"] + 0.2
    assert {"generator_fd", "generator_mmd", "generator_nonfinite_fraction"} <= set(noise)
    assert "recon_mse" not in noise
    assert real["recon_mse"] == 0.0 and real["classifier_test_accuracy"] > 0.95
    assert real["fd"] < noise["fd"] / 10 and real["mmd"] < noise["mmd"] / 10
    assert noise["generator_fd"] > 10 * real["fd"]
    assert real["fd"] < 3 * real["train_fd"] + 1.0  # real digits sit near the floor
    assert evaluate_images(FakeMethod(generator=True), "digits", 300, seed=0) == noise  # seeded


def test_nonfinite_samples_are_counted_and_left_out():
    class HalfNan(FakeMethod):
        def sample(self, n, generator=None):
            x = super().sample(n, generator)
            x[: n // 2] = float("nan")
            return x

    scores = evaluate_images(HalfNan(load_digits("train")), "digits", 100)
    assert scores["nonfinite_fraction"] == 0.5 and np.isfinite(scores["fd"])


def test_wrong_sample_shape_and_bad_n_samples_are_named():
    with pytest.raises(ValueError, match=r"method.sample\(50\) returned shape \(50, 3, 8, 8\)"):
        evaluate_images(FakeMethod(shape=(3, 8, 8)), "digits", 50)
    with pytest.raises(ValueError, match="n_samples must be an int >= 2"):
        evaluate_images(FakeMethod(), "digits", 1)


def test_other_images_use_pixel_mmd_and_skip_fid_without_torchmetrics(tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    data = np.zeros((80, 3, 6, 6), dtype=np.uint8)
    data[:, :, 1:5, 1:5] = rng.integers(150, 256, size=(80, 3, 4, 4))  # a bright square on black
    np.save(tmp_path / "imgs.npy", data)
    pool = torch.from_numpy(data).float() / 127.5 - 1
    monkeypatch.setitem(sys.modules, "torchmetrics", None)  # as if not installed
    monkeypatch.setattr(image_metrics, "_ALREADY_SAID", set())
    with pytest.warns(UserWarning, match="FID left out") as said:
        real_method = FakeMethod(pool, shape=(3, 6, 6), reconstruct_identity=True)
        real = evaluate_images(real_method, str(tmp_path / "imgs.npy"), 60)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: no second warning
        noise = evaluate_images(FakeMethod(shape=(3, 6, 6)), str(tmp_path / "imgs.npy"), 60)
    assert len([w for w in said if "FID" in str(w.message)]) == 1
    assert set(real) == {"mmd", "nonfinite_fraction", "recon_mse"} and "fid" not in noise
    assert real["recon_mse"] == pytest.approx(0.0, abs=1e-12)
    assert real["mmd"] < noise["mmd"] / 10


class _FakeFID:
    """Stands in for torchmetrics' FrechetInceptionDistance: |mean(fake) - mean(real)| over what it was fed."""

    def __init__(self, feature, normalize, reset_real_features):
        assert feature == 2048 and normalize and not reset_real_features
        self.real, self.fake = [], []

    def to(self, device):
        return self

    def update(self, images, real):
        assert images.shape[1] == 3 and images.min() >= 0 and images.max() <= 1  # what normalize=True takes
        (self.real if real else self.fake).append(images)

    def reset(self):
        self.fake = []  # reset_real_features=False keeps the real ones

    def compute(self):
        return (torch.cat(self.fake).mean() - torch.cat(self.real).mean()).abs()


def _fake_torchmetrics(monkeypatch):
    import types

    fid = types.ModuleType("torchmetrics.image.fid")
    fid.FrechetInceptionDistance = _FakeFID
    for name in ("torchmetrics", "torchmetrics.image"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "torchmetrics.image.fid", fid)
    monkeypatch.setattr(image_metrics, "_ALREADY_SAID", set())


def test_fid_through_torchmetrics_only_when_its_weights_are_on_disk(tmp_path, monkeypatch):
    grey = np.random.default_rng(8).integers(0, 256, size=(30, 1, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "grey.npy", grey)
    _fake_torchmetrics(monkeypatch)
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    method = FakeMethod(shape=(1, 4, 4), generator=True)
    with pytest.warns(UserWarning, match="Inception weights are not at .*never downloads"):
        assert "fid" not in evaluate_images(method, str(tmp_path / "grey.npy"), 20)
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / image_metrics.FID_WEIGHTS_FILE).write_bytes(b"")
    scores = evaluate_images(method, str(tmp_path / "grey.npy"), 20)
    assert scores["fid"] >= 0 and scores["generator_fid"] == pytest.approx(scores["fid"])  # same seed, same noise


def test_class_coverage_known_answers():
    from dualmcmc.metrics.images import class_coverage
    logits = torch.eye(3)[[0, 0, 1, 1]] * 50  # two classes of three, evenly, with full confidence
    found = class_coverage(logits, torch.tensor([0, 1, 2]))
    assert found["classes_covered"] == 2 and found["class_min_share"] == 0.0
    assert abs(found["class_tv"] - 1 / 3) < 1e-12 and abs(found["confidence"] - 1.0) < 1e-12
    # KL(reference || counts smoothed by half a count): (1/3) * sum log((1/3) / ((c + .5) / 5.5))
    expected = sum(math.log((1 / 3) / ((c + 0.5) / 5.5)) for c in (2, 2, 0)) / 3
    assert abs(found["class_kl"] - expected) < 1e-12
    with pytest.raises(ValueError, match="reference_labels must lie in 0..2"):
        class_coverage(logits, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="NaN"):
        class_coverage(torch.full((2, 3), float("nan")), torch.tensor([0]))


def test_prdc_separates_fidelity_from_diversity():
    pytest.importorskip("prdc")
    from dualmcmc.metrics.images import precision_recall_density_coverage
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 4))
    collapsed = real[:20].repeat(20, axis=0) + 1e-3 * rng.normal(size=(400, 4))  # sharp but one corner
    spread = rng.normal(size=(400, 4))
    sharp, diverse = precision_recall_density_coverage(real, collapsed), precision_recall_density_coverage(real, spread)
    assert sharp["precision"] > 0.9 and sharp["coverage"] < 0.4  # fidelity without diversity
    assert diverse["precision"] > 0.8 and diverse["coverage"] > 0.8
    with pytest.raises(ValueError, match="nearest_k=5 need more than 5 rows"):
        precision_recall_density_coverage(real[:5], spread)

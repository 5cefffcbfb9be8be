"""Tests for image data: the digits split, image arrays in every layout, image folders, torchvision sets."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from dualmcmc.data import is_image_shape, load_dataset, load_digits_labels, to_model_range
from dualmcmc.data.digits import digits_split_indices

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


# ---- digits -----------------------------------------------------------------------------------------------


def test_digits_train_and_test_shapes_and_range():
    train, test = load_dataset("digits"), load_dataset("digits:test")
    assert train.shape == (1497, 1, 8, 8) and test.shape == (300, 1, 8, 8)
    assert train.dtype == torch.float32 and test.dtype == torch.float32
    assert train.min().item() == -1.0 and train.max().item() == 1.0
    assert torch.equal(load_dataset("digits:train"), train)
    assert is_image_shape(train.shape[1:]) and not is_image_shape((2,))
    labels = load_digits_labels("test")
    assert labels.shape == (300,) and set(labels.tolist()) == set(range(10))  # every class held out


def test_digits_split_is_disjoint_complete_and_deterministic():
    train, test = digits_split_indices("train"), digits_split_indices("test")
    assert len(set(train.tolist()) & set(test.tolist())) == 0
    assert sorted(train.tolist() + test.tolist()) == list(range(1797))
    np.testing.assert_array_equal(test, digits_split_indices("test"))
    assert torch.equal(load_dataset("digits:test"), load_dataset("digits:test"))
    # The split's pixels are sklearn's, scaled: x / 8 - 1.
    from sklearn.datasets import load_digits

    raw = load_digits().images[test].astype(np.float32)
    np.testing.assert_allclose(load_dataset("digits:test")[:, 0].numpy(), raw / 8 - 1)


def test_unknown_digits_split():
    with pytest.raises(ValueError, match="unknown digits data 'digits:val'; valid: .*digits:test"):
        load_dataset("digits:val")


# ---- arrays -----------------------------------------------------------------------------------------------


def test_uint8_channels_first_and_last_agree_and_stay_uint8(tmp_path):
    rng = np.random.default_rng(0)
    nchw = rng.integers(0, 256, size=(5, 3, 6, 7), dtype=np.uint8)
    np.save(tmp_path / "first.npy", nchw)
    np.savez(tmp_path / "last.npz", x=nchw.transpose(0, 2, 3, 1), labels=np.zeros(5))
    first, last = load_dataset(str(tmp_path / "first.npy")), load_dataset(str(tmp_path / "last.npz"))
    assert first.dtype == torch.uint8 and first.shape == (5, 3, 6, 7)
    assert torch.equal(first, last) and torch.equal(first, torch.from_numpy(nchw))


def test_grey_three_d_and_one_channel_last(tmp_path):
    grey = np.random.default_rng(1).uniform(-1, 1, size=(4, 3, 2)).astype(np.float32)
    np.save(tmp_path / "grey.npy", grey)
    out = load_dataset(str(tmp_path / "grey.npy"))
    assert out.shape == (4, 1, 3, 2) and out.dtype == torch.float32
    np.testing.assert_array_equal(out[:, 0].numpy(), grey)
    np.save(tmp_path / "last1.npy", np.zeros((4, 5, 6, 1), dtype=np.uint8))  # dim 1 is no channel count
    assert load_dataset(str(tmp_path / "last1.npy")).shape == (4, 1, 5, 6)


def test_uint8_round_trip_through_to_model_range(tmp_path):
    pixels = np.array([0, 255, 128, 64], dtype=np.uint8).reshape(1, 1, 2, 2)
    np.save(tmp_path / "px.npy", pixels)
    stored = load_dataset(str(tmp_path / "px.npy"))
    model = to_model_range(stored)
    assert model.dtype == torch.float32
    torch.testing.assert_close(model.flatten(), torch.tensor([-1.0, 1.0, 128 / 127.5 - 1, 64 / 127.5 - 1]))
    back = ((model + 1) * 127.5).round().to(torch.uint8)
    assert torch.equal(back, stored)
    floats = torch.zeros(2, 1, 2, 2)
    assert to_model_range(floats) is floats
    with pytest.raises(ValueError, match="dtype torch.int64.*uint8"):
        to_model_range(torch.zeros(2, dtype=torch.int64))


def test_integer_images_in_0_255_become_uint8_others_are_refused(tmp_path):
    np.save(tmp_path / "ok.npy", np.full((2, 1, 3, 3), 200, dtype=np.int64))
    assert load_dataset(str(tmp_path / "ok.npy")).dtype == torch.uint8
    np.save(tmp_path / "wide.npy", np.full((2, 1, 3, 3), 300, dtype=np.int64))
    with pytest.raises(ValueError, match=r"wide\.npy.*\[300, 300\].*0\.\.255"):
        load_dataset(str(tmp_path / "wide.npy"))


def test_float_images_outside_minus_one_one_are_refused(tmp_path):
    np.save(tmp_path / "scale.npy", np.full((2, 3, 4, 4), 255.0, dtype=np.float32))
    with pytest.raises(ValueError, match=r"scale\.npy.*must already be in \[-1, 1\].*x / 127\.5 - 1"):
        load_dataset(str(tmp_path / "scale.npy"))
    bad = np.zeros((2, 3, 4, 4), dtype=np.float32)
    bad[1, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match=r"nan\.npy.*1 of 2 images hold NaN"):
        load_dataset(str(tmp_path / "nan.npy"))


def test_four_d_without_a_channel_dim_is_refused(tmp_path):
    np.save(tmp_path / "amb.npy", np.zeros((2, 5, 6, 7), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"amb\.npy.*\(2, 5, 6, 7\).*N x C x H x W or N x H x W x C"):
        load_dataset(str(tmp_path / "amb.npy"))


# ---- folders ----------------------------------------------------------------------------------------------


def _save_png(path, array, mode):
    from PIL import Image

    Image.fromarray(array, mode=mode).save(path)


def test_folder_of_rgb_pngs(tmp_path):
    rng = np.random.default_rng(2)
    arrays = [rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8) for _ in range(3)]
    for i, a in enumerate(arrays):
        _save_png(tmp_path / f"img{i}.png", a, "RGB")
    (tmp_path / "notes.txt").write_text("not an image")  # ignored
    out = load_dataset(str(tmp_path))
    assert out.dtype == torch.uint8 and out.shape == (3, 3, 4, 5)
    for i, a in enumerate(arrays):
        np.testing.assert_array_equal(out[i].numpy(), a.transpose(2, 0, 1))


def test_folder_of_grey_pngs_is_one_channel(tmp_path):
    for i in range(2):
        _save_png(tmp_path / f"g{i}.png", np.full((3, 3), 10 * i, dtype=np.uint8), "L")
    out = load_dataset(tmp_path)
    assert out.shape == (2, 1, 3, 3) and out[1].unique().tolist() == [10]


def test_folder_with_mixed_sizes_names_the_first_two(tmp_path):
    _save_png(tmp_path / "a.png", np.zeros((4, 4, 3), dtype=np.uint8), "RGB")
    _save_png(tmp_path / "b.png", np.zeros((4, 6, 3), dtype=np.uint8), "RGB")
    with pytest.raises(ValueError, match=r"differ in size: a\.png is 4x4, b\.png is 6x4"):
        load_dataset(str(tmp_path))


def test_empty_folder_and_unreadable_image(tmp_path):
    with pytest.raises(ValueError, match="holds no image files"):
        load_dataset(str(tmp_path))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
        load_dataset(str(tmp_path))


# ---- torchvision sets -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "celeba"])
def test_torchvision_set_with_missing_root(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=rf"{name} root folder .*missing.*does not exist"):
        load_dataset(f"{name}:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match=f"'{name}:' has no root folder"):
        load_dataset(f"{name}:")


@pytest.mark.parametrize("name", ["cifar10", "celeba"])
def test_torchvision_set_with_empty_root(tmp_path, name):
    if HAS_TORCHVISION:
        with pytest.raises(FileNotFoundError, match=rf"{name} files not found under .*nothing is ever downloaded"):
            load_dataset(f"{name}:{tmp_path}")
    else:
        with pytest.raises(ModuleNotFoundError, match="needs torchvision.*pip install torchvision.*\\.npz"):
            load_dataset(f"{name}:{tmp_path}")


def test_celeba_preprocess_crops_and_resizes():
    from PIL import Image

    from dualmcmc.data.torchvision_sets import celeba_preprocess

    face = np.zeros((218, 178, 3), dtype=np.uint8)  # CelebA's aligned size
    face[40:188, 15:163] = 200  # exactly the crop box
    out = celeba_preprocess(Image.fromarray(face))
    assert out.shape == (3, 64, 64) and out.dtype == np.uint8 and (out == 200).all()


def test_dataset_shape_without_loading_the_named_sets(tmp_path):
    from dualmcmc.data import dataset_shape

    assert dataset_shape("moons") == (2,) and dataset_shape("digits:test") == (1, 8, 8)
    assert dataset_shape(f"cifar10:{tmp_path}") == (3, 32, 32) and dataset_shape(f"celeba:{tmp_path}") == (3, 64, 64)
    with pytest.raises(FileNotFoundError, match="celeba root folder"):
        dataset_shape(f"celeba:{tmp_path / 'nope'}")
    np.save(tmp_path / "x.npy", np.zeros((3, 8, 8, 3), dtype=np.uint8))
    assert dataset_shape(tmp_path / "x.npy") == (3, 8, 8)

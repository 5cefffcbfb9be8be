"""The MLP networks: shapes, energy convention, input gradients, errors."""
import pytest
import torch

from dualmcmc.nets import ACTIVATIONS, GaussianMLPEncoder, MLPEnergy, MLPGenerator, is_vector_shape


def test_energy_returns_one_value_per_sample_and_has_input_gradients():
    energy = MLPEnergy(2, hidden=16, layers=2)
    x = torch.randn(7, 2, requires_grad=True)
    e = energy(x)
    assert e.shape == (7,)
    (g,) = torch.autograd.grad(e.sum(), x)
    assert g.shape == (7, 2) and torch.isfinite(g).all() and g.abs().sum() > 0


def test_generator_and_encoder_shapes():
    gen = MLPGenerator(latent_dim=3, dim=5, hidden=16, layers=2)
    enc = GaussianMLPEncoder(dim=5, latent_dim=3, hidden=16, layers=2)
    z = torch.randn(4, 3)
    x = gen(z)
    assert x.shape == (4, 5)
    mu, logvar = enc(x)
    assert mu.shape == (4, 3) and logvar.shape == (4, 3)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_builds(activation):
    assert MLPEnergy(2, hidden=8, layers=1, activation=activation)(torch.randn(3, 2)).shape == (3,)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown activation 'nope'.*silu"):
        MLPEnergy(2, activation="nope")
    with pytest.raises(ValueError, match="layers"):
        MLPEnergy(2, layers=0)


def test_vector_shape_detection():
    assert is_vector_shape((2,))
    assert not is_vector_shape((3, 32, 32))

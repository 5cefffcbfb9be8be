"""Image nets: the Dual-MCMC reference ResNets (parameter counts from their layer definitions, shapes, the
reference init, spectral norm), the small conv nets, the arch factory, and one CIFAR-10 iteration on CPU."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dualmcmc.methods import build_method
from dualmcmc.nets import (ARCHS, ConvEncoder, ConvEnergy, ConvGenerator, MLPEnergy, ReferenceEnergy,
                           ReferenceGenerator, build_nets, make_encoder, make_energy, make_generator, resolve_arch)


# ---- parameter counts, written from the layer definitions in docs/methods.md §2.5 ------------------------------------
def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def linear(cin, cout, bias=True):
    return cin * cout + (cout if bias else 0)


def batchnorm(c):
    return 2 * c  # weight and bias; running stats are buffers


def gen_block(cin, cout):  # BN, conv3x3, BN, conv3x3, 1x1 shortcut (upsampling blocks always have one)
    return batchnorm(cin) + conv(3, cin, cout) + batchnorm(cout) + conv(3, cout, cout) + conv(1, cin, cout)


def ebm_block(cin, cout, shortcut):  # no biases anywhere in the EBM
    return conv(3, cin, cout, False) + conv(3, cout, cout, False) + (conv(1, cin, cout, False) if shortcut else 0)


def encoder(first_k, nif=128, nz=128):  # four bias-free convs, then two 4x4 heads with bias (mu, log-variance)
    return (conv(first_k, 3, nif, False) + conv(4, nif, 2 * nif, False) + conv(4, 2 * nif, 4 * nif, False)
            + conv(4, 4 * nif, 8 * nif, False) + 2 * conv(4, 8 * nif, nz))


CELEBA_GEN = [(1024, 512), (512, 256), (256, 128), (128, 64)]
CELEBA_EBM = [(64, 128), (128, 256), (256, 512), (512, 1024)]
# (formula, docs/methods.md's rounded figure in millions)
EXPECTED = {
    "cifar10": {
        "generator": (linear(128, 4 * 4 * 512) + 3 * gen_block(512, 512) + batchnorm(512) + conv(3, 512, 3), 16.02),
        "ebm": (ebm_block(3, 512, True) + ebm_block(512, 512, True) + 2 * ebm_block(512, 512, False)
                + linear(512, 1, False), 16.79),
        "encoder": (encoder(3), 15.21),
    },
    "celeba64": {
        "generator": (linear(128, 4 * 4 * 1024) + sum(gen_block(a, b) for a, b in CELEBA_GEN) + batchnorm(64)
                      + conv(3, 64, 3), 12.22),
        "ebm": (ebm_block(3, 64, True) + sum(ebm_block(a, b, True) for a, b in CELEBA_EBM) + linear(1024, 1, False),
                19.54),
        "encoder": (encoder(4), 15.21),
    },
}
SHAPES = {"cifar10": (3, 32, 32), "celeba64": (3, 64, 64)}
WIDTHS = {"cifar10": 512, "celeba64": 1024}


@pytest.fixture(scope="module")
def reference_nets():
    """The six reference nets at full width, built once (12-20 M parameters each)."""
    torch.manual_seed(0)
    return {arch: {"generator": make_generator(arch, SHAPES[arch], 128, WIDTHS[arch]),
                   "ebm": make_energy(arch, SHAPES[arch], WIDTHS[arch]),
                   "encoder": make_encoder(arch, SHAPES[arch], 128, 128)} for arch in SHAPES}


@pytest.mark.parametrize("arch", list(SHAPES))
@pytest.mark.parametrize("net", ["generator", "ebm", "encoder"])
def test_reference_parameter_counts(reference_nets, arch, net):
    count = sum(p.numel() for p in reference_nets[arch][net].parameters())
    formula, millions = EXPECTED[arch][net]
    assert count == formula
    assert round(count / 1e6, 2) == millions  # docs/methods.md's figures agree with the formulas


@pytest.mark.parametrize("arch", list(SHAPES))
def test_reference_shapes_ranges_and_input_gradients(reference_nets, arch):
    nets = reference_nets[arch]
    x = (torch.rand(2, *SHAPES[arch]) * 2 - 1).requires_grad_(True)
    energy = nets["ebm"](x)
    assert energy.shape == (2,)
    (grad,) = torch.autograd.grad(energy.sum(), x)  # Langevin needs dE/dx
    assert grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    images = nets["generator"](torch.randn(2, 128))
    assert images.shape == (2, *SHAPES[arch]) and images.abs().max() <= 1.0
    assert nets["generator"](torch.randn(2, 128, 1, 1)).shape == images.shape  # the reference's (N, nz, 1, 1) too
    mu, logvar = nets["encoder"](x.detach())
    assert mu.shape == logvar.shape == (2, 128)


def xavier_std(weight):
    receptive = weight[0, 0].numel()
    return (2 / (weight.shape[1] * receptive + weight.shape[0] * receptive)) ** 0.5


def test_reference_init(reference_nets):
    nets = reference_nets["cifar10"]
    bn = [m for m in nets["generator"].modules() if isinstance(m, nn.BatchNorm2d) and m.num_features == 512]
    weights = torch.cat([m.weight.detach() for m in bn])
    assert 0.7 < float(weights.std()) < 1.3  # N(0, 1), not PyTorch's ones
    assert all(float(m.bias.detach().abs().max()) == 0 for m in bn)
    convs = [m.weight.detach() for m in nets["generator"].modules() if isinstance(m, nn.Conv2d)]
    convs += [m.weight.detach() for m in nets["encoder"].modules() if isinstance(m, nn.Conv2d)]
    convs += [m.weight_orig.detach() for m in nets["ebm"].modules() if isinstance(m, nn.Conv2d)]  # init before SN
    for w in convs:
        if w.numel() >= 4096:  # enough draws for a 20% tolerance
            assert abs(float(w.std()) / xavier_std(w) - 1) < 0.2, w.shape
    lin = nets["generator"].linear.weight.detach()  # Linear keeps PyTorch's default: U(+-1/sqrt(fan_in))
    assert abs(float(lin.std()) * (3 * lin.shape[1]) ** 0.5 - 1) < 0.2


@pytest.mark.parametrize("arch", list(SHAPES))
def test_reference_ebm_spectral_norm_everywhere_and_no_bias(reference_nets, arch):
    layers = [m for m in reference_nets[arch]["ebm"].modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    # CIFAR: start 3 convs, down block 3, two plain blocks 2 each, linear; CelebA: start 3, four down blocks 3 each
    assert len(layers) == (3 + 3 + 2 + 2 + 1 if arch == "cifar10" else 3 + 4 * 3 + 1)
    for m in layers:
        assert hasattr(m, "weight_orig") and hasattr(m, "weight_u") and hasattr(m, "weight_v")
        assert m.bias is None
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in reference_nets[arch]["ebm"].modules())


def test_reference_nets_reject_bad_arguments():
    with pytest.raises(ValueError, match="dataset"):
        ReferenceGenerator("mnist")
    with pytest.raises(ValueError, match="'ndf' must be a positive multiple of 16"):
        ReferenceEnergy("celeba64", ndf=1000)
    with pytest.raises(ValueError, match="'nz'"):
        ReferenceGenerator("cifar10", nz=0, ngf=8)


def test_narrow_reference_nets_keep_their_shapes():
    """Widths are parameters: a narrow CelebA-64 set still maps 64 x 64 images (cheap for CPU tests)."""
    g, e = make_generator("celeba64", SHAPES["celeba64"], 8, 32), make_energy("celeba64", SHAPES["celeba64"], 32)
    q = make_encoder("celeba64", SHAPES["celeba64"], 8, 8)
    x = g(torch.randn(2, 8))
    assert x.shape == (2, 3, 64, 64) and e(x).shape == (2,) and q(x)[1].shape == (2, 8)


# ---- small conv nets --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 8, 8), (1, 16, 16), (3, 32, 32), (1, 64, 64)])
def test_conv_nets_for_small_images(shape):
    channels, size = shape[0], shape[1]
    e, g = ConvEnergy(channels, size, 8), ConvGenerator(4, channels, size, 8)
    q = ConvEncoder(channels, size, 4, 8)
    x = (torch.rand(3, *shape) * 2 - 1).requires_grad_(True)
    energy = e(x)
    assert energy.shape == (3,)
    (grad,) = torch.autograd.grad(energy.sum(), x)
    assert grad.shape == x.shape and grad.abs().sum() > 0
    images = g(torch.randn(3, 4))
    assert images.shape == (3, *shape) and images.abs().max() <= 1.0
    assert g(torch.randn(1, 4)).shape == (1, *shape)  # a batch of one in train mode (BN on the 4 x 4 map)
    assert [t.shape for t in q(x)] == [(3, 4), (3, 4)]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in e.modules())


def test_conv_nets_reject_unsupported_shapes():
    for build in (lambda: ConvEnergy(1, 12), lambda: ConvGenerator(4, 3, 128), lambda: ConvEncoder(0, 8, 4)):
        with pytest.raises(ValueError, match="data_shape"):
            build()
    with pytest.raises(ValueError, match="square"):
        make_energy("conv", (1, 8, 16), 8)
    with pytest.raises(ValueError, match="'latent_dim'"):
        ConvGenerator(0, 1, 8)


def test_conv_energy_activation_is_configurable():
    e = make_energy("conv", (1, 8, 8), 8, activation="leaky_relu")
    assert any(isinstance(m, nn.LeakyReLU) for m in e.modules())
    with pytest.raises(ValueError, match="unknown activation"):
        make_energy("conv", (1, 8, 8), 8, activation="swishy")


# ---- factory ----------------------------------------------------------------------------------------------------
def test_arch_resolution_and_errors():
    assert resolve_arch("auto", (2,)) == "mlp" and resolve_arch("auto", (1, 8, 8)) == "conv"
    assert resolve_arch("cifar10", (3, 32, 32)) == "cifar10" and resolve_arch("celeba64", (3, 64, 64)) == "celeba64"
    with pytest.raises(ValueError, match="unknown arch 'resnet'.*'cifar10'"):  # names the arch and lists ARCHS
        resolve_arch("resnet", (3, 32, 32))
    with pytest.raises(ValueError, match="arch 'cifar10' is built for data_shape"):
        resolve_arch("cifar10", (1, 8, 8))
    with pytest.raises(ValueError, match="arch 'celeba64' is built for data_shape"):
        resolve_arch("celeba64", (3, 32, 32))
    with pytest.raises(ValueError, match="not flattened"):
        resolve_arch("mlp", (1, 8, 8))
    with pytest.raises(ValueError, match="arch 'conv' takes images"):
        resolve_arch("conv", (64,))
    with pytest.raises(ValueError, match="data_shape"):
        resolve_arch("auto", (8, 8))
    assert ARCHS == ("mlp", "conv", "cifar10", "celeba64")


def test_make_nets_for_vectors_are_the_mlps():
    assert isinstance(make_energy("auto", (2,), 16, 2), MLPEnergy)
    assert make_generator("mlp", (2,), 3, 16, 2)(torch.randn(5, 3)).shape == (5, 2)
    assert [t.shape for t in make_encoder("auto", (2,), 3, 16, 2)(torch.randn(5, 2))] == [(5, 3), (5, 3)]


def _digits_available() -> bool:
    from dualmcmc.data import load_dataset

    try:
        load_dataset("digits")
    except Exception:  # the digits helper is another module's; skip, do not fail, while it is missing
        return False
    return True


@pytest.mark.skipif(not _digits_available(), reason="dualmcmc.data.load_dataset('digits') is not available yet")
def test_build_nets_from_a_config_dict_and_yaml():
    nets = build_nets({"method": "dual_mcmc", "data": "digits",
                       "model": {"arch": "conv", "latent_dim": 4, "ebm_hidden": 8, "generator_hidden": 8,
                                 "encoder_hidden": 8}})
    assert isinstance(nets["ebm"], ConvEnergy) and isinstance(nets["generator"], ConvGenerator)
    assert nets["encoder"](torch.zeros(2, 1, 8, 8))[0].shape == (2, 4)
    assert nets["generator"](torch.randn(2, 4)).shape == (2, 1, 8, 8)
    from_yaml = build_nets("configs/digits_dual_mcmc.yaml")  # arch conv, widths 32
    assert isinstance(from_yaml["ebm"], ConvEnergy) and from_yaml["encoder"] is not None


def test_build_nets_leaves_out_the_nets_a_method_lacks():
    short_run = build_nets({"method": "short_run", "data": "8gaussians", "model": {"ebm_hidden": 16}})
    assert isinstance(short_run["ebm"], MLPEnergy) and short_run["generator"] is None and short_run["encoder"] is None
    coop = build_nets({"method": "coopnets", "data": "8gaussians", "model": {"ebm_hidden": 16, "generator_hidden": 16}})
    assert coop["generator"] is not None and coop["encoder"] is None


# ---- integration ------------------------------------------------------------------------------------------------
def test_one_cifar10_iteration_of_the_reference_configuration_runs_on_cpu():
    """configs/cifar10_dual_mcmc.yaml's model on random 32x32 data, narrowed and with a tiny batch to fit CI."""
    from dualmcmc.config import load_config

    params = dict(load_config("configs/cifar10_dual_mcmc.yaml").model)
    params.update({"generator_hidden": 32, "ebm_hidden": 32, "encoder_hidden": 16, "x_steps": 2, "z_steps": 2})
    torch.manual_seed(0)
    method = build_method("dual_mcmc", params, (3, 32, 32))
    assert method.config.arch == "cifar10" and method.temperature == pytest.approx(4e-6)
    out = method.train_step(torch.rand(4, 3, 32, 32) * 2 - 1)
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values()), out

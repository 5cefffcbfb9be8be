"""Image nets: the Dual-MCMC reference ResNets (parameter counts from their layer definitions, shapes, the
reference init, spectral norm), the small conv nets, the arch factory, and one CIFAR-10 iteration on CPU."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dualmcmc.methods import build_method
from dualmcmc.nets import ConvEnergy, build_nets, make_encoder, make_energy, make_generator, resolve_arch


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def gen_block(cin, cout):  # BN, conv3x3, BN, conv3x3, 1x1 shortcut (upsampling blocks always have one)
    return 2 * cin + conv(3, cin, cout) + 2 * cout + conv(3, cout, cout) + conv(1, cin, cout)


def ebm_block(cin, cout, shortcut):
    return conv(3, cin, cout, False) + conv(3, cout, cout, False) + (conv(1, cin, cout, False) if shortcut else 0)


def encoder(first_k, nif=128, nz=128):
    return (conv(first_k, 3, nif, False) + conv(4, nif, 2 * nif, False) + conv(4, 2 * nif, 4 * nif, False)
            + conv(4, 4 * nif, 8 * nif, False) + 2 * conv(4, 8 * nif, nz))


# methods.md §2.5: CIFAR-10 G 16.02 M, E 16.79 M, I 15.21 M; CelebA-64 G 12.22 M, E 19.54 M, I 15.21 M
EXPECTED = {
    "cifar10": {
        "generator": (128 * 8192 + 8192 + 3 * gen_block(512, 512) + 2 * 512 + conv(3, 512, 3), 16.02),
        "ebm": (ebm_block(3, 512, True) + ebm_block(512, 512, True) + 2 * ebm_block(512, 512, False) + 512, 16.79),
        "encoder": (encoder(3), 15.21),
    },
    "celeba64": {
        "generator": (128 * 16384 + 16384 + sum(gen_block(a, b) for a, b in [(1024, 512), (512, 256), (256, 128), (128, 64)])
                      + 2 * 64 + conv(3, 64, 3), 12.22),
        "ebm": (ebm_block(3, 64, True) + sum(ebm_block(a, b, True) for a, b in [(64, 128), (128, 256), (256, 512), (512, 1024)])
                + 1024, 19.54),
        "encoder": (encoder(4), 15.21),
    },
}
SHAPES = {"cifar10": (3, 32, 32), "celeba64": (3, 64, 64)}
WIDTHS = {"cifar10": 512, "celeba64": 1024}


@pytest.fixture(scope="module")
def reference_nets():
    torch.manual_seed(0)
    return {arch: {"generator": make_generator(arch, SHAPES[arch], 128, WIDTHS[arch]),
                   "ebm": make_energy(arch, SHAPES[arch], WIDTHS[arch]),
                   "encoder": make_encoder(arch, SHAPES[arch], 128, 128)} for arch in SHAPES}


@pytest.mark.parametrize("arch", list(SHAPES))
@pytest.mark.parametrize("net", ["generator", "ebm", "encoder"])
def test_reference_parameter_counts(reference_nets, arch, net):
    count = sum(p.numel() for p in reference_nets[arch][net].parameters())
    formula, millions = EXPECTED[arch][net]
    assert count == formula and round(count / 1e6, 2) == millions


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
    mu, logvar = nets["encoder"](x.detach())
    assert mu.shape == logvar.shape == (2, 128)


def test_reference_init_and_spectral_norm(reference_nets):
    nets = reference_nets["cifar10"]
    bn = [m for m in nets["generator"].modules() if isinstance(m, nn.BatchNorm2d) and m.num_features == 512]
    assert 0.8 < torch.cat([m.weight.detach() for m in bn]).std() < 1.2  # N(0, 1), not PyTorch's ones
    assert all(float(m.bias.abs().max()) == 0 for m in bn)
    convs = [m for m in nets["encoder"].modules() if isinstance(m, nn.Conv2d)]
    w = convs[1].weight  # 4x4 conv 128 -> 256, xavier normal
    fan_in, fan_out = w.shape[1] * 16, w.shape[0] * 16
    assert abs(float(w.std()) / (2 / (fan_in + fan_out)) ** 0.5 - 1) < 0.1
    layers = [m for m in nets["ebm"].modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(hasattr(m, "weight_orig") and m.bias is None for m in layers)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16), (1, 32, 32)])
def test_conv_nets_for_small_images(shape):
    e, g, q = make_energy("conv", shape, 8), make_generator("conv", shape, 4, 8), make_encoder("conv", shape, 4, 8)
    x = torch.rand(3, *shape) * 2 - 1
    assert e(x).shape == (3,) and g(torch.randn(3, 4)).shape == (3, *shape)
    assert [t.shape for t in q(x)] == [(3, 4), (3, 4)]
    with pytest.raises(ValueError, match="data_shape"):
        ConvEnergy((1, 12, 12))


def test_arch_resolution_and_errors():
    assert resolve_arch("auto", (2,)) == "mlp" and resolve_arch("auto", (1, 8, 8)) == "conv"
    with pytest.raises(ValueError, match="unknown arch 'resnet'"):
        resolve_arch("resnet", (3, 32, 32))
    with pytest.raises(ValueError, match="arch 'cifar10' is built for data_shape"):
        resolve_arch("cifar10", (1, 8, 8))
    with pytest.raises(ValueError, match="not flattened"):
        resolve_arch("mlp", (1, 8, 8))


def test_build_nets_from_a_config():
    nets = build_nets({"method": "dual_mcmc", "data": "digits", "model": {"arch": "conv", "ebm_hidden": 8,
                                                                         "generator_hidden": 8, "encoder_hidden": 8}})
    assert set(nets) == {"generator", "ebm", "encoder"} and isinstance(nets["ebm"], ConvEnergy)
    assert build_nets({"method": "short_run", "data": "8gaussians"})["generator"] is None


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

"""The Dual-MCMC reference networks (jcui1224/dual-MCMC nets.py; docs/methods.md §2.5) for CIFAR-10 and CelebA-64.

    generator  ResNet, BatchNorm, bilinear upsampling    CIFAR-10 16,024,579 params (ngf 512), CelebA-64 12,220,675
    EBM        spectral-norm ResNet, no BN, no biases     CIFAR-10 16,793,088 (ndf 512), CelebA-64 19,536,768 (ndf 1024)
    encoder    DCGAN-style convs, LeakyReLU 0.2, Gaussian CIFAR-10 15,208,064, CelebA-64 15,210,752 (nif 128, nz 128)

Initialisation as the reference's ``weights_init``: xavier-normal for every conv, BatchNorm weights ~ N(0, 1) and
biases 0, Linear layers left at PyTorch's default. It is applied before spectral norm wraps the EBM's layers (the
reference's build_netE: ``netE.apply(weights_init)`` then ``add_sn``), so ``weight_orig`` holds the xavier draw.
Spectral norm is ``torch.nn.utils.spectral_norm`` (one power iteration per forward in train mode), as the reference.
Widths are arguments (ngf / ndf / nif, nz); the defaults are the CIFAR-10 reference's.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

REFERENCE_SHAPES = {"cifar10": (3, 32, 32), "celeba64": (3, 64, 64)}  # the image shape each reference net takes
# channels of the 4 x 4 map and after each generator block, as divisors of ngf: one block per doubling of the side
_GENERATOR_DIVISORS = {"cifar10": (1, 1, 1, 1), "celeba64": (1, 2, 4, 8, 16)}


def _check_arguments(dataset: str, divisor: int, nz: int = 1, **widths: int) -> None:
    """ValueErrors naming 'dataset', 'nz' or the width argument, which must be a positive multiple of ``divisor``
    (16 where a CelebA-64 net divides its width by up to 16)."""
    if dataset not in REFERENCE_SHAPES:
        raise ValueError(f"unknown dataset {dataset!r} for the reference nets; choose one of {tuple(REFERENCE_SHAPES)}")
    if int(nz) < 1:
        raise ValueError(f"'nz' (the latent dimension) must be a positive integer, got {nz}")
    for name, value in widths.items():
        if int(value) < divisor or int(value) % divisor:
            raise ValueError(f"'{name}' must be a positive multiple of {divisor} for dataset {dataset!r}, got {value}")


def _width_divisor(dataset: str) -> int:
    return 16 if dataset == "celeba64" else 1  # CelebA-64 G / E run from width / 16 to width


def weights_init(module: nn.Module) -> None:
    """The reference init: xavier-normal convs, N(0, 1) BatchNorm weights with zero biases."""
    name = type(module).__name__
    if "Conv" in name:
        nn.init.xavier_normal_(module.weight)
    elif "BatchNorm" in name and module.weight is not None:  # affine BN only
        nn.init.normal_(module.weight)
        nn.init.zeros_(module.bias)


# ---- generator --------------------------------------------------------------------------------------------------
class GeneratorBlock(nn.Module):
    """BN -> ReLU -> [bilinear x2] -> conv3x3 -> BN -> ReLU -> conv3x3, plus [x2 -> 1x1 conv] shortcut."""

    def __init__(self, in_ch: int, out_ch: int, upsample: bool = True):
        super().__init__()
        self.upsample = upsample
        self.bn1, self.conv1 = nn.BatchNorm2d(in_ch), nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.bn2, self.conv2 = nn.BatchNorm2d(out_ch), nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if (in_ch != out_ch or upsample) else None

    def _up(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True) if self.upsample else x

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(self._up(F.relu(self.bn1(x))))
        h = self.conv2(F.relu(self.bn2(h)))
        skip = self._up(x)
        return h + (self.shortcut(skip) if self.shortcut is not None else skip)


class ReferenceGenerator(nn.Module):
    """G(z): (N, nz) -> (N, 3, S, S) in [-1, 1]; S = 32 ("cifar10", 3 blocks) or 64 ("celeba64", 4 blocks)."""

    def __init__(self, dataset: str = "cifar10", nz: int = 128, ngf: int = 512):
        super().__init__()
        _check_arguments(dataset, _width_divisor(dataset), nz=nz, ngf=ngf)
        plan = [ngf // d for d in _GENERATOR_DIVISORS[dataset]]
        self.nz, self.ngf = nz, ngf
        self.linear = nn.Linear(nz, 4 * 4 * plan[0])
        self.blocks = nn.Sequential(*(GeneratorBlock(a, b) for a, b in zip(plan[:-1], plan[1:])))
        self.out = nn.Sequential(nn.BatchNorm2d(plan[-1]), nn.ReLU(), nn.Conv2d(plan[-1], 3, 3, 1, 1), nn.Tanh())
        self.apply(weights_init)

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.blocks(self.linear(z.flatten(1)).view(z.shape[0], -1, 4, 4)))


# ---- EBM --------------------------------------------------------------------------------------------------------
class EnergyStartBlock(nn.Module):
    """conv3x3 -> ReLU -> conv3x3 -> avgpool2, plus avgpool2 -> 1x1 conv shortcut (no pre-activation on images)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(x))), 2)
        return h + self.shortcut(F.avg_pool2d(x, 2))


class EnergyBlock(nn.Module):
    """Pre-activation: ReLU -> conv3x3 -> ReLU -> conv3x3 -> [avgpool2], plus [1x1 conv -> avgpool2] shortcut
    (the shortcut conv only where channels change or the block downsamples: that gives the reference counts)."""

    def __init__(self, in_ch: int, out_ch: int, downsample: bool):
        super().__init__()
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, bias=False) if (in_ch != out_ch or downsample) else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.relu(self.conv1(F.relu(x))))
        skip = self.shortcut(x) if self.shortcut is not None else x
        if self.downsample:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        return h + skip


class ReferenceEnergy(nn.Module):
    """E(x): (N, 3, S, S) -> (N,), spectral norm on every conv and linear layer."""

    def __init__(self, dataset: str = "cifar10", ndf: int = 512):
        super().__init__()
        _check_arguments(dataset, _width_divisor(dataset), ndf=ndf)
        if dataset == "cifar10":  # Start(3 -> ndf, down) -> Block(down) -> Block -> Block: 32 -> 16 -> 8
            blocks = [EnergyStartBlock(3, ndf), EnergyBlock(ndf, ndf, True), EnergyBlock(ndf, ndf, False),
                      EnergyBlock(ndf, ndf, False)]
            out_ch = ndf
        else:  # Start(3 -> ndf/16, down) then doubling blocks, all down: 64 -> 32 -> 16 -> 8 -> 4 -> 2
            widths = [ndf // 16, ndf // 8, ndf // 4, ndf // 2, ndf]
            blocks = [EnergyStartBlock(3, widths[0])]
            blocks += [EnergyBlock(a, b, True) for a, b in zip(widths[:-1], widths[1:])]
            out_ch = ndf
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(out_ch, 1, bias=False)
        self.apply(weights_init)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                spectral_norm(module)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.blocks(x)).mean(dim=(2, 3))  # global average pool
        return self.linear(h).squeeze(-1)


# ---- encoder ----------------------------------------------------------------------------------------------------
class ReferenceEncoder(nn.Module):
    """q(z|x): (N, 3, S, S) -> (mu, logvar), each (N, nz); logvar is a log-VARIANCE (the reference's "log_sigma")."""

    def __init__(self, dataset: str = "cifar10", nz: int = 128, nif: int = 128):
        super().__init__()
        _check_arguments(dataset, 1, nz=nz, nif=nif)
        # CIFAR-10 keeps 32 x 32 in the first conv, CelebA-64 halves 64 -> 32; then both halve three times to 4 x 4
        first = (nn.Conv2d(3, nif, 3, 1, 1, bias=False) if dataset == "cifar10"
                 else nn.Conv2d(3, nif, 4, 2, 1, bias=False))
        self.features = nn.Sequential(
            first, nn.LeakyReLU(0.2),
            nn.Conv2d(nif, 2 * nif, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * nif, 4 * nif, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * nif, 8 * nif, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
        )
        self.mu = nn.Conv2d(8 * nif, nz, 4, 1, 0)
        self.logvar = nn.Conv2d(8 * nif, nz, 4, 1, 0)
        self.apply(weights_init)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x)
        return self.mu(h).flatten(1), self.logvar(h).flatten(1)

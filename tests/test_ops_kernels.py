"""The CPU kernels below the op: Philox4x32-10 against the Random123 known answers and an independent Python
implementation, the Box-Muller transform against float64 arithmetic, the AVX2 kernels against the portable loops
bit for bit, and the OpenMP build (so that test_ops.py's 1-vs-2-thread test tests something)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from dualmcmc import ops

pytestmark = pytest.mark.skipif(ops.backend() != "extension", reason="compiled extension not built")

MASK = 0xFFFFFFFF
# Random123's kat_vectors for philox4x32 with 10 rounds: (counter words, key words) -> output words.
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((MASK, MASK, MASK, MASK), (MASK, MASK), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def philox_python(counter, key, rounds=10):
    """Philox4x32 written from the paper (Salmon et al. 2011), independently of the C++."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & MASK, (k1 + 0xBB67AE85) & MASK
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & MASK, p1 & MASK, ((p0 >> 32) ^ c3 ^ k1) & MASK, p0 & MASK
    return c0, c1, c2, c3


def philox_op(rows):
    counters = torch.tensor([list(c) for c, _ in rows], dtype=torch.int64)
    keys = torch.tensor([list(k) for _, k in rows], dtype=torch.int64)
    return [tuple(int(w) for w in row) for row in torch.ops.dualmcmc._philox4x32_10(counters, keys)]


def test_philox_known_answers():
    assert philox_op([(c, k) for c, k, _ in PHILOX_KAT]) == [want for _, _, want in PHILOX_KAT]
    assert [philox_python(c, k) for c, k, _ in PHILOX_KAT] == [want for _, _, want in PHILOX_KAT]


def test_philox_agrees_with_python_on_random_words():
    g = torch.Generator().manual_seed(0)
    words = torch.randint(0, 2**32, (200, 6), generator=g, dtype=torch.int64).tolist()
    rows = [(tuple(w[:4]), tuple(w[4:])) for w in words]
    assert philox_op(rows) == [philox_python(c, k) for c, k in rows]


def expected_normals(seed, offset, n, dtype):
    """The documented stream (langevin.h) in float64: block j has counter (offset / 4, j) and key seed."""
    out = []
    key = (seed & MASK, seed >> 32)
    j = 0
    while len(out) < n:
        w = philox_python(((offset // 4) & MASK, (offset // 4) >> 32, j & MASK, j >> 32), key)
        if dtype == torch.float32:
            for a, b in ((w[0], w[1]), (w[2], w[3])):
                radius = math.sqrt(-2.0 * math.log((a >> 8) * 2.0**-24 + 2.0**-25))
                angle = 2.0 * math.pi * ((b >> 8) * 2.0**-24)
                out += [radius * math.cos(angle), radius * math.sin(angle)]
        else:
            u = ((((w[0] << 32) | w[1]) >> 11) * 2.0**-53) + 2.0**-54
            angle = 2.0 * math.pi * ((((w[2] << 32) | w[3]) >> 11) * 2.0**-53)
            radius = math.sqrt(-2.0 * math.log(u))
            out += [radius * math.cos(angle), radius * math.sin(angle)]
        j += 1
    return torch.tensor(out[:n], dtype=torch.float64)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 4e-6), (torch.float64, 1e-13)])
def test_normals_are_box_muller_of_the_philox_words(dtype, tol):
    seed, offset, n = 0x1234_5678_9ABC_DEF0 & (2**63 - 1), 8, 4099
    got = torch.ops.dualmcmc._philox_normal(seed, offset, n, dtype).double()
    want = expected_normals(seed, offset, n, dtype)
    assert (got - want).abs().max().item() <= tol * max(1.0, want.abs().max().item())


def _isas():
    original = torch.ops.dualmcmc._cpu_isa(None)
    try:
        torch.ops.dualmcmc._cpu_isa("avx2")
        available = ["portable", "avx2"]
    except (ValueError, RuntimeError):
        available = ["portable"]
    torch.ops.dualmcmc._cpu_isa(original)
    return original, available


@pytest.fixture
def isas():
    original, available = _isas()
    if len(available) < 2:
        pytest.skip("this build or CPU has no AVX2 kernels")
    yield available
    torch.ops.dualmcmc._cpu_isa(original)


def _run_each_isa(isas, fn):
    results = []
    for isa in isas:
        torch.ops.dualmcmc._cpu_isa(isa)
        results.append(fn())
    return results


def test_avx2_normals_equal_the_portable_ones_bit_for_bit(isas):
    for dtype in (torch.float32, torch.float64):
        for n in (1, 7, 4099, 1 << 16):
            a, b = _run_each_isa(isas, lambda: torch.ops.dualmcmc._philox_normal(987654321, 12, n, dtype))
            assert torch.equal(a, b), (dtype, n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_avx2_update_equals_the_portable_loop_bit_for_bit(isas, dtype):
    g = torch.Generator().manual_seed(1)
    for n in (1, 5, 33, 1027, 70001):  # vector bodies, tails, and more than one parallel chunk
        x, grad, noise = (torch.randn(n, generator=g).to(dtype) for _ in range(3))
        for kwargs in (dict(), dict(prior_precision=2.0, clamp=(-0.5, 0.4)), dict(clamp=(None, 0.1)),
                       dict(noise=noise), dict(noise=noise, prior_precision=0.5, clamp=(-1.0, None))):
            for noise_std in (0.0, 0.3):
                def step():
                    generator = torch.Generator().manual_seed(5)
                    out = ops.langevin_step(x, grad, 0.2, noise_std, generator=generator, **kwargs)
                    inplace = x.clone()
                    ops.langevin_step_(inplace, grad, 0.2, noise_std, generator=torch.Generator().manual_seed(5),
                                       **kwargs)
                    return out, inplace
                (a, a_in), (b, b_in) = _run_each_isa(isas, step)
                assert torch.equal(a, b) and torch.equal(a_in, b_in) and torch.equal(a, a_in), (n, kwargs, noise_std)


def test_the_extension_is_built_with_openmp_when_torch_is():
    """at::parallel_for only splits work in a file compiled with OpenMP: the library must call into it."""
    if not torch.backends.openmp.is_available():
        pytest.skip("this torch has no OpenMP backend")
    import dualmcmc._C as extension

    binary = Path(extension.__file__).read_bytes()
    assert b"GOMP_parallel" in binary or b"__kmpc_fork_call" in binary

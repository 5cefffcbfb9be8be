"""The fused Langevin step against its contract (DESIGN.md, "The operator"): parity with the eager reference
under the same noise, the statistics and reproducibility of its own noise, autograd, opcheck, compile, bad input.
CUDA variants run when a GPU is present and skip cleanly otherwise."""
import math
import subprocess
import sys

import pytest
import torch

from dualmcmc import _reference, ops

CUDA = torch.cuda.is_available() and ops.has_kernel("cuda")
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
SHAPES = [(), (0,), (1,), (7,), (1023,), (3, 5, 7), (2, 3, 4, 5), (4099,)]
TOL = {torch.float32: 2e-6, torch.float64: 1e-12, torch.float16: 1e-3, torch.bfloat16: 8e-3}

needs_extension = pytest.mark.skipif(ops.backend() != "extension", reason="compiled extension not built")


def reference(x, grad, a, b, p=0.0, noise=None, clamp=None):
    lo, hi = clamp if clamp is not None else (None, None)
    return _reference.langevin_step(x, grad, a, b, p, noise, None, lo, hi)


def make(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, grad, noise = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
    return [t.to(dtype=dtype, device=device) for t in (x, grad, noise)]


# One factory of op inputs for every test of values (as pytorch/extension-cpp's sample_inputs): parity, opcheck and
# gradcheck all see each dtype, shape and variant (prior or not, each clamp form, explicit noise or none).
VARIANTS = [dict(prior_precision=0.0, clamp=None), dict(prior_precision=1.0 / 0.3**2, clamp=None),
            dict(prior_precision=2.0, clamp=(-0.5, 0.25)), dict(prior_precision=0.0, clamp=(None, 0.0)),
            dict(prior_precision=0.0, clamp=(-0.1, None))]


def sample_inputs(device, dtypes=DTYPES, shapes=SHAPES, requires_grad=False):
    """Yields (x, grad, step_size, noise_std, kwargs of ops.langevin_step) over dtypes x shapes x VARIANTS x noise."""
    for dtype in dtypes:
        for shape in shapes:
            x, grad, noise = make(shape, dtype, device)
            for variant in VARIANTS:
                for explicit_noise in (True, False):
                    inputs = [t.clone().requires_grad_(requires_grad) for t in (x, grad, noise)]
                    kwargs = dict(variant, noise=inputs[2] if explicit_noise else None)
                    yield inputs[0], inputs[1], 0.3, 0.2 if explicit_noise else 0.0, kwargs


def op_args(x, grad, step_size, noise_std, kwargs):
    """The same call as (args, kwargs) of the registered op."""
    lo, hi = kwargs["clamp"] if kwargs["clamp"] is not None else (None, None)
    return (x, grad, step_size, noise_std, kwargs["prior_precision"], kwargs["noise"], None), dict(clamp_min=lo, clamp_max=hi)


def test_backend_is_extension():
    assert ops.backend() == "extension", "the compiled extension did not load; build with pip install --no-build-isolation -e ."


# ---------------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_parity_with_reference_explicit_noise(device, dtype, shape):
    for x, grad, a, b, kwargs in sample_inputs(device, [dtype], [shape]):
        got = ops.langevin_step(x, grad, a, b, **kwargs)
        want = reference(x, grad, a, b, kwargs["prior_precision"], kwargs["noise"], kwargs["clamp"])
        assert got.dtype == dtype and got.shape == x.shape and got.device == x.device
        torch.testing.assert_close(got, want, rtol=TOL[dtype], atol=TOL[dtype])
        inplace = x.clone()
        assert ops.langevin_step_(inplace, grad, a, b, **kwargs) is inplace
        torch.testing.assert_close(inplace, want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_parity_non_contiguous(device, dtype):
    x, grad, noise = make((6, 10, 8), dtype, device)
    xs, gs, ns = x.transpose(0, 2), grad.transpose(0, 2), noise.transpose(0, 2)
    for args in [(xs, gs, ns), (x[:, ::3], grad[:, ::3], noise[:, ::3])]:
        want = reference(*args[:2], 0.5, 1e-3, 0.5, args[2])
        torch.testing.assert_close(ops.langevin_step(args[0], args[1], 0.5, 1e-3, prior_precision=0.5, noise=args[2]),
                                   want, rtol=TOL[dtype], atol=TOL[dtype])
        xi = args[0].clone()  # clone keeps the strides of a dense permutation, not of a slice
        ops.langevin_step_(xi, args[1], 0.5, 1e-3, prior_precision=0.5, noise=args[2])
        torch.testing.assert_close(xi, want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
def test_inplace_on_strided_view_updates_the_base(device):
    base = torch.zeros(8, 6, device=device)
    view = base[:, ::2]
    grad = torch.ones_like(view)
    ops.langevin_step_(view, grad, 1.0, 0.0)
    assert torch.all(base[:, ::2] == -0.5) and torch.all(base[:, 1::2] == 0)


@pytest.mark.parametrize("device", DEVICES)
def test_functional_leaves_inputs_and_inplace_mutates_and_returns_x(device):
    x, grad, noise = make((257,), torch.float32, device)
    copies = [t.clone() for t in (x, grad, noise)]
    out = ops.langevin_step(x, grad, 0.1, 0.1, noise=noise)
    for t, c in zip((x, grad, noise), copies):
        assert torch.equal(t, c)
    y = x.clone()
    ret = ops.langevin_step_(y, grad, 0.1, 0.1, noise=noise)
    assert ret is y
    assert torch.equal(y, out)
    assert torch.equal(grad, copies[1]) and torch.equal(noise, copies[2])


# ---------------------------------------------------------------------------------------------------- noise
def _draw(n, device="cpu", dtype=torch.float32, noise_std=1.0, generator=None):
    zeros = torch.zeros(n, dtype=dtype, device=device)
    return ops.langevin_step(zeros, zeros, 0.0, noise_std, generator=generator)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noise_moments(device, dtype):
    """On 2^21 draws: mean, variance, kurtosis, two-sided tail masses and lag-1 correlation of N(0, 0.7^2)."""
    torch.manual_seed(1234)
    n, s = 1 << 21, 0.7
    z = _draw(n, device, dtype, noise_std=s).double().cpu() / s
    se = 1.0 / math.sqrt(n)
    assert abs(z.mean().item()) < 5 * se
    assert abs(z.var().item() - 1.0) < 5 * math.sqrt(2.0) * se
    assert abs((z**4).mean().item() - 3.0) < 5 * math.sqrt(96.0) * se
    assert abs((z**3).mean().item()) < 5 * math.sqrt(15.0) * se
    for k in (1.0, 2.0, 3.0, 4.0):
        p = math.erfc(k / math.sqrt(2.0))  # P(|z| > k)
        observed = (z.abs() > k).double().mean().item()
        assert abs(observed - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-7, (k, observed, p)
    for lag in (1, 2, 3, 4, 5, 8):  # within and across Philox blocks of 4
        corr = (z[:-lag] * z[lag:]).mean().item()
        assert abs(corr) < 5 * se, (lag, corr)


def test_noise_ks_distance_cpu():
    torch.manual_seed(7)
    z, _ = torch.sort(_draw(1 << 20, dtype=torch.float64))
    cdf = torch.special.ndtr(z)
    n = z.numel()
    grid = torch.arange(1, n + 1, dtype=torch.float64) / n
    d = torch.maximum((grid - cdf).abs(), (cdf - (grid - 1.0 / n)).abs()).max().item()
    assert d < 1.63 / math.sqrt(n)  # KS critical value at 1%


@pytest.mark.parametrize("device", DEVICES)
def test_manual_seed_reproduces_and_consecutive_calls_differ(device):
    torch.manual_seed(0)
    a1, a2 = _draw(1000, device), _draw(1000, device)
    torch.manual_seed(0)
    b1, b2 = _draw(1000, device), _draw(1000, device)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, a2)


def test_same_result_with_1_and_2_threads():
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            torch.manual_seed(3)
            x = torch.randn(3 << 18)
            results.append(ops.langevin_step(x, torch.ones_like(x), 0.1, 0.5, prior_precision=1.0))
        assert torch.equal(results[0], results[1])
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("device", DEVICES)
def test_explicit_generator_is_honoured_and_default_left_alone(device):
    state = torch.get_rng_state() if device == "cpu" else torch.cuda.get_rng_state()
    g1 = torch.Generator(device=device).manual_seed(42)
    g2 = torch.Generator(device=device).manual_seed(42)
    a = _draw(4096, device, generator=g1)
    b = _draw(4096, device, generator=g2)
    c = _draw(4096, device, generator=g1)
    after = torch.get_rng_state() if device == "cpu" else torch.cuda.get_rng_state()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(state, after)


@pytest.mark.parametrize("device", DEVICES)
def test_noise_std_zero_draws_nothing(device):
    state = torch.get_rng_state() if device == "cpu" else torch.cuda.get_rng_state()
    x, grad, _ = make((100,), torch.float32, device)
    out = ops.langevin_step(x, grad, 0.2, 0.0, prior_precision=3.0)
    after = torch.get_rng_state() if device == "cpu" else torch.cuda.get_rng_state()
    assert torch.equal(state, after)
    torch.testing.assert_close(out, x - 0.02 * (grad + 3.0 * x))


@pytest.mark.parametrize("device", DEVICES)
def test_noise_independent_of_strides_and_of_form(device):
    x = torch.randn(64, 48, device=device)
    xt = x.t().contiguous().t()  # same values, column-major
    torch.manual_seed(11)
    a = ops.langevin_step(x, torch.zeros_like(x), 0.1, 1.0)
    torch.manual_seed(11)
    b = ops.langevin_step(xt, torch.zeros_like(xt), 0.1, 1.0)
    torch.manual_seed(11)
    c = ops.langevin_step_(x.clone(), torch.zeros_like(x), 0.1, 1.0)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_half_types_draw_in_float():
    torch.manual_seed(5)
    a = _draw(1 << 16, dtype=torch.float32)
    torch.manual_seed(5)
    b = _draw(1 << 16, dtype=torch.bfloat16)
    torch.testing.assert_close(b.float(), a, rtol=8e-3, atol=8e-3)


# ---------------------------------------------------------------------------------------------------- autograd
@needs_extension
@pytest.mark.parametrize("clamp", [None, (-0.6, 0.6)])
def test_gradcheck(clamp):
    x, grad, noise = (t.requires_grad_() for t in make((5, 3), torch.float64, "cpu"))
    f = lambda x, g, n: ops.langevin_step(x, g, 0.4, 0.3, prior_precision=1.5, noise=n, clamp=clamp)
    assert torch.autograd.gradcheck(f, (x, grad, noise))
    assert torch.autograd.gradgradcheck(f, (x, grad, noise))


@needs_extension
def test_gradcheck_every_sample_input():
    """Fast-mode gradcheck (random projections) over every float64 shape and variant of sample_inputs."""
    for x, grad, a, b, kwargs in sample_inputs("cpu", [torch.float64], requires_grad=True):
        noise = kwargs.pop("noise")
        inputs = (x, grad) if noise is None else (x, grad, noise)
        f = lambda x, g, n=None: ops.langevin_step(x, g, a, b, noise=n, **kwargs)
        assert torch.autograd.gradcheck(f, inputs, fast_mode=True), (x.shape, kwargs)


@needs_extension
def test_backward_values():
    x = torch.randn(10, requires_grad=True)
    g = torch.randn(10, requires_grad=True)
    out = ops.langevin_step(x, g, 0.5, 0.1, prior_precision=2.0)
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 1 - 0.125 * 2.0))
    torch.testing.assert_close(g.grad, torch.full_like(g, -0.125))


@needs_extension
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    """opcheck (schema, autograd registration, fake tensors, AOT dispatch) of both ops on every sample input."""
    functional, inplace = torch.ops.dualmcmc.langevin_step.default, torch.ops.dualmcmc.langevin_step_.default
    for sample in sample_inputs(device):
        args, kwargs = op_args(*sample)
        torch.library.opcheck(functional, args, kwargs)
        torch.library.opcheck(inplace, (args[0].clone(),) + args[1:], kwargs)
    for sample in sample_inputs(device, requires_grad=True):  # the autograd formula too
        args, kwargs = op_args(*sample)
        torch.library.opcheck(functional, args, kwargs)


@needs_extension
def test_meta_and_fake_shapes():
    x = torch.empty(3, 4, device="meta")
    out = torch.ops.dualmcmc.langevin_step.default(x, torch.empty_like(x), 0.1, 0.1)
    assert out.shape == (3, 4) and out.device.type == "meta"


@needs_extension
def test_torch_compile_fullgraph():
    torch._dynamo.reset()

    def chain(x, grads, noises):
        for g, n in zip(grads, noises):
            x = ops.langevin_step(x, g * x, 0.2, 0.1, prior_precision=1.0, noise=n, clamp=(-3.0, 3.0))
        return x

    x, grad, _ = make((32, 4), torch.float32, "cpu")
    noises = [torch.randn(32, 4) for _ in range(3)]
    compiled = torch.compile(chain, fullgraph=True)
    torch.testing.assert_close(compiled(x, [grad] * 3, noises), chain(x, [grad] * 3, noises))

    def inplace(x, g):
        y = x.clone()
        ops.langevin_step_(y, g, 0.2, 0.5)
        return y

    out = torch.compile(inplace, fullgraph=True)(x, grad)
    assert out.shape == x.shape and torch.isfinite(out).all() and not torch.equal(out, x)


# ---------------------------------------------------------------------------------------------------- bad input
BAD_CALLS = [
    ("grad", lambda x: dict(grad=torch.zeros(5, 3))),
    ("grad", lambda x: dict(grad=torch.zeros(4, 3, dtype=torch.float64))),
    ("x", lambda x: dict(x=torch.zeros(4, 3, dtype=torch.int64), grad=torch.zeros(4, 3, dtype=torch.int64))),
    ("grad", lambda x: dict(grad=torch.zeros(4, 3, device="meta"))),
    ("noise", lambda x: dict(noise=torch.zeros(3, 4))),
    ("noise", lambda x: dict(noise=torch.zeros(4, 3, dtype=torch.float16))),
    ("noise_std", lambda x: dict(noise_std=-1.0)),
    ("noise_std", lambda x: dict(noise_std=float("nan"))),
    ("step_size", lambda x: dict(step_size=float("inf"))),
    ("step_size", lambda x: dict(step_size=float("nan"))),
    ("step_size", lambda x: dict(step_size=-0.1)),
    ("prior_precision", lambda x: dict(prior_precision=float("nan"))),
    ("clamp", lambda x: dict(clamp=(1.0, -1.0))),
    ("clamp", lambda x: dict(clamp=(float("nan"), 1.0))),
    ("clamp", lambda x: dict(clamp=3.0)),
    ("clamp", lambda x: dict(clamp=("a", "b"))),
    ("clamp", lambda x: dict(clamp="ab")),
    ("clamp", lambda x: dict(clamp=(0.0, 1.0, 2.0))),
    ("step_size", lambda x: dict(step_size=None)),
    ("step_size", lambda x: dict(step_size="0.1")),
    ("noise_std", lambda x: dict(noise_std=True)),
    ("prior_precision", lambda x: dict(prior_precision=[1.0])),
]
# Only the in-place form refuses these (the functional form reads them and writes a new tensor).
BAD_INPLACE_CALLS = [
    ("'x' must not have overlapping memory", lambda: dict(x=torch.zeros(1, 3).expand(4, 3))),
    ("'x' requires grad", lambda: dict(x=torch.randn(4, 3, requires_grad=True))),
    ("'grad' partially overlaps 'x'", lambda: _shifted_slices("grad")),
    ("'noise' partially overlaps 'x'", lambda: _shifted_slices("noise")),
]
BACKENDS = ["extension", "reference"]


def _shifted_slices(name):
    base = torch.arange(20.0)
    return {"x": base[1:13].view(4, 3), name: base[0:12].view(4, 3)}


def _call(backend, form, monkeypatch, kwargs):
    """ops.langevin_step(_) with kwargs on one backend; the reference is forced as the fallback would pick it."""
    if backend == "reference":
        monkeypatch.setattr(ops, "_use_extension", lambda x: False)
    elif ops.backend() != "extension":
        pytest.skip("compiled extension not built")
    fn = ops.langevin_step if form == "functional" else ops.langevin_step_
    call = dict(kwargs)
    positional = [call.pop(k) for k in ("x", "grad", "step_size", "noise_std")]
    return fn(*positional, **call)


@pytest.mark.parametrize("argname,bad", BAD_CALLS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_CALLS)])
@pytest.mark.parametrize("form", ["functional", "inplace"])
def test_bad_input_raises_naming_argument_and_leaves_x(argname, bad, form, monkeypatch):
    """One table, both backends: the same exception type, a message naming the argument, x untouched."""
    raised = {}
    for backend in BACKENDS:
        x = torch.randn(4, 3)
        kwargs = dict(x=x, grad=torch.zeros(4, 3), step_size=0.1, noise_std=0.1)
        kwargs.update(bad(x))
        before = kwargs["x"].clone()
        with monkeypatch.context() as patch, pytest.raises((ValueError, TypeError, RuntimeError)) as err:
            _call(backend, form, patch, kwargs)
        assert argname in str(err.value), (backend, str(err.value))
        assert torch.equal(kwargs["x"], before), backend
        raised[backend] = type(err.value)
    assert raised["extension"] is raised["reference"], raised


@pytest.mark.parametrize("message,bad", BAD_INPLACE_CALLS, ids=[m.split("'")[1] + str(i) for i, (m, _) in
                                                                enumerate(BAD_INPLACE_CALLS)])
def test_bad_inplace_input_is_refused_alike_by_both_backends(message, bad, monkeypatch):
    raised = {}
    for backend in BACKENDS:
        kwargs = dict(grad=torch.zeros(4, 3), noise=torch.randn(4, 3), step_size=0.1, noise_std=0.1)
        kwargs.update(bad())
        before = kwargs["x"].detach().clone()
        with monkeypatch.context() as patch, pytest.raises((ValueError, RuntimeError), match=message) as err:
            _call(backend, "inplace", patch, kwargs)
        assert torch.equal(kwargs["x"].detach(), before), backend
        raised[backend] = type(err.value)
    assert raised["extension"] is raised["reference"], raised


@pytest.mark.parametrize("backend", BACKENDS)
def test_inplace_accepts_x_itself_and_disjoint_slices_of_one_tensor(backend, monkeypatch):
    """Full overlap (grad is x) and slices that do not meet are fine; only a partial overlap is refused."""
    x = torch.randn(4, 3)
    want = reference(x, x, 0.5, 0.0)
    got = x.clone()
    _call(backend, "inplace", monkeypatch, dict(x=got, grad=got, step_size=0.5, noise_std=0.0))
    torch.testing.assert_close(got, want)
    base = torch.randn(24)
    first, second = base[:12], base[12:]
    want = reference(first, second, 0.5, 0.0)
    _call(backend, "inplace", monkeypatch, dict(x=first, grad=second, step_size=0.5, noise_std=0.0))
    torch.testing.assert_close(first, want)


def test_reference_fallback_in_subprocess():
    code = (
        "import warnings, torch\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    from dualmcmc import ops\n"
        "    x = torch.zeros(10)\n"
        "    ops.langevin_step_(x, torch.ones(10), 1.0, 0.0)\n"
        "    ops.langevin_step(x, torch.ones(10), 1.0, 0.0)\n"
        "assert ops.backend() == 'reference', ops.backend()\n"
        "assert torch.all(x == -0.5)\n"
        "assert sum('eager PyTorch reference' in str(m.message) for m in w) == 1, [str(m.message) for m in w]\n"
    )
    env = {**__import__("os").environ, "DUALMCMC_BACKEND": "reference"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_temperature():
    assert ops.temperature(0.5, 1e-3) == pytest.approx(4e-6)
    with pytest.raises(ValueError, match="step_size"):
        ops.temperature(0.0, 1.0)


# ---------------------------------------------------------------------------------------------------- CUDA only
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device and the CUDA kernels")
def test_cuda_graph_capture_replays_eager_chain():
    def chain(x, steps=5):
        for _ in range(steps):
            ops.langevin_step_(x, 0.5 * x, 0.3, 0.3, prior_precision=1.0)
        return x

    x0 = torch.randn(1 << 16, device="cuda")
    static_x = x0.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up outside capture
        chain(static_x.clone())
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        chain(static_x)
    torch.manual_seed(99)
    static_x.copy_(x0)
    graph.replay()
    replayed_1 = static_x.clone()
    static_x.copy_(x0)
    graph.replay()
    replayed_2 = static_x.clone()
    torch.manual_seed(99)
    eager_1 = chain(x0.clone())
    eager_2 = chain(x0.clone())
    torch.testing.assert_close(replayed_1, eager_1, rtol=0, atol=0)
    torch.testing.assert_close(replayed_2, eager_2, rtol=0, atol=0)
    assert not torch.equal(replayed_1, replayed_2)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device and the CUDA kernels")
def test_cuda_same_stream_semantics_and_device_guard():
    x = torch.randn(1000, device="cuda")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        y = ops.langevin_step(x, torch.ones_like(x), 1.0, 0.0)
    s.synchronize()
    torch.testing.assert_close(y, x - 0.5)

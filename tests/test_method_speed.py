"""The speed options of every method's config (cuda_graph, compile, autocast, channels_last): what runs on CPU here,
the errors that name the key, and (CUDA only) a graph-captured iteration against the eager one."""
import dataclasses
import warnings

import pytest
import torch

from dualmcmc import graphs
from dualmcmc.accel import FastForward
from dualmcmc.methods import METHODS, build_method
from dualmcmc.methods.settings import SpeedOptions
from test_samplers import EagerStandIn

warnings.filterwarnings("ignore", message="dualmcmc.ops", category=RuntimeWarning)

TINY = {
    "dual_mcmc": {"ebm_hidden": 16, "ebm_layers": 2, "generator_hidden": 16, "generator_layers": 2,
                  "encoder_hidden": 16, "encoder_layers": 2, "latent_dim": 2, "x_steps": 3, "z_steps": 2},
    "coopnets": {"ebm_hidden": 16, "ebm_layers": 2, "generator_hidden": 16, "generator_layers": 2, "latent_dim": 2,
                 "x_steps": 3},
    "short_run": {"ebm_hidden": 16, "ebm_layers": 2, "x_steps": 3},
    "vae_mcmc": {"ebm_hidden": 16, "ebm_layers": 2, "generator_hidden": 16, "generator_layers": 2,
                 "encoder_hidden": 16, "encoder_layers": 2, "latent_dim": 2, "x_steps": 3},
    "nt_ebm": {"ebm_hidden": 16, "ebm_layers": 2, "flow_layers": 2, "flow_hidden": 8, "flow_pretrain_iterations": 0,
               "z_steps": 3},
}
MALA_KEY = {"dual_mcmc": "x_mala", "coopnets": "x_mala", "short_run": "x_mala", "vae_mcmc": "x_mala",
            "nt_ebm": "z_mala"}


def tiny_data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g)


def twin(name, shape=(2,), **speed):
    """Two methods with the same parameters: the plain one and one with ``speed`` options."""
    torch.manual_seed(0)
    plain = build_method(name, TINY[name], shape)
    fast = build_method(name, {**TINY[name], **speed}, shape)
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def chain_of(method, start, seed=1):
    """The method's own chain from ``start`` with a seeded generator (the op draws its noise from it)."""
    g = torch.Generator().manual_seed(seed)
    potential = method.latent_potential if method.name == "nt_ebm" else method.energy_potential()
    return method.run_chain(potential, start, method.langevin(method.EBM_CHAIN), generator=g)[0]


# ---- every config has the keys, checked by name ----
@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_config_has_the_speed_keys(name):
    keys = {f.name for f in dataclasses.fields(METHODS[name].Config)}
    assert {f.name for f in dataclasses.fields(SpeedOptions)} <= keys


@pytest.mark.parametrize("name", sorted(METHODS))
def test_cuda_graph_with_mala_is_refused_naming_both_keys(name):
    params = {**TINY[name], "cuda_graph": True, MALA_KEY[name]: True}
    if name == "vae_mcmc":
        params["x_noise_std"] = 0.01
    with pytest.raises(ValueError, match=f"cuda_graph: true.*{MALA_KEY[name]}"):
        build_method(name, params, (2,))


@pytest.mark.parametrize("params, message", [
    ({"autocast": "int8"}, r"autocast must be one of \['bf16', 'fp16'\]"),
    ({"compile": "yes"}, r"compile must be true or false"),
    ({"cuda_graph": True, "explicit_noise": True}, r"cuda_graph: true.*explicit_noise: false"),
])
def test_bad_speed_options_name_the_key(params, message):
    with pytest.raises(ValueError, match=message):
        build_method("dual_mcmc", {**TINY["dual_mcmc"], **params}, (2,))


def test_cuda_graph_on_cpu_names_the_key_and_the_fix():
    method = build_method("dual_mcmc", {**TINY["dual_mcmc"], "cuda_graph": True}, (2,))
    with pytest.raises(ValueError, match="cuda_graph: true needs a CUDA device.*cuda_graph: false"):
        method.check_device("cpu")
    before = {k: v.clone() for k, v in method.state_dict().items()}
    with pytest.raises(ValueError, match="cuda_graph: true needs a CUDA device"):
        method.train_step(tiny_data())
    assert all(torch.equal(before[k], v) for k, v in method.state_dict().items())  # refused before any update


def test_backoff_keeps_the_speed_options():
    method = build_method("dual_mcmc", {**TINY["dual_mcmc"], "autocast": "bf16"}, (2,))
    method.backoff(0.5)
    assert method.config.autocast == "bf16" and method.langevin("x").step_size == 0.5 * method.config.x_step_size


# ---- options that run on CPU ----
def test_without_options_the_chains_call_the_modules_themselves():
    method = build_method("dual_mcmc", TINY["dual_mcmc"], (2,))
    assert method.chain_net(method.ebm) is method.ebm


@pytest.mark.parametrize("name", sorted(METHODS))
def test_bf16_autocast_chains_stay_float32_and_close_to_float32_chains(name):
    plain, fast = twin(name, autocast="bf16")
    start = torch.randn(32, 2, generator=torch.Generator().manual_seed(3))
    want, got = chain_of(plain, start), chain_of(fast, start)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert isinstance(fast.chain_net(fast.ebm), FastForward) and fast.chain_net(fast.ebm) is fast.chain_net(fast.ebm)
    torch.testing.assert_close(got, want, atol=0.05, rtol=0.05)  # same noise; only bf16 rounding of the drift
    assert not torch.equal(got, want)  # the option did change the network pass


@pytest.mark.parametrize("name", sorted(METHODS))
def test_an_iteration_with_bf16_autocast_is_finite(name):
    _, fast = twin(name, autocast="bf16")
    losses = fast.train_step(tiny_data())
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses


def test_channels_last_conv_method_matches_the_plain_one_and_keeps_its_parameters():
    shape = (1, 8, 8)
    params = {"ebm_hidden": 8, "generator_hidden": 8, "encoder_hidden": 8, "latent_dim": 4, "x_steps": 3,
              "z_steps": 2}
    torch.manual_seed(0)
    plain = build_method("dual_mcmc", params, shape)
    fast = build_method("dual_mcmc", {**params, "channels_last": True}, shape)
    fast.load_state_dict(plain.state_dict())
    ebm_params = list(fast.ebm.parameters())
    start = torch.randn(4, *shape, generator=torch.Generator().manual_seed(2))
    want, got = chain_of(plain, start), chain_of(fast, start)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    conv_weights = [p for p in fast.ebm.parameters() if p.dim() == 4]
    assert conv_weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)
    assert list(fast.ebm.parameters()) == ebm_params  # same Parameter objects: the optimizer still holds them
    assert list(fast.state_dict()) == list(plain.state_dict())
    fast.train_step(torch.rand(4, *shape) * 2 - 1)


def test_compiled_chain_networks_match_eager():
    plain, fast = twin("short_run", compile=True)
    start = torch.randn(16, 2, generator=torch.Generator().manual_seed(4))
    want = chain_of(plain, start)
    try:
        got = chain_of(fast, start)
    except Exception as err:  # no C++ toolchain for inductor on this machine
        pytest.skip(f"torch.compile unusable here: {type(err).__name__}: {err}"[:300])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert list(fast.state_dict()) == list(plain.state_dict())  # no _orig_mod keys: checkpoints stay portable
    losses = fast.train_step(tiny_data())
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())


# ---- CUDA: graph-captured iterations equal eager ones ----
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["dual_mcmc", "nt_ebm", "short_run", "dual_mcmc_conv"])
def test_cuda_graph_iterations_equal_eager_iterations(name):
    graphs.clear_cache()
    if name == "dual_mcmc_conv":  # BatchNorm generator and a kept x0 = G(z0) graph across the latent chain on G
        plain, fast = twin("dual_mcmc", (1, 8, 8), cuda_graph=True)
        data = (torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(6)) * 2 - 1).cuda()
    else:
        plain, fast = twin(name, cuda_graph=True)
        data = tiny_data().cuda()
    plain, fast = plain.cuda(), fast.cuda()
    for _ in range(3):  # the first call captures; later ones replay into updated parameters
        torch.manual_seed(5)
        want = plain.train_step(data)
        torch.manual_seed(5)
        got = fast.train_step(data)
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-5), key
    for (key, a), b in zip(plain.state_dict().items(), fast.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=key)
    assert graphs.cache_size() >= 1


def test_compiled_conv_iteration_with_batchnorm_matches_eager():
    # The conv generator has BatchNorm: a compiled chain writes its running statistics back, which must neither
    # break the eager graph of x0 = G(z0) kept for errSample nor leave different statistics than eager mode.
    shape = (1, 8, 8)
    params = {"ebm_hidden": 8, "generator_hidden": 8, "encoder_hidden": 8, "latent_dim": 4, "x_steps": 3,
              "z_steps": 2, "chain_diagnostics": False}
    torch.manual_seed(0)
    plain = build_method("dual_mcmc", params, shape)
    fast = build_method("dual_mcmc", {**params, "compile": True}, shape)
    fast.load_state_dict(plain.state_dict())
    data = torch.rand(4, *shape, generator=torch.Generator().manual_seed(6)) * 2 - 1
    for _ in range(2):
        torch.manual_seed(7)
        want = plain.train_step(data)
        torch.manual_seed(7)
        try:
            got = fast.train_step(data)
        except Exception as err:
            if "inplace operation" in str(err):
                raise
            pytest.skip(f"torch.compile unusable here: {type(err).__name__}: {err}"[:300])
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-4), key
    # Adam (betas (0, 0.9)) turns float-rounding differences of a near-zero gradient into steps of up to lr (3e-4)
    for (key, a), b in zip(plain.state_dict().items(), fast.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-3, rtol=1e-3, msg=key)


def test_the_fast_chains_example_runs(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "fast_chains.py"
    spec = importlib.util.spec_from_file_location("fast_chains", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.main(["--iterations", "2"])
    out = capsys.readouterr().out
    assert "plain:" in out and "fast {'autocast': 'bf16'" in out


# ---- the methods' graph path on CPU: a stand-in for the capture that runs the same warm-up and undoes it ----
class WarmedStandIn(EagerStandIn):
    """graphs.CapturedChain without CUDA: the warm-up runs for real and is undone as before a capture
    (graphs.undone_afterwards), then every call runs the chain on the static inputs, as a replay would."""

    def __init__(self, chain, inputs, *, modules=(), generator=None, warmup_runs=1):
        super().__init__(chain, inputs, modules=modules)
        rng = generator if generator is not None else torch.default_generator
        with torch.no_grad(), graphs.undone_afterwards(modules, rng):
            for _ in range(warmup_runs):
                chain(*[t.clone() for t in self.static_inputs])


@pytest.fixture
def graph_path_on_cpu(monkeypatch):
    from dualmcmc import samplers
    from dualmcmc.methods.base import Method

    monkeypatch.setattr(graphs, "CapturedChain", WarmedStandIn)
    monkeypatch.setattr(samplers, "_check_graphable", lambda *args: None)
    monkeypatch.setattr(Method, "check_device", lambda self, device: None)
    graphs.clear_cache()
    yield
    graphs.clear_cache()


@pytest.mark.parametrize("name, shape", [("dual_mcmc", (1, 8, 8)), ("dual_mcmc", (2,)), ("nt_ebm", (2,)),
                                         ("short_run", (2,))])
def test_the_methods_graph_path_equals_eager_with_its_warm_up_undone(graph_path_on_cpu, name, shape):
    # (1, 8, 8): conv nets, a BatchNorm generator whose kept x0 = G(z0) graph must survive the undone warm-up
    plain, fast = twin(name, shape, cuda_graph=True)
    data = torch.rand(8, *shape, generator=torch.Generator().manual_seed(6)) * 2 - 1
    for _ in range(2):
        torch.manual_seed(5)
        want = plain.train_step(data)
        torch.manual_seed(5)
        got = fast.train_step(data)
        assert got == want
    for (key, a), b in zip(plain.state_dict().items(), fast.state_dict().values()):
        assert torch.equal(a, b), key
    assert graphs.cache_size() >= 1
    # evaluation draws with a fresh generator each time: the same samples, and no new graph
    samples = [m.sample(6, generator=torch.Generator().manual_seed(1)) for m in (plain, fast)]
    before = graphs.cache_size()
    again = fast.sample(6, generator=torch.Generator().manual_seed(1))
    assert torch.equal(samples[0], samples[1]) and torch.equal(again, samples[1]) and graphs.cache_size() == before

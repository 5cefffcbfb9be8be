"""accel.fast_forward (torch.compile, autocast, channels_last), graphs helpers that run without CUDA, and the chain
benchmark's --quick mode (the CI smoke run)."""
import importlib.util
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from dualmcmc import graphs, samplers
from dualmcmc.accel import FastForward, fast_forward
from dualmcmc.nets import ConvEnergy, MLPEnergy

warnings.filterwarnings("ignore", message="dualmcmc.ops", category=RuntimeWarning)
BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_chains.py"


def tiny_mlp():
    torch.manual_seed(0)
    return MLPEnergy(2, 16, 2)


def value_and_input_grad(fn, x):
    leaf = x.clone().requires_grad_(True)
    value = fn(leaf)
    (grad,) = torch.autograd.grad(value.sum(), leaf)
    return value.detach(), grad


def test_fast_forward_rejects_bad_arguments_by_name():
    with pytest.raises(ValueError, match="'autocast'"):
        fast_forward(tiny_mlp(), autocast="int8")
    with pytest.raises(TypeError, match="'module'"):
        fast_forward(lambda x: x)
    with pytest.raises(TypeError, match="'compile'"):
        fast_forward(tiny_mlp(), compile="yes")


def test_fast_forward_without_options_is_the_module():
    net = tiny_mlp()
    fast = fast_forward(net)
    x = torch.randn(5, 2)
    assert isinstance(fast, FastForward) and fast.module is net
    assert torch.equal(fast(x), net(x))


def test_compiled_forward_matches_eager_values_and_input_gradients():
    net = tiny_mlp()
    keys = list(net.state_dict())
    fast = fast_forward(net, compile=True)
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(1))
    try:
        got_value, got_grad = value_and_input_grad(fast, x)
    except Exception as err:  # no usable C++ toolchain / inductor backend here
        pytest.skip(f"torch.compile unusable on this machine: {type(err).__name__}: {err}"[:300])
    want_value, want_grad = value_and_input_grad(net, x)
    torch.testing.assert_close(got_value, want_value, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_grad, want_grad, atol=1e-5, rtol=1e-5)
    assert list(net.state_dict()) == keys  # the compiled wrapper is not a submodule


def test_bf16_autocast_runs_the_net_low_precision_but_returns_float32():
    net = tiny_mlp()
    fast = fast_forward(net, autocast="bf16")
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(2))
    value, grad = value_and_input_grad(fast, x)
    want_value, want_grad = value_and_input_grad(net, x)
    assert value.dtype == torch.float32 and grad.dtype == torch.float32
    torch.testing.assert_close(value, want_value, atol=0.05, rtol=0.02)  # bf16 keeps 8 bits of mantissa
    torch.testing.assert_close(grad, want_grad, atol=0.05, rtol=0.05)


def test_a_langevin_chain_through_autocast_keeps_a_float32_state():
    fast = fast_forward(tiny_mlp(), autocast="bf16")
    x0 = torch.randn(32, 2)
    x, diag = samplers.langevin_data_chain(fast, x0, 5, 0.1, 0.01, diagnostics=True)
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    assert diag.energy_end.dtype == torch.float32


def test_autocast_outputs_in_tuples_come_back_in_the_input_dtype():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 4)

        def forward(self, x):
            h = self.lin(x)
            return h[:, :2], h[:, 2:]

    mu, logvar = fast_forward(TwoHeads(), autocast="bf16")(torch.randn(5, 3))
    assert mu.dtype == logvar.dtype == torch.float32


def test_channels_last_conv_net_gives_the_same_energies_and_gradients():
    torch.manual_seed(3)
    net = ConvEnergy(1, 8, 4)
    reference = ConvEnergy(1, 8, 4)
    reference.load_state_dict(net.state_dict())
    fast = fast_forward(net, channels_last=True)
    assert net.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(6, 1, 8, 8)
    value, grad = value_and_input_grad(fast, x)
    want_value, want_grad = value_and_input_grad(reference, x)
    torch.testing.assert_close(value, want_value, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, want_grad, atol=1e-5, rtol=1e-5)


# ---- graphs helpers that need no GPU ----
def test_a_potential_declares_the_modules_it_reads():
    # Graph capture takes the modules explicitly (as torch.cuda.make_graphed_callables does): a module potential is
    # its own module, a fast_forward wrapper names its module, a function says which modules it closes over.
    net, other = tiny_mlp(), nn.Linear(2, 1)
    assert samplers.energy_potential(net).modules == (net,)
    assert samplers.energy_potential(fast_forward(net)).modules == (net,)
    both = samplers.Potential(lambda x: net(x) + other(x).squeeze(1), modules=(net, other))
    assert both.modules == (net, other)
    assert samplers.Potential(lambda x: x.sum(1)).modules == ()
    assert samplers.energy_potential(net).key == samplers.energy_potential(net).key  # one graph per network
    recon = samplers.reconstruction_potential(net, 0.3)
    assert recon.key == samplers.reconstruction_potential(net, 0.3).key != samplers.reconstruction_potential(net, 0.5).key

def test_callable_identity_is_stable_for_bound_methods():
    net = tiny_mlp()
    assert graphs.callable_identity(net.forward) == graphs.callable_identity(net.forward)
    assert graphs.callable_identity(net) != graphs.callable_identity(net.forward)


def test_clear_cache_empties_it():
    graphs.clear_cache()
    assert graphs.cache_size() == 0


# ---- the chain benchmark, as CI runs it ----
def test_bench_chains_quick_prints_a_table(capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_chains", BENCH)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_chains", bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    rows = bench.main(["--quick", "--devices", "cpu", "--threads", "1"])
    out = capsys.readouterr().out
    assert "| device | torch | setting | chain |" in out
    modes = {(r["setting"], r["chain"], r["mode"]) for r in rows}
    for setting in ("mlp2d", "cifar10"):
        for chain in ("data", "latent"):
            assert {(setting, chain, m) for m in bench.MODES} <= modes
    timed = [r for r in rows if r["chain"] != "iteration" and r["mode"] in ("reference", "fused", "floor")]
    assert all(r["steps_per_s"] > 0 and r["vs_reference"] > 0 for r in timed)
    assert all("needs CUDA" in r["note"] for r in rows if r["mode"] in ("fused+graph", "all"))
    iteration = [r for r in rows if r["chain"] == "iteration"]
    assert [r["mode"] for r in iteration] == ["reference", "dual_mcmc (fused)"] and iteration[0]["seconds"] > 0


def test_input_grads_only_gives_the_same_input_gradients_and_no_parameter_graph():
    net = tiny_mlp()
    fast = fast_forward(net, input_grads_only=True)
    x = torch.randn(9, 2, generator=torch.Generator().manual_seed(5))
    value, grad = value_and_input_grad(fast, x)
    want_value, want_grad = value_and_input_grad(net, x)
    assert torch.equal(value, want_value) and torch.equal(grad, want_grad)
    out = fast(x.clone().requires_grad_(True)).sum()
    assert torch.autograd.grad(out, list(net.parameters()), allow_unused=True) == (None,) * len(list(net.parameters()))
    with pytest.raises(TypeError, match="'input_grads_only'"):
        fast_forward(net, input_grads_only=1)

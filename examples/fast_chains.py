"""Train Dual-MCMC on the 8x8 digits from Python, with and without the chains' speed options, and compare the time.

    python examples/fast_chains.py                      # 20 iterations each way
    python examples/fast_chains.py --iterations 100 --compile

On a GPU the fast run uses every option (CUDA graphs, torch.compile, bf16 autocast, channels_last); on a CPU it
uses bf16 autocast (and torch.compile with --compile: it helps the energy chains there and slows the generator's,
benchmarks/RESULTS.md). Both runs start from the same weights and seeds, so their losses can be compared too.
"""
import argparse
import time

import torch

from dualmcmc.data import load_dataset, to_model_range
from dualmcmc.methods import build_method

PARAMS = {"arch": "conv", "latent_dim": 16, "ebm_hidden": 32, "generator_hidden": 32, "encoder_hidden": 32,
          "x_step_size": 0.5, "x_noise_std": 1e-3}  # configs/digits_dual_mcmc.yaml's model


def speed_options(device: torch.device, compile_on_cpu: bool) -> dict:
    if device.type == "cuda":
        return {"cuda_graph": True, "compile": True, "autocast": "bf16", "channels_last": True}
    return {"autocast": "bf16", "compile": compile_on_cpu}


def train(params: dict, data: torch.Tensor, iterations: int, device: torch.device) -> tuple[float, float]:
    """(seconds per iteration after the first, energy gap of the last iteration)."""
    torch.manual_seed(0)
    method = build_method("dual_mcmc", params, tuple(data.shape[1:])).to(device)
    batches = torch.randint(len(data), (iterations, 100), generator=torch.Generator().manual_seed(0))
    start = None
    for i, rows in enumerate(batches):
        losses = method.train_step(to_model_range(data[rows]).to(device))
        if i == 0:  # the first iteration compiles and captures
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / max(iterations - 1, 1), losses["energy_gap"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="on a CPU, also torch.compile the chains' networks")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_dataset("digits")
    fast = speed_options(device, args.compile)
    plain_s, plain_gap = train(PARAMS, data, args.iterations, device)
    fast_s, fast_gap = train({**PARAMS, **fast}, data, args.iterations, device)
    print(f"device {device}; {args.iterations} Dual-MCMC iterations on the digits, batch 100")
    print(f"plain: {plain_s * 1e3:.1f} ms/iteration, last energy gap {plain_gap:.4g}")
    print(f"fast {fast}: {fast_s * 1e3:.1f} ms/iteration ({plain_s / fast_s:.2f}x), last energy gap {fast_gap:.4g}")


if __name__ == "__main__":
    main()

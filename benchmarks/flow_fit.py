"""Affine couplings against spline couplings as NT-EBM's backbone: held-out NLL of a plain maximum-likelihood fit.

    python benchmarks/flow_fit.py rings pinwheel [--steps 1000]

Each flow (8 layers of width 64, NT-EBM's defaults) takes ``--steps`` Adam steps (lr 1e-3, batch 256) on 50 000
points of the density and is scored on 5000 fresh ones (one thread). The spline flow needs zuko.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dualmcmc
from dualmcmc.data import load_dataset  # noqa: E402
from dualmcmc.nets.flow import VectorFlow  # noqa: E402
from dualmcmc.nets.spline_flow import SplineFlow  # noqa: E402

FLOWS = {"affine": lambda: VectorFlow(2, n_layers=8, hidden=64, activation="silu"),
         "spline": lambda: SplineFlow(2, n_layers=8, hidden=64)}


def fit(make, data: torch.Tensor, steps: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    flow = make()
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    for _ in range(steps):
        batch = data[torch.randint(len(data), (256,))]
        opt.zero_grad()
        loss = -flow.log_prob(batch).mean()
        loss.backward()
        opt.step()
    return flow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("densities", nargs="+")
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| density | flow | held-out NLL (nats) | seconds |\n|---|---|---|---|")
    for density in args.densities:
        data = load_dataset(density, n_samples=50_000, seed=0)
        test = load_dataset(density, n_samples=5000, seed=1)
        for name, make in FLOWS.items():
            start = time.perf_counter()
            flow = fit(make, data, args.steps)
            with torch.no_grad():
                nll = -flow.log_prob(test).mean().item()
            print(f"| {density} | {name} | {nll:.3f} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()

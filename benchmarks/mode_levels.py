"""Where a trained toy run's mode weights stand, and whether its chains could follow them.

    python benchmarks/mode_levels.py RUN [RUN ...] [--steps 900] [--chains 1000]

For each run directory of a toy with known modes (8gaussians, 25gaussians) it prints, mode by mode (sorted by the
mode's distance from the origin): the true weight; the density's weight with the averaged nets (what evaluation
scores, `ema`) and with the live nets (what training's chains see); the replay buffer's share (T rung); and the share
of ``--chains`` buffer states after ``--steps`` steps of the training x-chain (its ladder included) on the live nets.
If the last row moves from the buffer's shares to the live density's weights, the chains mix and it is the energy
levels that move faster than the training chains follow (benchmarks/RESULTS.md, issue 15).
"""
from __future__ import annotations

import argparse

import torch

import dualmcmc.methods.base as base
from dualmcmc import load_run, samplers
from dualmcmc.data.toy2d import toy_modes
from dualmcmc.metrics.evaluate import DEFAULT_BATCH, grid_log_density, mode_masses

RESOLUTION = 250


def load(run: str, averaged: bool):
    """The run's method with the averaged nets (as `load_run` gives it) or with the live ones."""
    if averaged:
        return load_run(run, "cpu")
    keep = base.Method.use_averaged_weights
    base.Method.use_averaged_weights = lambda self: None  # leave the live weights in the nets
    try:
        return load_run(run, "cpu")
    finally:
        base.Method.use_averaged_weights = keep


def density_weights(method) -> tuple[torch.Tensor, torch.Tensor]:
    grid = grid_log_density(method.log_prob_unnormalized, (-4.0, 4.0), RESOLUTION, DEFAULT_BATCH, "cpu")
    return mode_masses(method.run_config.data, grid, resolution=RESOLUTION)


def shares(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    nearest = torch.cdist(x.float(), centers).argmin(dim=1)
    return torch.bincount(nearest, minlength=len(centers)).double() / len(x)


def report(run: str, steps: int, chains: int) -> None:
    live = load(run, averaged=False)
    modes = toy_modes(live.run_config.data)
    if modes is None or live.chains is None or live.chains.states is None:
        print(f"{run}: needs a toy with known modes (8gaussians, 25gaussians) and a replay buffer; skipped")
        return
    centers = modes[0]
    averaged_weights, truth = density_weights(load(run, averaged=True))
    live_weights, _ = density_weights(live)
    states = live.chains.states
    start = (states[:, 0] if states.dim() == 3 else states)[:chains].clone()  # replay_replicas: the T rung
    moved, _ = samplers.run_chain(live.energy_potential(), start, live.langevin("x").replace(steps=steps))
    rows = {"true": truth, "density (averaged nets)": averaged_weights, "density (live nets)": live_weights,
            "buffer": shares(start, centers), f"buffer + {steps} steps": shares(moved, centers)}
    order = centers.norm(dim=1).argsort()
    print(f"{run} ({live.run_config.data}): weight per mode, by distance from the origin")
    print(f"  {'mode radius':24s}" + " ".join(f"{centers[i].norm():6.2f}" for i in order.tolist()))
    for name, values in rows.items():
        print(f"  {name:24s}" + " ".join(f"{values[i]:6.3f}" for i in order.tolist()))
    for name in ("density (averaged nets)", "density (live nets)", "buffer", f"buffer + {steps} steps"):
        error = ((rows[name] - truth).abs() / truth).max().item()
        print(f"  max relative error, {name}: {error:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories of dual_mcmc toy runs with a replay buffer")
    parser.add_argument("--steps", type=int, default=900, help="steps of the training x-chain from the buffer")
    parser.add_argument("--chains", type=int, default=1000, help="buffer states to run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for run in args.runs:
        report(run, args.steps, args.chains)


if __name__ == "__main__":
    main()

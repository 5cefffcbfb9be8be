"""Where a trained toy run's mode weights stand, and whether its chains could follow them.

    python benchmarks/mode_levels.py RUN [RUN ...] [--steps 900] [--chains 1000] [--previous]

For each run directory of a toy with known modes (8gaussians, 25gaussians) it prints, mode by mode (sorted by the
mode's distance from the origin): the true weight; the density's weight with the averaged nets (what evaluation
scores, `ema`) and with the live nets (what training's chains see); the replay buffer's share (T rung); and the share
of ``--chains`` buffer states after ``--steps`` steps of the training x-chain (its ladder included) on the live nets,
and where as many fresh E-step chains end (generator samples, the config's jumps, one training chain).
If the last row moves from the buffer's shares to the live density's weights, the chains mix and it is the energy
levels that move faster than the training chains follow (benchmarks/RESULTS.md, issue 15). It also prints the
density's mass farther than 3 component stds from every mode (the truth's: 0.011), and with ``--previous`` reads the
run's checkpoint before the latest (checkpoint.prev.pt) instead, to see whether a tilt persists.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch

import dualmcmc.methods.base as base
from dualmcmc import load_run, samplers
from dualmcmc.data.toy2d import sample_toy, toy_modes
from dualmcmc.metrics.evaluate import DEFAULT_BATCH, grid_log_density, mode_masses
from dualmcmc.metrics.grid import grid_points

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


def density_weights(method) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(model weights, true weights, the density's mass beyond 3 component stds of every mode)."""
    grid = grid_log_density(method.log_prob_unnormalized, (-4.0, 4.0), RESOLUTION, DEFAULT_BATCH, "cpu")
    centers, _, radius = toy_modes(method.run_config.data)
    distance = torch.cdist(grid_points((-4.0, 4.0), RESOLUTION)[2].double(), centers.double()).min(dim=1).values
    mass = grid.reshape(-1).double().exp()
    between = (mass[distance > radius].sum() / mass.sum()).item()
    return (*mode_masses(method.run_config.data, grid, resolution=RESOLUTION), between)


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
    averaged_weights, truth, between = density_weights(load(run, averaged=True))
    live_weights, _, _ = density_weights(live)
    states = live.chains.states
    start = (states[:, 0] if states.dim() == 3 else states)[:chains].clone()  # replay_replicas: the T rung
    spec = live.langevin("x")
    moved, _ = samplers.run_chain(live.energy_potential(), start, spec.replace(steps=steps))
    rows = {"true": truth, "density (averaged nets)": averaged_weights, "density (live nets)": live_weights,
            "buffer": shares(start, centers), f"buffer + {steps} steps": shares(moved, centers),
            "fresh chains": shares(fresh_chains(live, chains, spec), centers)}
    order = centers.norm(dim=1).argsort()
    print(f"{run} ({live.run_config.data}): weight per mode, by distance from the origin")
    print(f"  {'mode radius':24s}" + " ".join(f"{centers[i].norm():6.2f}" for i in order.tolist()))
    for name, values in rows.items():
        print(f"  {name:24s}" + " ".join(f"{values[i]:6.3f}" for i in order.tolist()))
    for name in ("density (averaged nets)", "density (live nets)", "buffer", f"buffer + {steps} steps"):
        error = ((rows[name] - truth).abs() / truth).max().item()
        print(f"  max relative error, {name}: {error:.2f}")
    print(f"  density's mass beyond 3 stds of every mode (averaged nets): {between:.3f}")


def fresh_chains(method, n: int, spec) -> torch.Tensor:
    """Where ``n`` of the E step's fresh chains end: generator samples, the config's x_jumps (around a batch of the
    toy's data) and one training x-chain."""
    with torch.no_grad():
        x = method.generator_sample(n)
    jumps = getattr(method.config, "x_jumps", 0)
    if jumps:
        data = sample_toy(method.run_config.data, method.run_config.batch_size)
        x, _ = samplers.run_jumps(method.energy_potential(), x, spec, data, method.config.x_jump_bandwidth, jumps)
    return samplers.run_chain(method.energy_potential(), x, spec)[0]


def previous_checkpoint(run: str, into: str) -> str:
    """A directory holding RUN's config and its checkpoint before the latest, as a run of its own."""
    shutil.copy(Path(run) / "config.yaml", into)
    shutil.copy(Path(run) / "checkpoint.prev.pt", Path(into) / "checkpoint.pt")
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories of dual_mcmc toy runs with a replay buffer")
    parser.add_argument("--steps", type=int, default=900, help="steps of the training x-chain from the buffer")
    parser.add_argument("--chains", type=int, default=1000, help="buffer states to run")
    parser.add_argument("--previous", action="store_true", help="read RUN/checkpoint.prev.pt instead of the latest")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for run in args.runs:
        if not args.previous:
            report(run, args.steps, args.chains)
            continue
        with tempfile.TemporaryDirectory() as copy:
            print(f"{run}: the checkpoint before the latest")
            report(previous_checkpoint(run, copy), args.steps, args.chains)


if __name__ == "__main__":
    main()

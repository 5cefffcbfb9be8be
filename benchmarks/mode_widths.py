"""Where a trained 8gaussians EBM's density error lies: each mode's mass and width against the data's.

    python benchmarks/mode_widths.py runs/tq/8gaussians_dual_mcmc_wd0_s0 [RUN ...]

The run's grid-normalised density on a 401 x 401 grid of [-4, 4]^2 is split by nearest mode centre (the data's
radius, angles k * 45 degrees); per mode it prints the mass and the per-axis standard deviation, the data's beside
them, and the mass farther than 0.6 from every centre.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dualmcmc
from dualmcmc import load_run  # noqa: E402
from dualmcmc.data import load_dataset  # noqa: E402


def weighted_std(points: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    mean = (weights[:, None] * points).sum(0) / weights.sum()
    return ((weights[:, None] * (points - mean) ** 2).sum(0) / weights.sum()).sqrt()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("8gaussians", n_samples=50_000, seed=0)
    radius = data.norm(dim=1).mean()
    centres = torch.stack([torch.tensor([math.cos(k * math.pi / 4), math.sin(k * math.pi / 4)]) for k in range(8)])
    centres = centres * radius
    edge = torch.linspace(-4, 4, 401)
    grid = torch.stack(torch.meshgrid(edge, edge, indexing="ij"), -1).reshape(-1, 2)
    grid_dist, grid_mode = torch.cdist(grid, centres).min(1)
    data_mode = torch.cdist(data, centres).argmin(1)
    for run in args.runs:
        method = load_run(run)
        with torch.no_grad():
            log_p = torch.cat([method.log_prob_unnormalized(chunk) for chunk in grid.split(20_000)])
        p = (log_p - log_p.max()).exp()
        p = p / p.sum()
        print(f"# {run}\n| mode | mass (data) | std x, y (data) |\n|---|---|---|")
        for k in range(8):
            model_std = weighted_std(grid[grid_mode == k], p[grid_mode == k])
            data_std = data[data_mode == k].std(0)
            print(f"| {k} | {p[grid_mode == k].sum():.3f} ({(data_mode == k).float().mean():.3f}) | "
                  f"{model_std[0]:.3f}, {model_std[1]:.3f} ({data_std[0]:.3f}, {data_std[1]:.3f}) |")
        far_data = (torch.cdist(data, centres).min(1).values > 0.6).float().mean()
        print(f"mass farther than 0.6 from every mode: {p[grid_dist > 0.6].sum():.3f} (data {far_data:.3f})\n")


if __name__ == "__main__":
    main()

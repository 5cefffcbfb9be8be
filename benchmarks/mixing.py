"""Does MCMC mix? Long-run chains on one learned 2-D mixture EBM, in the flow's latent space and in data space.

    python benchmarks/mixing.py                          # trains configs/toy2d_nt_ebm.yaml on 8gaussians first
    python benchmarks/mixing.py --run runs/toy2d_nt_ebm  # or uses a trained nt_ebm run
    python benchmarks/mixing.py --steps 500 --chains 4 --iterations 300   # a smoke run

The density is the NT-EBM's p(x) ∝ exp(-E(x)) q_flow(x). Two samplers target it:
  latent:  Langevin / MALA on z with U(z) = E(g(z)) + ||z||^2/2, reported through x = g(z)  (NT-EBM's sampler)
  data:    Langevin / MALA on x with U(x) = E(x) - log q_flow(x)                          (the usual EBM sampler)
Both start from the same points (g(z0), z0 ~ N(0, I)) and run for --steps steps at each step size of a small grid,
Metropolis-adjusted, so both are exact and the acceptance rate says whether a step size is sensible. Reported per
(space, step size): MH acceptance, mode switches per chain per 1000 steps (moves between the neighbourhoods of
the mixture's components, dualmcmc.diagnostics.mode_switches, on the states recorded every --thin steps),
effective sample size of the two coordinates (min over them; of the recorded states) per second, and split R-hat
(max over them). A picture of chain trajectories goes to --picture.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def trained_nt_ebm(args) -> "object":
    """The nt_ebm method of --run, or of a fresh run of configs/toy2d_nt_ebm.yaml on --density."""
    from dualmcmc import load_run
    from dualmcmc.train import train

    run = args.run
    if run is None:
        overrides = [f"data={args.density}", f"out={args.out}/nt_ebm_{args.density}", "log.progress=false",
                     "log.image_every=0", "device=cpu", f"seed={args.seed}"]
        if args.iterations:
            overrides.append(f"iterations={args.iterations}")
        run = train(REPO / "configs" / "toy2d_nt_ebm.yaml", overrides)
    method = load_run(run, device="cpu")
    if method.name != "nt_ebm":
        raise SystemExit(f"--run {run}: an nt_ebm run is needed, this one is {method.name}")
    return method, Path(run)


def long_run(method, space: str, start_z: torch.Tensor, steps: int, step_size: float, seed: int, thin: int):
    """(trajectory (C, steps // thin, 2) in data space, acceptance (C,), seconds) of one MALA chain per start,
    recorded every ``thin`` steps (each record costs one extra gradient evaluation, so thin > 1 saves time)."""
    from dualmcmc.samplers import run_langevin_chain

    generator = torch.Generator().manual_seed(seed)
    if space == "latent":
        state, potential, prior = start_z.clone(), method.latent_energy, 1.0
        to_data = method.flow
    else:
        with torch.no_grad():
            state = method.flow(start_z)
        potential, prior, to_data = method.data_space_potential, 0.0, None
    trajectory, accepted = [], torch.zeros(len(state))
    start = time.perf_counter()
    for _ in range(steps // thin):
        state, diag = run_langevin_chain(potential, state, thin, step_size, step_size, prior_precision=prior,
                                         mala=True, generator=generator)
        accepted += diag.acceptance
        trajectory.append(state)
    seconds = time.perf_counter() - start
    trajectory = torch.stack(trajectory, dim=1)
    if to_data is not None:
        with torch.no_grad():
            trajectory = to_data(trajectory.reshape(-1, 2)).reshape(trajectory.shape)
    return trajectory, accepted / (steps // thin), seconds


def score(trajectory, acceptance, seconds, centers, radius, burn_in: int, steps: int) -> dict:
    from dualmcmc.diagnostics import effective_sample_size, mode_switches, split_rhat

    kept = trajectory[:, burn_in:]
    switches = mode_switches(trajectory, centers, radius).double()
    ess = effective_sample_size(kept)
    rhat = split_rhat(kept)
    return {
        "acceptance": float(acceptance.mean()),
        "mode_switches_per_1000": float(switches.mean()) * 1000.0 / steps,
        "chains_that_switched": int((switches > 0).sum()),
        "modes_visited": int(_modes_visited(trajectory, centers, radius)),
        "ess_min": float(torch.as_tensor(ess).min()),
        "ess_per_second": float(torch.as_tensor(ess).min()) / seconds,
        "rhat_max": float(torch.as_tensor(rhat).max()),
        "seconds": seconds,
    }


def _modes_visited(trajectory, centers, radius) -> int:
    """Modes any chain came within radius of."""
    dist = torch.cdist(trajectory.reshape(-1, 2).double(), centers.double())
    return int((dist <= radius).any(dim=0).sum())


def draw(path: Path, method, runs: dict, bounds=(-4.0, 4.0)) -> Path:
    """Density map with four chains' trajectories: latent-space sampler beside data-space sampler."""
    from matplotlib.figure import Figure

    from dualmcmc.metrics import grid_density

    density = grid_density(method.log_prob_unnormalized, bounds, 200).numpy()
    fig = Figure(figsize=(4.2 * len(runs), 4.4), layout="constrained")
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for ax, (title, trajectory) in zip(axes, runs.items()):
        ax.imshow(density, origin="lower", extent=(*bounds, *bounds), cmap="Greys")
        for k, color in zip(range(min(4, len(trajectory))), ("tab:red", "tab:blue", "tab:green", "tab:orange")):
            pts = trajectory[k].numpy()
            ax.plot(pts[:, 0], pts[:, 1], color=color, linewidth=0.4, alpha=0.8)
            ax.scatter(pts[:1, 0], pts[:1, 1], color=color, s=18, marker="x")
        ax.set_xlim(*bounds)
        ax.set_ylim(*bounds)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default=None, help="a trained nt_ebm run directory (default: train one)")
    parser.add_argument("--density", default="8gaussians", choices=["8gaussians", "25gaussians"])
    parser.add_argument("--iterations", type=int, default=None, help="training iterations (default: the config's)")
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--step-sizes", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    parser.add_argument("--thin", type=int, default=5, help="record the chains every THIN steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/mixing")
    parser.add_argument("--json", default=None, help="default OUT/mixing.json")
    parser.add_argument("--picture", default=None, help="default OUT/mixing.png")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    from dualmcmc.data import toy_modes

    method, run = trained_nt_ebm(args)
    centers, _, radius = toy_modes(method.run_config.data)
    start_z = torch.randn(args.chains, 2, generator=torch.Generator().manual_seed(args.seed))
    rows, pictures = [], {}
    for space in ("latent", "data"):
        for step_size in args.step_sizes:
            trajectory, acceptance, seconds = long_run(method, space, start_z, args.steps, step_size, args.seed + 1,
                                                       args.thin)
            row = {"space": space, "step_size": step_size, "chains": args.chains, "steps": args.steps,
                   "thin": args.thin, **score(trajectory, acceptance, seconds, centers, radius,
                                              burn_in=trajectory.shape[1] // 10, steps=args.steps)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if step_size == args.step_sizes[len(args.step_sizes) // 2]:
                pictures[f"{space}-space MALA, step {step_size}\nacceptance {row['acceptance']:.2f}, "
                         f"{row['mode_switches_per_1000']:.1f} mode switches / 1000 steps"] = trajectory
    out = Path(args.out)
    json_path = Path(args.json or out / "mixing.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"run": str(run), "rows": rows}, indent=2) + "\n")
    picture = draw(Path(args.picture or out / "mixing.png"), method, pictures)

    print(f"\n# mixing: {date.today()}, torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} cores, "
          f"run {run}, {args.chains} chains x {args.steps} steps (recorded every {args.thin}), MALA")
    print("| space | step | acceptance | mode switches / 1000 steps | chains that switched | modes visited | "
          "ESS (min) | ESS / s | split R-hat (max) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['space']} | {r['step_size']} | {r['acceptance']:.2f} | {r['mode_switches_per_1000']:.2f} | "
              f"{r['chains_that_switched']}/{r['chains']} | {r['modes_visited']} | {r['ess_min']:.0f} | "
              f"{r['ess_per_second']:.1f} | {r['rhat_max']:.2f} |")
    print(f"picture: {picture}")


if __name__ == "__main__":
    main()

"""How far each mode's weight swings while a trained toy run goes on training, and what the weight average makes of it.

    python benchmarks/level_swings.py RUN [--iterations 200] [--every 10] [--previous] [--set KEY=VALUE ...]

Continues a copy of RUN (a dual_mcmc run on a toy with known modes: 8gaussians, 25gaussians; RUN is not touched)
from its latest checkpoint (``--previous``: the one before, RUN/checkpoint.prev.pt), with the config overrides
``--set`` (e.g. ``cooldown.fraction=0.125``; the rates saved with the optimizers stay), for ``--iterations`` more
iterations and, every ``--every``, reads each mode's weight in the density of the live nets
and of the averaged nets (config key ``ema``). Printed per mode (sorted by distance from the origin): the truth, the
arithmetic and the geometric mean of the live weights, the averaged nets' weights, and the standard deviation of the
live log-weight, and how strongly the parameters move each mode's energy against the modes' mean (the norm of the
gradient of E(centre) minus the mean of E over the centres, live nets at the end). An average of the weights averages
the energies, so its density is close to the geometric mean of the live densities, and a mode whose level swings
more than the others comes out lighter there (Jensen's inequality; benchmarks/RESULTS.md, issue 15).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch

from dualmcmc import train as training
from dualmcmc.checkpoint import checkpoint_iteration
from dualmcmc.config import ConfigError, load_config
from dualmcmc.data.toy2d import toy_modes
from mode_levels import density_weights


def swings(run: str, iterations: int, every: int, checkpoint: str = "checkpoint.pt",
           overrides: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Rows of per-mode weights over the continued training, and the modes' centres."""
    with tempfile.TemporaryDirectory() as copy:
        shutil.copy(Path(run) / "config.yaml", copy)
        shutil.copy(Path(run) / checkpoint, Path(copy) / "checkpoint.pt")
        cfg = load_config(Path(copy) / "config.yaml", [*overrides, f"out={copy}", "log.checkpoint_every=1000000",
                                                       "log.image_every=1000000", "log.tensorboard=false"])
        cfg.iterations = checkpoint_iteration(Path(copy) / "checkpoint.pt") + iterations
        modes = toy_modes(cfg.data)
        if modes is None:
            raise SystemExit(f"{run}: needs a toy with known modes (8gaussians, 25gaussians)")
        state = training.start(cfg, fresh=False)
        state.method.run_config = cfg  # what density_weights reads the toy's name from
        live, averaged = [], []
        try:
            while state.iteration < cfg.iterations:
                state.iteration += 1
                training.step(state)
                if state.iteration % every == 0:
                    with torch.no_grad():
                        live.append(density_weights(state.method)[0])
                        with state.method.averaged_weights():
                            averaged.append(density_weights(state.method)[0])
        finally:
            state.close()
    live_w, averaged_w = torch.stack(live), torch.stack(averaged)
    geometric = live_w.log().mean(0).exp()
    rows = {"true": modes[1].double(), "live, arithmetic mean": live_w.mean(0),
            "live, geometric mean": geometric / geometric.sum(), "averaged nets": averaged_w.mean(0),
            "std of the live log-weight": live_w.log().std(0),
            "energy's parameter gradient": level_sensitivity(state.method.ebm, modes[0])}
    return rows, modes[0]


def level_sensitivity(ebm: torch.nn.Module, centers: torch.Tensor) -> torch.Tensor:
    """Per mode, the norm of the gradient over the EBM's parameters of E(centre) minus the modes' mean energy: how
    far one optimizer step of a given size moves that mode's level against the others."""
    params = [p for p in ebm.parameters() if p.requires_grad]
    energies = ebm(centers.to(next(ebm.parameters()).device))
    relative = energies - energies.mean()
    norms = []
    for k in range(len(centers)):
        grads = torch.autograd.grad(relative[k], params, retain_graph=True)
        norms.append(torch.cat([g.flatten() for g in grads]).norm())
    return torch.stack(norms).detach().double().cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a dual_mcmc run directory on 8gaussians or 25gaussians")
    parser.add_argument("--iterations", type=int, default=200, help="iterations to continue for")
    parser.add_argument("--every", type=int, default=10, help="read the weights every this many iterations")
    parser.add_argument("--previous", action="store_true", help="start from RUN/checkpoint.prev.pt")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for the continued training (e.g. cooldown.fraction=0.125)")
    args = parser.parse_args()
    checkpoint = "checkpoint.prev.pt" if args.previous else "checkpoint.pt"
    missing = [name for name in ("config.yaml", checkpoint) if not (Path(args.run) / name).is_file()]
    if missing:
        parser.error(f"run: {args.run} is not a trained run directory (no {', '.join(missing)})")
    if args.iterations < 1 or not 1 <= args.every <= args.iterations:
        parser.error("--iterations must be >= 1 and --every between 1 and --iterations")
    torch.set_num_threads(1)
    try:
        rows, centers = swings(args.run, args.iterations, args.every, checkpoint, tuple(args.set))
    except ConfigError as err:
        parser.error(f"the continued run's config: {err}")
    order = centers.norm(dim=1).argsort().tolist()
    print(f"{args.run}: {args.iterations} more iterations from {checkpoint}"
          f"{' with ' + ' '.join(args.set) if args.set else ''}, weights read every {args.every}")
    print(f"  {'mode radius':28s}" + " ".join(f"{centers[i].norm():6.2f}" for i in order))
    for name, values in rows.items():
        print(f"  {name:28s}" + " ".join(f"{values[i]:6.3f}" for i in order))
    truth = rows["true"]
    for name in ("live, arithmetic mean", "live, geometric mean", "averaged nets"):
        print(f"  max relative error, {name}: {((rows[name] - truth).abs() / truth).max().item():.2f}")


if __name__ == "__main__":
    main()

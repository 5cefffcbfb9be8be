"""What trained EBMs do beyond sampling (issue 16): AIS log-likelihood against the grid normaliser (2-D runs),
out-of-distribution AUROC on the offline sets (image runs), and completion errors (every run).

    python benchmarks/using_ebms.py runs/toy2d runs/tq/8gaussians_*_s0 runs/dq_base/*_s0 --json out.json

Each run is scored with the same functions the CLI calls (dualmcmc.run.log_likelihood_run, ood_run,
completion_run), one thread, fixed seeds; prints one markdown table per kind of data.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dualmcmc
from dualmcmc.data import dataset_shape  # noqa: E402
from dualmcmc.run import completion_run, log_likelihood_run, ood_run, run_config  # noqa: E402


def score(run: Path, n_chains: int, n_temps: int) -> dict:
    cfg = run_config(run)
    images = len(dataset_shape(cfg.data)) == 3
    row = {"run": str(run), "method": cfg.method, "data": cfg.data}
    if images:
        for out in ("noise", "inverted"):
            row[f"auroc_{out}"] = ood_run(run, out)["auroc"]
        masks = ("bottom", "center")
    else:
        found = log_likelihood_run(run, n_chains=n_chains, n_temps=n_temps)
        row.update({k: found.get(k, float("nan")) for k in ("log_z", "log_z_stderr", "grid_log_z", "ess",
                    "held_out_log_likelihood", "held_out_log_likelihood_stderr", "true_held_out_log_likelihood")})
        masks = ("left",)
    for mask in masks:
        found = completion_run(run, mask, n=300)
        row.update({f"{mask}_{k}": found[k] for k in ("mse", "mean_fill_mse", "mmd", "mean_fill_mmd")})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--n-chains", type=int, default=1000)
    parser.add_argument("--n-temps", type=int, default=500)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for run in args.runs:
        try:
            rows.append(score(run, args.n_chains, args.n_temps))
        except Exception as err:  # one broken run must not lose the others
            rows.append({"run": str(run), "failed": f"{type(err).__name__}: {err}"})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print("| run | method | log Z (AIS) | log Z (grid, [-4,4]^2) | held-out log-lik (truth) | ESS | x|y MSE (mean fill) "
          "| x|y MMD (mean fill) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "log_z" in r:
            print(f"| {r['run']} | {r['method']} | {r['log_z']:.3f} +- {r['log_z_stderr']:.3f} | {r['grid_log_z']:.3f} | "
                  f"{r['held_out_log_likelihood']:.3f} +- {r['held_out_log_likelihood_stderr']:.3f} "
                  f"({r['true_held_out_log_likelihood']:.3f}) | {r['ess']:.0f} | "
                  f"{r['left_mse']:.2f} ({r['left_mean_fill_mse']:.2f}) | {r['left_mmd']:.3f} ({r['left_mean_fill_mmd']:.3f}) |")
    print()
    print("| run | method | AUROC noise | AUROC inverted | bottom MSE (mean fill) | bottom MMD (mean fill) | "
          "center MSE (mean fill) | center MMD (mean fill) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "auroc_noise" in r:
            print(f"| {r['run']} | {r['method']} | {r['auroc_noise']:.3f} | {r['auroc_inverted']:.3f} | "
                  f"{r['bottom_mse']:.3f} ({r['bottom_mean_fill_mse']:.3f}) | {r['bottom_mmd']:.3f} "
                  f"({r['bottom_mean_fill_mmd']:.3f}) | {r['center_mse']:.3f} ({r['center_mean_fill_mse']:.3f}) | "
                  f"{r['center_mmd']:.3f} ({r['center_mean_fill_mmd']:.3f}) |")
    for r in rows:
        if "failed" in r:
            print(f"{r['run']}: failed: {r['failed']}")


if __name__ == "__main__":
    main()

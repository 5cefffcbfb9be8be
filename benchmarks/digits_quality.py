"""Quality on sklearn's 8x8 digits: dual_mcmc, vae_mcmc, coopnets, short_run, nt_ebm at equal iterations and seeds.

    python benchmarks/digits_quality.py --jobs 2
    python benchmarks/digits_quality.py --methods dual_mcmc --iterations 200      # a smoke run
    python benchmarks/digits_quality.py --seeds 0 1 2 --jobs 2                   # mean and spread over seeds

Each run trains from the method's shipped config (configs/digits_<method>.yaml) with only iterations, seed and out
changed, and is scored by dualmcmc.metrics.images.evaluate_images (via the run's eval.json): Frechet distance
("fd") and kernel MMD in the features of the package's own digits classifier, of EBM samples and of generator
samples, against the 300 held-out digits; and the reconstruction MSE of the held-out digits (per pixel, [-1, 1]
units) for the methods that reconstruct. Prints a markdown table and writes every number to --json.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
from datetime import date
from pathlib import Path

from toy2d_quality import over_seeds, run_all

CONFIGS = {m: f"digits_{m}.yaml" for m in ("dual_mcmc", "vae_mcmc", "coopnets", "short_run", "nt_ebm")}
# Over seeds: fidelity (FD in two feature spaces, precision, confidence) and diversity (recall, coverage, classes).
SEED_COLUMNS = (("fd", "EBM FD (CNN)", "{:.2f}"), ("mlp_fd", "EBM FD (MLP)", "{:.2f}"),
                ("precision", "precision", "{:.2f}"), ("recall", "recall", "{:.2f}"), ("density", "density", "{:.2f}"),
                ("coverage", "coverage", "{:.2f}"), ("classes_covered", "classes", "{:.1f}"),
                ("class_tv", "class TV", "{:.2f}"), ("confidence", "confidence", "{:.2f}"),
                ("generator_fd", "G FD (CNN)", "{:.2f}"), ("generator_mlp_fd", "G FD (MLP)", "{:.2f}"),
                ("generator_coverage", "G coverage", "{:.2f}"))
COLUMNS = (("fd", "EBM FD", "{:.2f}"), ("mmd", "EBM MMD", "{:.4f}"), ("generator_fd", "generator FD", "{:.2f}"),
           ("generator_mmd", "generator MMD", "{:.4f}"), ("recon_mse", "recon MSE", "{:.4f}"))


def table(rows: list[dict]) -> str:
    def cell(row, key, fmt):
        if "failed" in row or "diverged" in row:
            return "failed" if "failed" in row else "diverged"
        value = row.get(key)
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)

    lines = ["| method | " + " | ".join(title for _, title, _ in COLUMNS) + " | seconds |",
             "|---|" + "---|" * (len(COLUMNS) + 1)]
    for row in rows:
        cells = " | ".join(cell(row, key, fmt) for key, _, fmt in COLUMNS)
        lines.append(f"| {row['method']}{'_' + row['label'] if row.get('label') else ''} s{row['seed']} | {cells} | {row['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--iterations", type=int, default=None, help="default: the dual_mcmc config's, for all")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="one run per seed and method; the second "
                        "table gives the mean and standard deviation over them")
    parser.add_argument("--label", default="", help="a name for this variant in the rows and run folders")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each gets cores / jobs threads)")
    parser.add_argument("--out", default="runs/digits_quality")
    parser.add_argument("--json", default=None, help="default OUT/results.json")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run (e.g. model.x_steps=30)")
    args = parser.parse_args()
    repo = Path(__file__).resolve().parents[1]
    if args.iterations is None:
        from dualmcmc.config import load_config

        args.iterations = load_config(repo / "configs" / CONFIGS["dual_mcmc"]).iterations
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    suffix = f"_{args.label}" if args.label else ""
    jobs = [{"density": "digits", "method": m, "label": args.label, "config": CONFIGS[m],
             "iterations": args.iterations, "seed": seed, "threads": threads, "out": str(Path(args.out) / f"{m}{suffix}_s{seed}"),
             "overrides": args.overrides}
            for m in args.methods for seed in args.seeds]
    rows = run_all(jobs, args.jobs, Path(args.json or Path(args.out) / "results.json"))

    import torch

    print(f"# digits_quality: {date.today()}, torch {torch.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} cores, {args.iterations} iterations, seeds {args.seeds}, jobs {args.jobs}, "
          f"overrides {args.overrides}")
    print(table(rows))
    print()
    print(over_seeds(rows, ("method", "label"), SEED_COLUMNS))


if __name__ == "__main__":
    main()

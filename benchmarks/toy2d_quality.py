"""Quality on the 2-D toys: every density x every method, same iterations and seeds.

    python benchmarks/toy2d_quality.py                         # the full table (about an hour on 2 CPU cores)
    python benchmarks/toy2d_quality.py --densities 8gaussians --methods dual_mcmc --iterations 300   # a smoke run
    python benchmarks/toy2d_quality.py --jobs 2                # two runs at a time, one thread each
    python benchmarks/toy2d_quality.py --seeds 0 1 2 --densities 8gaussians --methods dual_mcmc \
        --set model.ema=true --label ema                       # a variant over 3 seeds: mean and spread

Each run trains from the method's shipped config (configs/toy2d.yaml, configs/toy2d_vae_mcmc.yaml,
configs/toy2d_nt_ebm.yaml, configs/toy2d_coopnets.yaml, configs/toy2d_short_run.yaml) with only data, iterations,
seed and out changed (nt_ebm spends the first model.flow_pretrain_iterations of them fitting its flow), then scores the final model with
dualmcmc.metrics.evaluate_2d: grid KL(true || model) and TV of the EBM density normalised on a 500 x 500 grid of
[-4, 4]^2, MMD of 5000 EBM samples, the modes (8gaussians, 25gaussians) or rings (rings) that the samples reach,
and the largest relative error of the density's weight on a mode (max mass error: 0.2 is the 20 % of issue 15).
Prints one markdown table and writes every number to --json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"dual_mcmc": "toy2d.yaml", "vae_mcmc": "toy2d_vae_mcmc.yaml", "nt_ebm": "toy2d_nt_ebm.yaml",
           "coopnets": "toy2d_coopnets.yaml", "short_run": "toy2d_short_run.yaml"}
SEED_COLUMNS = (("grid_kl", "grid KL", "{:.3f}"), ("grid_tv", "grid TV", "{:.3f}"),
                ("max_share_error", "max share error", "{:.3f}"), ("max_mass_error", "max mass error", "{:.2f}"))
DENSITIES = ("8gaussians", "25gaussians", "rings", "2spirals", "checkerboard", "pinwheel", "moons")


def one_run(job: dict) -> dict:
    """Train and score one job {config, density, iterations, seed, out, threads}; runs in a worker process."""
    import torch

    torch.set_num_threads(job["threads"])
    from dualmcmc.train import TrainingDiverged, train

    overrides = [f"data={job['density']}", f"iterations={job['iterations']}", f"seed={job['seed']}",
                 f"out={job['out']}", "log.progress=false", "log.image_every=0", "device=cpu", *job.get("overrides", [])]
    start = time.perf_counter()
    try:
        run_dir = train(REPO / "configs" / job["config"], overrides, fresh=True)
        scores = json.loads((run_dir / "eval.json").read_text())
    except TrainingDiverged as err:
        scores = {"diverged": str(err)}
    except Exception as err:  # one broken run must not lose the others' results
        scores = {"failed": f"{type(err).__name__}: {err}"}
    return {**job, **scores, "seconds": time.perf_counter() - start}


def run_all(jobs: list[dict], parallel: int, path: Path) -> list[dict]:
    """Every job through one_run, ``parallel`` at a time; the rows are written to ``path`` after every run, so an
    interrupted benchmark keeps what it measured."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []

    def keep(row):
        rows.append(row)
        path.write_text(json.dumps(rows, indent=2) + "\n")

    if parallel == 1:
        for job in jobs:
            keep(one_run(job))
    else:
        import multiprocessing

        with ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
            for row in pool.map(one_run, jobs):
                keep(row)
    return rows


def over_seeds(rows: list[dict], group: tuple[str, ...], columns: tuple) -> str:
    """A markdown table of mean +- standard deviation (over the seeds in rows) per group of rows, and the seeds'
    values; a failed or diverged seed is counted and left out of the mean."""
    import statistics

    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in group), []).append(row)
    lines = ["| " + " | ".join(group) + " | seeds | " + " | ".join(title for _, title, _ in columns) + " |",
             "|" + "---|" * (len(group) + 1 + len(columns))]
    for key, members in groups.items():
        good = [r for r in members if "failed" not in r and "diverged" not in r]
        cells = []
        for name, _, fmt in columns:
            values = [r[name] for r in good if isinstance(r.get(name), (int, float)) and not math.isnan(r[name])]
            if not values:
                cells.append("-")
                continue
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            each = ", ".join(fmt.format(v) for v in values)
            cells.append(f"{fmt.format(statistics.mean(values))} +- {fmt.format(spread)} ({each})")
        bad = len(members) - len(good)
        seeds = f"{len(good)}" + (f" (+{bad} failed/diverged)" if bad else "")
        lines.append("| " + " | ".join(str(k) for k in key) + f" | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    def cell(row, key, fmt):
        value = row.get(key)
        if "failed" in row:
            return "failed"
        return "diverged" if "diverged" in row else ("-" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value))

    lines = ["| density | method | grid KL (nats) | grid TV | MMD | modes hit | max share error | max mass error | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        modes = f"{int(row['modes_hit'])}/{int(row['n_modes'])}" if "modes_hit" in row else "-"
        lines.append(f"| {row['density']} | {row['method']}{'_' + row['label'] if row.get('label') else ''} s{row['seed']} | {cell(row, 'grid_kl', '{:.3f}')} | "
                     f"{cell(row, 'grid_tv', '{:.3f}')} | {cell(row, 'mmd', '{:.4f}')} | {modes} | "
                     f"{cell(row, 'max_share_error', '{:.3f}')} | {cell(row, 'max_mass_error', '{:.2f}')} | "
                     f"{row['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--densities", nargs="+", default=list(DENSITIES), choices=DENSITIES)
    parser.add_argument("--methods", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--iterations", type=int, default=None,
                        help="iterations of every run (default: the dual_mcmc config's, so all methods get the same)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="one run per seed; the table gives the mean "
                        "and standard deviation over them (default: seed 0 only)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each gets cores / jobs threads)")
    parser.add_argument("--out", default="runs/toy2d_quality", help="parent directory of the runs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run (e.g. model.ema=true)")
    parser.add_argument("--label", default="", help="a name for this variant in the rows and run folders")
    parser.add_argument("--json", default=None, help="write the rows here (default OUT/results.json)")
    args = parser.parse_args()

    if args.iterations is None:
        from dualmcmc.config import load_config

        args.iterations = load_config(REPO / "configs" / CONFIGS["dual_mcmc"]).iterations
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    suffix = f"_{args.label}" if args.label else ""
    jobs = [{"density": d, "method": m, "label": args.label, "config": CONFIGS[m], "iterations": args.iterations,
             "seed": seed, "threads": threads, "out": str(Path(args.out) / f"{d}_{m}{suffix}_s{seed}"),
             "overrides": args.overrides}
            for d in args.densities for m in args.methods for seed in args.seeds]
    rows = run_all(jobs, args.jobs, Path(args.json or Path(args.out) / "results.json"))

    import torch

    print(f"# toy2d_quality: {date.today()}, torch {torch.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} cores, {args.iterations} iterations, seeds {args.seeds}, jobs {args.jobs}, "
          f"overrides {args.overrides}")
    print(table(rows))
    if len(args.seeds) > 1:
        print()
        print(over_seeds(rows, ("density", "method", "label"), SEED_COLUMNS))


if __name__ == "__main__":
    main()

"""Seconds per training iteration at each CPU thread count (the `threads` config key), for the shipped small-network
configs: the measurement behind the default `threads: 1`.

    python benchmarks/bench_threads.py                          # toy2d + digits, threads 1 and 2, 2 rounds
    python benchmarks/bench_threads.py --configs configs/toy2d.yaml --threads 1 2 4 --iterations 60

Each run trains into a temporary directory (no pictures, a tiny final evaluation) and reports the mean
seconds_per_iteration of its metrics; thread counts alternate within a round so that a busy neighbour slows all
of them alike. Rows: config, threads, s/it of each round, best.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def seconds_per_iteration(config: Path, threads: int, iterations: int) -> float:
    from dualmcmc.train import train

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"out={tmp}/run", f"threads={threads}", f"iterations={iterations}", "device=cpu",
                     f"log.log_every={iterations}", "log.image_every=0", "log.eval_every=0", "log.progress=false",
                     "log.tensorboard=false", "eval.n_samples=50", "eval.resolution=20"]
        run_dir = train(config, overrides)
        lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [line for line in lines if "seconds_per_iteration" in line][-1]["seconds_per_iteration"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=[str(REPO / "configs" / "toy2d.yaml"),
                                                          str(REPO / "configs" / "digits_dual_mcmc.yaml")])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    for config in args.configs:
        times: dict[int, list[float]] = {t: [] for t in args.threads}
        for _ in range(args.rounds):
            for threads in args.threads:
                times[threads].append(seconds_per_iteration(Path(config), threads, args.iterations))
        for threads, values in times.items():
            print(f"{Path(config).name:28s} threads {threads:2d}  s/it " + " ".join(f"{v:.3f}" for v in values)
                  + f"  best {min(values):.3f}", flush=True)
    print(f"# load average {os.getloadavg()[0]:.2f} at the end", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Score a trained run again with other sampling settings (no training): e.g. a longer test-time chain.

    python benchmarks/rescore.py runs/toy2d_quality_rest/2spirals_nt_ebm --set test_z_steps=20 --set test_z_steps=200
    python benchmarks/rescore.py runs/digits_quality_current/dual_mcmc --n-samples 1000 \\
        --set test_x_steps=150 --set test_x_steps=70,test_x_step_size=0.8
    python benchmarks/rescore.py runs/dq_ema/dual_mcmc_ema_s* --set test_x_steps=150 --json rescored.json

Each --set is one setting (comma-separated model keys); the run's own setting is scored first. Scores are those of
`dualmcmc evaluate` (dualmcmc.run.evaluate_method); for 2-D runs also the flow / generator samples' MMD. With
several runs (seeds of one configuration) it ends with each setting's mean and spread over them.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dualmcmc
sys.path.insert(0, str(Path(__file__).resolve().parent))  # toy2d_quality's table, also when imported by path
from dualmcmc import load_run  # noqa: E402
from dualmcmc.run import evaluate_method  # noqa: E402
from toy2d_quality import over_seeds  # noqa: E402

SHOWN = ("grid_kl", "mmd", "modes_hit", "max_mass_error", "fd", "mlp_fd", "precision", "recall", "density", "coverage", "generator_fd",
         "generator_mlp_fd")


def parse_setting(text: str, config) -> dict:
    """'key=value,key=value' -> model keys and Python values (200 -> int, 0.8 -> float, None)."""
    out = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if not hasattr(config, key):
            raise SystemExit(f"rescore: --set {item!r}: {key!r} is not a model key of this run")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="run")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]")
    parser.add_argument("--n-samples", type=int, default=2000)
    parser.add_argument("--resolution", type=int, default=100, help="2-D grid side")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="write every score of every run and setting here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for run in args.runs:
        rows += rescore(run, args)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    if len(args.runs) > 1:
        shown = tuple((k, k, "{:.4g}") for k in SHOWN if any(k in row for row in rows))
        print(over_seeds(rows, ("setting",), shown))


def rescore(run: str, args) -> list[dict]:
    """One run scored under its own setting and each --set; prints a line per setting and returns the rows."""
    method = load_run(run)
    base = method.config
    print(f"# rescore {run}: torch {torch.__version__}, {args.n_samples} samples, resolution {args.resolution}")
    rows = []
    for text in ["", *args.settings]:
        method.config = dataclasses.replace(base, **(parse_setting(text, base) if text else {}))
        scores = evaluate_method(method, method.run_config, n_samples=args.n_samples, resolution=args.resolution)
        shown = ", ".join(f"{k} {scores[k]:.4g}" for k in SHOWN if k in scores)
        print(f"{text or 'as trained'}: {shown}", flush=True)
        rows.append({"run": str(run), "setting": text or "as trained", **scores})
    if method.data_shape == (2,) and method.generator_sample(2, torch.Generator().manual_seed(0)) is not None:
        from dualmcmc.metrics import evaluate_2d
        from dualmcmc.run import PLOT_BOUNDS

        cfg = method.run_config
        scores = evaluate_2d(method.log_prob_unnormalized, method.generator_sample, cfg.data,
                             n_samples=args.n_samples, seed=cfg.seed, bounds=PLOT_BOUNDS,
                             resolution=args.resolution, device=method.device)
        print(f"generator / flow samples alone: mmd {scores['mmd']:.4g}")
    return rows


if __name__ == "__main__":
    main()

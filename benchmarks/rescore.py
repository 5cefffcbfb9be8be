"""Score a trained run again with other sampling settings (no training): e.g. a longer test-time chain.

    python benchmarks/rescore.py runs/toy2d_quality_rest/2spirals_nt_ebm --set test_z_steps=20 --set test_z_steps=200
    python benchmarks/rescore.py runs/digits_quality_current/dual_mcmc --n-samples 1000 \\
        --set test_x_steps=150 --set test_x_steps=70,test_x_step_size=0.8

Each --set is one setting (comma-separated model keys); the run's own setting is scored first. Scores are those of
`dualmcmc evaluate` (dualmcmc.run.evaluate_method); for 2-D runs also the flow / generator samples' MMD.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dualmcmc
from dualmcmc import load_run  # noqa: E402
from dualmcmc.run import evaluate_method  # noqa: E402

SHOWN = ("grid_kl", "mmd", "modes_hit", "fd", "generator_fd")


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
    parser.add_argument("run")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]")
    parser.add_argument("--n-samples", type=int, default=2000)
    parser.add_argument("--resolution", type=int, default=100, help="2-D grid side")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    method = load_run(args.run)
    base = method.config
    print(f"# rescore {args.run}: torch {torch.__version__}, {args.n_samples} samples, resolution {args.resolution}")
    for text in ["", *args.settings]:
        method.config = dataclasses.replace(base, **(parse_setting(text, base) if text else {}))
        scores = evaluate_method(method, method.run_config, n_samples=args.n_samples, resolution=args.resolution)
        shown = ", ".join(f"{k} {scores[k]:.4g}" for k in SHOWN if k in scores)
        print(f"{text or 'as trained'}: {shown}", flush=True)
    if method.data_shape == (2,) and method.generator_sample(2, torch.Generator().manual_seed(0)) is not None:
        from dualmcmc.metrics import evaluate_2d
        from dualmcmc.run import PLOT_BOUNDS

        cfg = method.run_config
        scores = evaluate_2d(method.log_prob_unnormalized, method.generator_sample, cfg.data,
                             n_samples=args.n_samples, seed=cfg.seed, bounds=PLOT_BOUNDS,
                             resolution=args.resolution, device=method.device)
        print(f"generator / flow samples alone: mmd {scores['mmd']:.4g}")


if __name__ == "__main__":
    main()

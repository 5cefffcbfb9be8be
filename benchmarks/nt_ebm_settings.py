"""How the nt_ebm defaults were chosen: one learned flow on 8gaussians, then the EBM under several settings.

    python benchmarks/nt_ebm_settings.py                         # every row of the table in RESULTS.md
    python benchmarks/nt_ebm_settings.py --rows flow_only l2_pcd # some of them

Each row fits the same flow (VectorFlow 8 x 64, 1000 Adam steps, seed 0) and then trains the tilting EBM for
--iterations iterations with the row's settings (on top of the nt_ebm defaults below; keys named in a row replace
them), batch 256, one thread; scores by evaluate_2d on a 200 x 200 grid with 2000 samples.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

# each row: (settings on top of BASE, what it shows)
BASE = {"flow_layers": 8, "flow_hidden": 64, "flow_pretrain_iterations": 1000, "persistent": False,
        "energy_l2": 0.0, "lr_ebm": 1e-3, "z_steps": 30, "z_step_size": 0.1, "z_noise_std": 0.1}
ROWS = {
    "flow_only": {"flow_pretrain_iterations": 1000},
    "short_run": {},
    "l2": {"energy_l2": 0.1, "z_steps": 20},
    "lr1e-4": {"lr_ebm": 1e-4, "z_steps": 20},
    "big_steps": {"lr_ebm": 1e-4, "z_step_size": 0.3, "z_noise_std": 0.3},
    "pcd_big_steps": {"lr_ebm": 1e-4, "z_steps": 20, "z_step_size": 0.3, "z_noise_std": 0.3, "persistent": True},
    "l2_mala": {"lr_ebm": 1e-4, "energy_l2": 1.0, "z_step_size": 0.2, "z_noise_std": 0.2, "z_mala": True},
    "l2_pcd": {"lr_ebm": 1e-4, "energy_l2": 0.1, "z_steps": 20, "persistent": True},  # the defaults
}


def run(name: str, iterations: int) -> dict:
    from dualmcmc.data import sample_toy
    from dualmcmc.methods import build_method
    from dualmcmc.metrics import evaluate_2d

    torch.manual_seed(0)
    data = sample_toy("8gaussians", 50000, torch.Generator().manual_seed(0))
    method = build_method("nt_ebm", {**BASE, **ROWS[name]}, (2,))
    ebm_iterations = 0 if name == "flow_only" else iterations
    start = time.perf_counter()
    for _ in range(1000 + ebm_iterations):
        out = method.train_step(data[torch.randint(50000, (256,))])
    scores = evaluate_2d(method.log_prob_unnormalized, method.sample, "8gaussians", n_samples=2000, seed=0,
                         resolution=200)
    return {"row": name, "settings": ROWS[name], "ebm_iterations": ebm_iterations,
            "final_energy_gap": out.get("energy_gap"), "seconds": time.perf_counter() - start,
            **{k: scores[k] for k in ("grid_kl", "grid_tv", "mmd", "modes_hit")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--iterations", type=int, default=600, help="EBM iterations after the flow's fit")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.rows:
        print(json.dumps(run(name, args.iterations)), flush=True)


if __name__ == "__main__":
    main()

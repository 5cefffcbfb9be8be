"""Why two evaluations of the same digits runs ranked Dual-MCMC and short-run differently (issue 15).

    python benchmarks/digits_feature_spaces.py runs/dq_base/dual_mcmc_s* runs/dq_base/short_run_s*

For each trained run it draws n EBM samples (``method.sample``, seeded, as ``dualmcmc sample`` does) and scores them
with Frechet distances in three feature spaces:

* cnn: the package's digits classifier (trained on the 1497 training digits), against the 300 held-out digits;
* mlp: the package's second space (scikit-learn MLP trained on the training digits), against the held-out digits;
* mlp_all: the earlier outside check's protocol: an MLP fitted to all 1797 digits, against all 1797 digits, so the
  reference set is one the feature net was trained on.

It prints each run's scores and the mean and spread per method, with each space's floor (the training digits).
"""
from __future__ import annotations

import argparse
import statistics
import warnings
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dualmcmc
from dualmcmc import load_run  # noqa: E402
from dualmcmc.data import load_digits, load_digits_labels  # noqa: E402
from dualmcmc.metrics.images import DigitsMLP, digits_classifier, digits_mlp, frechet_distance  # noqa: E402


def mlp_on_all_digits(seed: int = 0) -> DigitsMLP:
    """The outside check's feature net: the same MLP recipe, fitted to all 1797 digits."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    x = torch.cat([load_digits("train"), load_digits("test")]).reshape(-1, 64).numpy().astype(np.float64)
    y = torch.cat([load_digits_labels("train"), load_digits_labels("test")]).numpy()
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = MLPClassifier(hidden_layer_sizes=(128,), random_state=seed, max_iter=300).fit(x, y)
    return DigitsMLP.from_arrays({"hidden.weight": fitted.coefs_[0].T, "hidden.bias": fitted.intercepts_[0],
                                  "head.weight": fitted.coefs_[1].T, "head.bias": fitted.intercepts_[1]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("-n", type=int, default=1000, help="samples per run (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, test = load_digits("train"), load_digits("test")
    every = torch.cat([train, test])
    spaces = {"cnn": (digits_classifier(), test), "mlp": (digits_mlp(), test), "mlp_all": (mlp_on_all_digits(), every)}
    scales, references = {}, {}
    with torch.no_grad():
        for name, (net, reference) in spaces.items():
            feats = net.features(reference)
            scales[name] = feats.square().mean().sqrt()
            references[name] = feats / scales[name]
        floors = {name: frechet_distance(spaces[name][0].features(train) / scales[name], references[name])
                  for name in spaces}
    print("| run | " + " | ".join(f"FD {name}" for name in spaces) + " |")
    print("|---|" + "---|" * len(spaces))
    print("| floor (training digits) | " + " | ".join(f"{floors[n]:.2f}" for n in spaces) + " |")
    by_method = defaultdict(lambda: defaultdict(list))
    for run in args.runs:
        method = load_run(run)
        generator = torch.Generator(device=method.device).manual_seed(args.seed)
        samples = torch.cat([method.sample(min(500, args.n - i), generator=generator).cpu()
                             for i in range(0, args.n, 500)])
        samples = samples[torch.isfinite(samples.reshape(len(samples), -1)).all(dim=1)]
        with torch.no_grad():
            scores = {name: frechet_distance(net.features(samples) / scales[name], references[name])
                      for name, (net, _) in spaces.items()}
        for name, value in scores.items():
            by_method[method.name][name].append(value)
        print(f"| {run} | " + " | ".join(f"{scores[n]:.2f}" for n in spaces) + " |", flush=True)
    for name, values in by_method.items():
        cells = []
        for space in spaces:
            v = values[space]
            spread = statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(f"{statistics.mean(v):.2f} +- {spread:.2f}")
        print(f"| {name} (mean +- sd, {len(values['cnn'])} runs) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

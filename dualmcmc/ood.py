"""Out-of-distribution detection with an EBM: the model's log-density as the score of "in distribution".

    scores = energy_scores(method, x)              # -log p~(x) = U(x)/T per example (higher: less likely)
    ood_metrics(scores_in, scores_out)             # AUROC, AUPR, FPR at 95 % TPR (scikit-learn's metrics)

Conventions (Hendrycks & Gimpel 2017): in-distribution examples are the positives, ranked by their log-density;
AUROC is the probability that an in-distribution example has a higher log-density than an out-of-distribution
one; "aupr_in" / "aupr_out" are the average precisions with the in / out examples as positives; "fpr_at_95_tpr" is
the share of out-of-distribution examples accepted when the threshold keeps 95 % of the in-distribution ones.

Offline out-of-distribution sets for images (``out_of_distribution_data``): "noise" (uniform in [-1, 1] of the
same shape), "inverted" (the in-distribution images negated, x -> -x in [-1, 1]), or any data spec, e.g. a digits
class held out of training (train on ``digits:train:classes=0-8``, test ``digits:test:classes=9``).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["energy_scores", "ood_metrics", "out_of_distribution_data", "SYNTHETIC_OOD"]

SYNTHETIC_OOD = ("noise", "inverted")
_BATCH = 2000


def energy_scores(method, x: Tensor) -> Tensor:
    """(N,) float64 CPU: -log p~(x) = U(x)/T of the method's EBM density, in batches."""
    rows = [-method.log_prob_unnormalized(x[i:i + _BATCH].to(method.device, torch.float32)).double().cpu()
            for i in range(0, len(x), _BATCH)]
    return torch.cat(rows) if rows else torch.empty(0, dtype=torch.float64)


def ood_metrics(scores_in: Tensor, scores_out: Tensor) -> dict[str, float]:
    """Detection of out-of-distribution examples by energy (lower energy = in distribution); see the module."""
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    scores_in, scores_out = (torch.as_tensor(s, dtype=torch.float64).reshape(-1) for s in (scores_in, scores_out))
    for name, s in (("in-distribution", scores_in), ("out-of-distribution", scores_out)):
        if len(s) < 1:
            raise ValueError(f"ood: the {name} data is empty")
        if not torch.isfinite(s).all():
            raise ValueError(f"ood: {int((~torch.isfinite(s)).sum())} {name} energies are not finite")
    labels = torch.cat([torch.ones(len(scores_in)), torch.zeros(len(scores_out))]).numpy()
    log_density = torch.cat([-scores_in, -scores_out]).numpy()  # higher = more in distribution
    fpr, tpr, _ = roc_curve(labels, log_density)
    at_95 = float(fpr[int((tpr >= 0.95).argmax())])  # the first threshold that keeps 95 % of the in-data
    return {"auroc": float(roc_auc_score(labels, log_density)),
            "aupr_in": float(average_precision_score(labels, log_density)),
            "aupr_out": float(average_precision_score(1 - labels, -log_density)),
            "fpr_at_95_tpr": at_95, "n_in": len(scores_in), "n_out": len(scores_out),
            "mean_energy_in": float(scores_in.mean()), "mean_energy_out": float(scores_out.mean())}


def out_of_distribution_data(name: str, in_data: Tensor, seed: int = 0) -> Tensor:
    """The synthetic sets: "noise" (uniform in [-1, 1], as many as ``in_data``) or "inverted" (-in_data)."""
    if name == "noise":
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(in_data.shape, generator=generator) * 2 - 1
    if name == "inverted":
        return -in_data.float()
    raise ValueError(f"unknown synthetic set {name!r}; valid: {', '.join(SYNTHETIC_OOD)} (or a data spec)")

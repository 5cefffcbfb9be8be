"""Out-of-distribution detection by energy (issue 16): the metrics against known answers, the offline test sets
(noise, inverted digits, a digits class held out of training), and the `score` / `ood` commands."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dualmcmc.cli import main
from dualmcmc.data import load_dataset
from dualmcmc.ood import ood_metrics, out_of_distribution_data

REPO = Path(__file__).resolve().parents[1]


def test_metrics_known_answers():
    separated = ood_metrics(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([5.0, 6.0]))  # in: lower energy
    assert separated["auroc"] == 1.0 and separated["aupr_in"] == 1.0 and separated["aupr_out"] == 1.0
    assert separated["fpr_at_95_tpr"] == 0.0
    reversed_ = ood_metrics(torch.tensor([5.0, 6.0]), torch.tensor([0.0, 1.0, 2.0]))
    assert reversed_["auroc"] == 0.0 and reversed_["fpr_at_95_tpr"] == 1.0
    g = torch.Generator().manual_seed(0)
    same = ood_metrics(torch.randn(4000, generator=g), torch.randn(4000, generator=g))
    assert abs(same["auroc"] - 0.5) < 0.03 and abs(same["fpr_at_95_tpr"] - 0.95) < 0.03
    # two unit Gaussians 2 apart: AUROC = Phi(2 / sqrt 2), FPR at 95 % TPR = 1 - Phi(2 - 1.645)
    shifted = ood_metrics(torch.randn(20000, generator=g), torch.randn(20000, generator=g) + 2.0)
    phi = lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2)))
    assert abs(shifted["auroc"] - phi(2 / math.sqrt(2))) < 0.01
    assert abs(shifted["fpr_at_95_tpr"] - (1 - phi(2 - 1.6449))) < 0.015
    with pytest.raises(ValueError, match="out-of-distribution data is empty"):
        ood_metrics(torch.ones(3), torch.ones(0))
    with pytest.raises(ValueError, match="not finite"):
        ood_metrics(torch.tensor([0.0, math.nan]), torch.ones(2))


def test_offline_sets_and_digit_classes():
    digits = load_dataset("digits:test")
    assert out_of_distribution_data("inverted", digits).equal(-digits)
    noise = out_of_distribution_data("noise", digits, seed=1)
    assert noise.shape == digits.shape and noise.min() >= -1 and noise.max() <= 1
    assert noise.equal(out_of_distribution_data("noise", digits, seed=1))
    nine, rest = load_dataset("digits:test:classes=9"), load_dataset("digits:test:classes=0-8")
    assert len(nine) + len(rest) == len(digits) and len(nine) > 20
    with pytest.raises(ValueError, match="digits:SPLIT:classes=LIST"):
        load_dataset("digits:train:classes=11")


def test_score_and_ood_commands_on_a_run_without_one_class(tmp_path, capsys):
    run_dir = tmp_path / "digits08"
    tiny = ["model.arch=conv", "model.ebm_hidden=8", "model.generator_hidden=8", "model.encoder_hidden=8",
            "model.latent_dim=2", "model.x_steps=2", "model.z_steps=2", "iterations=2", "batch_size=16",
            "eval.n_samples=50", "log.progress=false", "log.tensorboard=false", "log.image_every=0", "device=cpu",
            "data=digits:train:classes=0-8", f"out={run_dir}"]
    args = [item for pair in (("--set", s) for s in tiny) for item in pair]
    assert main(["train", str(REPO / "configs" / "digits_dual_mcmc.yaml"), *args]) == 0
    capsys.readouterr()
    for out_data in ("noise", "inverted", "digits:test:classes=9"):
        assert main(["ood", str(run_dir), "--out-data", out_data]) == 0
        found = json.loads(capsys.readouterr().out)
        assert found["in_data"].startswith("digits:test:classes=0,1,2,3,4,5,6,7,8")
        assert 0.0 <= found["auroc"] <= 1.0 and 0.0 <= found["fpr_at_95_tpr"] <= 1.0
    kept = json.loads((run_dir / "ood.json").read_text())
    assert len(kept) == 3 and all(0.0 <= v["auroc"] <= 1.0 for v in kept.values())
    assert main(["score", str(run_dir), "--data", "digits:test:classes=9"]) == 0
    arrays = np.load(run_dir / "scores.npz")
    assert arrays["energy"].shape == (len(load_dataset("digits:test:classes=9")),) and "log_p" not in arrays
    # bad input: one line naming the argument, exit 2
    assert main(["ood", str(run_dir), "--out-data", "8gaussians"]) == 2
    assert "--out-data: its rows have shape (2,)" in capsys.readouterr().err
    assert main(["score", str(run_dir), "--data", str(tmp_path / "none.npy")]) == 2
    assert "none.npy" in capsys.readouterr().err
    assert main(["score", str(run_dir), "--data", "digits:test", "--out", str(tmp_path / "x.npy")]) == 2
    assert "--out must end in .npz" in capsys.readouterr().err

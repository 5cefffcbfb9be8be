"""Recovery from divergence: roll back to the last good checkpoint, slow down, reseed, go on (a bounded number of
times); the reference codes simply stop."""
from __future__ import annotations

import json
import math

import pytest
import torch

from dualmcmc import checkpoint as ckpt
from dualmcmc.config import ConfigError
from dualmcmc.methods.dual_mcmc import DualMCMC
from dualmcmc.train import TrainingDiverged, train
from test_train import read_metrics, small_config


def diverge_at(monkeypatch, calls_that_diverge):
    """Make DualMCMC.train_step poison the EBM and report NaN on the given call numbers (1-based)."""
    real_step = DualMCMC.train_step
    calls = {"n": 0}

    def step(self, x):
        calls["n"] += 1
        out = real_step(self, x)
        if calls["n"] in calls_that_diverge:
            with torch.no_grad():
                for p in self.ebm.parameters():
                    p.fill_(float("nan"))
            out["energy_gap"] = float("nan")
        return out

    monkeypatch.setattr(DualMCMC, "train_step", step)
    return calls


def test_a_divergence_rolls_back_slows_down_and_finishes(tmp_path, monkeypatch):
    calls = diverge_at(monkeypatch, {5})
    run_dir = train(small_config(tmp_path, iterations=10))
    state = ckpt.load_checkpoint(run_dir / "checkpoint.pt")
    assert state["iteration"] == 10 and state["recoveries"] == 1
    assert all(torch.isfinite(v).all() for v in state["method"]["model"].values() if v.is_floating_point())
    # rolled back to the checkpoint of iteration 3, so iterations 4..10 ran again after the failed 5th call
    assert calls["n"] == 5 + 7
    events = json.loads((run_dir / "recoveries.json").read_text())
    assert [(e["recovery"], e["iteration"], e["rolled_back_to"]) for e in events] == [(1, 5, 3)]
    assert "non-finite" in events[0]["reason"]
    lr = state["method"]["optimizers"]["ebm"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(1e-4 * 0.5 * 0.998 ** 0, rel=1e-6)  # no epoch ended in 10 batches of 32 from 512
    assert state["method"]["extra"]["backoff_scale"] == 0.5
    lines = read_metrics(run_dir)
    assert any(line.get("recovery") == 1 and line["diverged_at"] == 5 for line in lines)
    logged = [line["iteration"] for line in lines if "energy_gap" in line]  # no line twice after the rollback
    assert logged == sorted(set(logged))
    assert (run_dir / "eval.json").exists() and not (run_dir / "diverged.json").exists()


def test_a_divergence_before_the_first_checkpoint_rolls_back_to_the_start(tmp_path, monkeypatch):
    diverge_at(monkeypatch, {2})
    run_dir = train(small_config(tmp_path, iterations=4))
    events = json.loads((run_dir / "recoveries.json").read_text())
    assert events[0]["rolled_back_to"] == 0


def test_without_recoveries_the_run_stops_as_the_reference(tmp_path, monkeypatch):
    diverge_at(monkeypatch, {5})
    config = small_config(tmp_path, iterations=10)
    config["guard"] = {"max_recoveries": 0}
    with pytest.raises(TrainingDiverged, match="iteration 5"):
        train(config)
    assert not (tmp_path / "run" / "recoveries.json").exists()


def test_repeated_divergence_stops_after_max_recoveries(tmp_path, monkeypatch):
    diverge_at(monkeypatch, set(range(5, 100)))
    config = small_config(tmp_path, iterations=10)
    config["guard"] = {"max_recoveries": 2, "backoff": 0.25}
    with pytest.raises(TrainingDiverged):
        train(config)
    run_dir = tmp_path / "run"
    events = json.loads((run_dir / "recoveries.json").read_text())
    assert [e["backoff_scale"] for e in events] == [0.25, 0.0625]  # cumulative, though both rolled back to 3
    assert json.loads((run_dir / "diverged.json").read_text())["iteration"] == 4  # 3 + the first iteration after
    state = ckpt.load_checkpoint(run_dir / "checkpoint.pt")
    assert state["iteration"] == 3 and math.isfinite(state["method"]["optimizers"]["ebm"]["param_groups"][0]["lr"])


@pytest.mark.parametrize("guard, message", [({"backoff": 0.0}, "guard.backoff"), ({"max_recoveries": -1}, "max_recoveries")])
def test_bad_guard_settings_are_named(tmp_path, guard, message):
    config = small_config(tmp_path)
    config["guard"] = guard
    with pytest.raises(ConfigError, match=message):
        train(config)


def test_the_recovery_count_and_the_slow_down_survive_a_resume(tmp_path, monkeypatch):
    real_step = DualMCMC.train_step
    calls = diverge_at(monkeypatch, {5})  # iteration 5 diverges: back to 3, so call n runs iteration n - 2
    poisoned_step = DualMCMC.train_step

    def killed_step(self, x):
        if calls["n"] == 9:  # killed during iteration 8, after the checkpoint of iteration 6
            raise KeyboardInterrupt
        return poisoned_step(self, x)

    monkeypatch.setattr(DualMCMC, "train_step", killed_step)
    config = small_config(tmp_path, iterations=12)
    config["guard"] = {"max_recoveries": 1}
    with pytest.raises(KeyboardInterrupt):
        train(config)
    state = ckpt.load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["iteration"] == 6 and state["recoveries"] == 1
    assert state["method"]["extra"]["backoff_scale"] == 0.5
    assert state["method"]["optimizers"]["ebm"]["param_groups"][0]["lr"] == pytest.approx(0.5e-4)

    monkeypatch.setattr(DualMCMC, "train_step", real_step)
    diverge_at(monkeypatch, {2})  # the resumed run diverges at iteration 8: its one recovery is already used
    with pytest.raises(TrainingDiverged, match="iteration 8"):
        train(config)
    assert json.loads((tmp_path / "run" / "diverged.json").read_text())["iteration"] == 8
    assert len(json.loads((tmp_path / "run" / "recoveries.json").read_text())) == 1


def test_the_recovery_line_in_the_metrics_names_the_reason(tmp_path, monkeypatch):
    diverge_at(monkeypatch, {5})
    run_dir = train(small_config(tmp_path, iterations=6, log={"log_every": 2, "image_every": 0, "checkpoint_every": 3,
                                                              "progress": False, "tensorboard": True}))
    [line] = [line for line in read_metrics(run_dir) if "recovery" in line]
    assert line["iteration"] == 3 and line["diverged_at"] == 5  # logged at the rollback, which the log rewinds to
    assert line["recovery"] == 1 and "non-finite" in line["reason"]


def test_fresh_forgets_old_recoveries_and_a_resume_keeps_only_those_of_its_checkpoint(tmp_path, monkeypatch):
    diverge_at(monkeypatch, {5})
    run_dir = train(small_config(tmp_path, iterations=6))
    log_path = run_dir / "recoveries.json"
    events = json.loads(log_path.read_text())
    assert len(events) == 1
    # a run killed after a second recovery but before its next checkpoint: that event is replayed on resume
    log_path.write_text(json.dumps(events + [dict(events[0], recovery=2, iteration=7)]))
    monkeypatch.undo()
    train(small_config(tmp_path, iterations=8))
    assert [e["recovery"] for e in json.loads(log_path.read_text())] == [1]
    train(small_config(tmp_path, iterations=3), fresh=True)
    assert not log_path.exists()


def test_run_files_are_readable_by_others_as_the_umask_allows(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        run_dir = train(small_config(tmp_path, iterations=3))
    finally:
        os.umask(old)
    for name in ("checkpoint.pt", "config.yaml", "metrics.jsonl", "eval.json"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o644, name

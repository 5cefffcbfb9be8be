"""The training loop: run directory contents, resume that continues bit for bit, the divergence guard, load_run."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import dualmcmc
from dualmcmc import checkpoint as ckpt
from dualmcmc.config import ConfigError
from dualmcmc.cooldown import cooldown_scale
from dualmcmc.train import TrainingDiverged, divergence, train

SMALL_MODEL = {"ebm_hidden": 16, "generator_hidden": 16, "encoder_hidden": 16, "ebm_layers": 2,
               "generator_layers": 2, "encoder_layers": 2, "x_steps": 3, "z_steps": 2}


def small_config(tmp_path, **changes) -> dict:
    config = {
        "method": "dual_mcmc", "data": "8gaussians", "iterations": 6, "out": str(tmp_path / "run"), "seed": 3,
        "device": "cpu", "batch_size": 32, "n_data": 512, "model": dict(SMALL_MODEL),
        "log": {"log_every": 2, "image_every": 0, "checkpoint_every": 3, "progress": False, "tensorboard": False},
        "eval": {"n_samples": 200, "resolution": 40},
    }
    config.update(changes)
    return config


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_directory_holds_config_checkpoint_metrics_and_eval(tmp_path):
    run_dir = train(small_config(tmp_path, log={"log_every": 2, "image_every": 3, "checkpoint_every": 3,
                                                 "progress": False, "tensorboard": True}))
    assert (run_dir / "config.yaml").exists() and (run_dir / "checkpoint.pt").exists()
    lines = read_metrics(run_dir)
    assert [line["iteration"] for line in lines if "energy_gap" in line] == [2, 4, 6]
    assert all(math.isfinite(line["energy_gap"]) for line in lines if "energy_gap" in line)
    scores = json.loads((run_dir / "eval.json").read_text())
    assert scores["iteration"] == 6 and {"grid_kl", "grid_tv", "mmd", "modes_hit"} <= set(scores)
    assert lines[-1]["eval/grid_kl"] == scores["grid_kl"]
    assert {p.name for p in (run_dir / "images").iterdir()} >= {"iter_000003.png", "iter_000006.png", "latest.png"}
    try:
        import torch.utils.tensorboard  # noqa: F401  (optional: without it only metrics.jsonl is written)
    except ImportError:
        assert not (run_dir / "tb").exists()
    else:
        assert any((run_dir / "tb").iterdir())
    assert ckpt.load_checkpoint(run_dir / "checkpoint.pt")["iteration"] == 6


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path, monkeypatch):
    from dualmcmc.methods.dual_mcmc import DualMCMC

    # 64 rows in batches of 32: three epochs (schedulers, reshuffles) in 6 iterations; pictures drawn on the way;
    # the cooldown lowers the rates over iterations 4-6, across the interruption
    changes = {"n_data": 64, "model": {**SMALL_MODEL, "lr_decay": 0.9}, "cooldown": {"fraction": 0.5, "factor": 0.5},
               "log": {"log_every": 2, "image_every": 2, "checkpoint_every": 3, "progress": False, "tensorboard": False}}
    whole = train(small_config(tmp_path, out=str(tmp_path / "whole"), **changes))

    real_step, calls = DualMCMC.train_step, {"n": 0}

    def interrupted_step(self, x):  # the run is killed during iteration 5, after the checkpoint at 3
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_step(self, x)

    monkeypatch.setattr(DualMCMC, "train_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        train(small_config(tmp_path, out=str(tmp_path / "split"), **changes))
    monkeypatch.setattr(DualMCMC, "train_step", real_step)
    resumed = train(small_config(tmp_path, out=str(tmp_path / "split"), **changes))

    a = ckpt.load_checkpoint(whole / "checkpoint.pt")["method"]["model"]
    b = ckpt.load_checkpoint(resumed / "checkpoint.pt")["method"]["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)

    def lines(run_dir):
        return [{k: v for k, v in line.items() if k != "seconds_per_iteration"} for line in read_metrics(run_dir)]

    assert lines(whole) == lines(resumed)
    lr = ckpt.load_checkpoint(resumed / "checkpoint.pt")["method"]["optimizers"]["ebm"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(1e-4 * 0.9**3 * 0.5)  # three epochs of ExponentialLR, one after the resume; cooldown


def test_cooldown_scale_falls_linearly_over_the_last_fraction():
    scales = [cooldown_scale(i, 100, 0.25, 0.2) for i in (1, 75, 76, 88, 100)]
    assert scales == pytest.approx([1.0, 1.0, 1.0 - 0.8 / 25, 1.0 - 0.8 * 13 / 25, 0.2])
    assert cooldown_scale(100, 100, 0.0, 0.2) == 1.0


def test_cooldown_ends_every_rate_at_its_factor_also_when_a_run_is_extended(tmp_path):
    # 512 rows in batches of 32: no epoch ends (no ExponentialLR step) in 12 iterations
    def rates(run_dir):
        optimizers = ckpt.load_checkpoint(run_dir / "checkpoint.pt")["method"]["optimizers"]
        return {name: state["param_groups"][0]["lr"] for name, state in optimizers.items()}

    cooldown = {"fraction": 0.5, "factor": 0.25}
    run_dir = train(small_config(tmp_path, cooldown=cooldown))
    logged = [line["lr_scale"] for line in read_metrics(run_dir) if "lr_scale" in line]  # means over 2 iterations
    assert logged == pytest.approx([1.0, (1.0 + 0.75) / 2, (0.5 + 0.25) / 2])
    full = {"ebm": 1e-4, "generator": 3e-4, "encoder": 1e-4}  # the reference's rates, DualMCMCConfig's defaults
    assert rates(run_dir) == pytest.approx({k: v * 0.25 for k, v in full.items()})
    train(small_config(tmp_path, cooldown=cooldown, iterations=12))  # the rates climb back, then fall again
    assert rates(run_dir) == pytest.approx({k: v * 0.25 for k, v in full.items()})
    train(small_config(tmp_path, iterations=14))  # without the cooldown: the full rates again
    assert rates(run_dir) == pytest.approx(full)


def test_pictures_and_evaluations_do_not_change_the_training(tmp_path):
    quiet = train(small_config(tmp_path, out=str(tmp_path / "quiet")))
    busy = train(small_config(tmp_path, out=str(tmp_path / "busy"),
                              log={"log_every": 2, "image_every": 1, "eval_every": 2, "checkpoint_every": 3,
                                   "progress": False, "tensorboard": False}))
    a = ckpt.load_checkpoint(quiet / "checkpoint.pt")["method"]["model"]
    b = ckpt.load_checkpoint(busy / "checkpoint.pt")["method"]["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_pictures_do_not_change_batchnorm_statistics_of_image_nets(tmp_path):
    # conv generator with BatchNorm: drawing sample grids runs it in training mode; its statistics are put back
    model = {"ebm_hidden": 8, "generator_hidden": 8, "encoder_hidden": 8, "latent_dim": 4, "x_steps": 2, "z_steps": 2}
    common = dict(data="digits", batch_size=20, iterations=4, model=model, eval={"n_samples": 20})
    quiet = train(small_config(tmp_path, out=str(tmp_path / "quiet"), **common))
    busy = train(small_config(tmp_path, out=str(tmp_path / "busy"), **common,
                              log={"log_every": 2, "image_every": 1, "checkpoint_every": 3, "progress": False,
                                   "tensorboard": False}))
    a = ckpt.load_checkpoint(quiet / "checkpoint.pt")["method"]["model"]
    b = ckpt.load_checkpoint(busy / "checkpoint.pt")["method"]["model"]
    assert any("running_mean" in key for key in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_fresh_clears_the_previous_run(tmp_path):
    run_dir = train(small_config(tmp_path, log={"log_every": 2, "image_every": 3, "checkpoint_every": 3,
                                                 "progress": False, "tensorboard": False}))
    (run_dir / "diverged.json").write_text("{}")
    train(small_config(tmp_path, iterations=2), fresh=True)
    assert ckpt.load_checkpoint(run_dir / "checkpoint.pt")["iteration"] == 2
    assert not (run_dir / "diverged.json").exists() and not (run_dir / "images" / "iter_000003.png").exists()
    assert max(line["iteration"] for line in read_metrics(run_dir)) == 2


def test_resume_skips_a_torn_metrics_line(tmp_path):
    run_dir = train(small_config(tmp_path, iterations=3))
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write('{"iteration": 4, "energy_ga')  # killed mid-write
    train(small_config(tmp_path))
    assert [line["iteration"] for line in read_metrics(run_dir) if "energy_gap" in line] == [2, 3, 4, 6]


def test_training_a_finished_run_further_continues_it(tmp_path):
    run_dir = train(small_config(tmp_path, iterations=3))
    train(small_config(tmp_path, iterations=6))
    assert ckpt.load_checkpoint(run_dir / "checkpoint.pt")["iteration"] == 6
    with pytest.raises(ConfigError, match="already at iteration 6 > iterations = 4"):
        train(small_config(tmp_path, iterations=4))


def test_resume_refuses_a_run_with_another_model(tmp_path):
    train(small_config(tmp_path, iterations=3))
    with pytest.raises(ConfigError, match=r"different model.x_steps: 3 -> 4; .*fresh=True"):  # the CLI: --fresh
        train(small_config(tmp_path, model={**SMALL_MODEL, "x_steps": 4}))
    # the speed options change no result: a run may go on with other ones (a GPU run on a CPU, say)
    train(small_config(tmp_path, iterations=4, model={**SMALL_MODEL, "autocast": "bf16"}))
    train(small_config(tmp_path, model={**SMALL_MODEL, "x_steps": 4}), fresh=True)


def test_bad_pairs_in_the_model_are_refused_before_the_run_is_touched(tmp_path):
    run_dir = train(small_config(tmp_path, iterations=3))
    before = (run_dir / "checkpoint.pt").read_bytes()
    for key, value, message in (("betas", [0.9], r"model.betas must be a list of 2 numbers"),
                                ("x_clamp", [0, 1, 2], r"model.x_clamp must be \[lo, hi\]"),
                                ("x_clamp", [1, -1], r"model.x_clamp must have lo < hi")):
        with pytest.raises(ConfigError, match=message):
            train(small_config(tmp_path, model={**SMALL_MODEL, key: value}), fresh=True)
    assert (run_dir / "checkpoint.pt").read_bytes() == before and (run_dir / "eval.json").exists()


def test_same_seed_same_run(tmp_path):
    a = train(small_config(tmp_path, out=str(tmp_path / "a"), iterations=3))
    b = train(small_config(tmp_path, out=str(tmp_path / "b"), iterations=3))
    c = train(small_config(tmp_path, out=str(tmp_path / "c"), iterations=3, seed=4))
    gaps = [[line["energy_gap"] for line in read_metrics(r) if "energy_gap" in line] for r in (a, b, c)]
    assert gaps[0] == gaps[1] and gaps[0] != gaps[2]


def test_divergence_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from dualmcmc.methods.dual_mcmc import DualMCMC

    real_step = DualMCMC.train_step
    calls = {"n": 0}

    def exploding_step(self, x):
        calls["n"] += 1
        out = real_step(self, x)
        if calls["n"] == 5:
            with torch.no_grad():
                for p in self.ebm.parameters():
                    p.fill_(float("nan"))
            out["energy_gap"] = float("nan")
        return out

    monkeypatch.setattr(DualMCMC, "train_step", exploding_step)
    config = small_config(tmp_path, iterations=10)
    config["guard"] = {"max_recoveries": 0}  # the reference's behaviour: stop (tests/test_recovery.py: recover)
    with pytest.raises(TrainingDiverged, match=r"iteration 5: non-finite value\(s\) in \['energy_gap'\].*iteration 3"):
        train(config)
    run_dir = tmp_path / "run"
    state = ckpt.load_checkpoint(run_dir / "checkpoint.pt")
    assert state["iteration"] == 3
    assert all(torch.isfinite(v).all() for v in state["method"]["model"].values())
    assert json.loads((run_dir / "diverged.json").read_text())["iteration"] == 5
    assert not (run_dir / "eval.json").exists()


def test_divergence_reasons():
    assert divergence({"energy_gap": 1.0, "loss": 2.0}, 1e4) is None
    assert "energy_gap" in divergence({"energy_gap": 2e4}, 1e4)
    assert "loss" in divergence({"energy_gap": 0.0, "loss": float("inf")}, 1e4)


def test_load_run_gives_back_the_trained_method(tmp_path):
    run_dir = train(small_config(tmp_path))
    method = dualmcmc.load_run(run_dir)
    assert method.name == "dual_mcmc" and method.run_iteration == 6
    assert method.ebm is not None and method.generator is not None and method.encoder is not None
    x = torch.randn(7, 2)
    log_p = method.log_prob_unnormalized(x)
    assert log_p.shape == (7,)
    torch.testing.assert_close(log_p, -method.ebm(x).detach() / method.temperature)
    samples = method.sample(11)
    assert samples.shape == (11, 2) and torch.isfinite(samples).all()
    saved = ckpt.load_checkpoint(run_dir / "checkpoint.pt")["method"]["model"]
    for key, value in method.state_dict().items():
        torch.testing.assert_close(value, saved[key])


@pytest.mark.parametrize("method", ["coopnets", "short_run"])
def test_baselines_train_through_the_same_loop(tmp_path, method):
    model = {"ebm_hidden": 16, "ebm_layers": 2, "x_steps": 3}
    if method == "coopnets":
        model.update(generator_hidden=16, generator_layers=2)
    run_dir = train(small_config(tmp_path, method=method, model=model, iterations=4))
    assert json.loads((run_dir / "eval.json").read_text())["iteration"] == 4
    assert dualmcmc.load_run(run_dir).sample(5).shape == (5, 2)


def test_user_array_with_more_dimensions(tmp_path):
    data = np.random.default_rng(0).normal(size=(300, 5)).astype("float32")
    np.save(tmp_path / "points.npy", data)
    run_dir = train(small_config(tmp_path, data=str(tmp_path / "points.npy"), iterations=3,
                                 log={"log_every": 1, "image_every": 3, "progress": False, "tensorboard": False}))
    scores = json.loads((run_dir / "eval.json").read_text())
    assert {"mmd", "generator_mmd"} <= set(scores)
    assert (run_dir / "images" / "iter_000003.png").exists()


@pytest.mark.parametrize("changes, message", [
    ({"data": "9gaussians"}, r"unknown data set '9gaussians'.*25gaussians"),
    ({"data": "missing/file.npy"}, r"does not exist"),
    ({"device": "cuda:7"}, r"device"),
    ({"batch_size": 10_000}, r"batch_size 10000 is larger than the data set"),
    ({"model": {**SMALL_MODEL, "z_likelihood": "bogus"}}, r"model.z_likelihood must be one of"),
    ({"model": {**SMALL_MODEL, "x_ref_sigma": -1.0}}, r"model.x_ref_sigma must be > 0"),
])
def test_bad_runs_fail_before_writing_anything(tmp_path, changes, message):
    if str(changes.get("device", "")).startswith("cuda") and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ConfigError, match=message):
        train(small_config(tmp_path, **changes))
    assert not (tmp_path / "run").exists()


def test_a_bad_fresh_run_keeps_the_previous_one(tmp_path):
    run_dir = train(small_config(tmp_path, iterations=3))
    with pytest.raises(ConfigError):
        train(small_config(tmp_path, data="9gaussians"), fresh=True)
    assert ckpt.load_checkpoint(run_dir / "checkpoint.pt")["iteration"] == 3


def test_a_run_killed_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path):
    """SIGKILL halfway through writing the checkpoint of iteration 6: the one of iteration 3 stays readable, and
    training into the directory again resumes from it."""
    import subprocess
    import sys

    config = small_config(tmp_path, iterations=9)
    script = f"""
import os, signal, torch
import dualmcmc.checkpoint as ckpt
real_save, calls = torch.save, []
def dying_save(obj, handle, *a, **k):
    calls.append(1)
    if obj.get("iteration") == 6:  # write part of the file, then die as a killed process does
        handle.write(b"PK" + b"x" * 1000)
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real_save(obj, handle, *a, **k)
ckpt.torch.save = dying_save
from dualmcmc.train import train
train({config!r})
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == -9, result.stderr[-2000:]
    run_dir = tmp_path / "run"
    assert ckpt.load_checkpoint(run_dir / "checkpoint.pt")["iteration"] == 3
    train(config)  # resumes from iteration 3 and finishes
    assert ckpt.load_checkpoint(run_dir / "checkpoint.pt")["iteration"] == 9


# -- images --------------------------------------------------------------------------------------------------------
TINY_CONV = {"arch": "conv", "ebm_hidden": 8, "generator_hidden": 8, "encoder_hidden": 8, "latent_dim": 2,
             "x_steps": 2, "z_steps": 2}


@pytest.mark.filterwarnings("ignore:evaluate_images. FID left out")  # torchmetrics is optional
def test_colour_images_train_in_the_model_range_with_pictures_and_scores(tmp_path, monkeypatch):
    from dualmcmc.methods.dual_mcmc import DualMCMC

    torch.set_num_threads(1)
    images = np.random.default_rng(0).integers(0, 256, size=(64, 3, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "pictures.npy", images)
    real_step, seen = DualMCMC.train_step, []

    def recording_step(self, x):
        seen.append((x.dtype, float(x.min()), float(x.max())))
        return real_step(self, x)

    monkeypatch.setattr(DualMCMC, "train_step", recording_step)
    run_dir = train(small_config(tmp_path, data=str(tmp_path / "pictures.npy"), iterations=2, batch_size=16,
                                 model=TINY_CONV, eval={"n_samples": 20},
                                 log={"log_every": 1, "image_every": 1, "progress": False, "tensorboard": False}))
    assert all(dtype == torch.float32 and -1.0 <= lo and hi <= 1.0 for dtype, lo, hi in seen)  # uint8 -> [-1, 1]
    assert {p.name for p in (run_dir / "images").iterdir()} >= {"iter_000001.png", "iter_000002.png", "latest.png"}
    scores = json.loads((run_dir / "eval.json").read_text())
    assert {"mmd", "generator_mmd", "recon_mse"} <= set(scores) and "grid_kl" not in scores


def test_image_grid_maps_the_model_range_without_per_image_rescaling(tmp_path):
    from dualmcmc import plotting

    faint = np.zeros((2, 3, 4, 4))
    faint[1] = 5.0  # beyond the range: clipped to white
    canvas = plotting._image_canvas(faint, columns=2)
    assert canvas.shape == (5, 10, 3)
    assert np.all(canvas[:4, :4] == 0.5) and np.all(canvas[:4, 5:9] == 1.0)
    assert plotting.plot_image_grid(tmp_path / "grey.png", torch.rand(12, 1, 8, 8) * 2 - 1).exists()
    assert plotting.plot_image_grid(tmp_path / "colour.png", torch.rand(12, 3, 8, 8) * 2 - 1).exists()
    assert plotting.plot_image_grid(tmp_path / "flat.png", torch.rand(12, 64), 8).exists()  # vectors, as before
    with pytest.raises(ValueError, match="C = 1 or 3"):
        plotting.plot_image_grid(tmp_path / "bad.png", torch.rand(2, 2, 8, 8))

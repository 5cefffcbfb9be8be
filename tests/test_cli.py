"""The command line: train / sample / evaluate agree with the Python API; user errors exit 2 with one clear line."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from dualmcmc.cli import main

REPO = Path(__file__).resolve().parents[1]
SMALL = ["iterations=4", "n_data=256", "batch_size=32", "eval.n_samples=100", "eval.resolution=30",
         "log.progress=false", "log.tensorboard=false", "log.image_every=0", "log.log_every=2",
         "model.ebm_hidden=16", "model.generator_hidden=16", "model.encoder_hidden=16", "model.x_steps=2",
         "model.z_steps=2", "device=cpu"]


def sets(*pairs):
    return [item for pair in pairs for item in ("--set", pair)]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", str(REPO / "configs" / "toy2d.yaml"), *sets(*SMALL, f"out={run_dir}")]) == 0
    return run_dir


def test_train_writes_a_run_with_the_overrides_applied(trained_run):
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["method"] == "dual_mcmc" and config["iterations"] == 4 and config["model"]["x_steps"] == 2
    assert json.loads((trained_run / "eval.json").read_text())["iteration"] == 4


def test_sample_writes_npy(trained_run, tmp_path, capsys):
    out = tmp_path / "s.npy"
    assert main(["sample", str(trained_run), "-n", "25", "--out", str(out), "--seed", "1"]) == 0
    samples = np.load(out)
    assert samples.shape == (25, 2) and np.isfinite(samples).all()
    assert main(["sample", str(trained_run), "-n", "25", "--out", str(out), "--seed", "1"]) == 0
    np.testing.assert_array_equal(np.load(out), samples)  # a seed reproduces
    assert main(["sample", str(trained_run), "-n", "8", "--generator-only", "--out", str(out)]) == 0
    assert np.load(out).shape == (8, 2)


def test_sample_agrees_with_the_python_api(trained_run, tmp_path):
    import torch

    import dualmcmc

    out = tmp_path / "s.npy"
    assert main(["sample", str(trained_run), "-n", "9", "--out", str(out), "--seed", "5"]) == 0
    method = dualmcmc.load_run(trained_run)
    expected = method.sample(9, generator=torch.Generator().manual_seed(5))
    np.testing.assert_array_equal(np.load(out), expected.numpy())


@pytest.mark.parametrize("argv, message", [
    (["-n", "0"], r"-n must be >= 1"),
    (["--device", "bogus"], r"device: 'bogus' is not a device name"),
    (["--out", "x.txt"], r"--out must end in .npy"),
])
def test_sample_bad_arguments_exit_2(trained_run, argv, message, capsys):
    assert main(["sample", str(trained_run), *argv]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_evaluate_prints_and_writes_scores(trained_run, capsys):
    assert main(["evaluate", str(trained_run), "--n-samples", "100", "--resolution", "30"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((trained_run / "eval.json").read_text())
    assert {"grid_kl", "grid_tv", "mmd", "modes_hit"} <= set(printed)


@pytest.mark.parametrize("argv, message", [
    (["train", "configs/toy2d.yaml", "--set", "method=dual"], r"unknown method 'dual'; available methods: \['coopnets', 'dual_mcmc', 'nt_ebm', 'short_run', 'vae_mcmc'\]"),
    (["train", "configs/toy2d.yaml", "--set", "iteratons=5"], r"unknown top-level key\(s\) \['iteratons'\]; valid keys: .*'iterations'"),
    (["train", "configs/toy2d.yaml", "--set", "model.x_step=0.1"], r"unknown model \(method 'dual_mcmc'\) key\(s\) \['x_step'\].*'x_step_size'"),
    (["train", "configs/toy2d.yaml", "--set", "iterations=many"], r"iterations: expected int"),
    (["train", "configs/toy2d.yaml", "--set", "iterations"], r"must look like key=value"),
    (["train", "no/such.yaml"], r"config file 'no/such.yaml' does not exist"),
    (["train", "configs/toy2d.yaml", "--set", "model.z_likelihood=bogus"], r"model.z_likelihood must be one of"),
    (["train", "configs/toy2d.yaml", "--set", "model.cuda_graph=true", "--set", "model.x_ladder=null", "--set", "device=cpu"],
     r"model: cuda_graph: true needs a CUDA device.*cuda_graph: false"),
    (["train", "configs/toy2d.yaml", "--set", "model.autocast=bf32"], r"model.autocast must be one of"),
    (["sample", "no/such/run"], r"not a dualmcmc run directory"),
    (["evaluate", "no/such/run"], r"not a dualmcmc run directory"),
])
def test_user_errors_exit_2_with_a_message(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dualmcmc {argv[0]}: error: ")
    assert re.search(message, err), err


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "dualmcmc", "--help"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and "train" in result.stdout and "evaluate" in result.stdout


@pytest.mark.parametrize("config", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(config):
    from dualmcmc.config import load_config

    cfg = load_config(config)
    assert cfg.iterations >= 1


def test_digits_train_evaluate_and_sample(tmp_path, capsys):
    from dualmcmc.data import load_dataset

    try:
        load_dataset("digits")
    except Exception as err:  # sklearn missing or its bundled data unreadable
        pytest.skip(f"the digits data set is not available here: {err}")
    run_dir = tmp_path / "digits"
    tiny = ["model.arch=conv", "model.ebm_hidden=8", "model.generator_hidden=8", "model.encoder_hidden=8",
            "model.latent_dim=2", "model.x_steps=2", "model.z_steps=2", "iterations=2", "batch_size=16",
            "eval.n_samples=50", "log.progress=false", "log.tensorboard=false", "log.image_every=1", "device=cpu"]
    assert main(["train", str(REPO / "configs" / "digits_dual_mcmc.yaml"), *sets(*tiny, f"out={run_dir}")]) == 0
    assert (run_dir / "images" / "iter_000001.png").exists()
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--n-samples", "50"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"fd", "mmd", "generator_fd", "recon_mse"} <= set(printed)
    assert printed == json.loads((run_dir / "eval.json").read_text())
    assert main(["sample", str(run_dir), "-n", "12", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (12, 1, 8, 8) and (tmp_path / "s.png").exists()


def test_a_run_trained_with_cuda_graph_loads_and_samples_without_a_gpu(trained_run, tmp_path):
    # A GPU run (model.cuda_graph: true) opened on a machine without one: the option is dropped, not an error.
    import shutil

    import torch

    import dualmcmc
    from dualmcmc import checkpoint as ckpt

    run_dir = tmp_path / "gpu_run"
    shutil.copytree(trained_run, run_dir)
    path = run_dir / ckpt.CHECKPOINT_NAME
    state = ckpt.load_checkpoint(path)
    state["config"]["model"]["cuda_graph"] = True
    state["config"]["model"]["x_ladder"] = None  # a GPU run with cuda_graph cannot have had replica exchange
    torch.save(state, path)
    method = dualmcmc.load_run(run_dir, device="cpu")
    assert method.config.cuda_graph is False and method.run_config.model["cuda_graph"] is True
    assert torch.isfinite(method.sample(10)).all()


def test_rescore_benchmark_scores_a_run_with_other_sampling_settings(trained_run, capsys, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("rescore", REPO / "benchmarks" / "rescore.py")
    rescore = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rescore)
    rescore.main([str(trained_run), "--n-samples", "50", "--resolution", "20", "--set", "test_x_steps=3"])
    out = capsys.readouterr().out
    assert "as trained: grid_kl" in out and "test_x_steps=3: grid_kl" in out and "generator / flow samples" in out
    rows = tmp_path / "rows.json"  # several runs (seeds): every score to --json, each setting's mean and spread
    rescore.main([str(trained_run), str(trained_run), "--n-samples", "50", "--resolution", "20", "--json", str(rows)])
    assert "| as trained | 2 |" in capsys.readouterr().out
    assert [row["setting"] for row in json.loads(rows.read_text())] == ["as trained", "as trained"]
    with pytest.raises(SystemExit, match="'bogus' is not a model key"):
        rescore.main([str(trained_run), "--set", "bogus=1"])

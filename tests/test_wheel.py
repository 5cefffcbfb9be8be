"""The wheel users install (issue 16): `pip wheel --no-build-isolation --no-deps . -w DIR` builds it, it installs
into a fresh virtual environment that already has torch, and the installed copy -- not this checkout -- runs the
fused op and a short training from another working directory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHECK = textwrap.dedent("""
    import json, sys, tempfile
    import torch
    import dualmcmc
    from dualmcmc import ops
    x = torch.zeros(1000)
    out = ops.langevin_step(x, torch.ones(1000), 0.2, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        run = dualmcmc.train({"method": "dual_mcmc", "data": "8gaussians", "iterations": 3, "out": tmp + "/run",
                              "n_data": 256, "batch_size": 64, "device": "cpu",
                              "model": {"x_steps": 2, "z_steps": 1, "ebm_hidden": 16, "generator_hidden": 16,
                                        "encoder_hidden": 16},
                              "log": {"progress": False, "tensorboard": False, "image_every": 0},
                              "eval": {"n_samples": 100, "resolution": 20}})
        scores = json.loads((run / "eval.json").read_text())
    print(json.dumps({"file": dualmcmc.__file__, "backend": ops.backend(), "value": out[0].item(),
                      "iteration": scores["iteration"]}))
""")


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_trains(tmp_path):
    if os.environ.get("DUALMCMC_NO_EXT") == "1":
        pytest.skip("DUALMCMC_NO_EXT=1 builds no extension")
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", str(REPO), "-w",
                            str(dist)], capture_output=True, text=True, timeout=1200, env={**os.environ, "DUALMCMC_CUDA": "0"})
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    wheels = list(dist.glob("dualmcmc-*.whl"))
    assert len(wheels) == 1 and "abi3" in wheels[0].name, wheels  # one wheel for every Python >= 3.9 (stable ABI)
    # torch (and the training extras) come from this interpreter's site-packages, as on a machine that has them
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheels[0])],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DUALMCMC_BACKEND")}
    ran = subprocess.run([str(python), "-c", CHECK], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={**env, "OMP_NUM_THREADS": "1"})
    assert ran.returncode == 0, ran.stderr[-4000:]
    found = json.loads(ran.stdout.strip().splitlines()[-1])
    assert Path(found["file"]).is_relative_to(venv), found  # the installed copy, not this checkout
    assert found["backend"] == "extension" and abs(found["value"] + 0.02) < 1e-7 and found["iteration"] == 3

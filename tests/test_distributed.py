"""Data-parallel training under torchrun: two CPU processes (gloo) end with identical models; rank 0 alone writes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from dualmcmc import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.ebm_hidden=16", "model.ebm_layers=2", "model.generator_hidden=16", "model.generator_layers=2",
        "model.encoder_hidden=16", "model.encoder_layers=2", "model.latent_dim=2", "model.x_steps=2",
        "model.z_steps=2", "iterations=6", "batch_size=16", "n_data=256", "log.image_every=0",
        "log.tensorboard=false", "log.progress=false", "log.log_every=1", "log.checkpoint_every=3",
        "eval.n_samples=100", "eval.resolution=50", "device=cpu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    # PYTHONFAULTHANDLER: a rank that aborts shows its Python stack in the failure message
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DUALMCMC_CHECKSUM_DIR": str(tmp_path), "PYTHONFAULTHANDLER": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "dualmcmc", "train", "configs/toy2d.yaml",
           *[arg for item in (*TINY, f"out={tmp_path / 'run'}", *extra) for arg in ("--set", item)]]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


def test_two_processes_end_with_identical_parameters_and_rank_0_writes(tmp_path):
    # 3 iterations, then a second torchrun resumes the run to 6: every rank loads the checkpoint
    first = torchrun(tmp_path, "iterations=3")
    assert first.returncode == 0, first.stderr[-3000:]
    result = torchrun(tmp_path, "log.eval_every=2")  # rank 0 evaluates mid-run while the other waits for it
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming at iteration 3" in result.stderr and "2 processes" in result.stderr
    # the shards and chains differ between ranks, so equal models mean the gradients were averaged
    assert (tmp_path / "rank0.txt").read_text() == (tmp_path / "rank1.txt").read_text()
    run_dir = tmp_path / "run"
    state = ckpt.load_checkpoint(run_dir / "checkpoint.pt")
    assert state["iteration"] == 6
    assert all(torch.isfinite(v).all() for v in state["method"]["model"].values() if v.is_floating_point())
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    iterations = [line["iteration"] for line in lines]
    assert iterations == sorted(iterations)
    assert len([line for line in lines if line["iteration"] == 4 and "energy_gap" in line]) == 1  # one writer
    assert any("eval/grid_kl" in line for line in lines if line["iteration"] == 4)  # the mid-run evaluation
    assert (run_dir / "eval.json").exists()
    assert result.stdout.strip() == str(run_dir)  # the run directory, printed once (rank 0)


def test_uneven_batch_is_refused_by_name(tmp_path):
    result = torchrun(tmp_path, "batch_size=15")
    assert result.returncode != 0 and "batch_size 15 does not divide among 2 processes" in result.stderr  # torchrun: 1


def test_single_process_shard_is_the_whole_batch():
    from dualmcmc import distributed

    batch = torch.arange(8)
    assert torch.equal(distributed.shard(batch), batch) and distributed.is_main()
    assert distributed.per_rank_batch(8) == 8

"""Fault injection (issue 14): a training process killed (SIGKILL) a dozen times at random points -- during a step,
while writing a checkpoint, during an evaluation, while writing the other run files -- and resumed after each kill
ends with the parameters, metrics and scores of an uninterrupted run, bit for bit (CPU, one thread).

One driver process imports torch once and forks a child per segment (a fresh interpreter per kill would cost
seconds each); a child counts the events of its kind (autograd passes in a step or an evaluation, the write,
fsync, link and rename of a checkpoint or another run file) and kills itself at the chosen one.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from dualmcmc import checkpoint as ckpt

DRIVER = r'''
import json, os, signal, sys, traceback
import torch
torch.set_num_threads(1)
import dualmcmc.checkpoint as ckpt
import dualmcmc.train as loop

config, schedule, report = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]


def child(kind, n):
    """Train; when ``kind`` is given, SIGKILL this process at the n-th event of that kind."""
    phase, count = ["step"], [0]

    def event(where):
        current = phase[-1] if where == "compute" else ("checkpoint" if phase[-1] == "checkpoint" else "file")
        if current == kind:
            count[0] += 1
            if count[0] == n:
                with open(report, "a") as handle:
                    handle.write(json.dumps({"kind": kind, "n": n, "where": where}) + "\n")
                os.kill(os.getpid(), signal.SIGKILL)

    def counted(function, where):
        def wrapper(*args, **kwargs):
            event(where)
            return function(*args, **kwargs)
        return wrapper

    def in_phase(function, name):
        def wrapper(*args, **kwargs):
            phase.append(name)
            try:
                return function(*args, **kwargs)
            finally:
                phase.pop()
        return wrapper

    def torn_save(obj, handle, *args, **kwargs):  # a kill here leaves half a checkpoint in the temporary file
        if kind == "checkpoint" and count[0] + 1 == n:
            handle.write(b"PK\x03\x04" + b"\0" * 512)
            handle.flush()
        event("write")
        return real_save(obj, handle, *args, **kwargs)

    real_save = torch.save
    torch.autograd.grad = counted(torch.autograd.grad, "compute")
    torch.Tensor.backward = counted(torch.Tensor.backward, "compute")
    os.fsync, os.replace, os.link = counted(os.fsync, "fsync"), counted(os.replace, "rename"), counted(os.link, "link")
    ckpt.torch.save = torn_save
    ckpt.save_checkpoint = in_phase(ckpt.save_checkpoint, "checkpoint")
    loop.evaluate_method = in_phase(loop.evaluate_method, "evaluation")
    loop.render_pictures = in_phase(loop.render_pictures, "evaluation")
    loop.train(config)


for kind, n in schedule:
    pid = os.fork()
    if pid == 0:
        try:
            child(kind, n)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
        sys.exit(f"a segment ({kind}, {n}) failed")
'''


def run_driver(tmp_path: Path, config: dict, schedule: list, report: Path) -> None:
    result = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(config), json.dumps(schedule), str(report)],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]


def test_killed_a_dozen_times_and_resumed_equals_an_uninterrupted_run(tmp_path):
    import random

    model = {"ebm_hidden": 16, "generator_hidden": 16, "encoder_hidden": 16, "ebm_layers": 2, "generator_layers": 2,
             "encoder_layers": 2, "x_steps": 2, "z_steps": 1, "lr_decay": 0.9}

    def config(out):  # 160 rows in batches of 32: an epoch (reshuffle, scheduler step) every 5 iterations
        return {"method": "dual_mcmc", "data": "8gaussians", "iterations": 100, "out": str(out), "seed": 11,
                "device": "cpu", "batch_size": 32, "n_data": 160, "threads": 1, "model": model,
                "log": {"log_every": 2, "image_every": 0, "checkpoint_every": 3, "eval_every": 7, "progress": False,
                        "tensorboard": False},
                "eval": {"n_samples": 60, "resolution": 16}}

    whole, split = tmp_path / "whole", tmp_path / "split"
    rng = random.Random(2026)
    kinds = ["step", "checkpoint", "evaluation", "file"] * 3
    rng.shuffle(kinds)
    most = {"step": 25, "checkpoint": 6, "evaluation": 12, "file": 4}  # events of a kind in a segment, roughly
    schedule = [[kind, rng.randint(1, most[kind])] for kind in kinds]
    report = tmp_path / "kills.jsonl"
    run_driver(tmp_path, config(whole), [[None, 0]], report)
    run_driver(tmp_path, config(split), schedule + [[None, 0]], report)

    kills = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(kills) >= 10, kills  # a kill whose event did not come in its segment let that segment run on
    assert {k["kind"] for k in kills} == {"step", "checkpoint", "evaluation", "file"}, kills
    assert any(k["where"] == "write" for k in kills)  # at least once halfway through writing a checkpoint

    a, b = (ckpt.load_checkpoint(run / ckpt.CHECKPOINT_NAME) for run in (whole, split))
    assert a["iteration"] == b["iteration"] == 100
    for key in a["method"]["model"]:
        assert torch.equal(a["method"]["model"][key], b["method"]["model"][key]), key
    assert a["method"]["optimizers"]["ebm"]["state"].keys() == b["method"]["optimizers"]["ebm"]["state"].keys()

    def lines(run):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds_per_iteration"}
                for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert lines(whole) == lines(split)
    assert json.loads((whole / "eval.json").read_text()) == json.loads((split / "eval.json").read_text())
    assert not list(split.glob(".*.tmp"))  # what the kills left half-written is gone

"""Runs that cannot be hurt (issue 14): one owner per run directory, every value checked before a byte is written,
a clear one-line error for every broken file, and nothing of a run silently shared, corrupted or lost."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dualmcmc import checkpoint as ckpt
from dualmcmc.cli import main
from dualmcmc.config import ConfigError, load_config
from dualmcmc.train import train
from test_train import SMALL_MODEL, read_metrics, small_config

REPO = Path(__file__).resolve().parents[1]


def cli_train(config: dict, tmp_path: Path, *extra: str) -> int:
    """`dualmcmc train` of a config dict (written to a YAML file)."""
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return main(["train", str(path), *extra])


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"dualmcmc {command}: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- one owner per run directory ---------------------------------------------------------------------------------
def test_a_second_train_into_a_busy_directory_exits_2_naming_it_and_the_holder(tmp_path, capsys):
    """A real second process: it holds the lock while it trains; killed, it leaves no stale lock behind."""
    config = small_config(tmp_path, iterations=100_000, log={"log_every": 1000, "image_every": 0,
                                                             "checkpoint_every": 1000, "progress": False,
                                                             "tensorboard": False})
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", f"from dualmcmc.train import train; train({config!r})"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while not (run_dir / ckpt.CHECKPOINT_NAME).exists():  # the holder has locked and written its first checkpoint
            assert holder.poll() is None and time.time() < deadline, holder.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        before = (run_dir / ckpt.CHECKPOINT_NAME).read_bytes()
        assert cli_train(dict(config, iterations=4), tmp_path) == 2
        line = one_line_error(capsys, "train")
        assert str(run_dir) in line and f"process {holder.pid}" in line and "in use" in line and "--set out=" in line
        with pytest.raises(ckpt.RunBusy, match=r"in use by process .*out"):  # Python names its own option
            train(dict(config, iterations=4))
        assert (run_dir / ckpt.CHECKPOINT_NAME).read_bytes() == before  # the refused runs wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    train(dict(config, iterations=4))  # the kernel dropped the killed holder's lock: the run continues
    assert ckpt.load_checkpoint(run_dir / ckpt.CHECKPOINT_NAME)["iteration"] == 4


def test_the_lock_is_released_after_a_run_and_after_an_error(tmp_path):
    run_dir = train(small_config(tmp_path, iterations=2))
    with ckpt.RunLock(run_dir):  # free again after the run
        pass
    with pytest.raises(ConfigError):
        train(small_config(tmp_path, iterations=1))  # already at 2 > 1
    with ckpt.RunLock(run_dir):  # and after a refused resume
        pass


def test_sample_and_evaluate_read_whole_checkpoints_while_training_writes_them(tmp_path):
    import dualmcmc

    config = small_config(tmp_path, iterations=400, log={"log_every": 50, "image_every": 0, "checkpoint_every": 1,
                                                         "progress": False, "tensorboard": False})
    run_dir = tmp_path / "run"
    trainer = subprocess.Popen([sys.executable, "-c", f"from dualmcmc.train import train; train({config!r})"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        while not (run_dir / ckpt.CHECKPOINT_NAME).exists():
            assert trainer.poll() is None, trainer.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        seen = set()
        while trainer.poll() is None and len(seen) < 15:  # a checkpoint replaced at every iteration meanwhile
            method = dualmcmc.load_run(run_dir)
            seen.add(method.run_iteration)
            assert torch.isfinite(method.sample(4)).all()
        assert len(seen) >= 3, seen
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()


# -- every value checked when the config is loaded, before a directory exists -------------------------------------
BAD_VALUES = [
    ("seed", 99999999999999999999), ("seed", -1), ("iterations", 0), ("batch_size", 0), ("n_data", -5),
    ("threads", -1), ("log.log_every", 0), ("log.image_every", -1), ("log.checkpoint_every", -2),
    ("log.eval_every", -1), ("eval.n_samples", 1), ("eval.resolution", 0), ("guard.max_energy_gap", float("nan")),
    ("guard.max_energy_gap", -1.0), ("guard.max_energy_gap", float("inf")), ("guard.max_recoveries", -1),
    ("guard.max_recoveries", 10**9), ("guard.backoff", 0.0), ("guard.backoff", 1.5), ("guard.backoff", float("nan")),
    ("cooldown.fraction", 1.0), ("cooldown.fraction", -0.1), ("cooldown.fraction", float("nan")),
    ("cooldown.factor", 0.0), ("cooldown.factor", 1.5),
]


@pytest.mark.parametrize("key, value", BAD_VALUES, ids=[f"{k}={v}" for k, v in BAD_VALUES])
def test_top_level_and_section_values_are_range_checked_before_anything_is_written(tmp_path, key, value):
    config = small_config(tmp_path)
    section, _, name = key.rpartition(".")
    (config.setdefault(section, {}) if section else config)[name] = value
    with pytest.raises(ConfigError) as error:
        load_config(config)
    message = str(error.value)  # the key, what is allowed and the value
    assert message.startswith(f"{key} must be ") and message.endswith(f"got {value!r}"), message
    with pytest.raises(ConfigError):
        train(config)
    assert not (tmp_path / "run").exists()


MODEL_VALUES = [("x_step_size", -1.0), ("x_step_size", float("nan")), ("x_step_size", 0.0), ("lr_ebm", -1.0),
                ("x_steps", -3)]


@pytest.mark.parametrize("key, value", MODEL_VALUES, ids=[f"{k}={v}" for k, v in MODEL_VALUES])
def test_model_values_are_range_checked_before_anything_is_written(tmp_path, key, value):
    config = small_config(tmp_path, model={**SMALL_MODEL, key: value})
    with pytest.raises(ConfigError, match=rf"model\.{key}"):
        load_config(config)
    with pytest.raises(ConfigError, match=rf"model\.{key}"):
        train(config)
    assert not (tmp_path / "run").exists()


def test_a_huge_seed_is_a_one_line_cli_error(tmp_path, capsys):
    assert cli_train(small_config(tmp_path, seed=99999999999999999999), tmp_path) == 2
    assert "seed must be an integer in [0, 2**63 - 1]" in one_line_error(capsys, "train")


# -- damaged checkpoints ------------------------------------------------------------------------------------------
def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif how == "foreign tensor":
        torch.save(torch.zeros(3), path)
    elif how == "foreign dict":
        torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, path)
    else:
        raise ValueError(how)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("finished")
    run_dir = train(small_config(tmp_path, iterations=6))  # checkpoints at 0, 3 and 6: prev holds iteration 3
    return run_dir


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run_dir, target)
    return target


def test_the_previous_checkpoint_is_kept(finished_run):
    assert ckpt.load_checkpoint(finished_run / ckpt.CHECKPOINT_NAME)["iteration"] == 6
    assert ckpt.load_checkpoint(finished_run / ckpt.PREVIOUS_NAME)["iteration"] == 3
    assert not list(finished_run.glob(".*.tmp"))


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "foreign tensor", "foreign dict"])
@pytest.mark.parametrize("command", ["evaluate", "sample"])
def test_a_damaged_checkpoint_is_one_line_naming_the_file_and_what_to_do(finished_run, tmp_path, capsys, how, command):
    run_dir = copy_run(finished_run, tmp_path)
    damage(run_dir / ckpt.CHECKPOINT_NAME, how)
    assert main([command, str(run_dir)]) == 2
    line = one_line_error(capsys, command)
    assert str(run_dir / ckpt.CHECKPOINT_NAME) in line
    what = {"truncated": "truncated or damaged", "empty": "is empty", "garbage": "truncated or damaged",
            "foreign tensor": "not a dualmcmc checkpoint", "foreign dict": "not a dualmcmc checkpoint"}[how]
    assert what in line, line
    assert f"{ckpt.PREVIOUS_NAME} (iteration 3) is intact" in line and f"dualmcmc train CONFIG --set out={run_dir}" in line
    (run_dir / ckpt.PREVIOUS_NAME).unlink()
    assert main([command, str(run_dir)]) == 2
    assert "no intact earlier checkpoint is kept" in one_line_error(capsys, command)
    with pytest.raises(ckpt.CheckpointError, match="fresh=True"):  # Python names its own option
        import dualmcmc

        dualmcmc.load_run(run_dir)


def test_resume_falls_back_to_the_previous_checkpoint_and_says_so(finished_run, tmp_path, capsys):
    """A truncated latest checkpoint: training again resumes from checkpoint.prev.pt and ends where an
    uninterrupted run ends, bit for bit."""
    run_dir = copy_run(finished_run, tmp_path)
    damage(run_dir / ckpt.CHECKPOINT_NAME, "truncated")
    (run_dir / "eval.json").unlink()
    capsys.readouterr()
    train(small_config(tmp_path, out=str(run_dir), iterations=6))
    err = capsys.readouterr().err
    assert "is truncated or damaged" in err and "resuming from the previous checkpoint" in err and "(iteration 3)" in err
    a = ckpt.load_checkpoint(finished_run / ckpt.CHECKPOINT_NAME)["method"]["model"]
    b = ckpt.load_checkpoint(run_dir / ckpt.CHECKPOINT_NAME)["method"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ckpt.load_checkpoint(run_dir / ckpt.PREVIOUS_NAME)["iteration"] == 3  # the damaged one never became prev


def test_resume_without_an_intact_checkpoint_names_the_flag_of_the_interface(finished_run, tmp_path, capsys):
    run_dir = copy_run(finished_run, tmp_path)
    damage(run_dir / ckpt.CHECKPOINT_NAME, "garbage")
    damage(run_dir / ckpt.PREVIOUS_NAME, "truncated")
    config = small_config(tmp_path, out=str(run_dir), iterations=6)
    with pytest.raises(ckpt.CheckpointError, match=r"checkpoint.pt is truncated or damaged .*start over with fresh=True"):
        train(config)
    assert cli_train(config, tmp_path) == 2
    line = one_line_error(capsys, "train")
    assert "checkpoint.pt is truncated or damaged" in line and "start over with --fresh" in line
    assert cli_train(config, tmp_path, "--fresh") == 0


def test_another_methods_checkpoint_is_refused_by_name(finished_run, tmp_path, capsys):
    other = train(small_config(tmp_path, out=str(tmp_path / "coop"), method="coopnets", iterations=2,
                               model={"ebm_hidden": 16, "ebm_layers": 2, "generator_hidden": 16,
                                      "generator_layers": 2, "x_steps": 2}))
    run_dir = copy_run(finished_run, tmp_path)
    shutil.copy(other / ckpt.CHECKPOINT_NAME, run_dir / ckpt.CHECKPOINT_NAME)
    assert main(["evaluate", str(run_dir)]) == 2
    line = one_line_error(capsys, "evaluate")
    assert "holds a 'coopnets' run" in line and "says 'dual_mcmc'" in line and "--fresh" in line
    assert cli_train(small_config(tmp_path, out=str(run_dir), iterations=6), tmp_path) == 2
    assert "different method: 'coopnets' -> 'dual_mcmc'" in one_line_error(capsys, "train")
    # a checkpoint whose parameters do not fit the method its config names (hand-edited, or mixed up)
    state = ckpt.load_checkpoint(run_dir / ckpt.CHECKPOINT_NAME)
    state["config"] = ckpt.load_checkpoint(finished_run / ckpt.CHECKPOINT_NAME)["config"]
    torch.save(state, run_dir / ckpt.CHECKPOINT_NAME)
    assert main(["sample", str(run_dir)]) == 2
    assert "does not fit method 'dual_mcmc'" in one_line_error(capsys, "sample")


# -- damaged text files on resume -----------------------------------------------------------------------------------
def test_garbage_in_the_run_files_is_repaired_on_resume(tmp_path, monkeypatch, capsys):
    from test_recovery import diverge_at

    diverge_at(monkeypatch, {5})  # one recovery: recoveries.json has an event, metrics a recovery line
    run_dir = train(small_config(tmp_path, iterations=6))
    monkeypatch.undo()
    events = json.loads((run_dir / "recoveries.json").read_text())
    lines = read_metrics(run_dir)
    garbage = b"\xff\xfe\x00garbage \x80\x81\n"
    with open(run_dir / "metrics.jsonl", "rb+") as handle:  # damaged bytes in the middle and at the end
        text = handle.read()
        handle.seek(0)
        handle.write(text[:40] + b"\n" + garbage + text[40:] + garbage)
    for name in ("recoveries.json", "config.yaml", "eval.json", ".lock"):
        (run_dir / name).write_bytes(garbage * 3)
    (run_dir / "diverged.json").write_bytes(garbage)
    capsys.readouterr()
    train(small_config(tmp_path, iterations=8))
    err = capsys.readouterr().err
    assert "Traceback" not in err and "recoveries.json was damaged; rebuilt" in err and "damaged line" in err
    assert json.loads((run_dir / "recoveries.json").read_text()) == events
    repaired = read_metrics(run_dir)  # every line readable again; the intact ones kept
    kept = [line for line in lines if line["iteration"] <= 6 and "eval/grid_kl" not in line]
    first = json.loads(json.dumps(lines[0]))
    assert all(line in repaired for line in kept if line != first)  # the first line was cut by the damage
    assert json.loads((run_dir / "eval.json").read_text())["iteration"] == 8
    assert not (run_dir / "diverged.json").exists()


# -- unreadable data, unwritable directories --------------------------------------------------------------------------
def test_a_truncated_image_is_a_one_line_error_naming_it(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / "2.png")
    data = (folder / "2.png").read_bytes()
    (folder / "2.png").write_bytes(data[: len(data) // 2])  # the header reads, the pixels do not
    assert cli_train(small_config(tmp_path, data=str(folder), batch_size=2), tmp_path) == 2
    line = one_line_error(capsys, "train")
    assert "2.png" in line and "truncated" in line and "remove or replace the file" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
def test_a_damaged_array_is_a_one_line_error_naming_it(tmp_path, capsys, how):
    np.save(tmp_path / "points.npy", np.random.default_rng(0).normal(size=(300, 2)).astype("float32"))
    damage(tmp_path / "points.npy", how)
    assert cli_train(small_config(tmp_path, data=str(tmp_path / "points.npy")), tmp_path) == 2
    line = one_line_error(capsys, "train")
    assert "points.npy" in line and ("truncated" in line or "pickle" in line)


@contextlib.contextmanager
def unprivileged():
    """Permission checks that apply: as root, an effective uid of nobody for the block (root may write anywhere)."""
    if not hasattr(os, "geteuid"):
        pytest.skip("POSIX permissions needed")
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def open_tmp():
    """A temporary directory that an unprivileged user may enter (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="dualmcmc-test-"))
    path.chmod(0o755)
    yield path
    for p in [path, *path.rglob("*")]:
        if p.is_dir():
            p.chmod(0o755)
    shutil.rmtree(path)


def test_unwritable_directories_are_one_line_errors(open_tmp, capsys):
    config = small_config(open_tmp, iterations=3)
    run_dir = train(config)  # written as the owner
    (open_tmp / "config.yaml").write_text(json.dumps(config))
    (open_tmp / "config.yaml").chmod(0o644)
    run_dir.chmod(0o555)
    open_tmp.chmod(0o555)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    with unprivileged():
        # resume (and a new run) into a read-only directory
        assert main(["train", str(open_tmp / "config.yaml"), "--set", "iterations=4"]) == 2
        line = one_line_error(capsys, "train")
        assert f"run directory {run_dir} is not writable" in line and "chmod u+w" in line and "--set out=" in line
        assert main(["train", str(open_tmp / "config.yaml"), "--set", f"out={open_tmp / 'new'}"]) == 2
        line = one_line_error(capsys, "train")
        assert f"cannot create the run directory {open_tmp / 'new'}" in line and "Permission denied" in line
        # sample: the default out lies in the run directory
        assert main(["sample", str(run_dir), "-n", "5"]) == 2
        line = one_line_error(capsys, "sample")
        assert f"cannot write {run_dir / 'samples.npy'}" in line and "--out" in line
        # evaluate: the scores are printed before eval.json is refused
        assert main(["evaluate", str(run_dir), "--n-samples", "50", "--resolution", "20"]) == 2
        captured = capsys.readouterr()
        printed = json.loads(captured.out)
        assert {"grid_kl", "mmd"} <= set(printed) and printed["n_samples"] == 50
        assert "the scores are printed above" in captured.err and str(run_dir / "eval.json") in captured.err
        assert "Traceback" not in captured.err
        with pytest.warns(UserWarning, match="could not write"):  # Python: the scores are returned
            from dualmcmc.run import evaluate_run

            assert evaluate_run(run_dir, 50, 20)["n_samples"] == 50
    assert before == {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}


def test_out_naming_an_existing_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "taken").write_text("not a directory")
    assert cli_train(small_config(tmp_path, out=str(tmp_path / "taken")), tmp_path) == 2
    line = one_line_error(capsys, "train")
    assert f"out: {tmp_path / 'taken'} exists and is not a directory" in line and "--set out=DIR" in line
    assert (tmp_path / "taken").read_text() == "not a directory"


def test_an_unreadable_data_file_is_a_one_line_error(open_tmp, capsys):
    np.save(open_tmp / "points.npy", np.zeros((100, 2), dtype="float32"))
    (open_tmp / "points.npy").chmod(0o000)
    with unprivileged():
        assert main(["train", str(REPO / "configs" / "toy2d.yaml"), "--set", f"data={open_tmp / 'points.npy'}",
                     "--set", f"out={open_tmp / 'run'}"]) == 2
    line = one_line_error(capsys, "train")
    assert "points.npy" in line and "permission denied" in line and "chmod" in line


# -- guard stops, reruns, recoveries --------------------------------------------------------------------------------
def test_a_successful_rerun_after_a_guard_stop_leaves_no_stale_report_and_agrees_with_the_metrics(tmp_path, monkeypatch):
    from dualmcmc.train import TrainingDiverged
    from test_recovery import diverge_at

    diverge_at(monkeypatch, {5, 6})  # iteration 5 diverges, recovery 1 rolls back to 3, iteration 4 diverges again
    config = small_config(tmp_path, iterations=8)
    config["guard"] = {"max_recoveries": 1}
    with pytest.raises(TrainingDiverged):
        train(config)
    run_dir = tmp_path / "run"
    assert (run_dir / "diverged.json").exists()
    monkeypatch.undo()
    config["guard"] = {"max_recoveries": 3}
    train(config)  # the limit raised; the replay from iteration 3 is clean this time
    assert not (run_dir / "diverged.json").exists()
    logged = [line["recovery"] for line in read_metrics(run_dir) if "recovery" in line]
    assert json.loads((run_dir / "recoveries.json").read_text()) == [] and logged == []
    assert ckpt.load_checkpoint(run_dir / ckpt.CHECKPOINT_NAME)["recoveries"] == 0


# -- frictions: threads, flags, sample output, resolved data paths, finished reruns --------------------------------
def test_threads_are_set_for_the_run_and_put_back(tmp_path, monkeypatch):
    from dualmcmc.methods.dual_mcmc import DualMCMC

    seen, real_step = [], DualMCMC.train_step

    def step(self, x):
        seen.append(torch.get_num_threads())
        return real_step(self, x)

    monkeypatch.setattr(DualMCMC, "train_step", step)
    assert load_config(small_config(tmp_path)).threads == 1  # the measured default (README: Threads)
    torch.set_num_threads(2)
    train(small_config(tmp_path, iterations=2))
    assert seen == [1, 1] and torch.get_num_threads() == 2
    train(small_config(tmp_path, iterations=3, threads=0))  # 0: torch's own setting, left alone
    assert seen[-1] == 2


def test_errors_name_the_flag_of_the_interface_used(tmp_path, capsys):
    train(small_config(tmp_path, iterations=3))
    changed = small_config(tmp_path, model={**SMALL_MODEL, "x_steps": 4})
    with pytest.raises(ConfigError, match=r"start over there with fresh=True") as python_error:
        train(changed)
    assert "--fresh" not in str(python_error.value) and "--set" not in str(python_error.value)
    assert cli_train(changed, tmp_path) == 2
    line = one_line_error(capsys, "train")
    assert "start over there with --fresh" in line and "--set out=DIR" in line and "fresh=True" not in line
    with pytest.raises(ConfigError, match=r"a larger `iterations`.*fresh=True"):
        train(small_config(tmp_path, iterations=2))
    assert cli_train(small_config(tmp_path, iterations=2), tmp_path) == 2
    assert "--set iterations=N" in one_line_error(capsys, "train")


def test_sample_writes_under_the_run_by_default_and_the_repository_ignores_samples(tmp_path, capsys, monkeypatch):
    run_dir = train(small_config(tmp_path, iterations=2))
    monkeypatch.chdir(tmp_path)
    assert main(["sample", str(run_dir), "-n", "5"]) == 0
    assert (run_dir / "samples.npy").exists() and not (tmp_path / "samples.npy").exists()
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for name in ("samples.npy", "samples.png"):  # `--out samples.npy` from the repository root
        assert subprocess.run(["git", "check-ignore", "-q", name], cwd=REPO).returncode == 0, name


def test_relative_data_paths_are_stored_resolved(tmp_path, monkeypatch, capsys):
    import yaml

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    np.save(data_dir / "points.npy", np.random.default_rng(0).normal(size=(300, 5)).astype("float32"))
    monkeypatch.chdir(data_dir)
    run_dir = train(small_config(tmp_path, data="points.npy", iterations=2))
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"] == str(data_dir / "points.npy")
    assert ckpt.load_checkpoint(run_dir / ckpt.CHECKPOINT_NAME)["config"]["data"] == str(data_dir / "points.npy")
    monkeypatch.chdir(tmp_path)  # evaluate from another working directory finds the data
    assert main(["evaluate", str(run_dir), "--n-samples", "50"]) == 0
    # a run written before paths were stored resolved (a relative path in its checkpoint) still resumes
    state = ckpt.load_checkpoint(run_dir / ckpt.CHECKPOINT_NAME)
    state["config"]["data"] = "data/points.npy"
    torch.save(state, run_dir / ckpt.CHECKPOINT_NAME)
    train(small_config(tmp_path, data="data/points.npy", iterations=3))
    assert ckpt.load_checkpoint(run_dir / ckpt.CHECKPOINT_NAME)["iteration"] == 3


def test_an_identical_rerun_of_a_finished_run_adds_no_evaluation(tmp_path, monkeypatch, capsys):
    import dualmcmc.train as loop

    run_dir = train(small_config(tmp_path, iterations=4))
    lines, scores = read_metrics(run_dir), (run_dir / "eval.json").read_bytes()

    def no_evaluation(*args, **kwargs):
        raise AssertionError("a finished run was evaluated again")

    monkeypatch.setattr(loop, "evaluate_method", no_evaluation)
    capsys.readouterr()
    train(small_config(tmp_path, iterations=4))
    assert "had finished its 4 iterations already" in capsys.readouterr().err
    assert read_metrics(run_dir) == lines and (run_dir / "eval.json").read_bytes() == scores
    monkeypatch.undo()
    # other evaluation settings: evaluated again, and its line replaces the old one
    train(small_config(tmp_path, iterations=4, eval={"n_samples": 100, "resolution": 30}))
    final = [line for line in read_metrics(run_dir) if "eval/grid_kl" in line]
    assert len(final) == 1 and json.loads((run_dir / "eval.json").read_text())["n_samples"] == 100

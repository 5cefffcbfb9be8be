"""The training loop: one loop for every method, readable top to bottom.

    run_dir = dualmcmc.train("configs/toy2d.yaml", ["iterations=2000", "model.x_steps=20"])

A run directory holds ``config.yaml`` (the resolved config), ``checkpoint.pt`` (atomic, resumable) and
``checkpoint.prev.pt`` (the one before), ``metrics.jsonl`` (one JSON object per log window), ``tb/`` (TensorBoard,
when installed), ``images/`` (pictures) and ``eval.json`` (the final evaluation). Training again into a directory
that holds a checkpoint resumes it (the model, optimizers, schedulers, data order and random streams all continue);
``fresh=True`` starts over. One process at a time trains in a run directory (an OS lock on ``RUN/.lock``).
"""
from __future__ import annotations

import json
import math
import random
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

import numpy as np
import torch

from . import checkpoint as ckpt
from ._buffers import buffers_restored
from . import distributed
from .config import ConfigError, TrainConfig, default_out, identity_changes, load_config
from .cooldown import apply_cooldown, cooldown_scale
from .data import load_dataset, resolved_spec, to_model_range
from .methods import Method, build_method
from .run import (CLI, PYTHON, EVAL_NAME, Flags, evaluate_method, read_scores, render_pictures, resolve_device,
                  restore_method_state, save_config)

if TYPE_CHECKING:  # the bar's type, for annotations; tqdm is optional at run time
    from tqdm import tqdm

SEED_MODULUS = 2**64  # torch.manual_seed takes [0, 2**64): derived seeds wrap instead of overflowing
RECOVERIES_NAME = "recoveries.json"


class TrainingDiverged(RuntimeError):
    """Training stopped because a loss went non-finite or the energy gap exploded (the last good checkpoint is kept)."""


def train(config: "str | Path | dict | TrainConfig", overrides: Iterable[str] = (), *, fresh: bool = False,
          interface: str = "python") -> Path:
    """Train the method the config names; returns the run directory. See the module docstring.

    ``interface="cli"`` makes errors name the command line's flags (``--fresh``) instead of this function's
    arguments (``fresh=True``)."""
    flags = {"python": PYTHON, "cli": CLI}[interface]
    cfg = load_config(config, overrides)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        run_dir = _train(cfg, fresh, flags)
        distributed.finish()  # torchrun: the ranks leave together, once rank 0 has written its scores
        return run_dir
    finally:
        distributed.cleanup()  # torchrun: leave the process group whatever happened
        torch.set_num_threads(threads)


def _train(cfg: TrainConfig, fresh: bool, flags: Flags = PYTHON) -> Path:
    run = start(cfg, fresh, flags)
    try:
        while run.iteration < cfg.iterations:
            run.iteration += 1
            losses = step(run)
            problem = guard(run, losses)
            if problem:
                recover(run, problem, losses)  # roll back and slow down, or stop (TrainingDiverged)
                continue
            log(run, losses)
            pictures_and_evaluation(run)
            if checkpoint_due(run):
                save(run)
            run.progress.update(1)
        scores = finish(run)
    finally:  # Ctrl-C or an error: flush what was logged, give the run directory back
        run.close()
    if run.main:
        print(f"dualmcmc: done; {_format_scores(scores)}; run in {run.run_dir}", file=sys.stderr)
    return run.run_dir


# -- the state of a run, and the phases of the loop ---------------------------------------------------------------
@dataclass
class Run:
    """Everything the loop carries from one iteration to the next."""

    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    main: bool  # rank 0 (or a single process): the one that writes files
    data: torch.Tensor
    method: Method
    batches: "BatchSampler"
    flags: Flags = PYTHON  # how errors name the options (fresh=True or --fresh)
    lock: "ckpt.RunLock | None" = None  # rank 0 owns the run directory while it trains
    logger: "MetricsLogger | NoLogger" = field(default_factory=lambda: NoLogger())
    progress: "tqdm | NoProgress" = field(default_factory=lambda: NoProgress())  # the bar (rank 0), or none
    iteration: int = 0  # the last iteration run (the checkpoint's, right after a resume or a recovery)
    window: dict = field(default_factory=dict)  # the losses of the iterations since the last metrics line
    recoveries: int = 0
    t_start: float = 0.0  # the clock of seconds_per_iteration, started at iteration timed_from
    timed_from: int = 0
    checkpoint_intact: bool = False  # checkpoint.pt was written or read by this process (so it may become .prev)
    finished_scores: Optional[dict] = None  # a finished run trained again as it was: its eval.json, nothing to redo

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / ckpt.CHECKPOINT_NAME

    @property
    def previous_path(self) -> Path:
        return self.run_dir / ckpt.PREVIOUS_NAME

    @property
    def data_shape(self) -> tuple:
        return tuple(self.data.shape[1:])

    def restart_clock(self) -> None:
        self.t_start, self.timed_from = time.perf_counter(), self.iteration

    def close(self) -> None:
        self.progress.close()
        self.logger.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def start(cfg: TrainConfig, fresh: bool, flags: Flags = PYTHON) -> Run:
    """Check everything (data, model, device), take the run directory (one owner), then resume its checkpoint or
    start a new run. Nothing is written before every check has passed."""
    run = prepare(cfg, flags)
    if run.main:
        run.lock = own_run_directory(run.run_dir, flags)
    try:
        open_run(run, fresh)
    except BaseException:
        run.close()
        raise
    return run


def prepare(cfg: TrainConfig, flags: Flags) -> Run:
    """Data, model, optimisers and batches, each checked; nothing is written."""
    run_dir = Path(cfg.out or default_out(cfg))
    device = distributed.setup(resolve_device(cfg.device))  # torchrun: join the group, this rank's GPU
    seed_everything(cfg.seed)
    try:
        data = load_dataset(cfg.data, n_samples=cfg.n_data, seed=cfg.seed)
    except (OSError, ValueError, ImportError) as err:  # ImportError: torchvision sets without torchvision
        raise ConfigError(f"data: {err}") from None
    cfg.data = resolved_spec(cfg.data)  # stored resolved: evaluate finds the data from any working directory
    try:
        method = build_method(cfg.method, cfg.model, tuple(data.shape[1:])).to(device)
        method.check_device(device)  # e.g. cuda_graph on a CPU run: say so before anything is written
    except (ValueError, TypeError, ImportError) as err:  # a model value the method rejects, or a package it needs
        raise ConfigError(f"model: {err}") from None
    batches = BatchSampler(len(data), cfg.batch_size, seed=cfg.seed)  # the global batch; each rank takes a shard
    distributed.per_rank_batch(cfg.batch_size)
    return Run(cfg, run_dir, device, distributed.is_main(), data, method, batches, flags=flags)


def open_run(run: Run, fresh: bool) -> None:
    """Resume the run directory's checkpoint (or its previous one), or start a new run; open the logs."""
    cfg, run_dir = run.cfg, run.run_dir
    if run.main:
        if fresh:
            clear_run(run_dir)
        (run_dir / "diverged.json").unlink(missing_ok=True)  # it described a stop that this run now retries
    distributed.barrier()
    resuming = run.checkpoint_path.exists() or run.previous_path.exists()
    distributed.barrier()  # every rank has looked before rank 0 writes the first checkpoint below
    if resuming:
        resume(run)
        if run.main:
            keep_recoveries(run_dir, run.recoveries)  # a recovery after the checkpoint is replayed, not logged twice
    distributed.broadcast_state(run.method)  # torchrun: every rank starts from rank 0's model
    distributed.average_gradients_before_steps(run.method.optimizers.values())
    if distributed.active():  # equal models, different chains on each rank
        torch.manual_seed((cfg.seed + 7919 * distributed.rank() + run.iteration) % SEED_MODULUS)
    if run.main:
        if run.iteration == cfg.iterations:
            run.finished_scores = finished_scores(run)
        final_eval = cfg.iterations if run.iteration == cfg.iterations and run.finished_scores is None else None
        run.logger = MetricsLogger(run_dir, cfg.log.tensorboard, resume_at=run.iteration, recoveries=run.recoveries,
                                   drop_eval_at=final_eval)  # the final evaluation is done again: no second line
        save_config(run_dir, cfg)
        print(f"dualmcmc: {cfg.method} on {cfg.data} {tuple(run.data.shape)} -> {run_dir} "
              f"({'resuming at iteration ' + str(run.iteration) if run.iteration else 'new run'}, device {run.device}, "
              f"ops backend {_backend()}{f', {distributed.world_size()} processes' if distributed.active() else ''})",
              file=sys.stderr)
    if not resuming:  # the state a recovery rolls back to when it diverges before the first save
        save(run)
    run.progress = _progress_bar(cfg, run.iteration) if run.main else NoProgress()
    run.restart_clock()


def step(run: Run) -> dict[str, float]:
    """One training iteration on the next batch (this rank's shard of it); its losses and diagnostics."""
    batch_index, epoch_done = run.batches.next()
    x = to_model_range(run.data[distributed.shard(batch_index)]).to(run.device)
    cooldown = run.cfg.cooldown
    scale = cooldown_scale(run.iteration, run.cfg.iterations, cooldown.fraction, cooldown.factor)
    apply_cooldown(run.method.optimizers, scale)
    losses = run.method.train_step(x)
    if cooldown.fraction > 0:
        losses["lr_scale"] = scale  # logged, so the cooldown shows in metrics.jsonl and TensorBoard
    if epoch_done:
        run.method.on_epoch_end()  # per-epoch learning-rate schedules, as in the reference codes
    return losses


def checkpoint_due(run: Run) -> bool:
    every = run.cfg.log.checkpoint_every
    return bool(every and run.iteration % every == 0) or run.iteration == run.cfg.iterations


def guard(run: Run, losses: dict[str, float]) -> Optional[str]:
    """Why the run must roll back (a non-finite loss, an exploding gap, NaN parameters before a save), or None."""
    problem = divergence(losses, run.cfg.guard.max_energy_gap) or (checkpoint_due(run) and nonfinite_parameters(run.method))
    if distributed.any_rank(bool(problem)):  # every rank recovers, or stops, together
        return problem or "another process diverged"
    return None


def log(run: Run, losses: dict[str, float]) -> None:
    """Collect the iteration's losses; every log_every iterations (and at the end) write their means."""
    for key, value in losses.items():
        run.window.setdefault(key, []).append(value)
    if run.iteration % run.cfg.log.log_every == 0 or run.iteration == run.cfg.iterations:
        means = {k: float(np.mean(v)) for k, v in run.window.items()}
        means["seconds_per_iteration"] = (time.perf_counter() - run.t_start) / max(run.iteration - run.timed_from, 1)
        run.logger.log(run.iteration, means)
        run.progress.set_postfix(gap=f"{means['energy_gap']:.3g}", refresh=False)
        run.window = {}


def pictures_and_evaluation(run: Run) -> None:
    """Pictures every image_every and an evaluation every eval_every iterations (the last one's come in finish)."""
    cfg, iteration = run.cfg, run.iteration
    pictures_due = cfg.log.image_every and iteration % cfg.log.image_every == 0
    eval_due = cfg.log.eval_every and iteration % cfg.log.eval_every == 0
    if not (pictures_due or eval_due) or iteration == cfg.iterations:
        return
    if run.main:
        with isolated(run.method, run.device):
            if pictures_due:
                render_pictures(run.method, run.data, cfg, run.run_dir, iteration)
            if eval_due:
                run.logger.log(iteration, {f"eval/{k}": v for k, v in evaluate_method(run.method, cfg).items()})
    distributed.wait_for_main()  # torchrun: the others wait on a CPU group, not in NCCL's next collective


def finish(run: Run) -> dict[str, float]:
    """The end: pictures and the evaluation of the trained model (the last metrics line, then eval.json: a run
    whose eval.json is written is finished). A finished run trained again as it was keeps its scores."""
    run.progress.close()
    distributed.check_parameters_agree(run.method)  # torchrun: every rank must hold the same model
    if not run.main:
        return {}
    if run.finished_scores is not None:
        print(f"dualmcmc: {run.run_dir} had finished its {run.cfg.iterations} iterations already; its scores are "
              f"those of {run.run_dir / EVAL_NAME}", file=sys.stderr)
        return run.finished_scores
    cfg = run.cfg
    with isolated(run.method, run.device):
        render_pictures(run.method, run.data, cfg, run.run_dir, cfg.iterations)
        scores = evaluate_method(run.method, cfg)
    run.logger.log(cfg.iterations, {f"eval/{k}": v for k, v in scores.items()})
    summary = {"iteration": cfg.iterations, "n_samples": cfg.eval.n_samples, "resolution": cfg.eval.resolution}
    try:
        ckpt.atomic_write_text(run.run_dir / EVAL_NAME, json.dumps({**summary, **scores}, indent=2) + "\n")
    except OSError as err:  # the scores are not lost: they go into the error (and metrics.jsonl has them)
        raise ConfigError(f"could not write {run.run_dir / EVAL_NAME} ({err.strerror}); the scores: "
                          f"{json.dumps(scores)}; make {run.run_dir} writable and train again with the same "
                          f"config to write it") from None
    return scores


def finished_scores(run: Run) -> Optional[dict]:
    """eval.json of a run that is at its last iteration, when it scored this very state with these settings."""
    scores = read_scores(run.run_dir)
    settings = {"iteration": run.cfg.iterations, "n_samples": run.cfg.eval.n_samples,
                "resolution": run.cfg.eval.resolution}
    if scores is None or any(scores.get(k) != v for k, v in settings.items()):
        return None
    return {k: v for k, v in scores.items() if k not in settings}


# -- the run directory -------------------------------------------------------------------------------------------
def own_run_directory(run_dir: Path, flags: Flags) -> "ckpt.RunLock":
    """Create ``run_dir`` and take its lock (another process training there: RunBusy, naming it); check that it is
    writable; remove temporary files a killed run left. Every failure is a ConfigError naming the path and the fix."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:
        raise ConfigError(f"out: {err.filename or run_dir} exists and is not a directory; train into another "
                          f"directory ({flags.out})") from None
    except OSError as err:
        raise ConfigError(f"out: cannot create the run directory {run_dir} ({err.strerror}: {err.filename}); make "
                          f"its parent writable, or train into another directory ({flags.out})") from None
    unwritable = (f"run directory {run_dir} is not writable ({{}}); make it writable (chmod u+w {run_dir}), or "
                  f"train into another directory ({flags.out})")
    try:
        lock = ckpt.RunLock(run_dir).acquire()
    except ckpt.RunBusy as err:
        raise ckpt.RunBusy(f"{err} ({flags.out})") from None
    except OSError as err:
        raise ConfigError(unwritable.format(err.strerror)) from None
    try:
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as err:
        lock.release()
        raise ConfigError(unwritable.format(err.strerror)) from None
    for stale in run_dir.glob(".*.tmp"):  # a run killed while writing a file (we own the directory now)
        stale.unlink(missing_ok=True)
    return lock


def clear_run(run_dir: Path) -> None:
    """What a previous run left in ``run_dir`` (for --fresh): checkpoints, logs, pictures, scores."""
    import shutil

    for name in (ckpt.CHECKPOINT_NAME, ckpt.PREVIOUS_NAME, "diverged.json", EVAL_NAME, "metrics.jsonl",
                 "recoveries.json"):
        (run_dir / name).unlink(missing_ok=True)
    for name in ("tb", "images"):
        shutil.rmtree(run_dir / name, ignore_errors=True)


# -- pieces of the loop ----------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class BatchSampler:
    """Indices of shuffled batches without replacement (the last incomplete batch is dropped, as in the
    reference loaders); an epoch ends when the permutation runs out. Its state goes into checkpoints."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if batch_size > n:
            raise ConfigError(f"batch_size {batch_size} is larger than the data set ({n} rows); lower batch_size")
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(n, generator=self.generator)
        self.position = 0

    def next(self) -> tuple[torch.Tensor, bool]:
        """(indices of the next batch, whether this batch ends an epoch)."""
        index = self.order[self.position: self.position + self.batch_size]
        self.position += self.batch_size
        epoch_done = self.position + self.batch_size > self.n
        if epoch_done:
            self.order = torch.randperm(self.n, generator=self.generator)
            self.position = 0
        return index, epoch_done

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"], int(state["position"])


def divergence(losses: dict[str, float], max_energy_gap: float) -> Optional[str]:
    """Why training must stop (a non-finite value, an exploding energy gap), or None."""
    bad = sorted(k for k, v in losses.items() if not math.isfinite(v))
    if bad:
        return f"non-finite value(s) in {bad}"
    gap = losses.get("energy_gap", 0.0)
    if max_energy_gap and abs(gap) > max_energy_gap:
        return f"|energy_gap| = {abs(gap):.4g} exceeds guard.max_energy_gap = {max_energy_gap:g}"
    return None


def stop_diverged(run: Run, problem: str, losses: dict) -> None:
    """Out of recoveries: write diverged.json, keep the last good checkpoint, raise TrainingDiverged."""
    run.progress.close()
    report = {"iteration": run.iteration, "reason": problem, "losses": losses}
    if run.main:
        ckpt.atomic_write_text(run.run_dir / "diverged.json", json.dumps(report, indent=2, default=str) + "\n")
    run.logger.close()
    last = ckpt.checkpoint_iteration(run.checkpoint_path)
    kept = f"the last good checkpoint (iteration {last}) is kept" if last is not None else "no checkpoint was written yet"
    raise TrainingDiverged(
        f"training stopped at iteration {run.iteration}: {problem}; {kept} in {run.run_dir}. Lower the learning rates "
        f"or the Langevin step size (model.*), or raise guard.max_energy_gap if the gap is expected to be large")


def nonfinite_parameters(method: Method) -> Optional[str]:
    """A reason when some parameter or buffer is NaN/inf (a NaN model never replaces the last good checkpoint)."""
    bad = [name for name, p in method.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    return f"non-finite parameters {bad[:5]}" if bad else None


def save(run: Run) -> None:
    """Atomic checkpoint of everything an exact resume needs (torchrun: rank 0's, with its buffers on every rank);
    the checkpoint it replaces becomes checkpoint.prev.pt when it is known to be intact."""
    distributed.broadcast_state(run.method, buffers_only=True)
    if run.main:
        ckpt.save_checkpoint(run.checkpoint_path, run.method, iteration=run.iteration, config=run.cfg.to_dict(),
                             data_shape=run.data_shape, batches=run.batches.state_dict(), log_window=run.window,
                             recoveries=run.recoveries,
                             keep_previous=run.previous_path if run.checkpoint_intact else None)
        run.checkpoint_intact = True
    distributed.barrier()  # no rank reads or moves past a checkpoint that is not written yet


def recover(run: Run, problem: str, losses: dict) -> None:
    """Roll back to the last good checkpoint, slow down (method.backoff), reseed, and log it; the run continues
    from the checkpoint's iteration and metrics window. Out of recoveries, stop (the reference codes always do)."""
    cfg, method = run.cfg, run.method
    if run.recoveries >= cfg.guard.max_recoveries:
        stop_diverged(run, problem, losses)
    recoveries, diverged_at = run.recoveries + 1, run.iteration
    earlier = [e for e in read_recoveries(run.run_dir) if e["recovery"] < recoveries] if run.main else []
    scale_before = method.backoff_scale  # the checkpoint may predate earlier recoveries: keep their slow-down
    resume(run)
    run.recoveries = recoveries  # more than the checkpoint's count: this recovery and those since it was written
    method.backoff(scale_before * cfg.guard.backoff / method.backoff_scale)
    # a new stream (the same noise could diverge again), and torchrun ranks still draw different chains
    torch.manual_seed((cfg.seed + 1_000_003 * run.recoveries + 7919 * distributed.rank()) % SEED_MODULUS)
    run.logger.rewind(run.iteration)  # the iterations after the checkpoint are run again: their lines would be duplicates
    run.logger.log(run.iteration, {"recovery": run.recoveries, "diverged_at": diverged_at,
                                   "backoff_scale": method.backoff_scale, "reason": problem})
    run.restart_clock()
    run.progress.reset(total=cfg.iterations)
    run.progress.update(run.iteration)
    if not run.main:
        return
    event = {"recovery": run.recoveries, "iteration": diverged_at, "rolled_back_to": run.iteration, "reason": problem,
             "backoff_scale": method.backoff_scale}
    ckpt.atomic_write_text(run.run_dir / RECOVERIES_NAME, json.dumps(earlier + [event], indent=2) + "\n")
    print(f"dualmcmc: iteration {diverged_at}: {problem}; recovery {run.recoveries} of {cfg.guard.max_recoveries}: "
          f"rolled back to iteration {run.iteration}, learning rates and chain steps x{cfg.guard.backoff:g} "
          f"(now x{method.backoff_scale:g})", file=sys.stderr)


def read_recoveries(run_dir: Path) -> list:
    """The events of recoveries.json (rebuilt from metrics.jsonl when it is damaged)."""
    return _recoveries(run_dir)[0]


def _recoveries(run_dir: Path) -> tuple[list, bool]:
    """(the events of recoveries.json, whether they had to be rebuilt): a damaged file is rebuilt from the recovery
    lines of metrics.jsonl, which carry the same facts, with a note."""
    path = run_dir / RECOVERIES_NAME
    if not path.exists():
        return [], False
    try:
        events = json.loads(path.read_bytes().decode("utf-8"))
        if isinstance(events, list) and all(isinstance(e, dict) and isinstance(e.get("recovery"), int) for e in events):
            return events, False
    except (OSError, UnicodeDecodeError, ValueError):
        pass
    lines, _ = read_metrics_lines(run_dir / MetricsLogger.NAME)
    events = [{"recovery": line["recovery"], "iteration": line.get("diverged_at"), "rolled_back_to": line["iteration"],
               "reason": line.get("reason"), "backoff_scale": line.get("backoff_scale")}
              for line in lines if isinstance(line.get("recovery"), int)]
    print(f"dualmcmc: {path} was damaged; rebuilt from the recovery lines of {MetricsLogger.NAME} "
          f"({len(events)} events)", file=sys.stderr)
    return events, True


def keep_recoveries(run_dir: Path, count: int) -> None:
    """Keep the first ``count`` events of recoveries.json, those the checkpoint being resumed had been through (a
    damaged file is rebuilt from metrics.jsonl)."""
    events, rebuilt = _recoveries(run_dir)
    kept = [e for e in events if e["recovery"] <= count]
    if rebuilt or kept != events:
        ckpt.atomic_write_text(run_dir / RECOVERIES_NAME, json.dumps(kept, indent=2) + "\n")


def latest_checkpoint(run: Run) -> tuple[dict, Path]:
    """The payload of RUN/checkpoint.pt, or of RUN/checkpoint.prev.pt when the latest is damaged (said on stderr);
    a CheckpointError saying what to do when neither can be used."""
    try:
        state = ckpt.load_checkpoint(run.checkpoint_path)
        run.checkpoint_intact = True
        return state, run.checkpoint_path
    except ckpt.CheckpointError as err:
        latest_error = err
    try:
        state = ckpt.load_checkpoint(run.previous_path)
    except ckpt.CheckpointError:
        raise ckpt.CheckpointError(
            latest_error.path, f"{latest_error.problem}; no intact earlier checkpoint ({ckpt.PREVIOUS_NAME}) is kept: "
                               f"start over with {run.flags.fresh}") from None
    run.checkpoint_intact = False  # the next save replaces it without moving it over the intact previous one
    if run.main:
        print(f"dualmcmc: {latest_error}; resuming from the previous checkpoint {run.previous_path} "
              f"(iteration {state['iteration']}) instead", file=sys.stderr)
    return state, run.previous_path


def resume(run: Run) -> None:
    """Load the run directory's checkpoint into the run: the method, the batches, the random streams, the iteration
    it reached, the losses logged since the last metrics line (so the next line averages the same iterations) and
    the recoveries so far."""
    cfg = run.cfg
    state, path = latest_checkpoint(run)
    saved = dict(state["config"])
    if isinstance(saved.get("data"), str) and saved["data"] != cfg.data and resolved_spec(saved["data"]) == cfg.data:
        saved["data"] = cfg.data  # a run from before data paths were stored resolved
    changed = identity_changes(saved, cfg)
    if changed:
        raise ConfigError(
            f"{run.run_dir} holds a run with different {', '.join(changed)}; train into another directory "
            f"({run.flags.out}) or start over there with {run.flags.fresh}")
    if state["iteration"] > cfg.iterations:
        raise ConfigError(f"{run.run_dir} is already at iteration {state['iteration']} > iterations = "
                          f"{cfg.iterations}; give {run.flags.iterations} to continue it, or start over with "
                          f"{run.flags.fresh}")
    restore_method_state(run.method, state, path)
    try:
        run.batches.load_state_dict(state["batches"])
        ckpt.set_rng_states(state["rng"], run.method.device)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ckpt.CheckpointError(path, f"is damaged: its data order or random streams cannot be restored ({err}); "
                                         f"start over with {run.flags.fresh}") from None
    run.iteration, run.window = int(state["iteration"]), state.get("log_window", {})
    run.recoveries = int(state.get("recoveries", 0))


class NoLogger:
    """What ranks other than 0 log to under torchrun: nothing."""

    def log(self, iteration: int, values: dict) -> None:
        pass

    def rewind(self, iteration: int) -> None:
        pass

    def close(self) -> None:
        pass


class MetricsLogger:
    """metrics.jsonl (one {"iteration": i, ...} per line) plus TensorBoard scalars when tensorboard is installed.

    On resume, lines past the checkpoint's iteration are dropped so the log matches the state that continues, and
    so are the recovery lines the checkpoint had not been through (they are replayed) and, when the final
    evaluation is done again, its old line. Unreadable lines (a torn last line, damaged bytes) are dropped.
    """

    NAME = "metrics.jsonl"

    def __init__(self, run_dir: Path, tensorboard: bool, resume_at: int, recoveries: Optional[int] = None,
                 drop_eval_at: Optional[int] = None):
        self.path, self.tb_dir, self.tensorboard = run_dir / self.NAME, run_dir / "tb", tensorboard
        self.file, self.writer = None, None
        self._open(resume_at, recoveries, drop_eval_at)

    def _open(self, resume_at: int, recoveries: Optional[int] = None, drop_eval_at: Optional[int] = None) -> None:
        kept = []
        if resume_at:
            lines, unreadable = read_metrics_lines(self.path)
            kept = [line for line in lines if line["iteration"] <= resume_at
                    and (recoveries is None or line.get("recovery", 0) <= recoveries)
                    and not (line["iteration"] == drop_eval_at and any(k.startswith("eval/") for k in line))]
            if unreadable:
                print(f"dualmcmc: {self.path}: dropped {unreadable} damaged line(s)", file=sys.stderr)
        ckpt.atomic_write_text(self.path, "".join(json.dumps(line) + "\n" for line in kept))
        self.file = open(self.path, "a", buffering=1)
        if self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.tb_dir), purge_step=resume_at + 1 if resume_at else None)
            except ImportError:  # tensorboard is optional: JSON lines are always written
                self.writer = None

    def rewind(self, iteration: int) -> None:
        """Drop what was logged after ``iteration`` (a recovery rolled back there), in both logs."""
        self.close()
        self._open(iteration)

    def log(self, iteration: int, values: dict[str, float]) -> None:
        self.file.write(json.dumps({"iteration": iteration, **values}) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):  # text (a recovery's reason) goes to metrics.jsonl only
                    self.writer.add_scalar(key, value, iteration)

    def close(self) -> None:
        if self.file is not None and not self.file.closed:
            self.file.close()
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_metrics_lines(path: Path) -> tuple[list[dict], int]:
    """The readable lines of a metrics.jsonl (objects with an integer iteration), and how many others it held
    besides a torn last line (a process killed mid-write leaves one)."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return [], 0
    raw = text.splitlines()
    lines, bad = [], 0
    for i, line in enumerate(raw):
        parsed = _parsed_line(line)
        if parsed is not None:
            lines.append(parsed)
        elif line.strip() and not (i == len(raw) - 1 and not text.endswith("\n")):
            bad += 1
    return lines, bad


def _parsed_line(line: str) -> Optional[dict]:
    try:
        parsed = json.loads(line)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("iteration"), int) or isinstance(parsed["iteration"], bool):
        return None
    return parsed


@contextmanager
def isolated(method: Method, device: torch.device):
    """Pictures and evaluations leave no trace on training: they draw random numbers without moving the training's
    streams, and the buffers their forward passes update in training mode (BatchNorm statistics, spectral-norm
    power iterations) are put back, so a run's numbers do not depend on how often it draws pictures. With model.ema
    they use the averaged weights, and the live ones are back afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), buffers_restored([method]), method.averaged_weights():
        yield


class NoProgress:
    """The progress bar of a run without one (log.progress: false, no tqdm, ranks other than 0)."""

    def update(self, n: int = 1) -> None:
        pass

    def reset(self, total: Optional[int] = None) -> None:
        pass

    def set_postfix(self, **values) -> None:
        pass

    def close(self) -> None:
        pass



def _progress_bar(cfg: TrainConfig, start: int):
    if not cfg.log.progress:
        return NoProgress()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return NoProgress()
    # Redirected output (CI logs, nohup) gets a line every half minute instead of a redraw per iteration.
    interactive = sys.stderr.isatty()
    return tqdm(total=cfg.iterations, initial=start, desc=cfg.method, unit="it", dynamic_ncols=True,
                mininterval=0.1 if interactive else 30.0)


def _backend() -> str:
    from .ops import backend

    return backend()


def _format_scores(scores: dict) -> str:
    keys = [k for k in ("grid_kl", "grid_tv", "fd", "mmd", "modes_hit", "generator_fd", "recon_mse") if k in scores]
    return ", ".join(f"{k} {scores[k]:.4g}" for k in keys) or "no scores"

"""A run directory after (or during) training: load the trained method, draw its pictures, evaluate it.

    method = dualmcmc.load_run("runs/toy2d")
    x = method.sample(1000)                       # generator initialisation + Langevin (dual_mcmc)
    log_p = method.log_prob_unnormalized(x)       # -E(x)/T, the density the EBM defines
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from . import checkpoint as ckpt
from .config import ConfigError, TrainConfig, load_config
from .data import is_toy, load_dataset, to_model_range
from .methods import Method, build_method

CONFIG_NAME = "config.yaml"
EVAL_NAME = "eval.json"
PLOT_BOUNDS = (-4.0, 4.0)  # every toy density lives well inside this box (and the grid metrics use it)
PICTURE_SAMPLES = 2000
PICTURE_RESOLUTION = 200
PICTURE_IMAGES = 100  # images per grid (10 x 10)


@dataclass(frozen=True)
class Flags:
    """How an error names the options of the interface the user called: the command line's flags or the Python
    API's arguments."""

    fresh: str
    out: str
    iterations: str
    train: str  # how to train into a run directory again


PYTHON = Flags(fresh="fresh=True", out="`out` in the config, or the override 'out=DIR'",
               iterations="a larger `iterations` (the override 'iterations=N')",
               train="dualmcmc.train(CONFIG, ['out={run}'])")
CLI = Flags(fresh="--fresh", out="--set out=DIR", iterations="--set iterations=N",
            train="dualmcmc train CONFIG --set out={run}")


def save_config(run_dir: Path, cfg: TrainConfig) -> None:
    import yaml

    ckpt.atomic_write_text(Path(run_dir) / CONFIG_NAME, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def checkpoint_file(run_dir: "str | Path", flags: Flags = PYTHON) -> Path:
    """RUN/checkpoint.pt, or a FileNotFoundError that says how to make one."""
    path = Path(run_dir) / ckpt.CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a dualmcmc run directory: no {ckpt.CHECKPOINT_NAME} in it "
                                f"(train one with `{flags.train.format(run=run_dir)}`)")
    return path


def load_run_state(run_dir: "str | Path", flags: Flags = PYTHON) -> dict:
    """The payload of RUN/checkpoint.pt for sample / evaluate / load_run. A damaged one is a CheckpointError that
    says what to do: resume from RUN/checkpoint.prev.pt when that one is intact, else start over."""
    path = checkpoint_file(run_dir, flags)
    try:
        state = ckpt.load_checkpoint(path)
    except ckpt.CheckpointError as err:
        previous = Path(run_dir) / ckpt.PREVIOUS_NAME
        kept = ckpt.checkpoint_iteration(previous) if previous.exists() else None
        if kept is not None:
            advice = (f"the previous checkpoint {previous} (iteration {kept}) is intact: training into the run again "
                      f"(`{flags.train.format(run=run_dir)}`) resumes from it, or copy it over {path.name} to use it")
        else:
            advice = f"no intact earlier checkpoint is kept: train the run again from the start ({flags.fresh})"
        raise ckpt.CheckpointError(path, f"{err.problem}; {advice}") from None
    saved_method = _config_yaml_method(Path(run_dir))
    if saved_method is not None and saved_method != state["config"].get("method"):
        raise ckpt.CheckpointError(path, f"holds a {state['config'].get('method')!r} run, but the run directory's "
                                         f"{CONFIG_NAME} says {saved_method!r}: the checkpoint comes from another run; "
                                         f"put that run's checkpoint back, or train this one again ({flags.fresh})")
    return state


def _config_yaml_method(run_dir: Path) -> Optional[str]:
    """The method RUN/config.yaml names, or None when it is missing or unreadable (it is only a copy)."""
    import yaml

    try:
        saved = yaml.safe_load((run_dir / CONFIG_NAME).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return saved.get("method") if isinstance(saved, dict) and isinstance(saved.get("method"), str) else None


def restore_method_state(method: Method, state: dict, path: Path, **kwargs) -> None:
    """ckpt.load_method_state, with a CheckpointError naming the file when the saved state does not fit."""
    try:
        ckpt.load_method_state(method, state["method"], **kwargs)
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise ckpt.CheckpointError(path, f"holds a state that does not fit method {method.name!r} "
                                         f"({type(err).__name__}: {ckpt._first_line(err)}); it is not this run's "
                                         f"checkpoint, or it is damaged") from None


def resolve_device(name: "str | torch.device") -> torch.device:
    """"auto" -> cuda when available else cpu; an unknown or unavailable device is a ConfigError naming it."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device: {name!r} is not a device name; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} asked for, but this torch sees no CUDA device; use cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device: {name!r} asked for, but there are {torch.cuda.device_count()} CUDA devices")
    return device


def run_config(run_dir: "str | Path") -> TrainConfig:
    """The resolved config a run was trained with (from its checkpoint)."""
    return load_config(load_run_state(run_dir)["config"])


def load_run(run_dir: "str | Path", device: "str | torch.device | None" = None, *, flags: Flags = PYTHON) -> Method:
    """The trained method of a run directory, with its parameters from the latest checkpoint.

    It has ``.ebm``, ``.generator``, ``.encoder``, ``log_prob_unnormalized(x)``, ``sample(n)``, ``reconstruct(x)``
    and ``.run_config`` (the resolved TrainConfig). The modules stay in training mode, as the reference codes
    sample (batch statistics in BatchNorm, spectral-norm power iterations running).
    """
    state = load_run_state(run_dir, flags)
    cfg = load_config(state["config"])
    if device is None:  # the run's device when this machine has it, else the CPU
        device = "cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu"
    device = resolve_device(device)
    model = dict(cfg.model)
    if model.get("cuda_graph") and device.type != "cuda":
        model["cuda_graph"] = False  # a speed option only: the same chains run eagerly where there is no GPU
    method = build_method(cfg.method, model, tuple(state["data_shape"]))
    restore_method_state(method, state, Path(run_dir) / ckpt.CHECKPOINT_NAME, training_state=False)
    method.use_averaged_weights()  # model.ema: a loaded run samples and scores with the averaged weights
    method = method.to(device)
    method.run_config = cfg
    method.run_iteration = int(state["iteration"])
    return method


# -- pictures ----------------------------------------------------------------------------------------------------
def render_pictures(method: Method, data: torch.Tensor, cfg: TrainConfig, run_dir: Path, iteration: int) -> Optional[Path]:
    """images/iter_NNNNNN.png (and images/latest.png): for 2-D data the true and EBM densities, EBM samples,
    generator samples and reconstructions; for square images, a grid of EBM samples. None when nothing applies
    or matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    from . import plotting

    images = Path(run_dir) / "images"
    path = images / f"iter_{iteration:06d}.png"
    dim = int(torch.Size(method.data_shape).numel())
    generator = torch.Generator(device=method.device).manual_seed(cfg.seed)
    image_data = len(method.data_shape) == 3 and method.data_shape[0] in (1, 3)
    n_pictured = PICTURE_IMAGES if image_data else PICTURE_SAMPLES  # a grid shows 100; big nets need no more
    samples = method.sample(n_pictured, generator=generator).detach().cpu()
    if method.data_shape == (2,):
        from .metrics import grid_density, true_grid_log_mass

        picked = data[torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.seed))[:PICTURE_SAMPLES]]
        bounds = PLOT_BOUNDS if is_toy(cfg.data) else plotting.sample_bounds(data)
        true_density = true_grid_log_mass(cfg.data, bounds, PICTURE_RESOLUTION).exp() if is_toy(cfg.data) else None
        model_density = grid_density(method.log_prob_unnormalized, bounds, PICTURE_RESOLUTION, device=method.device)
        generator_samples = method.generator_sample(PICTURE_SAMPLES, generator=generator)
        reconstructions = method.reconstruct(picked[:500])
        plotting.plot_2d_run(
            path, bounds=bounds, data=picked, ebm_samples=samples, true_density=true_density,
            model_density=model_density, generator_samples=generator_samples, reconstructions=reconstructions,
            title=f"{cfg.method} on {Path(cfg.data).name}, iteration {iteration}")
    elif image_data:  # images: sample and reconstruction grids
        panels = {"EBM samples": samples}
        generated = method.generator_sample(PICTURE_IMAGES, generator=generator)
        if generated is not None:
            panels["generator samples"] = generated.detach().cpu()
        rows = min(PICTURE_IMAGES // 2, len(data)) // 10  # rows of 10 data images, each over its reconstructions
        shown = to_model_range(data[:10 * rows])
        reconstructions = method.reconstruct(shown.to(method.device)) if rows else None
        if reconstructions is not None:
            pairs = torch.stack([shown.reshape(rows, 10, *shown.shape[1:]),
                                 reconstructions.detach().cpu().reshape(rows, 10, *shown.shape[1:])], dim=1)
            panels["data (odd rows) / reconstructions"] = pairs.reshape(20 * rows, *shown.shape[1:])
        plotting.plot_image_panels(path, panels, title=f"{cfg.method} on {Path(cfg.data).name}, iteration {iteration}")
    elif plotting.image_side(dim):
        plotting.plot_image_grid(path, samples.reshape(len(samples), -1), plotting.image_side(dim),
                                 title=f"{cfg.method} EBM samples, iteration {iteration}")
    else:  # vectors of other sizes: the first two coordinates
        plotting.plot_samples_2d(path, samples.reshape(len(samples), -1)[:, :2],
                                 title=f"{cfg.method} EBM samples (first two coordinates), iteration {iteration}")
    (images / "latest.png").write_bytes(path.read_bytes())
    return path


# -- evaluation --------------------------------------------------------------------------------------------------
def evaluate_method(method: Method, cfg: TrainConfig, n_samples: Optional[int] = None,
                    resolution: Optional[int] = None) -> dict[str, float]:
    """2-D data: grid KL / TV of the EBM density, MMD and mode coverage of its samples (dualmcmc.metrics);
    images: dualmcmc.metrics.images.evaluate_images (digits: Frechet distance and MMD in the features of the
    package's digits classifier, reconstruction MSE); other vector data: MMD of EBM and generator samples."""
    from .data import load_dataset
    from .metrics import evaluate_2d, mmd

    for key, value in (("n_samples", n_samples), ("resolution", resolution)):
        if value is not None and value < 2:
            raise ConfigError(f"evaluation {key} must be >= 2, got {value}")
    n = n_samples or cfg.eval.n_samples
    if len(method.data_shape) == 3:  # images: classifier-feature FD / MMD on digits, pixel MMD otherwise
        from .metrics.images import evaluate_images

        return evaluate_images(method, cfg.data, n_samples=n, seed=cfg.seed)
    if method.data_shape == (2,):
        return evaluate_2d(method.log_prob_unnormalized, method.sample, cfg.data, n_samples=n, seed=cfg.seed,
                           bounds=PLOT_BOUNDS, resolution=resolution or cfg.eval.resolution, device=method.device)
    try:
        data = load_dataset(cfg.data, n_samples=n, seed=cfg.seed + 1)
    except (OSError, ValueError, ImportError) as err:
        raise ConfigError(f"data: {err}") from None
    reference = data[torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.seed))[:n]].flatten(1)
    generator = torch.Generator(device=method.device).manual_seed(cfg.seed)
    scores = {"mmd": mmd(method.sample(len(reference), generator=generator).detach().cpu().flatten(1), reference)}
    gen = method.generator_sample(len(reference), generator=generator)
    if gen is not None:
        scores["generator_mmd"] = mmd(gen.detach().cpu().flatten(1), reference)
    return scores


def evaluate_run(run_dir: "str | Path", n_samples: Optional[int] = None, resolution: Optional[int] = None,
                 device=None, *, flags: Flags = PYTHON) -> dict[str, float]:
    """Evaluate a run's latest checkpoint and write RUN/eval.json. When eval.json cannot be written, the scores are
    still returned (and a warning names the file): a long evaluation is never lost to a read-only directory."""
    scores = score_run(run_dir, n_samples, resolution, device, flags=flags)
    try:
        write_scores(run_dir, scores)
    except OSError as err:
        import warnings

        warnings.warn(f"could not write {Path(run_dir) / EVAL_NAME} ({err.strerror}); the scores are only returned",
                      stacklevel=2)
    return scores


def score_run(run_dir: "str | Path", n_samples: Optional[int] = None, resolution: Optional[int] = None,
              device=None, *, flags: Flags = PYTHON) -> dict[str, float]:
    """The scores of a run's latest checkpoint (what evaluate_run writes to eval.json), without writing them."""
    method = load_run(run_dir, device, flags=flags)
    scores = evaluate_method(method, method.run_config, n_samples, resolution)
    return {"iteration": method.run_iteration, "n_samples": n_samples or method.run_config.eval.n_samples,
            "resolution": resolution or method.run_config.eval.resolution, **scores}


LOGLIK_NAME = "loglik.json"


def held_out_data(cfg: TrainConfig, spec: Optional[str] = None, n: int = 5000,
                  what: str = "data") -> tuple[torch.Tensor, str]:
    """(data the model never saw, what it is): ``spec`` when given; else fresh points of a toy density (another seed
    than training's), the 300 held-out digits, or, for other data, the run's own data (said in the name)."""
    from .data import sample_toy
    from .data.digits import load_digits_spec, parse_digits_spec

    if spec is not None:
        try:
            return load_dataset(spec, n_samples=n, seed=cfg.seed + 1), spec
        except (OSError, ValueError, ImportError) as err:
            raise ConfigError(f"{what} {spec!r}: {err}") from None
    if is_toy(cfg.data):
        return sample_toy(cfg.data, n, torch.Generator().manual_seed(cfg.seed + 10_007)), f"{cfg.data} (fresh points)"
    digits = parse_digits_spec(str(cfg.data))
    if digits is not None:  # the held-out digits, of the classes the run was trained on
        spec = "digits:test" + (f":classes={','.join(map(str, digits[1]))}" if digits[1] is not None else "")
        held_out = load_digits_spec(spec)
        return held_out, f"{spec} ({len(held_out)} held-out digits)"
    return load_dataset(cfg.data, n_samples=cfg.n_data, seed=cfg.seed), f"{cfg.data} (the training data: not held out)"


def log_likelihood_run(run_dir: "str | Path", *, n_chains: int = 1000, n_temps: int = 500, seed: int = 0,
                       data: Optional[str] = None, device=None, flags: Flags = PYTHON) -> dict:
    """AIS estimate of a run's log Z and held-out mean log-likelihood (:func:`dualmcmc.likelihood.run_log_likelihood`),
    with the data it used; 2-D runs also get the grid normaliser of [-4, 4]^2 (eval.resolution cells a side) to
    compare with (it leaves out the mass outside the box)."""
    from .data import toy_log_density
    from .likelihood import run_log_likelihood
    from .metrics.grid import cell_area, grid_points

    def named(argument: str) -> str:  # the interface's spelling: --n-chains or n_chains
        return "--" + argument.replace("_", "-") if flags is CLI else argument

    for name, value in (("n_chains", n_chains), ("n_temps", n_temps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ConfigError(f"{named(name)} must be an integer >= 2, got {value!r}")
    method = load_run(run_dir, device, flags=flags)
    cfg = method.run_config
    train_data = load_dataset(cfg.data, n_samples=cfg.n_data, seed=cfg.seed)
    held_out, what = held_out_data(cfg, data, what=named("data"))
    if tuple(held_out.shape[1:]) != tuple(train_data.shape[1:]):
        raise ConfigError(f"{named('data')}: its rows have shape {tuple(held_out.shape[1:])}, the run's data "
                          f"{tuple(train_data.shape[1:])}")
    found = run_log_likelihood(method, to_model_range(train_data), to_model_range(held_out), n_chains=n_chains,
                               n_temps=n_temps, seed=seed)
    found = {"iteration": method.run_iteration, "held_out_data": what, **found}
    if is_toy(cfg.data) or train_data.shape[1:] == (2,):
        _, _, points = grid_points((-4.0, 4.0), cfg.eval.resolution)
        cell = cell_area((-4.0, 4.0), cfg.eval.resolution)
        with torch.no_grad():
            values = method.log_prob_unnormalized(points.to(method.device)).double()
        found["grid_log_z"] = float(torch.logsumexp(values, dim=0)) + math.log(cell)
        true_log_density = toy_log_density(cfg.data) if is_toy(cfg.data) and data is None else None
        if true_log_density is not None:  # what the true density gives the same points: the model's ceiling
            truth = true_log_density(held_out.double())
            if torch.isfinite(truth).all():
                found["true_held_out_log_likelihood"] = float(truth.mean())
    return found


OOD_NAME = "ood.json"


def _model_data(spec: str, cfg: TrainConfig, what: str) -> torch.Tensor:
    """A data spec loaded and mapped to the model's range; a ConfigError naming ``what`` when it cannot be."""
    try:
        data = load_dataset(spec, n_samples=5000, seed=cfg.seed + 1)
    except (OSError, ValueError, ImportError) as err:
        raise ConfigError(f"{what} {spec!r}: {err}") from None
    return to_model_range(data).float()


def score_data(run_dir: "str | Path", data: str, *, device=None, flags: Flags = PYTHON) -> dict:
    """Per-example energies -log p~(x) = U(x)/T of ``data`` under a run's EBM, and log p(x) = log p~(x) - log Z when
    RUN/loglik.json holds an AIS estimate for this checkpoint: {"energy": (N,), "log_p": (N,) or absent,
    "log_z": ..., "iteration": ...}."""
    from .ood import energy_scores

    method = load_run(run_dir, device, flags=flags)
    x = _model_data(data, method.run_config, "--data" if flags is CLI else "data")
    _check_rows(x, method, "--data" if flags is CLI else "data")
    energy = energy_scores(method, x)
    found = {"iteration": method.run_iteration, "data": data, "energy": energy}
    estimate = read_json_object(Path(run_dir) / LOGLIK_NAME)
    if estimate is not None and estimate.get("iteration") == method.run_iteration and "log_z" in estimate:
        found.update(log_p=-energy - estimate["log_z"], log_z=estimate["log_z"])
    return found


def ood_run(run_dir: "str | Path", out_data: str, in_data: Optional[str] = None, *, seed: int = 0, device=None,
            flags: Flags = PYTHON) -> dict:
    """How well a run's EBM tells ``in_data`` (default: its held-out data) from ``out_data`` (a data spec, or
    "noise" / "inverted" made from the in-data) by energy: :func:`dualmcmc.ood.ood_metrics`."""
    from .ood import SYNTHETIC_OOD, energy_scores, ood_metrics, out_of_distribution_data

    method = load_run(run_dir, device, flags=flags)
    cfg = method.run_config
    if in_data is None:
        x_in, in_name = held_out_data(cfg)
        x_in = to_model_range(x_in).float()
    else:
        x_in, in_name = _model_data(in_data, cfg, "--in-data" if flags is CLI else "in_data"), in_data
    if out_data in SYNTHETIC_OOD:
        x_out = out_of_distribution_data(out_data, x_in, seed)
    else:
        x_out = _model_data(out_data, cfg, "--out-data" if flags is CLI else "out_data")
    _check_rows(x_in, method, "--in-data" if flags is CLI else "in_data")
    _check_rows(x_out, method, "--out-data" if flags is CLI else "out_data")
    found = ood_metrics(energy_scores(method, x_in), energy_scores(method, x_out))
    return {"iteration": method.run_iteration, "in_data": in_name, "out_data": out_data, **found}


def completion_run(run_dir: "str | Path", mask: str, *, data: Optional[str] = None, n: int = 100,
                   steps: Optional[int] = None, seed: int = 0, device=None, flags: Flags = PYTHON) -> dict:
    """Complete ``n`` examples of ``data`` (default: the run's held-out data) with ``mask`` missing
    (:func:`dualmcmc.complete.complete`); returns the errors over the missing entries (of the completion, of its
    start, of filling with the mean) and the tensors truth / observed_mask / start / completed."""
    from .complete import complete, completion_errors, make_mask, start_states

    cli = flags is CLI
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{'-n' if cli else 'n'} must be an integer >= 1, got {n!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
        raise ConfigError(f"{'--steps' if cli else 'steps'} must be an integer >= 0, got {steps!r}")
    method = load_run(run_dir, device, flags=flags)
    if data is None:
        x, name = held_out_data(method.run_config)
        x = to_model_range(x).float()
    else:
        x, name = _model_data(data, method.run_config, "--data" if cli else "data"), data
    _check_rows(x, method, "--data" if cli else "data")
    g = torch.Generator().manual_seed(seed)
    x = x[torch.randperm(len(x), generator=g)[:n]]
    try:
        observed = make_mask(mask, tuple(x.shape), generator=g)
    except ValueError as err:
        raise ConfigError(f"{'--mask' if cli else 'mask'}: {err}") from None
    chain_generator = torch.Generator(device=method.device).manual_seed(seed)
    x, observed = x.to(method.device), observed.to(method.device)
    start = start_states(method, x, observed, chain_generator)
    completed = complete(method, x, observed, steps=steps, start=start, generator=chain_generator)
    errors = completion_errors(x, completed, start, observed)
    return {"iteration": method.run_iteration, "method": method.name, "data": name, "mask": mask, "n": len(x),
            **errors, "truth": x, "observed_mask": observed, "start": start, "completed": completed}


def _check_rows(x: torch.Tensor, method: Method, what: str) -> None:
    if tuple(x.shape[1:]) != method.data_shape:
        raise ConfigError(f"{what}: its rows have shape {tuple(x.shape[1:])}; the run's model takes {method.data_shape}")
    if len(x) == 0:
        raise ConfigError(f"{what}: the data is empty")


def read_json_object(path: Path) -> Optional[dict]:
    """A JSON object from ``path``, or None when the file is missing, unreadable or holds something else."""
    try:
        found = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def record_result(path: Path, key: str, found: dict) -> None:
    """Write ``found`` under ``key`` into the JSON object at ``path`` (atomically), keeping the other keys: one entry
    per setting (ood.json: per data pair; complete.json: per data and mask), the latest of each."""
    kept = read_json_object(path) or {}
    kept[key] = found
    ckpt.atomic_write_text(path, json.dumps(kept, indent=2) + "\n")


def write_scores(run_dir: "str | Path", scores: dict) -> Path:
    """RUN/eval.json (atomically); OSError naming the file when the directory is not writable."""
    path = Path(run_dir) / EVAL_NAME
    ckpt.atomic_write_text(path, json.dumps(scores, indent=2) + "\n")
    return path


def read_scores(run_dir: "str | Path") -> Optional[dict]:
    """RUN/eval.json, or None when it is missing or unreadable."""
    return read_json_object(Path(run_dir) / EVAL_NAME)


__all__ = ["load_run", "run_config", "evaluate_run", "score_run", "evaluate_method", "render_pictures", "ConfigError"]

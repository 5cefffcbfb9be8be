"""Training configuration: YAML -> a validated, fully resolved :class:`TrainConfig`, with ``--set`` overrides.

Every key the YAML file may hold is a field below; anything else is an error that lists the valid keys, and a
value of the wrong type is an error naming the key. ``model`` holds the method's hyper-parameters and is checked
against that method's ``Config`` dataclass (dualmcmc.methods).
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from .validation import ConfigError, check_type


@dataclass
class LogConfig:
    log_every: int = 10  # iterations between metric lines (averaged over that window)
    image_every: int = 500  # iterations between pictures (0: only at the end)
    checkpoint_every: int = 500  # iterations between checkpoints (always one at the end)
    eval_every: int = 0  # iterations between in-training evaluations (0: only the final one)
    tensorboard: bool = True  # also write TensorBoard events to RUN/tb when tensorboard is installed
    progress: bool = True  # tqdm progress bar (only when stderr is a terminal)


@dataclass
class GuardConfig:
    max_energy_gap: float = 1e4  # the guard fires when |E(data) - E(samples)| exceeds this (the reference's 1e4)
    max_recoveries: int = 3  # roll back and slow down this many times before stopping (0: stop, as the reference)
    backoff: float = 0.5  # each recovery multiplies the learning rates and the chain's step and noise by this


@dataclass
class CooldownConfig:
    # The last `fraction` of the iterations lowers every learning rate linearly to `factor` times its value (0: off).
    # The nets' levels (in an EBM, each mode's weight) wander by an amount that grows with the learning rate, and an
    # average of the weights (model.ema) turns that wandering into a bias; slower steps at the end shrink both.
    fraction: float = 0.0
    factor: float = 0.25


@dataclass
class EvalConfig:
    n_samples: int = 5000  # model and true samples for MMD / mode coverage (images: for FD / MMD / FID)
    resolution: int = 500  # grid cells per axis for the KL / TV of the normalised density (2-D data only)


@dataclass
class TrainConfig:
    method: str  # a key of dualmcmc.methods.METHODS
    # a toy name (dualmcmc.data.TOY_DENSITIES); "digits" (sklearn's 8x8 digits, train split, 1 x 8 x 8);
    # a .npy / .npz path (N x D vectors, or images N x C x H x W / N x H x W x C / N x H x W); a folder of image
    # files; "cifar10:ROOT" / "celeba:ROOT" (torchvision, local files only). Images are fed in [-1, 1].
    data: str
    iterations: int = 1000
    out: Optional[str] = None  # run directory (None: runs/<method>_<data name>)
    seed: int = 0
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    batch_size: int = 256  # the global batch: under torchrun each of N processes trains on batch_size / N rows
    n_data: int = 50_000  # size of the data set drawn from a toy density (ignored for files)
    # CPU threads torch uses while training (torch.set_num_threads; put back afterwards). 1: the small 2-D and 8x8
    # networks lose 1.3-1.6x on an idle 2-core machine but gain 3x beside one busy process (RESULTS.md,
    # bench_threads); 0 keeps torch's default (one per core).
    threads: int = 1
    model: dict = field(default_factory=dict)  # the method's hyper-parameters (its Config fields)
    log: LogConfig = field(default_factory=LogConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    cooldown: CooldownConfig = field(default_factory=CooldownConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        """Plain dict (YAML-able: tuples become lists)."""
        return _plain(dataclasses.asdict(self))


SECTIONS = {"log": LogConfig, "guard": GuardConfig, "cooldown": CooldownConfig, "eval": EvalConfig}
REQUIRED = ("method", "data")
# Keys that define the model and its data: a run may only resume with the same values.
IDENTITY_KEYS = ("method", "data", "n_data", "seed", "batch_size", "model")


def load_config(source: "str | Path | dict | TrainConfig", overrides: Iterable[str] = ()) -> TrainConfig:
    """A validated TrainConfig from a YAML path, a dict or a TrainConfig, after applying ``key=value`` overrides."""
    if isinstance(source, TrainConfig):
        raw = source.to_dict()
    elif isinstance(source, dict):
        raw = copy.deepcopy(source)
    else:
        raw = read_yaml(source)
    for override in overrides:
        key, value = parse_override(override)
        set_dotted(raw, key, value)
    return validate(raw)


def read_yaml(path: "str | Path") -> dict:
    import yaml  # PyYAML: only the config layer needs it

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys, got {type(raw).__name__}")
    return raw


def parse_override(text: str) -> tuple[str, Any]:
    """'model.x_steps=20' -> ('model.x_steps', 20); the value is read as a YAML scalar (or flow list)."""
    import yaml

    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. model.x_steps=20)")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: cannot read the value as YAML ({err})") from None
    return key, parsed


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """raw['a']['b'] = value for key 'a.b', creating the section dict when it is missing."""
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {'.'.join(parts[: depth + 1])!r} is not a section")
        node = child
    node[parts[-1]] = value


def validate(raw: dict) -> TrainConfig:
    """TrainConfig from a plain dict; unknown keys, missing required keys and bad types raise ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config must be a mapping, got {type(raw).__name__}")
    top_fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    _reject_unknown(raw, top_fields, "top-level")
    missing = [k for k in REQUIRED if raw.get(k) is None]
    if missing:
        raise ConfigError(f"config is missing required key(s) {missing}")
    kwargs: dict[str, Any] = {}
    hints = typing.get_type_hints(TrainConfig)
    for name, value in raw.items():
        if name in SECTIONS:
            kwargs[name] = _section(name, value)
        elif name == "model":
            kwargs[name] = {} if value is None else check_type(name, value, dict)
        else:
            kwargs[name] = check_type(name, value, hints[name])
    cfg = TrainConfig(**kwargs)
    cfg.model = resolve_model_params(cfg.method, cfg.model)
    _check_ranges(cfg)
    return cfg


def resolve_model_params(method: str, params: dict) -> dict:
    """All Config fields of ``method`` (defaults filled in), every value checked by the method's Config (its types,
    ranges and the rules between keys: dualmcmc.methods.settings), each error naming the ``model.`` key."""
    from .methods import METHODS  # torch-heavy: only when a config is actually validated
    from .methods.settings import validate_params

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; available methods: {sorted(METHODS)}")
    config = validate_params(METHODS[method].Config, params, f"model (method {method!r})", prefix="model.")
    return _plain(dataclasses.asdict(config))


def _speed_keys() -> tuple[str, ...]:
    from .methods.settings import speed_keys

    return speed_keys()


def identity(cfg: TrainConfig) -> dict:
    """The keys that must match for a run directory to be resumed with ``cfg``; the model's speed options
    (SpeedOptions: cuda_graph, compile, autocast, channels_last) are left out, as they change no result: a GPU run
    may go on without CUDA graphs on a CPU, for example."""
    full = cfg.to_dict()
    out = {k: full[k] for k in IDENTITY_KEYS}
    out["model"] = {k: v for k, v in out["model"].items() if k not in _speed_keys()}
    return out


def identity_changes(saved_config: dict, cfg: TrainConfig) -> list[str]:
    """'key: saved -> now' for every identity key (model keys one by one) where ``cfg`` differs from a run's
    saved config."""
    now = identity(cfg)
    saved = {k: saved_config.get(k) for k in now}
    saved["model"] = {k: v for k, v in (saved["model"] or {}).items() if k not in _speed_keys()}
    if saved.get("method") == now["method"]:  # keys added to the method since the run was written: their defaults
        defaults = resolve_model_params(now["method"], {})
        saved["model"] = {**{k: v for k, v in defaults.items() if k not in _speed_keys()}, **saved["model"]}
    changes = []
    for key in IDENTITY_KEYS:
        if key == "model":
            for name in sorted(set(saved["model"]) | set(now["model"])):
                before, after = saved["model"].get(name, "(unset)"), now["model"].get(name, "(unset)")
                if before != after:
                    changes.append(f"model.{name}: {before!r} -> {after!r}")
        elif saved[key] != now[key]:
            changes.append(f"{key}: {saved[key]!r} -> {now[key]!r}")
    return changes


def default_out(cfg: TrainConfig) -> str:
    name = cfg.data.split(":", 1)[0] if ":" in cfg.data else Path(cfg.data).stem  # "cifar10:ROOT" -> cifar10
    return str(Path("runs") / f"{cfg.method}_{name}")


# -- helpers -------------------------------------------------------------------------------------------------
def _reject_unknown(raw: dict, valid: dict, where: str) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(valid), key=str)
    if unknown:
        raise ConfigError(f"unknown {where} key(s) {unknown}; valid keys: {sorted(valid)}")


def _section(name: str, value: Any):
    cls = SECTIONS[name]
    if value is None:
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _reject_unknown(value, fields, f"'{name}' section")
    hints = typing.get_type_hints(cls)
    return cls(**{k: check_type(f"{name}.{k}", v, hints[k]) for k, v in value.items()})


SEED_MAX = 2**63 - 1  # torch's generators take 64-bit seeds; the loop adds small offsets (ranks, recoveries)
COUNT_MAX = 2**62  # counts beyond this overflow the int64 arithmetic of torch and numpy


def _check_ranges(cfg: TrainConfig) -> None:
    """Every top-level and section value in its range (the model keys: the method's Config), each error naming the
    key, the value and what is allowed, so that a value that fails never leaves a run behind."""
    def need(ok: bool, key: str, value: Any, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"{key} must be {allowed}, got {value!r}")

    need(0 <= cfg.seed <= SEED_MAX, "seed", cfg.seed, "an integer in [0, 2**63 - 1]")
    need(0 <= cfg.threads <= 1024, "threads", cfg.threads, "an integer in [0, 1024] (0: torch's default)")
    need(isinstance(cfg.data, str) and cfg.data.strip() != "", "data", cfg.data, "a data set name or a path")
    need(cfg.out is None or cfg.out.strip() != "", "out", cfg.out, "a directory path (or null for runs/...)")
    positive = {"iterations": cfg.iterations, "batch_size": cfg.batch_size, "n_data": cfg.n_data,
                "log.log_every": cfg.log.log_every}
    non_negative = {"log.image_every": cfg.log.image_every, "log.checkpoint_every": cfg.log.checkpoint_every,
                    "log.eval_every": cfg.log.eval_every}
    for key, value in positive.items():
        need(1 <= value <= COUNT_MAX, key, value, "an integer >= 1")
    for key, value in non_negative.items():
        need(0 <= value <= COUNT_MAX, key, value, "an integer >= 0 (0: off)")
    for key, value in {"eval.n_samples": cfg.eval.n_samples, "eval.resolution": cfg.eval.resolution}.items():
        need(2 <= value <= COUNT_MAX, key, value, "an integer >= 2")
    # NaN would silently switch the guard off; inf is what 0 already says
    need(0 <= cfg.guard.max_energy_gap < float("inf"), "guard.max_energy_gap", cfg.guard.max_energy_gap,
         "a finite number >= 0 (0: no energy-gap check)")
    need(0 <= cfg.guard.max_recoveries <= 1000, "guard.max_recoveries", cfg.guard.max_recoveries,
         "an integer in [0, 1000] (0: stop at the first divergence)")
    need(0.0 < cfg.guard.backoff <= 1.0, "guard.backoff", cfg.guard.backoff, "in (0, 1]")
    need(0.0 <= cfg.cooldown.fraction < 1.0, "cooldown.fraction", cfg.cooldown.fraction, "in [0, 1) (0: no cooldown)")
    need(0.0 < cfg.cooldown.factor <= 1.0, "cooldown.factor", cfg.cooldown.factor, "in (0, 1]")


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (YAML and checkpoint friendly)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

"""A method's settings: its Config dataclass fields carry their roles and ranges in ``field(metadata=...)``, and one
validator reads them, for the YAML config (``model:`` keys) and for Configs built in Python alike.

    x_step_size: float = setting(0.05, chain="x", role="step_size")    # a chain's drift step: > 0
    lr_ebm: float = setting(1e-4, check="positive")

Roles of a chain's fields (``chain`` names the chain, "x" or "z"): steps, step_size, noise_std, clamp, mala,
ladder (replica exchange: temperature multipliers from 1 up), temper_prior (whether the ladder's hot rungs temper
the prior too), prior_sigma (the Gaussian prior's std: precision
1/s**2, None for none), test_steps, test_step_size, test_noise_std (the test-time chain; None: as in training).
:func:`langevin_spec` builds a chain's :class:`~dualmcmc.kernels.Langevin` from them; :class:`SpeedOptions` fields are marked ``speed`` (they change no
result, so a run may resume with other values).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Optional

from ..accel import AUTOCAST_DTYPES
from ..kernels import Langevin
from ..validation import ConfigError, check_range, check_type

_ROLE_RANGES = {"steps": "non_negative_count", "step_size": "positive", "noise_std": "non_negative",
                "prior_sigma": "positive", "test_steps": "non_negative_count", "test_step_size": "positive",
                "test_noise_std": "non_negative"}
ROLES = (*_ROLE_RANGES, "clamp", "mala", "ladder", "temper_prior")


def setting(default: Any = dataclasses.MISSING, *, check: Optional[str] = None, chain: Optional[str] = None,
            role: Optional[str] = None, choices: Optional[tuple] = None, speed: bool = False) -> Any:
    """A Config field with its range (``check``, a name of dualmcmc.validation.RANGES), its place in a chain
    (``chain`` and ``role``), its allowed values (``choices``) or its being a speed option."""
    if role is not None and role not in ROLES:
        raise ValueError(f"setting: unknown role {role!r}; roles: {ROLES}")
    metadata = {"check": check or _ROLE_RANGES.get(role), "chain": chain, "role": role, "choices": choices,
                "speed": speed}
    return dataclasses.field(default=default, metadata=metadata)


@dataclass
class SpeedOptions:
    """Speed options for the chains, shared by every method's Config (README, "Speed").

    They apply to the networks the Langevin chains call (about 70 of the ~77 network passes of a Dual-MCMC
    iteration); the loss passes stay eager float32, so the learning itself is unchanged up to bf16 rounding of the
    chains' gradients. Off by default: the reference iteration.

    cuda_graph: capture each fixed-shape chain into a CUDA graph once and replay it (:mod:`dualmcmc.graphs`); needs a
        CUDA device, and neither MALA nor explicit_noise.
    compile: ``torch.compile`` the networks the chains call.
    autocast: "bf16" or "fp16": run those networks under autocast; the chain state and the update stay float32.
    channels_last: NHWC weights and inputs for conv nets (faster convolutions on tensor cores).
    """

    cuda_graph: bool = setting(False, speed=True)
    compile: bool = setting(False, speed=True)
    autocast: Optional[str] = setting(None, speed=True, choices=(*AUTOCAST_DTYPES, None))
    channels_last: bool = setting(False, speed=True)


@dataclass
class CommonSettings(SpeedOptions):
    """Keys every method has: the speed options, the chains' noise source and diagnostics, and the nets' ``arch``.

    explicit_noise: chains draw their noise with torch.randn (bit parity with eager reference loops) instead of the
        op's own Philox stream.
    chain_diagnostics: log per-chain energies and gradient norms of the training chains.
    arch: "auto" (MLPs for vectors, conv nets for images), "mlp", "conv", "cifar10", "celeba64" (dualmcmc.nets).
    ema: the decay of an exponential moving average of the nets' weights (e.g. 0.999), which sampling, pictures and
        evaluation use instead of the last weights (:meth:`Method.averaged_weights`); None: no average (the
        reference). Training itself, chains included, always uses the live weights.
    """

    explicit_noise: bool = False
    chain_diagnostics: bool = True
    arch: str = "auto"
    ema: Optional[float] = setting(None, check="fraction")


@dataclass
class EnergyNetSettings:
    """The energy net's width, depth (MLPs) and activation."""

    ebm_hidden: int = setting(256, check="count")
    ebm_layers: int = setting(3, check="count")
    ebm_activation: str = "silu"


@dataclass
class GeneratorNetSettings:
    generator_hidden: int = setting(256, check="count")
    generator_layers: int = setting(3, check="count")


@dataclass
class EncoderNetSettings:
    encoder_hidden: int = setting(256, check="count")
    encoder_layers: int = setting(3, check="count")


def speed_keys() -> tuple[str, ...]:
    """The names of the speed options (not part of a run's identity)."""
    return tuple(f.name for f in dataclasses.fields(SpeedOptions))


def chain_fields(config_cls: type, chain: str) -> dict[str, str]:
    """role -> field name for the fields of ``chain`` in a Config class."""
    return {f.metadata["role"]: f.name for f in dataclasses.fields(config_cls)
            if f.metadata.get("chain") == chain and f.metadata.get("role")}


def chains_of(config_cls: type) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f.metadata["chain"] for f in dataclasses.fields(config_cls) if f.metadata.get("chain")))


def validate_params(config_cls: type, params: Optional[dict], where: str, prefix: str = "") -> Any:
    """``config_cls`` built from a flat dict of its fields, every value checked (:func:`check_config`); unknown keys
    raise a ConfigError listing the valid ones (``where`` names the section, e.g. "model (method 'dual_mcmc')")."""
    params = dict(params or {})
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(params) - set(fields), key=str)
    if unknown:
        raise ConfigError(f"unknown {where} key(s) {unknown}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(config_cls)
    values = {name: check_type(f"{prefix}{name}", value, hints[name]) for name, value in params.items()}
    config = config_cls(**values)
    check_config(config, prefix)
    return config


def check_config(config: Any, prefix: str = "") -> None:
    """Every field of a Config against its metadata (range, choices, clamp pairs, tuples of numbers) and the rules
    between fields (MALA needs noise; a CUDA graph cannot capture MALA or explicit noise); then the Config's own
    ``check(prefix)`` when it has one. ConfigErrors name the key (with ``prefix``, e.g. "model.")."""
    for f in dataclasses.fields(config):
        key, value, meta = f"{prefix}{f.name}", getattr(config, f.name), f.metadata
        if value is None:
            continue
        if meta.get("choices") is not None:
            _check_choice(key, value, meta["choices"])
        if meta.get("role") == "clamp":
            _check_clamp(key, value)
        elif meta.get("role") == "ladder":
            _check_ladder(key, value)
        elif isinstance(value, tuple):
            _check_numbers(key, value, f.default)
        if meta.get("check") and not isinstance(value, bool) and isinstance(value, (int, float)):
            check_range(key, value, meta["check"])
    for chain in chains_of(type(config)):
        roles = chain_fields(type(config), chain)
        mala, noise, ladder = roles.get("mala"), roles.get("noise_std"), roles.get("ladder")
        if mala and noise and getattr(config, mala) and not getattr(config, noise) > 0:
            raise ConfigError(f"{prefix}{mala} needs a noisy chain: set {prefix}{noise} > 0 (e.g. equal to "
                              f"{prefix}{roles['step_size']})")
        if ladder and getattr(config, ladder) is not None:
            if not getattr(config, noise) > 0 or (mala and getattr(config, mala)):
                raise ConfigError(f"{prefix}{ladder} (replica exchange) runs unadjusted chains with noise: set "
                                  f"{prefix}{noise} > 0 and {prefix}{mala} false")
            if getattr(config, "cuda_graph", False):
                raise ConfigError(f"cuda_graph: true cannot capture replica exchange ({prefix}{ladder}); set one of "
                                  "them off")
    if getattr(config, "cuda_graph", False):
        malas = [f"{prefix}{roles['mala']}" for roles in map(lambda c: chain_fields(type(config), c),
                                                                 chains_of(type(config)))
                 if "mala" in roles and getattr(config, roles["mala"])]
        if malas:
            raise ConfigError(f"cuda_graph: true cannot capture a MALA chain ({', '.join(malas)}: true): the accept "
                              "step is per-chain control flow; turn one of them off")
        if getattr(config, "explicit_noise", False):
            raise ConfigError("cuda_graph: true needs the op's own (graph-safe) noise: set explicit_noise: false")
    if hasattr(config, "check"):
        config.check(prefix)


def _check_choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        named = sorted(c for c in choices if c is not None)
        raise ConfigError(f"{key} must be one of {named}{' or null' if None in choices else ''}, got {value!r}")


def _check_clamp(key: str, value: tuple) -> None:
    ok = len(value) == 2 and all(v is None or not isinstance(v, bool) and isinstance(v, (int, float)) for v in value)
    if not ok:
        raise ConfigError(f"{key} must be [lo, hi] (numbers, or null for no bound), got {list(value)!r}")
    if None not in value and not value[0] < value[1]:
        raise ConfigError(f"{key} must have lo < hi, got {list(value)!r}")


def _check_ladder(key: str, value: tuple) -> None:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not value or not numbers or value[0] != 1 or any(not b > a for a, b in zip(value, value[1:])) \
            or not all(v < float("inf") for v in value):
        raise ConfigError(f"{key} must be a list of increasing temperature multipliers starting at 1 (e.g. [1, 4, 16]),"
                          f" or null for one replica; got {list(value)!r}")


def _check_numbers(key: str, value: tuple, default: Any) -> None:
    length = len(default) if isinstance(default, tuple) else len(value)
    if len(value) != length or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{key} must be a list of {length} numbers, got {list(value)!r}")


def langevin_spec(config: Any, chain: str, *, test: bool = False, scale: float = 1.0,
                  prior_precision: Optional[float] = None, diagnostics: bool = False) -> Langevin:
    """The :class:`~dualmcmc.kernels.Langevin` of ``chain`` from a Config's fields (by their roles).

    ``test``: the test-time chain (test_* fields, each None = the training value); ``scale``: a recovery's backoff,
    applied to step size and noise alike (the config itself stays as given); ``prior_precision``: for chains whose
    Gaussian prior has no field (None: 1/prior_sigma**2 from the prior_sigma field, 0 without one).
    """
    roles = chain_fields(type(config), chain)
    if not roles:
        raise ValueError(f"no chain {chain!r} in {type(config).__name__}; chains: {chains_of(type(config))}")

    def value(role: str, default: Any = None) -> Any:
        return getattr(config, roles[role]) if role in roles else default

    steps, step_size, noise_std = value("steps"), value("step_size"), value("noise_std")
    if test:
        steps = steps if value("test_steps") is None else value("test_steps")
        step_size = step_size if value("test_step_size") is None else value("test_step_size")
        noise_std = noise_std if value("test_noise_std") is None else value("test_noise_std")
    if prior_precision is None:
        sigma = value("prior_sigma")
        prior_precision = 0.0 if sigma is None else 1.0 / sigma**2
    clamp, ladder = value("clamp"), value("ladder")
    return Langevin(steps, step_size * scale, noise_std * scale, prior_precision,
                    None if clamp is None else tuple(clamp), bool(value("mala", False)),
                    bool(getattr(config, "explicit_noise", False)), diagnostics,
                    None if ladder is None else tuple(ladder), bool(value("temper_prior", True)))

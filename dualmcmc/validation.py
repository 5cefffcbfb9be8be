"""Checking values against their declared types and ranges: the one checker behind the YAML config (dualmcmc.config)
and the methods' Config dataclasses (dualmcmc.methods.settings). Needs no torch."""
from __future__ import annotations

import math
import typing
from typing import Any


class ConfigError(ValueError):
    """A configuration (file, key, value, data set or method) the user has to fix; the message says what."""


def check_type(key: str, value: Any, annotation: Any) -> Any:
    """``value`` if it fits ``annotation`` (int counts as float; lists as tuples), else ConfigError naming ``key``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return check_type(key, value, option)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    expected = origin or annotation
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is float and isinstance(value, str):  # YAML 1.1 reads '1e-4' as a string
        try:
            return float(value)
        except ValueError:
            pass
    if expected is tuple and isinstance(value, list):
        return tuple(value)
    if expected is bool and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if expected is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected int, got bool {value!r}")
    if expected is Any or isinstance(value, expected):
        return value
    name = getattr(expected, "__name__", expected)
    raise ConfigError(f"{key}: expected {name}, got {type(value).__name__} {value!r}")


# Ranges by name: (test, what is allowed). Every one also refuses NaN, which would switch a check off silently.
RANGES = {
    "positive": (lambda v: math.isfinite(v) and v > 0, "> 0 (and finite)"),
    "non_negative": (lambda v: math.isfinite(v) and v >= 0, ">= 0 (and finite)"),
    "finite": (lambda v: math.isfinite(v), "finite"),
    "fraction": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "unit": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "count": (lambda v: v >= 1, "an integer >= 1"),
    "non_negative_count": (lambda v: v >= 0, "an integer >= 0"),
}


def check_range(key: str, value: Any, rule: str) -> None:
    """ConfigError naming ``key``, the value and what is allowed, when ``value`` breaks the named ``rule``."""
    test, allowed = RANGES[rule]
    if not test(value):
        raise ConfigError(f"{key} must be {allowed}, got {value!r}")

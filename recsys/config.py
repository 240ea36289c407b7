"""Config dataclasses from flat mappings (TOML tables), with unknown keys as errors."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names it and the valid choices."""


def from_dict(cls: type[T], values: Mapping[str, Any], *, where: str = "") -> T:
    """Build the dataclass ``cls`` from ``values``; an unknown key is an error.

    Parameters
    ----------
    cls : a dataclass type whose fields all have defaults or are given in ``values``.
    values : flat mapping of field name -> value (one TOML table).
    where : context for error messages, e.g. ``"experiments/configs/als.toml [model]"``.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    ctx = f" in {where}" if where else ""
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown}{ctx} for {cls.__name__}; valid keys are: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints.get(k), k, cls.__name__, ctx) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{cls.__name__}{ctx}: {exc}") from exc


def _coerce(value: Any, hint: Any, key: str, owner: str, ctx: str) -> Any:
    """Light type check: ints are accepted for floats, lists become tuples; mismatches raise."""
    if hint is None:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        hint = args[0] if len(args) == 1 else hint
        origin = typing.get_origin(hint)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise ConfigError(
            f"{owner}.{key}{ctx} must be {hint.__name__}, got {type(value).__name__} {value!r}"
        )
    if origin is typing.Literal and value not in typing.get_args(hint):
        raise ConfigError(f"{owner}.{key}{ctx} must be one of {list(typing.get_args(hint))}, got {value!r}")
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """Flat dict of a config dataclass (tuples as lists), for logging and TOML round trips."""
    out = {}
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file with an error that names the file on a syntax problem."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist; check the path (configs live in experiments/configs/)")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}") from exc

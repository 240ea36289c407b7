"""Hyperparameter search spaces as plain data: each model declares its own beside its config
(``Model.search_space``), and ``pipelines.tune`` turns them into Optuna suggestions. The library itself
never imports Optuna.

    >>> space = {"dim": Choice(64, 128), "lr": Float(1e-4, 1e-1, log=True), "window": Int(2, 20)}
    >>> sorted(space), space["lr"].describe()
    (['dim', 'lr', 'window'], 'float in [0.0001, 0.1], log scale')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Int:
    """An integer in ``[low, high]`` (``step`` apart; ``log`` spacing)."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def describe(self) -> str:
        return f"int in [{self.low}, {self.high}]" + (", log scale" if self.log else "")


@dataclass(frozen=True)
class Float:
    """A float in ``[low, high]`` (``log`` spacing)."""

    low: float
    high: float
    log: bool = False

    def describe(self) -> str:
        return f"float in [{self.low}, {self.high}]" + (", log scale" if self.log else "")


class Choice:
    """One of a few values (numbers, strings or booleans)."""

    def __init__(self, *values: Any) -> None:
        if not values:
            raise ValueError("Choice needs at least one value")
        self.values = tuple(values)

    def describe(self) -> str:
        return "one of " + ", ".join(str(v) for v in self.values)

    def __repr__(self) -> str:
        return f"Choice{self.values!r}"


Param = Int | Float | Choice
#: a model's search space: config field -> its range
SearchSpace = dict[str, Param]


LADDER = 4  # points a coordinate search tries along a range: both bounds and evenly spaced (log or linear) between


def ladder(param: Int | Float, points: int = LADDER) -> list[Any]:
    """``points`` values spanning a range, both bounds included, evenly spaced on its scale (an ``Int``'s rounded
    to its step grid, repeats dropped).

    >>> ladder(Int(3, 20, log=True)), ladder(Float(-0.5, 1.0)), ladder(Float(0.025, 0.1, log=True))
    ([3, 6, 11, 20], [-0.5, 0.0, 0.5, 1.0], [0.025, 0.039685026, 0.062996052, 0.1])
    """
    lo, hi = (math.log(param.low), math.log(param.high)) if param.log else (param.low, param.high)
    raw = [lo + (hi - lo) * i / (points - 1) for i in range(points)]
    values = [math.exp(v) for v in raw] if param.log else raw
    if isinstance(param, Int):
        snapped = [min(param.low + round((v - param.low) / param.step) * param.step, param.high) for v in values]
        return list(dict.fromkeys(int(v) for v in snapped))
    return list(dict.fromkeys(float(f"{v:.8g}") for v in values))


def moves(param: Param, value: Any) -> list[Any]:
    """The one-parameter steps from ``value`` a coordinate search tries, nearest first: a ``Choice``'s other
    values (its neighbours in order first); a range's :func:`ladder`, without the points within a third of a
    rung of ``value`` (on the range's scale): a step too small to tell from the noise of a fit.

    >>> moves(Int(3, 20, log=True), 8), moves(Float(-0.5, 1.0), 0.9), moves(Choice(1e-3, 1e-4, 0.0), 1e-4)
    ([6, 11, 20, 3], [0.5, 0.0, -0.5], [0.0, 0.001])
    """
    if isinstance(param, Choice):
        if value not in param.values:
            return list(param.values)
        i = param.values.index(value)
        order = sorted(range(len(param.values)), key=lambda j: (abs(j - i), -j))
        return [param.values[j] for j in order if j != i]
    if not isinstance(param, Int | Float):
        raise TypeError(f"unknown search-space entry {param!r}")

    def scaled(v: float) -> float:
        return math.log(v) if param.log else float(v)

    rung = (scaled(param.high) - scaled(param.low)) / (LADDER - 1)
    far = [v for v in ladder(param) if abs(scaled(v) - scaled(value)) > rung / 3]
    return sorted(far, key=lambda v: (abs(scaled(v) - scaled(value)), -v))


def check_space(space: SearchSpace, fields: set[str], where: str) -> None:
    """Every key of ``space`` must be a field of the model's config (``fields``); raises ``ValueError``."""
    unknown = sorted(set(space) - fields)
    if unknown:
        raise ValueError(f"{where}: search space names {unknown}, which are not config fields ({sorted(fields)})")

"""Hyperparameter search spaces as plain data: each model declares its own beside its config
(``Model.search_space``), and ``pipelines.tune`` turns them into Optuna suggestions. The library itself
never imports Optuna.

    >>> space = {"dim": Choice(64, 128), "lr": Float(1e-4, 1e-1, log=True), "window": Int(2, 20)}
    >>> sorted(space), space["lr"].describe()
    (['dim', 'lr', 'window'], 'float in [0.0001, 0.1], log scale')
"""

from __future__ import annotations

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


def moves(param: Param, value: Any) -> list[Any]:
    """The one-parameter steps from ``value`` a coordinate search tries, nearest first: a ``Choice``'s other
    values (the neighbours in its order first), a log range's value doubled and halved, a linear range's value
    a sixth of the range up and down (an ``Int``: at least ``step``), each clipped to the range; never
    ``value`` itself.

    >>> moves(Int(3, 20, log=True), 8), moves(Float(-0.5, 1.0), 0.9), moves(Choice(1e-3, 1e-4, 0.0), 1e-4)
    ([16, 4], [1.0, 0.65], [0.0, 0.001])
    """
    if isinstance(param, Choice):
        if value not in param.values:
            return list(param.values)
        i = param.values.index(value)
        order = sorted(range(len(param.values)), key=lambda j: (abs(j - i), -j))
        return [param.values[j] for j in order if j != i]
    if isinstance(param, Int):
        if param.log:
            steps = [value * 2, value / 2]
        else:
            delta = max(param.step, (param.high - param.low) / 6)
            steps = [value + delta, value - delta]
        snapped = [param.low + round((min(max(v, param.low), param.high) - param.low) / param.step) * param.step
                   for v in steps]
        out = [int(min(v, param.high)) for v in snapped]
    elif isinstance(param, Float):
        steps = [value * 2, value / 2] if param.log else [value + (param.high - param.low) / 6,
                                                          value - (param.high - param.low) / 6]
        out = [round(min(max(v, param.low), param.high), 12) for v in steps]
    else:
        raise TypeError(f"unknown search-space entry {param!r}")
    return [v for i, v in enumerate(out) if v != value and v not in out[:i]]


def check_space(space: SearchSpace, fields: set[str], where: str) -> None:
    """Every key of ``space`` must be a field of the model's config (``fields``); raises ``ValueError``."""
    unknown = sorted(set(space) - fields)
    if unknown:
        raise ValueError(f"{where}: search space names {unknown}, which are not config fields ({sorted(fields)})")

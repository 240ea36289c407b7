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


def check_space(space: SearchSpace, fields: set[str], where: str) -> None:
    """Every key of ``space`` must be a field of the model's config (``fields``); raises ``ValueError``."""
    unknown = sorted(set(space) - fields)
    if unknown:
        raise ValueError(f"{where}: search space names {unknown}, which are not config fields ({sorted(fields)})")

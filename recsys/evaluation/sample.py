"""Evaluation on a seeded sample of users, for logs whose every user cannot be ranked against every item.

Full ranking costs users x items x dim per split: at 2M users and 1M items that is hours on a CPU, for
an estimate whose standard error a few tens of thousands of users already bring near 0.001. ``EvalConfig``
``max_users`` caps the users scored; the sample is drawn from the users that have a target in that part,
with the run's seed, so training, the test score and the promotion gate all score the same users.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.evaluation.evaluator import EvalProtocol
from recsys.prepare.sequences import Sequences, item_counts


@dataclass(frozen=True)
class EvalPart:
    """What one evaluation scores: histories and targets (row 0 = padding, then the users scored) and, when
    sampled, the item counts of the whole histories (so ``popularity_K`` keeps its meaning)."""

    histories: Sequences
    targets: Sequences
    item_popularity: np.ndarray | None = None
    sampled_from: int | None = None  # users with a target before sampling; None = not sampled

    def kwargs(self) -> dict:
        """Keyword arguments for :func:`recsys.evaluation.evaluator.evaluate` (and ``evaluate_model``)."""
        return {} if self.item_popularity is None else {"item_popularity": self.item_popularity}


def sample_users(targets: Sequences, max_users: int, seed: int) -> np.ndarray | None:
    """Sorted row indices of at most ``max_users`` users with a target, drawn with ``seed``; None when every
    such user fits (``max_users`` 0 = no cap)."""
    if max_users < 0:
        raise ValueError(f"max_users must be >= 0 (0 = every user); got {max_users}")
    lens = np.diff(np.asarray(targets.offsets, dtype=np.int64))
    lens[0] = 0  # row 0 is the padding user
    users = np.flatnonzero(lens > 0)
    if max_users == 0 or len(users) <= max_users:
        return None
    rng = np.random.default_rng([int(seed), 0x5EED])
    return np.sort(rng.choice(users, size=max_users, replace=False))


def eval_part(histories: Sequences, targets: Sequences, max_users: int = 0, seed: int = 0) -> EvalPart:
    """``histories`` and ``targets`` as they are, or their rows of a :func:`sample_users` sample (row 0 kept)."""
    if histories.n_rows != targets.n_rows:
        raise ValueError(f"histories have {histories.n_rows} rows but targets {targets.n_rows}; pass one split's")
    users = sample_users(targets, max_users, seed)
    if users is None:
        return EvalPart(histories, targets)
    rows = np.concatenate([[0], users])
    pop = item_counts(histories.items, histories.n_items)
    n_with = int((np.diff(np.asarray(targets.offsets))[1:] > 0).sum())
    return EvalPart(histories.take(rows), targets.take(rows), pop, n_with)


def protocol_part(histories: Sequences, targets: Sequences, protocol: EvalProtocol) -> EvalPart:
    """:func:`eval_part` with the sample ``protocol`` records (``extra`` ``max_users`` and ``sample_seed``; none =
    every user), so every step that scores a split under one protocol scores the same users."""
    return eval_part(histories, targets, int(protocol.extra.get("max_users", 0)),
                     int(protocol.extra.get("sample_seed", 0)))


__all__ = ["EvalPart", "eval_part", "protocol_part", "sample_users"]

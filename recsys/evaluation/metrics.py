"""Full-ranking metrics as pure functions over numpy arrays.

Every accuracy metric is computed from the **rank of each target** in the user's full ranked
list of eligible items (1 = best), held in a :class:`TargetRanks`::

    >>> tr = TargetRanks.from_lists([[3], [1, 50]])   # user 0: one target at rank 3; user 1: two
    >>> hit_rate(tr, 2), recall(tr, 2), mrr(tr)
    (0.5, 0.25, 0.6666666666666666)

Definitions (binary relevance; averages are over users that have at least one target):

* ``hit_rate@K`` = 1 if any target has rank <= K.
* ``recall@K`` = |targets with rank <= K| / min(|targets|, K) -- the capped recall of
  Liang et al. (VAE-CF), so a perfect list scores 1 and with one target it equals HR@K.
* ``ndcg@K`` = sum_{t: rank<=K} 1/log2(rank_t + 1) / IDCG, IDCG = sum_{i=1..min(|targets|,K)} 1/log2(i+1).
* ``mrr`` = 1 / (rank of the best-ranked target); with ``cutoff`` it is 0 beyond rank ``cutoff``.
* ``coverage@K`` = distinct real items in the top-K lists / n_items (catalogue coverage).
* ``popularity@K`` = mean popularity (e.g. training count) of the recommended items.

Each per-user metric has a ``*_per_user`` form (one value per evaluated user) whose mean it is, and
:func:`standard_error` gives that mean's sampling error over users.

Ties are pessimistic: an eligible item whose score equals a target's score is ranked ahead
of it (other targets included), so a model that scores everything alike gets the worst
rank, never a lucky one. Ranks computed from a top-K list (:func:`ranks_from_lists`) are
positions in that list, ``inf`` for targets not in it. Item id 0 is padding (and -1 marks an
empty slot when fewer than K items were eligible); neither is ever a hit or counted as covered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class TargetRanks:
    """Ranks of every (user, target) pair of the evaluated users.

    Attributes
    ----------
    ranks : (n_pairs,) float64 1-based rank of each target; ``inf`` = not ranked (beyond a list).
    offsets : (n_users + 1,) int64; user ``u``'s targets are ``ranks[offsets[u]:offsets[u + 1]]``.
        Every user has at least one target (users without one are skipped before).
        Ranks of one user's targets are realisable: at most ``j`` of them are ``<= j`` (list
        positions are distinct; pessimistic ties give tied targets the same, larger rank).
    """

    ranks: np.ndarray
    offsets: np.ndarray

    def __post_init__(self) -> None:
        if self.offsets[-1] != len(self.ranks):
            raise ValueError(f"offsets end at {self.offsets[-1]} but there are {len(self.ranks)} ranks")
        if np.any(np.diff(self.offsets) < 1):
            raise ValueError("every user in TargetRanks needs at least one target; skip the others first")
        if len(self.ranks) and np.nanmin(self.ranks) < 1:
            raise ValueError(f"ranks are 1-based; got {np.nanmin(self.ranks)}")

    @classmethod
    def from_lists(cls, ranks: Sequence[Sequence[float]]) -> TargetRanks:
        """Build from one list of target ranks per user (tests and examples)."""
        lengths = np.array([len(r) for r in ranks], dtype=np.int64)
        flat = np.concatenate([np.asarray(r, dtype=np.float64) for r in ranks]) if ranks else np.zeros(0)
        return cls(flat, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    def n_targets(self) -> np.ndarray:
        """(n_users,) int64 number of targets per user."""
        return np.diff(self.offsets)

    def user_index(self) -> np.ndarray:
        """(n_pairs,) int64 user position of every pair."""
        return np.repeat(np.arange(self.n_users), self.n_targets())

    def per_user_sum(self, values: np.ndarray) -> np.ndarray:
        """(n_users,) sum of a per-pair quantity over each user's targets."""
        return np.bincount(self.user_index(), weights=values, minlength=self.n_users)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")


def standard_error(per_user: np.ndarray) -> float:
    """Standard error of the mean of ``per_user`` values: sample sd (ddof 1) / sqrt(n); nan below 2 values.

    Users are the sampling unit, so this is how far a metric averaged over these users may move on another
    draw of users of the same log (about one SE in two draws out of three)::

        >>> standard_error(np.array([0.0, 1.0, 0.0, 1.0]))
        0.2886751345948129
    """
    n = len(per_user)
    return float(np.std(per_user, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


def hit_rate_per_user(tr: TargetRanks, k: int) -> np.ndarray:
    """(n_users,) 1.0 where the user has at least one target at rank <= ``k``, else 0.0."""
    return (tr.per_user_sum((tr.ranks <= k).astype(np.float64)) > 0).astype(np.float64)


def recall_per_user(tr: TargetRanks, k: int) -> np.ndarray:
    """(n_users,) |targets at rank <= k| / min(|targets|, k)."""
    hits = tr.per_user_sum((tr.ranks <= k).astype(np.float64))
    return hits / np.minimum(tr.n_targets(), k)


def ndcg_per_user(tr: TargetRanks, k: int) -> np.ndarray:
    """(n_users,) binary NDCG@k; the ideal DCG puts min(|targets|, k) targets at ranks 1, 2, ..."""
    gains = np.where(tr.ranks <= k, 1.0 / np.log2(np.minimum(tr.ranks, k) + 1.0), 0.0)
    dcg = tr.per_user_sum(gains)
    ideal_cum = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))  # (k,) IDCG for 1..k targets
    idcg = ideal_cum[np.minimum(tr.n_targets(), k) - 1]
    return dcg / idcg


def mrr_per_user(tr: TargetRanks, cutoff: int | None = None) -> np.ndarray:
    """(n_users,) reciprocal rank of each user's best-ranked target (0 beyond ``cutoff`` if given)."""
    if tr.n_users == 0:
        return np.zeros(0)
    best = np.minimum.reduceat(tr.ranks, tr.offsets[:-1]) if len(tr.ranks) else np.zeros(0)
    rr = 1.0 / best
    return np.where(best <= cutoff, rr, 0.0) if cutoff is not None else rr


def hit_rate(tr: TargetRanks, k: int) -> float:
    """Share of users with at least one target at rank <= ``k``."""
    return _mean(hit_rate_per_user(tr, k))


def recall(tr: TargetRanks, k: int) -> float:
    """Mean of |targets at rank <= k| / min(|targets|, k) over users."""
    return _mean(recall_per_user(tr, k))


def ndcg(tr: TargetRanks, k: int) -> float:
    """Mean binary NDCG@k (:func:`ndcg_per_user` averaged over users)."""
    return _mean(ndcg_per_user(tr, k))


def mrr(tr: TargetRanks, cutoff: int | None = None) -> float:
    """Mean reciprocal rank of each user's best-ranked target (0 beyond ``cutoff`` if given)."""
    return _mean(mrr_per_user(tr, cutoff))


def coverage(ranked: np.ndarray, n_items: int, k: int | None = None) -> float:
    """Distinct real items (1..n_items) in the first ``k`` columns of ``ranked`` (n_users, K) / n_items."""
    top = _valid(ranked[:, :k] if k is not None else ranked, n_items)
    return float(len(np.unique(top)) / n_items) if n_items else float("nan")


def mean_popularity(ranked: np.ndarray, popularity: np.ndarray, k: int | None = None) -> float:
    """Mean ``popularity[item]`` over the real items in the first ``k`` columns of ``ranked``.

    ``popularity`` is (n_items + 1,), e.g. training interaction counts.
    """
    top = _valid(ranked[:, :k] if k is not None else ranked, len(popularity) - 1)
    return _mean(np.asarray(popularity, dtype=np.float64)[top])


def _valid(ids: np.ndarray, n_items: int) -> np.ndarray:
    """Flat ids that are real items: drops padding 0 and empty slots (-1)."""
    flat = np.asarray(ids).ravel()
    if len(flat) and flat.max() > n_items:
        raise ValueError(f"ranked ids go up to {flat.max()} but the catalogue has {n_items} items")
    return flat[flat > 0]


def ranks_from_lists(ranked: np.ndarray, targets: sp.csr_matrix) -> tuple[TargetRanks, np.ndarray]:
    """Target ranks from top-K lists: position in the list (1-based), ``inf`` when absent.

    Parameters
    ----------
    ranked : (n_users, K) int item ids, best first (0 / -1 = empty slot).
    targets : (n_users, n_items + 1) sparse; nonzeros are each user's targets.

    Returns
    -------
    ranks : TargetRanks over the users with at least one target.
    evaluated : (n_evaluated,) int64 row indices of those users (the rest are skipped).
    """
    targets = sp.csr_matrix(targets)
    if targets.shape[0] != ranked.shape[0]:
        raise ValueError(f"ranked has {ranked.shape[0]} rows but targets has {targets.shape[0]}")
    targets.sum_duplicates()
    n_t = np.diff(targets.indptr)
    evaluated = np.flatnonzero(n_t > 0)
    rows = np.repeat(np.arange(targets.shape[0]), n_t)
    lists = np.where(ranked > 0, ranked, -1)  # empty slots never match
    match = lists[rows] == targets.indices[:, None]  # (n_pairs, K)
    pos = np.where(match.any(axis=1), match.argmax(axis=1) + 1.0, np.inf)
    offsets = np.concatenate([[0], np.cumsum(n_t[evaluated])]).astype(np.int64)
    return TargetRanks(pos, offsets), evaluated

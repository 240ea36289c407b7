"""Evaluation on a seeded user sample: the sample's metrics are the full evaluation's restricted to those users."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.evaluation.evaluator import EvalProtocol, evaluate
from recsys.evaluation.sample import eval_part, sample_users
from recsys.prepare.sequences import Sequences


def test_take_returns_the_rows_in_the_order_asked_with_their_users() -> None:
    s = Sequences.from_lists([[], [1, 2], [3], [], [4, 1, 2]], n_items=4)
    t = s.take(np.array([0, 4, 1, 3]))
    assert [t.row(r).tolist() for r in range(t.n_rows)] == [[], [4, 1, 2], [1, 2], []]
    assert t.row_users.tolist() == [0, 4, 1, 3] and t.n_items == 4
    stamped = Sequences(s.offsets, s.items, 4, timestamps=np.arange(s.n_events) * 10)
    assert stamped.take(np.array([4])).timestamps.tolist() == [30, 40, 50]


def test_no_cap_or_a_cap_above_the_users_keeps_every_user_as_is() -> None:
    h = Sequences.from_lists([[], [1], [2]], n_items=2)
    t = Sequences.from_lists([[], [2], [1]], n_items=2)
    for cap in (0, 2, 5):
        part = eval_part(h, t, cap, seed=1)
        assert part.histories is h and part.targets is t and part.kwargs() == {} and part.sampled_from is None
    with pytest.raises(ValueError, match="max_users must be >= 0"):
        sample_users(t, -1, 0)


def test_the_sample_is_drawn_from_users_with_a_target_and_fixed_by_the_seed() -> None:
    rows = [[]] + [[1 + u % 7] if u % 3 else [] for u in range(1, 301)]  # every third user has no target
    t = Sequences.from_lists(rows, n_items=8)
    a, b, c = sample_users(t, 50, 7), sample_users(t, 50, 7), sample_users(t, 50, 8)
    assert len(a) == 50 == len(np.unique(a)) and np.all(np.diff(a) > 0)
    assert np.all(a % 3 != 0) and 0 not in a  # only users with a target, never the padding row
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cap=st.integers(1, 40))
def test_metrics_on_the_sample_equal_the_full_evaluation_restricted_to_those_users(seed: int, cap: int) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_items, dim = 60, 30, 4
    hist = Sequences.from_lists([[]] + [rng.integers(1, n_items + 1, rng.integers(0, 6)).tolist()
                                        for _ in range(n_users)], n_items=n_items)
    tgt = Sequences.from_lists([[]] + [rng.integers(1, n_items + 1, rng.integers(0, 2)).tolist()
                                       for _ in range(n_users)], n_items=n_items)
    users_v = rng.normal(size=(n_users + 1, dim)).astype(np.float32)
    items_v = rng.normal(size=(n_items + 1, dim)).astype(np.float32)
    part = eval_part(hist, tgt, cap, seed)
    chosen = sample_users(tgt, cap, seed)
    keep = np.arange(n_users + 1) if chosen is None else chosen
    # the reference: every user ranked, targets kept only for the sampled users
    ref_tgt = Sequences.from_lists([tgt.row(u).tolist() if u in set(keep.tolist()) else []
                                    for u in range(n_users + 1)], n_items=n_items)
    proto = EvalProtocol(ks=(5, 10))
    full = evaluate(users_v, items_v, hist, ref_tgt, proto)
    rows = np.concatenate([[0], keep[keep > 0]]) if chosen is not None else np.arange(n_users + 1)
    got = evaluate(users_v[rows], items_v, part.histories, part.targets, proto, **part.kwargs())
    for key in ("hr_5", "ndcg_10", "recall_10", "mrr", "coverage_10", "popularity_10", "n_users", "ndcg_10_se"):
        assert got[key] == pytest.approx(full[key], nan_ok=True), key

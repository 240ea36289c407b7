"""Metrics as pure functions: hand-computed values on tiny inputs plus invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.evaluation import metrics as M

LOG3 = math.log2(3)


def test_docstring_example() -> None:
    tr = M.TargetRanks.from_lists([[3], [1, 50]])
    assert M.hit_rate(tr, 2) == 0.5
    assert M.recall(tr, 2) == 0.25  # user 0: 0/1, user 1: 1/min(2, 2)
    assert M.mrr(tr) == pytest.approx((1 / 3 + 1) / 2)


def test_ndcg_hand_computed() -> None:
    tr = M.TargetRanks.from_lists([[3], [1, 50]])
    # user 0: rank 3 > K=2 -> 0; user 1: DCG 1 / IDCG (1 + 1/log2 3)
    assert M.ndcg(tr, 2) == pytest.approx(0.5 * 1 / (1 + 1 / LOG3))
    # single target at rank 3: 1 / log2(4) = 0.5
    assert M.ndcg(M.TargetRanks.from_lists([[3]]), 5) == pytest.approx(0.5)
    # perfect list with more targets than K: IDCG is capped at K positions
    assert M.ndcg(M.TargetRanks.from_lists([[1, 2, 3]]), 2) == pytest.approx(1.0)


def test_recall_capped_denominator() -> None:
    tr = M.TargetRanks.from_lists([[1, 2, 3], [4, 9]])
    # user 0: 2 hits / min(3, 2); user 1: 0 hits
    assert M.recall(tr, 2) == pytest.approx(0.5)
    # K=5: user 0: 3/3, user 1: 1/2
    assert M.recall(tr, 5) == pytest.approx(0.75)
    assert M.hit_rate(tr, 5) == 1.0


def test_mrr_uses_best_target_and_cutoff() -> None:
    tr = M.TargetRanks.from_lists([[7, 3], [1], [np.inf]])
    assert M.mrr(tr) == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert M.mrr(tr, cutoff=2) == pytest.approx(1 / 3)


def test_empty_ranks_give_nan() -> None:
    tr = M.TargetRanks.from_lists([])
    assert math.isnan(M.hit_rate(tr, 10)) and math.isnan(M.ndcg(tr, 10)) and math.isnan(M.mrr(tr))


def test_coverage_and_popularity_ignore_padding_and_empty_slots() -> None:
    ranked = np.array([[1, 2, -1], [2, 0, 3]])
    assert M.coverage(ranked, n_items=5) == pytest.approx(3 / 5)
    assert M.coverage(ranked, n_items=5, k=1) == pytest.approx(2 / 5)
    pop = np.array([0, 10, 20, 30, 40, 50])
    assert M.mean_popularity(ranked, pop) == pytest.approx((10 + 20 + 20 + 30) / 4)
    assert M.mean_popularity(ranked, pop, k=1) == pytest.approx(15.0)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="at least one target"):
        M.TargetRanks(np.array([1.0]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="1-based"):
        M.TargetRanks.from_lists([[0]])
    with pytest.raises(ValueError, match="catalogue has 3 items"):
        M.coverage(np.array([[4]]), n_items=3)


def test_ranks_from_lists() -> None:
    ranked = np.array([[5, 3, 1], [1, 2, 3], [2, 4, 0]])
    targets = sp.csr_matrix(np.array([
        [0, 0, 0, 1, 0, 0, 0, 0, 0, 1],  # targets 3 and 9
        [0] * 10,  # no target: skipped
        [0, 0, 0, 0, 1, 0, 0, 0, 0, 0],  # target 4
    ]))
    tr, evaluated = M.ranks_from_lists(ranked, targets)
    assert evaluated.tolist() == [0, 2]
    assert tr.ranks.tolist() == [2.0, np.inf, 2.0]
    assert tr.offsets.tolist() == [0, 2, 3]


# distinct ranks per user, as both rank sources produce (list positions; pessimistic ties give
# tied targets the same, larger rank, never more than j targets at ranks <= j); 0 stands for inf
rank_lists = st.lists(
    st.lists(st.integers(0, 30), min_size=1, max_size=5, unique=True).map(
        lambda r: [float(x) if x else np.inf for x in r]
    ),
    min_size=1, max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(rank_lists, st.integers(1, 12))
def test_invariants(lists: list[list[float]], k: int) -> None:
    tr = M.TargetRanks.from_lists(lists)
    hr, rec, nd, rr = M.hit_rate(tr, k), M.recall(tr, k), M.ndcg(tr, k), M.mrr(tr)
    for v in (hr, rec, nd, rr):
        assert 0.0 <= v <= 1.0 + 1e-12
    assert rec <= hr + 1e-12 and nd <= hr + 1e-12
    assert M.hit_rate(tr, k + 1) >= hr  # HR is monotone in K
    assert rr >= M.hit_rate(tr, 1) - 1e-12
    single = M.TargetRanks.from_lists([[min(r)] for r in lists])
    assert M.recall(single, k) == pytest.approx(M.hit_rate(single, k))  # one target: recall == HR


def test_per_user_forms_and_standard_error_hand_computed() -> None:
    tr = M.TargetRanks.from_lists([[3], [1, 50], [7]])
    # NDCG@5 per user: 1/log2(4) = 0.5; 1 / (1 + 1/log2 3); rank 7 > 5: 0
    per_user = M.ndcg_per_user(tr, 5)
    expected = np.array([0.5, 1 / (1 + 1 / LOG3), 0.0])
    np.testing.assert_allclose(per_user, expected)
    assert M.ndcg(tr, 5) == pytest.approx(expected.mean())
    np.testing.assert_array_equal(M.hit_rate_per_user(tr, 2), [0.0, 1.0, 0.0])
    np.testing.assert_allclose(M.mrr_per_user(tr, cutoff=5), [1 / 3, 1.0, 0.0])
    np.testing.assert_allclose(M.mrr_per_user(tr), [1 / 3, 1.0, 1 / 7])
    # sample sd (ddof 1) / sqrt(n): values 0, 1, 0 -> mean 1/3, var (1/9 + 4/9 + 1/9) / 2 = 1/3
    assert M.standard_error(np.array([0.0, 1.0, 0.0])) == pytest.approx(math.sqrt(1 / 3) / math.sqrt(3))
    assert math.isnan(M.standard_error(np.array([0.4])))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=40))
def test_standard_error_shrinks_with_copies(values: list[float]) -> None:
    """Four copies of a sample: the same spread over 4x the users, so about half the error (exactly
    sqrt((n - 1) / (4n - 1)) times it, from the ddof-1 variance)."""
    one, four = np.array(values), np.array(values * 4)
    n = len(values)
    assert M.standard_error(four) == pytest.approx(M.standard_error(one) * math.sqrt((n - 1) / (4 * n - 1)),
                                                   abs=1e-12)

"""Batched full-ranking evaluation against hand-computed ranks and a dense numpy reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from recsys.evaluation.evaluator import EvalProtocol, evaluate, evaluate_model, make_validator
from recsys.models.base import Model
from recsys.prepare.sequences import Sequences

LOG3 = math.log2(3)
# one factor: user vector [1] scores item i by ITEMS[i]; item 1 best, item 4 worst
ITEMS = np.array([[0.0], [4.0], [3.0], [2.0], [1.0]], dtype=np.float32)


def seqs(rows: list[list[int]]) -> Sequences:
    return Sequences.from_lists(rows, n_items=4)


def ones(n: int) -> np.ndarray:
    return np.ones((n, 1), dtype=np.float32)


# row 0 = padding user; user 1 saw item 1 and wants 3; user 2 has no history and wants 1; user 3 has no target
HIST = seqs([[], [1], [], [2]])
TGT = seqs([[], [3], [1], []])


def test_hand_computed_with_exclusion() -> None:
    res = evaluate(ones(4), ITEMS, HIST, TGT, EvalProtocol(ks=(1, 2)))
    # user 1: item 1 masked, eligible 2 > 3 > 4 -> target 3 at rank 2; user 2: target 1 at rank 1
    assert res["hr_1"] == 0.5 and res["hr_2"] == 1.0
    assert res["ndcg_2"] == pytest.approx((1 / LOG3 + 1) / 2)
    assert res["mrr"] == pytest.approx((1 / 2 + 1) / 2)
    assert res["n_users"] == 2 and res["n_skipped"] == 1 and res["n_masked_targets"] == 0
    # standard errors over the 2 users: sd (ddof 1) of two values a, b is |a - b| / sqrt(2), over sqrt(2)
    assert res["hr_1_se"] == pytest.approx(0.5) and res["hr_2_se"] == 0.0
    assert res["ndcg_2_se"] == pytest.approx((1 - 1 / LOG3) / 2)
    assert res["mrr_se"] == pytest.approx((1 - 1 / 2) / 2)


def test_exclusion_off_ranks_history_items() -> None:
    res = evaluate(ones(4), ITEMS, HIST, TGT, EvalProtocol(ks=(2,), exclude_history=False))
    # user 1: item 1 now eligible -> target 3 at rank 3, a miss at K=2
    assert res["hr_2"] == 0.5
    assert res["mrr"] == pytest.approx((1 / 3 + 1) / 2)


def test_ties_are_pessimistic() -> None:
    flat = np.ones((5, 1), dtype=np.float32)  # every item scores the same
    res = evaluate(ones(4), flat, HIST, TGT, EvalProtocol(ks=(1, 3)))
    # user 1: 3 eligible items all tied -> rank 3; user 2: 4 tied -> rank 4
    assert res["hr_1"] == 0.0 and res["hr_3"] == 0.5
    assert res["mrr"] == pytest.approx((1 / 3 + 1 / 4) / 2)
    partial = np.array([[0.0], [2.0], [1.0], [1.0], [0.0]], dtype=np.float32)
    res = evaluate(ones(2), partial, seqs([[], []]), seqs([[], [3]]), EvalProtocol(ks=(2, 3)))
    assert res["hr_2"] == 0.0 and res["hr_3"] == 1.0  # item 1 ahead, item 2 tied -> rank 3


def test_k_larger_than_catalogue() -> None:
    res = evaluate(ones(4), ITEMS, HIST, TGT, EvalProtocol(ks=(10,)))
    assert res["hr_10"] == 1.0 and res["recall_10"] == 1.0
    # top lists: user 1 -> 2, 3, 4 (item 1 masked, one empty slot); user 2 -> 1..4
    assert res["coverage_10"] == 1.0


def test_target_in_history_is_a_miss_at_every_k() -> None:
    hist, tgt = seqs([[], [2, 3]]), seqs([[], [3]])  # a repeat: the target was already seen
    res = evaluate(ones(2), ITEMS, hist, tgt, EvalProtocol(ks=(1, 10)))
    assert res["hr_10"] == 0.0 and res["mrr"] == 0.0 and res["n_masked_targets"] == 1
    res = evaluate(ones(2), ITEMS, hist, tgt, EvalProtocol(ks=(1, 10), exclude_history=False))
    assert res["hr_10"] == 1.0 and res["mrr"] == pytest.approx(1 / 3)


def test_several_targets() -> None:
    res = evaluate(ones(2), ITEMS, seqs([[], []]), seqs([[], [1, 4, 4]]), EvalProtocol(ks=(2, 4)))
    # targets 1 (rank 1) and 4 (rank 4); the repeated 4 counts once
    assert res["hr_2"] == 1.0 and res["recall_2"] == 0.5 and res["recall_4"] == 1.0
    assert res["ndcg_2"] == pytest.approx(1 / (1 + 1 / LOG3))
    assert res["ndcg_4"] == pytest.approx((1 + 1 / math.log2(5)) / (1 + 1 / LOG3))
    assert res["mrr"] == 1.0


def test_coverage_and_popularity() -> None:
    res = evaluate(ones(4), ITEMS, HIST, TGT, EvalProtocol(ks=(1,)))
    # top-1: user 1 -> item 2, user 2 -> item 1; history counts: item 1 once, item 2 once
    assert res["coverage_1"] == 0.5
    assert res["popularity_1"] == 1.0
    pop = np.array([0, 10, 20, 30, 40], dtype=np.float64)
    res = evaluate(ones(4), ITEMS, HIST, TGT, EvalProtocol(ks=(1,)), item_popularity=pop)
    assert res["popularity_1"] == 15.0


def dense_reference(u: np.ndarray, v: np.ndarray, hist: Sequences, tgt: Sequences, k: int) -> tuple[float, float]:
    """HR@k and NDCG@k (one target per user) with a plain loop over users."""
    hits, gains = [], []
    for r in range(1, hist.n_rows):
        if len(tgt.row(r)) == 0:
            continue
        s = v @ u[r]
        s[0] = -np.inf
        s[hist.row(r)] = -np.inf
        t = tgt.row(r)[0]
        rank = 1 + int((s > s[t]).sum() + (s == s[t]).sum() - 1) if np.isfinite(s[t]) else np.inf
        hits.append(rank <= k)
        gains.append(1 / math.log2(rank + 1) if rank <= k else 0.0)
    return float(np.mean(hits)), float(np.mean(gains))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_dense_reference_and_is_batch_invariant(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_items = 60, 40
    rows = [[]] + [list(rng.integers(1, n_items + 1, size=rng.integers(0, 6))) for _ in range(n_users)]
    tgts = [[]] + [[int(rng.integers(1, n_items + 1))] if rng.random() < 0.8 else [] for _ in range(n_users)]
    hist, tgt = Sequences.from_lists(rows, n_items), Sequences.from_lists(tgts, n_items)
    # integer-valued vectors make exact ties common
    u = rng.integers(-2, 3, size=(n_users + 1, 3)).astype(np.float32)
    v = rng.integers(-2, 3, size=(n_items + 1, 3)).astype(np.float32)
    p = EvalProtocol(ks=(5,))
    a = evaluate(u, v, hist, tgt, p, batch_size=7)
    b = evaluate(u, v, hist, tgt, p, batch_size=512)
    assert a == b
    hr, nd = dense_reference(u, v, hist, tgt, 5)
    assert a["hr_5"] == pytest.approx(hr, abs=1e-12) and a["ndcg_5"] == pytest.approx(nd, abs=1e-12)
    assert a["n_users"] + a["n_skipped"] == n_users


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="rows differ"):
        evaluate(ones(3), ITEMS, HIST, TGT)
    with pytest.raises(ValueError, match="n_items \\+ 1 rows"):
        evaluate(ones(4), ITEMS[:4], HIST, TGT)
    bad = ITEMS.copy()
    bad[2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate(ones(4), bad, HIST, TGT)
    with pytest.raises(ValueError, match="positive cut-offs"):
        EvalProtocol(ks=(0,))


def test_protocol_as_dict() -> None:
    d = EvalProtocol(ks=(10, 20), fingerprint="abc", extra={"dataset": "beauty"}).as_dict()
    assert d == {"eval_split": "leave_last_out", "eval_ks": "10,20", "eval_exclude_history": True,
                 "eval_mrr_cutoff": "none", "eval_fingerprint": "abc", "eval_dataset": "beauty"}


class FixedModel(Model):
    """A known tiny model: every user is [1], items score by ITEMS."""

    name = "fixed"

    def fit(self, train: Sequences, on_epoch_end: object = None, validate: object = None) -> FixedModel:
        self._train = train
        return self

    def item_vectors(self) -> np.ndarray:
        return ITEMS

    def encode_users(self, histories: Sequences) -> np.ndarray:
        return ones(histories.n_rows)

    def export_encoder(self) -> tuple[dict, dict]:
        return {"kind": "none"}, {}

    def save(self, directory: str | Path) -> None:  # pragma: no cover - not needed here
        raise NotImplementedError

    @classmethod
    def load(cls, directory: str | Path) -> Model:  # pragma: no cover
        raise NotImplementedError


def test_evaluate_model_and_validator() -> None:
    model = FixedModel().fit(HIST)
    res = evaluate_model(model, HIST, TGT, EvalProtocol(ks=(1,)))
    assert res["hr_1"] == 0.5
    val = make_validator(HIST, TGT, EvalProtocol(ks=(1,)))(model)
    assert val["val_hr_1"] == 0.5 and val["val_n_users"] == 2

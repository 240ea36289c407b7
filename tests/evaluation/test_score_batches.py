"""Batches of exact scoring shrink on large catalogues so their memory stays bounded, with the same results."""

from __future__ import annotations

import numpy as np
import pytest

from recsys import scoring
from recsys.evaluation.evaluator import EvalProtocol, evaluate
from recsys.prepare.sequences import Sequences


def test_batches_are_capped_by_score_bytes_and_metrics_do_not_change(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    n_users, n_items = 50, 40
    users = rng.normal(size=(n_users + 1, 4)).astype(np.float32)
    items = rng.normal(size=(n_items + 1, 4)).astype(np.float32)
    hist = Sequences.from_lists([[]] + [rng.integers(1, n_items + 1, 3).tolist() for _ in range(n_users)], n_items)
    tgt = Sequences.from_lists([[]] + [rng.integers(1, n_items + 1, 2).tolist() for _ in range(n_users)], n_items)
    before = evaluate(users, items, hist, tgt, EvalProtocol(ks=(5, 10)), batch_size=512)
    top_before = scoring.topk_batched(users, items, 5, hist.to_csr(), batch_size=512)
    monkeypatch.setattr(scoring, "SCORE_BYTES", 4 * (n_items + 1) * 7)  # room for 7 users' scores
    sizes = [s.shape[0] for _, _, s in scoring.masked_scores(users, items, batch_size=512)]
    assert sizes == [7] * 7 + [2]
    after = evaluate(users, items, hist, tgt, EvalProtocol(ks=(5, 10)), batch_size=512)
    assert after == pytest.approx(before)
    top_after = scoring.topk_batched(users, items, 5, hist.to_csr(), batch_size=512)
    assert np.array_equal(top_after[0], top_before[0])

"""Baselines on data: the harness agrees with a plain numpy loop on real data; ALS/BPR beat popularity."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import _require

from recsys.evaluation.evaluator import EvalProtocol, evaluate, evaluate_model
from recsys.ingest.schema import ITEM_IDX, TIMESTAMP, USER_IDX
from recsys.models.implicit_models import ALS, BPR, ALSConfig, BPRConfig
from recsys.models.popularity import Popularity
from recsys.prepare.sequences import Sequences
from recsys.prepare.split import SplitData, leave_last_out
from recsys.sources.synthetic import SyntheticConfig, generate


def read_u_data(path: Path) -> tuple[pl.DataFrame, int, int]:
    """MovieLens 100K ``u.data`` (user, item, rating, time; tab-separated, 1-based dense ids) as encoded events."""
    frame = pl.read_csv(path, separator="\t", has_header=False, new_columns=[USER_IDX, ITEM_IDX, "rating", TIMESTAMP],
                        schema_overrides={USER_IDX: pl.Int32, ITEM_IDX: pl.Int32, TIMESTAMP: pl.Int64})
    return frame, int(frame[USER_IDX].max()), int(frame[ITEM_IDX].max())


def loop_metrics(users: np.ndarray, items: np.ndarray, hist: Sequences, tgt: Sequences, k: int) -> tuple[float, float]:
    """HR@k and NDCG@k (one target per user), history excluded, pessimistic ties, one user at a time."""
    hr, ndcg = [], []
    for r in range(1, hist.n_rows):
        if len(tgt.row(r)) == 0:
            continue
        scores = items.astype(np.float64) @ users[r].astype(np.float64)
        eligible = np.ones(len(scores), bool)
        eligible[0] = False
        eligible[hist.row(r)] = False
        t = int(tgt.row(r)[0])
        if not eligible[t]:  # a repeat of a history item: masked, so a miss
            hr.append(0.0), ndcg.append(0.0)
            continue
        rank = 1 + int(np.sum(eligible & (scores >= scores[t]))) - 1
        hr.append(float(rank <= k))
        ndcg.append(1.0 / math.log2(rank + 1) if rank <= k else 0.0)
    return float(np.mean(hr)), float(np.mean(ndcg))


@pytest.mark.data
def test_als_on_ml100k_matches_numpy_loop(shared_data: Path) -> None:
    events, n_users, n_items = read_u_data(_require(shared_data / "ml-100k" / "u.data"))
    split = leave_last_out(events, n_users, n_items)
    model = ALS(ALSConfig(factors=32, iterations=8, regularization=0.05, alpha=2.0, num_threads=1), "cpu")
    model.fit(split.train)
    users, items = model.encode_users(split.test_history), model.item_vectors()
    res = evaluate(users, items, split.test_history, split.test_targets, EvalProtocol(ks=(10,)))
    hr, ndcg = loop_metrics(users, items, split.test_history, split.test_targets, 10)
    assert res["n_users"] == n_users  # every ml-100k user has >= 20 ratings
    assert res["hr_10"] == pytest.approx(hr, abs=1e-6)
    assert res["ndcg_10"] == pytest.approx(ndcg, abs=1e-6)
    pop = evaluate_model(Popularity().fit(split.train), split.test_history, split.test_targets, EvalProtocol(ks=(10,)))
    assert res["ndcg_10"] > pop["ndcg_10"]  # ALS is personalised; on ml-100k it beats most-popular


@pytest.fixture(scope="module")
def synthetic_split() -> SplitData:
    cfg = SyntheticConfig(n_users=800, n_items=300, n_events=16000, n_categories=12, seed=3)
    raw = generate(cfg).interactions
    enc = raw.select(pl.col("user").cast(pl.Int32).alias(USER_IDX), pl.col("item").cast(pl.Int32).alias(ITEM_IDX),
                     pl.col("timestamp").cast(pl.Int64).alias(TIMESTAMP))
    return leave_last_out(enc, cfg.n_users, cfg.n_items)


def test_als_and_bpr_beat_popularity_on_structured_data(synthetic_split: SplitData) -> None:
    s = synthetic_split
    proto = EvalProtocol(ks=(10,))

    def score(model: object) -> float:
        model.fit(s.train)
        return evaluate_model(model, s.test_history, s.test_targets, proto)["ndcg_10"]

    pop = score(Popularity())
    als = score(ALS(ALSConfig(factors=32, iterations=10, regularization=0.1, alpha=5.0, num_threads=1), "cpu"))
    bpr = score(BPR(BPRConfig(factors=32, iterations=60, learning_rate=0.05, num_threads=1), "cpu"))
    assert als > 1.2 * pop, (als, pop)
    assert bpr > 1.2 * pop, (bpr, pop)

"""Learning tests on synthetic data whose right answer is known.

Markov data: each item has one favourite successor (a fixed random permutation), followed with
probability 0.8; the next item depends only on the previous one. The causal-Transformer tower must
beat popularity and item2vec (whose context window is symmetric and order-blind) by a margin.

Alternating clusters: each user alternates between two of 6 item clusters (A B A B ...), the
pair drawn per user; the next item's cluster is that of the item *before* the last, so a model that
sees only the last item can guess it one time in five. Both ways of making training examples
(sliding windows and right-aligned prefixes) must learn it from the history.

Cold start: items belong to 6 clusters named by their category and a title word; users stay in one
cluster. A fifth of the items never occur in training; trained with ID dropout, their feature-only
vectors must rank them for the right users far better than popularity can (which has no counts
for them) and than chance.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recsys.evaluation.evaluator import EvalProtocol, evaluate, evaluate_model
from recsys.models.item2vec import Item2Vec, Item2VecConfig
from recsys.models.popularity import Popularity
from recsys.models.two_tower import ItemFeatures, TwoTower, TwoTowerConfig
from recsys.prepare.sequences import Sequences

N_ITEMS = 40


def markov_split(n_users: int = 400, seed: int = 0) -> tuple[Sequences, Sequences, Sequences]:
    """(train, test_history, test_targets): the last item of every user is the target."""
    rng = np.random.default_rng(seed)
    succ = rng.permutation(N_ITEMS) + 1  # favourite successor of item i is succ[i - 1]
    hist, tgt = [[]], [[]]
    for _ in range(n_users):
        s = [int(rng.integers(1, N_ITEMS + 1))]
        for _ in range(int(rng.integers(6, 14))):
            s.append(int(succ[s[-1] - 1]) if rng.random() < 0.8 else int(rng.integers(1, N_ITEMS + 1)))
        hist.append(s[:-1])
        tgt.append(s[-1:])
    h = Sequences.from_lists(hist, n_items=N_ITEMS)
    return h, h, Sequences.from_lists(tgt, n_items=N_ITEMS)


def test_transformer_tower_beats_popularity_and_item2vec() -> None:
    train, hist, tgt = markov_split()
    proto = EvalProtocol(exclude_history=False)  # a successor may already be in the history
    cfg = TwoTowerConfig(dim=32, max_len=12, n_layers=1, n_heads=2, dropout=0.1, epochs=20, batch_size=64,
                         lr=5e-3, warmup_steps=10)
    tt = evaluate_model(TwoTower(cfg, device="cpu").fit(train), hist, tgt, proto)["ndcg_10"]
    pop = evaluate_model(Popularity().fit(train), hist, tgt, proto)["ndcg_10"]
    i2v = evaluate_model(Item2Vec(Item2VecConfig(dim=32, epochs=10), device="cpu").fit(train), hist, tgt,
                         proto)["ndcg_10"]
    assert tt > 0.6, (tt, pop, i2v)  # 0.8 of targets are the known successor of the last item
    assert tt > 2 * pop and tt > i2v + 0.15, (tt, pop, i2v)


def alternating_split(n_users: int = 400, seed: int = 0) -> tuple[Sequences, Sequences, Sequences]:
    """(train, test_history, test_targets) of users alternating between two clusters of 10 items."""
    rng = np.random.default_rng(seed)
    hist, tgt = [[]], [[]]
    for _ in range(n_users):
        pair = rng.choice(6, size=2, replace=False)
        s = [int(pair[i % 2] * 10 + rng.integers(10) + 1) for i in range(int(rng.integers(5, 12)))]
        hist.append(s[:-1])
        tgt.append(s[-1:])
    h = Sequences.from_lists(hist, n_items=60)
    return h, h, Sequences.from_lists(tgt, n_items=60)


# a window trains ~10 targets per step, a prefix one: sliding windows need more epochs for as many steps
@pytest.mark.parametrize("windows,epochs", [("sliding", 40), ("prefix", 15)])
def test_transformer_tower_uses_more_than_the_last_item(windows: str, epochs: int) -> None:
    train, hist, tgt = alternating_split()
    proto = EvalProtocol(exclude_history=False)
    cfg = TwoTowerConfig(dim=32, max_len=12, n_layers=2, n_heads=2, dropout=0.1, epochs=epochs, batch_size=64,
                         lr=1e-2, warmup_steps=10, windows=windows)
    hr = evaluate_model(TwoTower(cfg, device="cpu").fit(train), hist, tgt, proto)["hr_10"]
    # the right cluster's 10 items fill the top 10; the last item alone gives the right cluster 1 time in 5
    assert hr > 0.8, hr


def cold_start_data(n_users: int = 300, seed: int = 1) -> tuple[Sequences, Sequences, Sequences, ItemFeatures]:
    """Train without the cold items; targets = one cold item of the user's cluster per user."""
    rng = np.random.default_rng(seed)
    cluster = (np.arange(N_ITEMS + 1) - 1) % 6  # item i's cluster; item 0 unused
    cold = np.zeros(N_ITEMS + 1, dtype=bool)
    cold[rng.choice(np.arange(1, N_ITEMS + 1), size=N_ITEMS // 5, replace=False)] = True
    hist, tgt = [[]], [[]]
    for _ in range(n_users):
        c = int(rng.integers(6))
        warm_c = np.flatnonzero((cluster == c) & ~cold & (np.arange(N_ITEMS + 1) > 0))
        cold_c = np.flatnonzero((cluster == c) & cold)
        hist.append(rng.choice(warm_c, size=min(5, len(warm_c)), replace=False).tolist())
        tgt.append([int(rng.choice(cold_c))] if len(cold_c) else [])
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    df = pl.DataFrame({"item_idx": np.arange(1, N_ITEMS + 1),
                       "title": [f"{words[cluster[i]]} thing {i}" for i in range(1, N_ITEMS + 1)],
                       "categories": [[f"cat{cluster[i]}"] for i in range(1, N_ITEMS + 1)]})
    feats = ItemFeatures.from_frame(df, n_items=N_ITEMS, text_buckets=499)
    h = Sequences.from_lists(hist, n_items=N_ITEMS)
    return h, h, Sequences.from_lists(tgt, n_items=N_ITEMS), feats


@pytest.mark.parametrize("user_tower", ["pooled", "transformer"])
def test_cold_items_get_useful_feature_only_vectors(user_tower: str) -> None:
    train, hist, tgt, feats = cold_start_data()
    cfg = TwoTowerConfig(dim=16, max_len=6, user_tower=user_tower, n_layers=1, dropout=0.0, epochs=15,
                         batch_size=64, lr=1e-2, warmup_steps=5, id_dropout=0.5)
    model = TwoTower(cfg, device="cpu", item_features=feats).fit(train)
    assert not model.item_seen[np.unique(tgt.items)].any()  # every target is a cold item
    hr = evaluate_model(model, hist, tgt)["hr_10"]
    pop = evaluate_model(Popularity().fit(train), hist, tgt)["hr_10"]
    # chance: 10 of the ~35 unseen items; a cold target has count 0 so popularity ranks it last
    rng = np.random.default_rng(0)
    chance = evaluate(rng.normal(size=(hist.n_rows, 8)).astype(np.float32),
                      rng.normal(size=(N_ITEMS + 1, 8)).astype(np.float32), hist, tgt)["hr_10"]
    assert hr > 0.9 and hr > pop + 0.5 and hr > chance + 0.4, (hr, pop, chance)


# -- cold start on real data (MovieLens 100K titles + genres) -----------------------------------
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def ml100k_cold_split(folder, seed: int = 0) -> tuple[Sequences, Sequences, Sequences, ItemFeatures, np.ndarray]:
    """Hold out 10% of the items with >= 10 ratings: their events leave train and become the targets.

    Returns train (per-user, time order), eligible (every warm item, as a per-user exclusion list so
    only cold items are ranked), targets (each user's cold items), features, cold mask (n_items + 1,).
    """
    data = np.loadtxt(folder / "u.data", dtype=np.int64)  # user, item, rating, timestamp
    data = data[np.lexsort((data[:, 3], data[:, 0]))]
    n_users, n_items = int(data[:, 0].max()), int(data[:, 1].max())
    counts = np.bincount(data[:, 1], minlength=n_items + 1)
    rng = np.random.default_rng(seed)
    frequent = np.flatnonzero(counts >= 10)
    cold = np.zeros(n_items + 1, dtype=bool)
    cold[rng.choice(frequent, size=len(frequent) // 10, replace=False)] = True
    is_cold = cold[data[:, 1]]
    train = Sequences.from_arrays(data[~is_cold, 0], data[~is_cold, 1], n_users + 1, n_items)
    targets = Sequences.from_arrays(data[is_cold, 0], data[is_cold, 1], n_users + 1, n_items)
    warm_items = np.flatnonzero(~cold)[1:]
    eligible = Sequences.from_lists([[]] + [warm_items.tolist()] * n_users, n_items=n_items)
    lines = (folder / "u.item").read_text(encoding="latin-1").splitlines()
    fields = [ln.split("|") for ln in lines]
    df = pl.DataFrame({"item_idx": [int(f[0]) for f in fields], "title": [f[1] for f in fields],
                       "categories": [[g for g, flag in zip(GENRES, f[5:], strict=True) if flag == "1"]
                                      for f in fields]})
    return train, eligible, targets, ItemFeatures.from_frame(df, n_items, text_buckets=20_000), cold


@pytest.mark.slow
def test_cold_start_on_movielens(shared_data) -> None:
    train, eligible, targets, feats, cold = ml100k_cold_split(shared_data / "ml-100k")
    cfg = TwoTowerConfig(dim=32, max_len=50, user_tower="pooled", dropout=0.1, epochs=6, batch_size=32, lr=3e-3,
                         warmup_steps=20, id_dropout=0.5, loss="sampled", n_uniform_negatives=256)
    model = TwoTower(cfg, device="cpu", item_features=feats).fit(train)
    users, items = model.user_vectors(), model.item_vectors()
    hr = evaluate(users, items, eligible, targets)["hr_10"]  # only the cold items are eligible
    # popularity among the cold items, counted on the held-out events themselves (a leaky, strong baseline)
    pop_counts = np.bincount(targets.items, minlength=len(cold)).astype(np.float32)
    pop = evaluate(np.ones((users.shape[0], 1), np.float32), pop_counts[:, None], eligible, targets)["hr_10"]
    rng = np.random.default_rng(0)
    chance = evaluate(rng.normal(size=users.shape).astype(np.float32),
                      rng.normal(size=items.shape).astype(np.float32), eligible, targets)["hr_10"]
    print(f"ml-100k cold items: HR@10 feature-only {hr:.4f}, oracle popularity {pop:.4f}, random {chance:.4f}")
    assert hr > chance + 0.1, (hr, pop, chance)

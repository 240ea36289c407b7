"""Synthetic generator: determinism, schema, planted popularity / Markov signal, chunked write."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.config import ConfigError, from_dict
from recsys.sources import synthetic
from recsys.sources.synthetic import SyntheticConfig, build_catalogue, category_names, generate, user_lengths, write

SMALL = SyntheticConfig(n_users=2_000, n_items=1_000, n_events=60_000, n_categories=10, seed=7)


@pytest.fixture(scope="module")
def small():
    return generate(SMALL)


def test_same_seed_same_frames_other_seed_differs(small):
    again = generate(SMALL)
    assert again.interactions.equals(small.interactions)
    assert again.items.equals(small.items)
    other = generate(SyntheticConfig(**{**SMALL.__dict__, "seed": 8}))
    assert not other.interactions["item"].equals(small.interactions["item"])


def test_schema_and_dtypes(small):
    df = small.interactions
    assert df.schema == pl.Schema({"user": pl.Int64, "item": pl.Int64, "timestamp": pl.Int64,
                                   "weight": pl.Float32, "event": pl.String})
    assert df.null_count().row(0) == (0, 0, 0, 0, 0)
    assert set(df["event"].unique()) == {"view", "purchase"}
    assert (df["weight"] == 1.0).all()
    assert df["item"].min() >= 1 and df["item"].max() <= SMALL.n_items
    assert small.items.schema == pl.Schema({"item": pl.Int64, "title": pl.String, "categories": pl.List(pl.String)})
    assert small.items["item"].to_list() == list(range(1, SMALL.n_items + 1))


def test_row_count_exact_every_user_present_with_min_length(small):
    df = small.interactions
    assert df.height == SMALL.n_events
    counts = df.group_by("user").len().sort("user")
    assert counts["user"].to_list() == list(range(1, SMALL.n_users + 1))
    assert counts["len"].min() >= SMALL.min_events_per_user
    np.testing.assert_array_equal(counts["len"].to_numpy(), user_lengths(SMALL))


def test_timestamps_strictly_increase_per_user_and_start_in_span(small):
    df = small.interactions
    users, ts = df["user"].to_numpy(), df["timestamp"].to_numpy()
    same_user = users[1:] == users[:-1]
    assert (np.diff(users) >= 0).all()  # rows are grouped by user
    assert (np.diff(ts)[same_user] >= 1).all()
    firsts = ts[np.concatenate([[True], ~same_user])]
    assert firsts.min() >= SMALL.start_time and firsts.max() < SMALL.start_time + SMALL.time_span


def test_popularity_is_zipf_like(small):
    counts = np.sort(small.interactions["item"].value_counts()["count"].to_numpy())[::-1]
    top_share = counts[: SMALL.n_items // 10].sum() / SMALL.n_events
    # Markov steps go to uniform successors and flatten the Zipf head a little; uniform would give 0.1
    assert top_share > 0.4


def test_planted_markov_transitions_are_detectable(small):
    df = small.interactions
    users, items = df["user"].to_numpy(), df["item"].to_numpy()
    succ = build_catalogue(SMALL).successors
    same = users[1:] == users[:-1]
    prev, nxt = items[:-1][same], items[1:][same]
    hit = (succ[prev] == nxt[:, None]).any(axis=1).mean()
    shuffled = (succ[prev] == np.random.default_rng(0).permutation(nxt)[:, None]).any(axis=1).mean()
    assert hit > SMALL.markov_prob * 0.95  # every Markov step lands in the successors, fresh picks sometimes
    assert shuffled < 0.1 and hit > 5 * shuffled


def _hit_rate_at_10(scores_for_prev, prev: np.ndarray, target: np.ndarray) -> float:
    top = scores_for_prev(prev)  # (n, 10) item ids
    return float((top == target[:, None]).any(axis=1).mean())


def test_next_item_and_cooccurrence_models_beat_popularity(small):
    """Fit on all but each user's last event; predict the last one from the one before it."""
    df = small.interactions
    users, items = df["user"].to_numpy(), df["item"].to_numpy()
    last = np.concatenate([users[1:] != users[:-1], [True]])
    train_pairs = ~last[:-1] & ~last[1:] & (users[1:] == users[:-1])
    n = SMALL.n_items + 1
    trans = np.zeros((n, n))
    np.add.at(trans, (items[:-1][train_pairs], items[1:][train_pairs]), 1.0)
    cooc = trans + trans.T  # order-free co-occurrence of neighbouring events
    pop = np.bincount(items[~last], minlength=n).astype(float)
    pop[0] = -1
    prev, target = items[np.flatnonzero(last) - 1], items[last]
    hr_pop = _hit_rate_at_10(lambda p: np.tile(np.argsort(-pop)[:10], (len(p), 1)), prev, target)
    hr_next = _hit_rate_at_10(lambda p: np.argsort(-(trans[p] + 1e-6 * pop), axis=1)[:, :10], prev, target)
    hr_cooc = _hit_rate_at_10(lambda p: np.argsort(-(cooc[p] + 1e-6 * pop), axis=1)[:, :10], prev, target)
    assert hr_next > 2 * hr_pop and hr_next > hr_pop + 0.2
    assert hr_cooc > 2 * hr_pop


def test_catalogue_titles_categories_and_successors(small):
    cat = build_catalogue(SMALL)
    names = category_names(SMALL.n_categories)
    items = small.items
    assert [c[0] for c in items["categories"].to_list()] == [names[c] for c in cat.category[1:]]
    assert items["categories"].list.len().is_between(1, 2).all()
    assert all(len(t.split()) >= 3 for t in items["title"].to_list())
    assert set(np.unique(cat.category[1:])) == set(range(SMALL.n_categories))  # no empty category
    assert (cat.category[cat.successors[1:]] == cat.category[1:, None]).all()


def test_chunked_write_equals_generate_for_any_chunk_size(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "BLOCK_EVENTS", 3_000)  # many blocks on a small data set
    cfg = SyntheticConfig(n_users=500, n_items=300, n_events=20_000, n_categories=5, seed=3)
    expected = generate(cfg)
    frames = []
    for chunk in (4_000, 50_000):
        out = write(SyntheticConfig(**{**cfg.__dict__, "chunk_size": chunk}), tmp_path / f"c{chunk}", progress=False)
        parts = sorted((out / "interactions").glob("part-*.parquet"))
        frames.append(pl.concat([pl.read_parquet(p) for p in parts]))
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["n_parts"] == len(parts) and manifest["n_events"] == cfg.n_events
        assert pl.read_parquet(out / "items.parquet").equals(expected.items)
        assert (len(parts) > 1) == (chunk < cfg.n_events)
    assert frames[0].equals(expected.interactions)
    assert frames[1].equals(expected.interactions)
    assert not list(tmp_path.glob(".*tmp*"))  # temp folders were renamed into place


def test_write_refuses_existing_directory_unless_overwrite(tmp_path):
    cfg = SyntheticConfig(n_users=20, n_items=30, n_events=200, n_categories=3)
    target = tmp_path / "syn"
    write(cfg, target, progress=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write(cfg, target, progress=False)
    write(SyntheticConfig(**{**cfg.__dict__, "n_events": 300}), target, progress=False, overwrite=True)
    assert pl.scan_parquet(target / "interactions" / "*.parquet").select(pl.len()).collect().item() == 300


def test_config_errors_name_the_problem_and_fix():
    with pytest.raises(ConfigError, match="raise n_events to >= 500"):
        SyntheticConfig(n_users=100, n_events=400, min_events_per_user=5)
    with pytest.raises(ConfigError, match="markov_prob"):
        SyntheticConfig(markov_prob=1.5)
    with pytest.raises(ConfigError, match="lower n_categories"):
        SyntheticConfig(n_items=3, n_categories=5)
    with pytest.raises(ConfigError, match="valid keys"):
        from_dict(SyntheticConfig, {"n_user": 5})


@settings(max_examples=40, deadline=None)
@given(n_users=st.integers(1, 300), extra=st.integers(0, 5_000), min_len=st.integers(1, 6),
       sigma=st.floats(0.0, 3.0), seed=st.integers(0, 2**31))
def test_user_lengths_sum_exactly(n_users, extra, min_len, sigma, seed):
    cfg = SyntheticConfig(n_users=n_users, n_events=n_users * min_len + extra, min_events_per_user=min_len,
                          activity_sigma=sigma, seed=seed, n_items=10, n_categories=2)
    lengths = user_lengths(cfg)
    assert lengths.sum() == cfg.n_events and lengths.min() >= min_len and len(lengths) == n_users

"""Pair sampler for item2vec: brute-force references, window / subsampling / negative statistics."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from recsys.models.pairs import (
    AliasSampler,
    PairSampler,
    cbow_batches,
    keep_probabilities,
    negative_distribution,
    prefetch,
    run_threads,
)
from recsys.prepare.sequences import Sequences

rows_strategy = st.lists(st.lists(st.integers(1, 6), max_size=9), min_size=1, max_size=7)


def brute_force(rows: list[list[int]], window: int | None) -> Counter:
    """(centre event, centre item, context item) of every pair; window None = whole session."""
    out: Counter = Counter()
    event = 0
    for row in rows:
        for i, item in enumerate(row):
            for j, other in enumerate(row):
                if i != j and (window is None or abs(i - j) <= window):
                    out[(event + i, item, other)] += 1
        event += len(row)
    return out


def sampled(seqs: Sequences, **kw: object) -> Counter:
    sampler = PairSampler(seqs, **kw)
    out: Counter = Counter()
    for chunk in sampler.epoch(np.random.default_rng(0)):
        out.update(zip(chunk.group.tolist(), chunk.centre.tolist(), chunk.context.tolist(), strict=True))
    return out


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, window=st.integers(1, 4), chunk=st.integers(1, 20), max_pairs=st.integers(1, 30))
def test_fixed_window_matches_brute_force(rows: list[list[int]], window: int, chunk: int, max_pairs: int) -> None:
    seqs = Sequences.from_lists([[], *rows], n_items=6)
    got = sampled(seqs, window=window, window_kind="fixed", chunk_events=chunk, max_pairs=max_pairs)
    assert got == brute_force(rows, window)


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, chunk=st.integers(1, 20), max_pairs=st.integers(1, 30))
def test_session_pairs_match_brute_force(rows: list[list[int]], chunk: int, max_pairs: int) -> None:
    seqs = Sequences.from_lists([[], *rows], n_items=6)
    got = sampled(seqs, window_kind="session", chunk_events=chunk, max_pairs=max_pairs)
    assert got == brute_force(rows, None)


def test_chunks_are_bounded_sorted_and_cover_the_epoch() -> None:
    seqs = Sequences.from_lists([[], list(range(1, 41)), [3, 4], list(range(1, 30))], n_items=40)
    chunks = list(PairSampler(seqs, window=3, window_kind="fixed", chunk_events=10, max_pairs=16).epoch(
        np.random.default_rng(0)))
    assert len(chunks) > 5
    assert all(len(c.group) <= 16 for c in chunks)
    assert all((np.diff(c.group) >= 0).all() for c in chunks)  # sorted by centre event
    assert chunks[0].start == 0.0 and chunks[-1].stop == pytest.approx(1.0)
    assert all(a.stop == pytest.approx(b.start) for a, b in zip(chunks[:-1], chunks[1:], strict=True))


def test_dynamic_window_distances_follow_word2vec() -> None:
    """Each centre draws b ~ U{1..w}; a context at distance d survives with P(b >= d) = (w - d + 1) / w."""
    n, w = 20_000, 5
    seqs = Sequences.from_lists([[], list(range(1, n + 1))], n_items=n)  # item = position + 1
    chunk = next(PairSampler(seqs, window=w, window_kind="dynamic", chunk_events=n).epoch(np.random.default_rng(3)))
    dist = np.abs(chunk.centre - chunk.context)
    counts = np.bincount(dist, minlength=w + 2)
    assert counts[0] == 0 and counts[w + 1] == 0
    centres = n - 2 * w  # interior centres see both sides fully; edge effects are small
    expected = np.array([2 * centres * (w - d + 1) / w for d in range(1, w + 1)])
    rel = counts[1 : w + 1] / expected
    assert np.all(np.abs(rel - 1) < 0.03), rel
    # the window is per centre: a centre has either both neighbours at distance d <= b or none (interior)
    per_centre = np.bincount(chunk.group, minlength=n)[w:-w]
    assert set(np.unique(per_centre)) == {2, 4, 6, 8, 10}


def test_keep_probabilities_formula() -> None:
    counts = np.array([0, 500, 300, 200, 0])  # total 1000
    t = 1e-3
    p = keep_probabilities(counts, t)
    f = 0.5
    assert p[1] == pytest.approx((np.sqrt(f / t) + 1) * t / f)  # 0.0467...
    assert p[0] == 1.0 and p[4] == 1.0  # padding / unseen
    assert np.all(np.diff(p[1:4]) > 0)  # rarer items are kept more often
    assert np.all(keep_probabilities(counts, 0.0) == 1.0)
    assert keep_probabilities(np.array([0, 1, 1, 1]), 0.5)[1] == 1.0  # capped at 1
    with pytest.raises(ValueError, match="subsample"):
        keep_probabilities(counts, -1.0)


def test_subsampling_keep_rates_match_formula() -> None:
    rng = np.random.default_rng(0)
    items = rng.choice([1, 2, 3, 4], size=200_000, p=[0.6, 0.3, 0.09, 0.01])
    seqs = Sequences.from_lists([[], items[:100_000].tolist(), items[100_000:].tolist()], n_items=4)
    counts = np.bincount(items, minlength=5)
    keep = keep_probabilities(counts, 1e-2)
    sampler = PairSampler(seqs, keep_prob=keep)
    kept, lens = sampler.subsample(0, seqs.n_rows, np.random.default_rng(1))
    assert lens[0] == 0 and lens.sum() == len(kept) and abs(lens[1] - lens[2]) < 0.05 * len(kept)
    got = np.bincount(kept, minlength=5)
    for i in range(1, 5):
        sd = np.sqrt(counts[i] * keep[i] * (1 - keep[i]))
        assert abs(got[i] - counts[i] * keep[i]) <= 4 * sd + 1, (i, got[i], counts[i] * keep[i])
    assert keep[4] == 1.0 and got[4] == counts[4]


@pytest.mark.parametrize("alpha", [1.0, 0.75, 0.0, -0.5])
def test_negative_distribution_chi_square(alpha: float) -> None:
    counts = np.array([0, 1000, 400, 100, 30, 0, 7, 1])  # 0 = padding, 5 = unseen
    probs = negative_distribution(counts, alpha)
    seen = counts > 0
    weights = np.zeros(len(counts))
    weights[seen] = counts[seen].astype(float) ** alpha
    expected = weights / weights.sum()
    np.testing.assert_allclose(probs, expected)
    draws = AliasSampler(probs).sample(200_000, np.random.default_rng(7))
    observed = np.bincount(draws, minlength=len(counts))
    assert observed[0] == 0 and observed[5] == 0  # padding and unseen items are never negatives
    res = stats.chisquare(observed[seen], probs[seen] * len(draws))
    assert res.pvalue > 1e-3, (alpha, observed, probs * len(draws))


def test_alias_sampler_rejects_bad_weights() -> None:
    for bad in (np.array([]), np.array([0.0, 0.0]), np.array([1.0, -1.0]), np.array([np.nan, 1.0])):
        with pytest.raises(ValueError, match="weights"):
            AliasSampler(bad)
    with pytest.raises(ValueError, match="no item occurs"):
        negative_distribution(np.zeros(4), 0.75)


def test_cbow_batches_keep_groups_whole() -> None:
    group = np.array([0, 0, 0, 1, 2, 2, 5, 5, 5, 5])
    centre = np.array([7, 7, 7, 8, 9, 9, 4, 4, 4, 4])
    context = np.arange(10) + 100
    seen = []
    for (local, cen, ctx), frac in cbow_batches(group, centre, context, 4, np.random.default_rng(0)):
        assert len(cen) == local.max() + 1 and 0 < frac <= 1
        for g in range(len(cen)):
            members = ctx[local == g] - 100
            assert (centre[members] == cen[g]).all() and len(set(group[members])) == 1
            seen.append(tuple(members))
    assert sorted(x for m in seen for x in m) == list(range(10))
    assert len(seen) == 4  # every group exactly once, whole


def test_prefetch_order_errors_and_early_exit() -> None:
    assert list(prefetch(iter(range(50)), depth=2)) == list(range(50))

    def boom():
        yield 1
        raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError, match="producer failed"):
        list(prefetch(boom()))
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    for x in prefetch(endless(), depth=2):
        if x == 3:
            break
    assert len(produced) <= 3 + 1 + 2 + 2  # stopped shortly after the consumer left


def test_run_threads_runs_every_item_once_and_reraises() -> None:
    seen: list[int] = []
    out = run_threads(iter(range(200)), lambda x: seen.append(x) or x * x, workers=3)
    assert sorted(out) == [x * x for x in range(200)] and sorted(seen) == list(range(200))

    def fails(x: int) -> int:
        if x == 7:
            raise ValueError("item 7 is bad")
        return x

    with pytest.raises(ValueError, match="item 7"):
        run_threads(iter(range(100)), fails, workers=2)


def test_bad_window_arguments() -> None:
    seqs = Sequences.from_lists([[], [1, 2]], n_items=2)
    with pytest.raises(ValueError, match="window_kind"):
        PairSampler(seqs, window_kind="sliding")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window must be"):
        PairSampler(seqs, window=0)

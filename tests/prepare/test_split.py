"""Splits: hand-checked examples, hypothesis properties (no leakage, accounting, order), persistence."""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.prepare.split import SplitData, fingerprint, leave_last_out, temporal_split

SCHEMA = {"user_idx": pl.Int32, "item_idx": pl.Int32, "timestamp": pl.Int64}
N_USERS, N_ITEMS = 5, 6


def enc(rows: list[tuple[int, int, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


def events_of(s) -> Counter:
    """Multiset of (user, item, timestamp) held by a per-user Sequences."""
    u = s.row_index()
    return Counter(zip(u.tolist(), s.items.tolist(), s.timestamps.tolist(), strict=True))


def test_leave_last_out_by_hand():
    # user 1 repeats item 2 (t=2 and t=4); user 2 has 2 events; user 3 none; input shuffled
    data = enc([(1, 2, 4), (2, 5, 1), (1, 1, 1), (1, 3, 3), (2, 6, 2), (1, 2, 2)])
    s = leave_last_out(data, n_users=3, n_items=6)
    assert [s.train.row(u).tolist() for u in range(4)] == [[], [1, 2], [5, 6], []]
    assert s.valid_targets.row(1).tolist() == [3] and s.test_targets.row(1).tolist() == [2]
    assert s.valid_targets.lengths().tolist() == [0, 1, 0, 0] == s.test_targets.lengths().tolist()
    assert s.test_history.row(1).tolist() == [1, 2, 3] and s.test_history.row(2).tolist() == [5, 6]
    assert s.valid_history is s.train
    assert s.params == {"split": "leave_last_out", "min_events_for_targets": 3, "n_events": 6,
                        "n_train_events": 4, "n_valid_targets": 1, "n_test_targets": 1,
                        "users_without_targets": 1}
    assert s.fingerprint == fingerprint(data) and len(s.fingerprint) == 64


def test_temporal_split_by_hand():
    # user 1 active throughout; user 2 appears only after the cut (cold); item 6 first seen in test
    data = enc([(1, 1, 10), (1, 2, 20), (3, 1, 25), (1, 3, 30), (3, 4, 35), (1, 6, 40), (2, 5, 50)])
    s = temporal_split(data, 3, 6, cut=30, valid_fraction=0.25)
    # events <= 30: t=10,20,25,30 -> valid_cut = lower 0.75-quantile = 25
    assert s.params["valid_cut"] == 25 and s.params["cut"] == 30 and s.params["cut_quantile"] is None
    assert s.train.row(1).tolist() == [1, 2] and s.train.row(3).tolist() == [1]
    assert s.valid_targets.row(1).tolist() == [3]
    assert s.test_history.row(1).tolist() == [1, 2, 3]
    assert s.test_targets.row(1).tolist() == [6] and s.test_targets.row(3).tolist() == [4]
    assert s.test_targets.row(2).tolist() == []  # user 2 has no history: dropped, counted
    p = s.params
    assert (p["n_train_events"], p["n_valid_window_events"], p["n_test_window_events"]) == (3, 1, 3)
    assert (p["test_cold_user_events_dropped"], p["n_test_targets"]) == (1, 2)
    assert (p["test_cold_item_events"], p["valid_cold_item_events"]) == (2, 1)  # items 6, 4; item 3


def test_temporal_cut_from_quantile_and_errors():
    data = enc([(1, i, t) for i, t in zip([1, 2, 3, 4, 5] * 2, range(10), strict=True)])
    s = temporal_split(data, 1, 5, cut_quantile=0.8, valid_fraction=0.0)
    assert s.params["cut"] == 7 and s.test_targets.n_events == 2 and s.valid_targets.n_events == 0
    with pytest.raises(ValueError, match="valid_fraction must be in"):
        temporal_split(data, 1, 5, valid_fraction=1.0)
    with pytest.raises(ValueError, match="cut_quantile must be in"):
        temporal_split(data, 1, 5, cut_quantile=1.5)


def test_fingerprint_ignores_row_order_and_int_width_but_not_content():
    data = enc([(1, 2, 4), (2, 5, 1), (1, 1, 1)])
    assert fingerprint(data) == fingerprint(data.reverse())
    assert fingerprint(data) == fingerprint(data.cast({"user_idx": pl.Int64}))
    assert fingerprint(data) != fingerprint(data.with_columns(pl.Series("timestamp", [4, 1, 2])))


def test_save_load_round_trip(tmp_path):
    s = temporal_split(enc([(1, 1, 1), (1, 2, 2), (2, 2, 3), (1, 3, 4), (2, 1, 5)]), 2, 3, cut=3)
    s.save(tmp_path / "split")
    s.save(tmp_path / "split")  # overwriting is atomic too
    back = SplitData.load(tmp_path / "split")
    assert (back.n_users, back.n_items, back.params, back.fingerprint) == (2, 3, s.params, s.fingerprint)
    for part in ("train", "valid_history", "valid_targets", "test_history", "test_targets"):
        a, b = getattr(s, part), getattr(back, part)
        assert np.array_equal(a.offsets, b.offsets) and np.array_equal(a.items, b.items)
        assert np.array_equal(a.timestamps, b.timestamps)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split"]
    with pytest.raises(FileNotFoundError, match="params.json missing"):
        SplitData.load(tmp_path)


events = st.lists(
    st.tuples(st.integers(1, N_USERS), st.integers(1, N_ITEMS), st.integers(0, 20)), max_size=40
)


def check_common(s: SplitData, rows: list) -> None:
    for part in (s.train, s.valid_targets, s.test_history, s.test_targets):
        assert part.n_rows == N_USERS + 1 and part.lengths()[0] == 0
        assert part.n_events == 0 or part.items.min() >= 1  # padding never a real id
        same = part.row_index()[1:] == part.row_index()[:-1]
        assert np.all(np.diff(part.timestamps)[same] >= 0)  # time order within each row
    assert s.valid_history is s.train
    # no leakage: an input event is never both held out and part of the inputs it is scored
    # against (multiset sums, so exact copies in the input are counted correctly)
    data = Counter(rows)
    assert events_of(s.train) + events_of(s.valid_targets) <= data
    assert events_of(s.test_history) + events_of(s.test_targets) <= data
    assert events_of(s.train) <= events_of(s.test_history)


@settings(max_examples=80, deadline=None)
@given(events)
def test_leave_last_out_properties(rows):
    s = leave_last_out(enc(rows), N_USERS, N_ITEMS)
    check_common(s, rows)
    # every row accounted for, exactly once
    assert events_of(s.train) + events_of(s.valid_targets) + events_of(s.test_targets) == Counter(rows)
    assert events_of(s.test_history) == events_of(s.train) + events_of(s.valid_targets)
    counts = Counter(u for u, _, _ in rows)
    for u in range(1, N_USERS + 1):
        n_t = 1 if counts[u] >= 3 else 0
        assert len(s.test_targets.row(u)) == len(s.valid_targets.row(u)) == n_t
        if n_t:  # targets are the latest events: nothing in the user's history is later
            t_test = s.test_targets.timestamps[s.test_targets.offsets[u]]
            assert s.test_history.timestamps[s.test_history.offsets[u]:s.test_history.offsets[u + 1]].max() \
                <= t_test


@settings(max_examples=80, deadline=None)
@given(events, st.integers(0, 20), st.sampled_from([0.0, 0.2, 0.5]))
def test_temporal_split_properties(rows, cut, valid_fraction):
    s = temporal_split(enc(rows), N_USERS, N_ITEMS, cut=cut, valid_fraction=valid_fraction)
    check_common(s, rows)
    p = s.params
    assert p["n_train_events"] + p["n_valid_window_events"] + p["n_test_window_events"] == len(rows)
    assert p["n_valid_targets"] + p["valid_cold_user_events_dropped"] == p["n_valid_window_events"]
    assert p["n_test_targets"] + p["test_cold_user_events_dropped"] == p["n_test_window_events"]
    assert s.train.n_events + s.valid_targets.n_events + s.test_targets.n_events \
        + p["valid_cold_user_events_dropped"] + p["test_cold_user_events_dropped"] == len(rows)
    assert np.all(s.train.timestamps <= p["valid_cut"]) and np.all(s.test_history.timestamps <= cut)
    assert np.all(s.valid_targets.timestamps > p["valid_cut"]) and np.all(s.test_targets.timestamps > cut)
    # targets only for users with history; kept events are exactly the input's
    assert np.all(s.test_history.lengths()[s.test_targets.lengths() > 0] > 0)
    assert np.all(s.train.lengths()[s.valid_targets.lengths() > 0] > 0)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("with_weight", [False, True])
def test_split_fingerprint_shares_the_event_sort_only_when_it_is_valid(ties, with_weight):
    """Without (user, time) ties the split reuses its sort for the fingerprint; the value must not change."""
    rng = np.random.default_rng(3)
    n = 3_000
    data = pl.DataFrame({"user_idx": rng.integers(1, 40, n).astype(np.int32),
                         "item_idx": rng.integers(1, 25, n).astype(np.int32),
                         "timestamp": rng.integers(0, 50 if ties else 10**12, n)})
    if with_weight:
        data = data.with_columns(pl.Series("weight", rng.random(n)))
    assert leave_last_out(data, 39, 24).fingerprint == fingerprint(data)
    assert temporal_split(data, 39, 24).fingerprint == fingerprint(data)


def test_leave_last_out_round_trip_writes_the_shared_history_once(tmp_path):
    s = leave_last_out(enc([(1, 1, 1), (1, 2, 2), (1, 3, 3), (1, 2, 4), (2, 4, 1)]), n_users=2, n_items=4)
    s.save(tmp_path / "split")
    assert not (tmp_path / "split" / "valid_history").exists()  # it is train, recorded as an alias
    back = SplitData.load(tmp_path / "split")
    assert back.valid_history is back.train
    for part in ("train", "valid_history", "valid_targets", "test_history", "test_targets"):
        a, b = getattr(s, part), getattr(back, part)
        assert np.array_equal(a.offsets, b.offsets) and np.array_equal(a.items, b.items)

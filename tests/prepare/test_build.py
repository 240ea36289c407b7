"""build_sequences: hand-checked rows, tie rule, sessions, repeats, truncation, and properties."""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.prepare.build import build_sequences, sort_events

I32 = {"user_idx": pl.Int32, "item_idx": pl.Int32, "timestamp": pl.Int64}


def enc(rows: list[tuple[int, int, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=I32, orient="row")


# user 2: items 4,4 at t=10,20, item 5 at 30 (out of order on input); user 1: a tie at t=10
EXAMPLE = enc([(2, 5, 30), (1, 3, 10), (2, 4, 10), (1, 1, 10), (2, 4, 20), (1, 2, 500)])


def rows_of(s) -> list[list[int]]:
    return [s.row(r).tolist() for r in range(s.n_rows)]


def test_rows_are_users_in_time_order_ties_in_input_order():
    s = build_sequences(EXAMPLE, n_users=3, n_items=5)
    assert rows_of(s) == [[], [3, 1, 2], [4, 4, 5], []]
    assert s.timestamps.tolist() == [10, 10, 500, 10, 20, 30]
    assert s.row_users is None and s.n_items == 5


def test_drop_consecutive_repeats_and_max_len():
    s = build_sequences(EXAMPLE, 3, 5, drop_consecutive_repeats=True, max_len=2)
    assert rows_of(s) == [[], [1, 2], [4, 5], []]
    assert s.timestamps.tolist() == [10, 500, 10, 30]
    # a repeat separated by another item is not consecutive
    assert rows_of(build_sequences(enc([(1, 4, 1), (1, 5, 2), (1, 4, 3)]), 1, 5,
                                   drop_consecutive_repeats=True)) == [[], [4, 5, 4]]


def test_sessions_split_on_pauses_longer_than_the_gap():
    s = build_sequences(EXAMPLE, 3, 5, session_gap=10)
    # user 1: t=10,10 | 500 ; user 2: 10,20,30 (pauses of exactly 10 stay in one session)
    assert rows_of(s) == [[3, 1], [2], [4, 4, 5]]
    assert s.row_users.tolist() == [1, 1, 2] and s.row_users.dtype == np.int32
    s = build_sequences(EXAMPLE, 3, 5, session_gap=9, drop_consecutive_repeats=True)
    assert rows_of(s) == [[3, 1], [2], [4], [4], [5]]  # repeats are judged within a session


def test_empty_input_and_bad_input():
    s = build_sequences(enc([]), 2, 4)
    assert s.n_rows == 3 and s.n_events == 0
    with pytest.raises(ValueError, match=r"item_idx spans 0..3 but must lie in 1..5"):
        build_sequences(enc([(1, 0, 1), (1, 3, 2)]), 1, 5)
    with pytest.raises(ValueError, match=r"user_idx spans 1..4 but must lie in 1..3"):
        build_sequences(enc([(4, 1, 1), (1, 1, 1)]), 3, 5)
    with pytest.raises(ValueError, match="lacks column"):
        build_sequences(EXAMPLE.drop("timestamp"), 3, 5)
    with pytest.raises(ValueError, match="max_len must be >= 1"):
        build_sequences(EXAMPLE, 3, 5, max_len=0)


N_USERS, N_ITEMS = 5, 6
events = st.lists(
    st.tuples(st.integers(1, N_USERS), st.integers(1, N_ITEMS), st.integers(0, 30)), max_size=40
)


@settings(max_examples=80, deadline=None)
@given(events, st.none() | st.integers(0, 8), st.booleans(), st.none() | st.integers(1, 4))
def test_sequence_properties(rows, gap, drop_repeats, max_len):
    s = build_sequences(enc(rows), N_USERS, N_ITEMS, session_gap=gap,
                        drop_consecutive_repeats=drop_repeats, max_len=max_len)
    assert s.n_events == 0 or s.items.min() >= 1  # padding 0 is never a real id
    row_user = np.arange(s.n_rows) if s.row_users is None else s.row_users
    ri = s.row_index()
    same_row = ri[1:] == ri[:-1]
    assert np.all(np.diff(s.timestamps)[same_row] >= 0)  # time order within each row
    if gap is not None:
        # sessions are cut on all activity; a dropped repeat still kept its session alive,
        # so the gap bound holds between consecutive *kept* events only without dropping
        if not drop_repeats:
            assert np.all(np.diff(s.timestamps)[same_row] <= gap)
        assert np.all(np.diff(row_user) >= 0) and np.all(s.lengths() > 0)
    else:
        assert s.n_rows == N_USERS + 1 and s.lengths()[0] == 0
    if max_len is not None:
        assert np.all(s.lengths() <= max_len)
    if drop_repeats:
        assert not np.any(same_row & (s.items[1:] == s.items[:-1]))
    if not drop_repeats and max_len is None:  # every event is accounted for, in its user's row
        got = Counter(zip(row_user[ri].tolist(), s.items.tolist(), s.timestamps.tolist(), strict=True))
        assert got == Counter(rows)


@settings(max_examples=40, deadline=None)
@given(events, st.integers(1, 4))
def test_max_len_keeps_the_most_recent_events(rows, max_len):
    full = build_sequences(enc(rows), N_USERS, N_ITEMS)
    cut = build_sequences(enc(rows), N_USERS, N_ITEMS, max_len=max_len)
    for r in range(full.n_rows):
        assert cut.row(r).tolist() == full.row(r).tolist()[-max_len:]


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 9), st.integers(0, 5)), max_size=60),
       scale=st.sampled_from([1, 10**9, 2**60]))
def test_sort_events_matches_user_time_input_order(rows, scale):
    """The single combined-key sort (small spans) and the 3-key fallback (huge spans) give the same order."""
    enc = pl.DataFrame({"user_idx": [u for u, _, _ in rows], "item_idx": [i for _, i, _ in rows],
                        "timestamp": [t * scale for _, _, t in rows]},
                       schema={"user_idx": pl.Int32, "item_idx": pl.Int32, "timestamp": pl.Int64})
    expected = sorted(range(len(rows)), key=lambda r: (rows[r][0], rows[r][2], r))
    assert sort_events(enc)["item_idx"].to_list() == [rows[r][1] for r in expected]

"""Property tests (hypothesis) for splits, sequence building and validation on random small inputs.

The reference for "time order" is the definition in recsys.prepare.build: events sorted by
(user, timestamp), ties in input row order. Every property compares against that reference
computed in plain Python, so leakage, reordering or a lost event shows up as a mismatch.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.ingest.errors import REASONS
from recsys.ingest.validation import TimeBounds, validate_frame
from recsys.prepare.build import build_sequences
from recsys.prepare.idmap import IdMap, encode_interactions
from recsys.prepare.sequences import Sequences
from recsys.prepare.split import leave_last_out, temporal_split

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def encoded_frames(draw, max_events: int = 40):
    """(frame, n_users, n_items): random events with many repeated items and timestamp ties."""
    n_users, n_items = draw(st.integers(1, 6)), draw(st.integers(1, 8))
    n = draw(st.integers(0, max_events))
    users = draw(st.lists(st.integers(1, n_users), min_size=n, max_size=n))
    items = draw(st.lists(st.integers(1, n_items), min_size=n, max_size=n))
    ts = draw(st.lists(st.integers(0, 12), min_size=n, max_size=n))
    frame = pl.DataFrame({"user_idx": users, "item_idx": items, "timestamp": ts},
                         schema={"user_idx": pl.Int32, "item_idx": pl.Int32, "timestamp": pl.Int64})
    return frame, n_users, n_items


def reference(frame: pl.DataFrame, n_users: int) -> list[list[tuple[int, int]]]:
    """Per user index (0..n_users): [(item, ts), ...] sorted by time, ties in input order."""
    rows = frame.rows()
    order = sorted(range(len(rows)), key=lambda k: (rows[k][0], rows[k][2], k))
    out: list[list[tuple[int, int]]] = [[] for _ in range(n_users + 1)]
    for k in order:
        out[rows[k][0]].append((rows[k][1], rows[k][2]))
    return out


def events(seqs, r: int) -> list[tuple[int, int]]:
    """Row ``r`` of a Sequences as [(item, ts), ...]."""
    lo, hi = seqs.offsets[r], seqs.offsets[r + 1]
    return list(zip(seqs.items[lo:hi].tolist(), seqs.timestamps[lo:hi].tolist(), strict=True))


def check_padding(*parts) -> None:
    for s in parts:
        assert s.offsets[1] == 0  # row 0, the padding user, holds nothing
        assert s.n_events == 0 or s.items.min() >= 1  # item 0 is never a real id


@SETTINGS
@given(encoded_frames())
def test_leave_last_out_partitions_each_user_in_time_order(data):
    frame, n_users, n_items = data
    split = leave_last_out(frame, n_users, n_items)
    ref = reference(frame, n_users)
    check_padding(split.train, split.valid_targets, split.test_targets, split.test_history)
    for u in range(n_users + 1):
        train, valid, test = events(split.train, u), events(split.valid_targets, u), events(split.test_targets, u)
        # order kept and every event accounted for exactly once: the parts are consecutive slices
        assert train + valid + test == ref[u]
        expect_targets = 1 if len(ref[u]) >= 3 else 0
        assert len(valid) == len(test) == expect_targets
        assert events(split.valid_history, u) == train  # no held-out event in any training input
        assert events(split.test_history, u) == train + valid
    n_parts = split.train.n_events + split.valid_targets.n_events + split.test_targets.n_events
    assert n_parts == frame.height == split.params["n_events"]


@SETTINGS
@given(encoded_frames(), st.floats(0.1, 0.9), st.sampled_from([0.0, 0.2, 0.5]))
def test_temporal_split_never_trains_on_the_future(data, q, valid_fraction):
    frame, n_users, n_items = data
    split = temporal_split(frame, n_users, n_items, cut_quantile=q, valid_fraction=valid_fraction)
    cut, vcut, p = split.params["cut"], split.params["valid_cut"], split.params
    ref = reference(frame, n_users)
    check_padding(split.train, split.valid_targets, split.test_targets, split.test_history)
    for u in range(n_users + 1):
        train, hist = events(split.train, u), events(split.test_history, u)
        assert train == [e for e in ref[u] if e[1] <= vcut]  # time order kept, nothing after the cut
        assert hist == [e for e in ref[u] if e[1] <= cut]
        assert events(split.valid_history, u) == train
        valid, test = events(split.valid_targets, u), events(split.test_targets, u)
        assert valid == ([e for e in ref[u] if vcut < e[1] <= cut] if train else [])  # cold users dropped
        assert test == ([e for e in ref[u] if e[1] > cut] if hist else [])
    assert p["n_train_events"] + p["n_valid_window_events"] + p["n_test_window_events"] == frame.height
    assert p["n_valid_targets"] + p["valid_cold_user_events_dropped"] == p["n_valid_window_events"]
    assert p["n_test_targets"] + p["test_cold_user_events_dropped"] == p["n_test_window_events"]


@SETTINGS
@given(encoded_frames(), st.booleans(), st.one_of(st.none(), st.integers(1, 4)))
def test_build_sequences_matches_reference(data, drop_repeats, max_len):
    frame, n_users, n_items = data
    seqs = build_sequences(frame, n_users, n_items, drop_consecutive_repeats=drop_repeats, max_len=max_len)
    check_padding(seqs)
    assert seqs.n_rows == n_users + 1
    for u, ref in enumerate(reference(frame, n_users)):
        if drop_repeats:
            ref = [e for k, e in enumerate(ref) if k == 0 or e[0] != ref[k - 1][0]]
        if max_len is not None:
            ref = ref[-max_len:]
        assert events(seqs, u) == ref


@SETTINGS
@given(encoded_frames(), st.integers(0, 4))
def test_sessions_partition_each_user(data, gap):
    frame, n_users, n_items = data
    seqs = build_sequences(frame, n_users, n_items, session_gap=gap)
    assert seqs.n_events == frame.height and (seqs.n_events == 0 or seqs.items.min() >= 1)
    ref = reference(frame, n_users)
    for u in range(1, n_users + 1):
        rows = np.flatnonzero(seqs.row_users == u)
        sessions = [events(seqs, r) for r in rows]
        assert [e for s in sessions for e in s] == ref[u]  # sessions of a user, in order, are its events
        assert all(b[1] - a[1] <= gap for s in sessions for a, b in zip(s, s[1:], strict=False))
        assert all(t[0][1] - s[-1][1] > gap for s, t in zip(sessions, sessions[1:], strict=False))


raw_ids = st.sampled_from(["a", "b", "c", "10", "7"])


@SETTINGS
@given(st.lists(st.tuples(raw_ids, raw_ids, st.integers(0, 5)), max_size=30))
def test_raw_ids_survive_encode_split_decode(rows):
    """Raw string ids -> IdMap -> leave_last_out -> decode gives back each user's events in order."""
    raw = pl.DataFrame(rows, schema={"user": pl.String, "item": pl.String, "timestamp": pl.Int64}, orient="row")
    users, items = IdMap.fit(raw["user"]), IdMap.fit(raw["item"])
    split = leave_last_out(encode_interactions(raw, users, items), len(users), len(items))
    for u in range(1, len(users) + 1):
        name = users.decode([u])[0]
        mine = sorted(((k, r) for k, r in enumerate(rows) if r[0] == name), key=lambda kr: (kr[1][2], kr[0]))
        got = np.concatenate([split.test_history.row(u), split.test_targets.row(u)]).astype(np.int64)
        assert len(mine) >= 1  # every user in the map has at least one event
        assert items.decode(got).to_list() == [r[1] for _, r in mine]


cells = st.one_of(st.none(), st.sampled_from(["", " ", "x", "-1", "0", "3", "2.5", "nan", "1600000000",
                                              "1600000000000", "2020-09-13", "1e400", " 42 "]))


@SETTINGS
@given(st.lists(st.tuples(cells, cells, cells, cells), max_size=25))
def test_validate_accounts_for_every_row(rows):
    raw = pl.DataFrame(rows, schema={"user": pl.String, "item": pl.String, "timestamp": pl.String,
                                     "weight": pl.String}, orient="row").with_row_index("row", offset=1)
    bounds = TimeBounds(max_ts=2_000_000_000)
    v = validate_frame(raw, "random.csv", bounds=bounds)
    rep = v.report
    assert rep.rows_read == len(rows) == rep.accepted + rep.quarantined
    assert set(v.quarantine["reason"].to_list()) <= set(REASONS)
    f = v.frame
    assert f.columns == ["user", "item", "timestamp", "weight", "event"]
    if f.height:
        assert f["timestamp"].is_between(bounds.min_ts, bounds.max_ts).all()
        assert (f["weight"] >= 0).all() and f["weight"].is_finite().all()
        assert f["user"].null_count() == f["item"].null_count() == 0
    kept = set(range(1, len(rows) + 1)) - set(v.quarantine["row"].to_list())
    assert len(kept) == f.height  # quarantined rows and accepted rows partition the input


@st.composite
def sequence_pairs(draw):
    """Two Sequences with the same rows (some empty), with timestamps, and a chunk size for concat."""
    n_rows = draw(st.integers(1, 7))
    rows = [[draw(st.lists(st.integers(1, 9), max_size=5)) for _ in range(n_rows)] for _ in range(2)]
    out = []
    for lists in rows:
        s = Sequences.from_lists(lists, n_items=9)
        out.append(Sequences(s.offsets, s.items, 9, s.items.astype(np.int64) * 100 + np.arange(s.n_events)))
    return out[0], out[1], rows, draw(st.integers(1, 12))


@SETTINGS
@given(sequence_pairs())
def test_concat_joins_every_row_in_order_whatever_the_chunk(data):
    a, b, (rows_a, rows_b), chunk = data
    joined = a.concat(b, chunk_events=chunk)
    assert [joined.row(r).tolist() for r in range(a.n_rows)] == [x + y for x, y in zip(rows_a, rows_b, strict=True)]
    ts = [np.asarray(s.timestamps)[s.offsets[r]:s.offsets[r + 1]].tolist() for r in range(a.n_rows) for s in (a, b)]
    assert np.asarray(joined.timestamps).tolist() == [t for pair in ts for t in pair]


@SETTINGS
@given(sequence_pairs(), st.booleans())
def test_to_csr_counts_every_row_item_pair_whatever_the_chunk_and_leaves_the_items_alone(data, binary):
    seqs, _, (rows, _), chunk = data
    before = np.array(seqs.items)
    m = seqs.to_csr(binary=binary, chunk_events=chunk)
    assert m.shape == (seqs.n_rows, 10) and m.dtype == np.float32 and m.has_sorted_indices
    for r, items in enumerate(rows):
        expect = {i: (1.0 if binary else float(items.count(i))) for i in set(items)}
        row = m.getrow(r)
        assert dict(zip(row.indices.tolist(), row.data.tolist(), strict=True)) == expect
    assert np.array_equal(seqs.items, before)  # time order kept: the matrix sorted a copy

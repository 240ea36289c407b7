"""IdMap: order rule, encode/decode, errors, extend stability, Parquet round trip; encode_interactions."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.prepare.idmap import IdMap, UnknownIdError, encode_interactions


def test_fit_numbers_distinct_ids_in_sorted_order():
    m = IdMap.fit(pl.Series(["b", "c", "a", "b", None]))
    assert len(m) == 3 and m.dtype == pl.String
    assert m.encode(pl.Series(["a", "b", "c", "a"])).to_list() == [1, 2, 3, 1]
    assert m.decode(np.array([3, 1])).to_list() == ["c", "a"]
    ints = IdMap.fit(np.array([30, 10, 20, 10], dtype=np.int32))
    assert ints.dtype == pl.Int64 and ints.ids.to_list() == [10, 20, 30]
    assert ints.encode(pl.Series("u", [20], dtype=pl.UInt16)).dtype == pl.Int32


def test_extend_appends_unseen_ids_after_known_ones():
    m = IdMap.fit([5, 1])
    e = m.extend([9, 1, 3, 9])
    assert e.ids.to_list() == [1, 5, 3, 9]
    assert e.encode([1, 5, 3, 9]).to_list() == [1, 2, 3, 4]
    assert m.ids.to_list() == [1, 5]  # the original is unchanged
    assert m.extend([]) == m


def test_unknown_ids_error_counts_and_shows_them():
    m = IdMap.fit(["a", "b"])
    with pytest.raises(UnknownIdError, match=r"3 value\(s\) in 'user' \(2 distinct\).*\['z', 'y'\]"):
        m.encode(pl.Series("user", ["z", "a", "y", "z"]))
    assert m.encode(pl.Series(["z", "b"]), unknown="null").to_list() == [None, 2]
    with pytest.raises(ValueError, match="unknown='skip' is not a choice"):
        m.encode(["a"], unknown="skip")


def test_decode_rejects_padding_and_out_of_range():
    m = IdMap.fit([7, 8])
    with pytest.raises(IndexError, match=r"2 index\(es\) outside 1..2, e.g. \[0, 3\]; 0 is padding"):
        m.decode([0, 1, 3])
    with pytest.raises(TypeError, match="must be integers"):
        m.decode(np.array([1.0]))


def test_bad_maps_and_dtype_mismatch():
    with pytest.raises(ValueError, match=r"distinct; duplicated: \[2\]"):
        IdMap(pl.Series([1, 2, 2]))
    with pytest.raises(ValueError, match="must not contain null"):
        IdMap(pl.Series([1, None]))
    with pytest.raises(TypeError, match="dtype String .* IdMap of Int64"):
        IdMap.fit([1, 2]).encode(pl.Series("item", ["1"]))
    with pytest.raises(TypeError, match="integers or strings"):
        IdMap.fit([1.5])


@pytest.mark.parametrize("ids", [["x", "é", "a b"], [2**40, -3, 0]])
def test_save_load_round_trip_keeps_dtype(tmp_path, ids):
    m = IdMap.fit(ids).extend(["zz"] if isinstance(ids[0], str) else [-99])
    path = tmp_path / "maps" / "items.parquet"
    m.save(path)
    back = IdMap.load(path)
    assert back == m and back.dtype == m.dtype
    assert [p.name for p in path.parent.iterdir()] == ["items.parquet"]  # no temp file left


def test_load_rejects_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no IdMap at"):
        IdMap.load(tmp_path / "none.parquet")
    pl.DataFrame({"a": [1]}).write_parquet(tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="not an IdMap file"):
        IdMap.load(tmp_path / "x.parquet")
    pl.DataFrame({"index": [1, 3], "id": [5, 6]}).write_parquet(tmp_path / "y.parquet")
    with pytest.raises(ValueError, match="must be 1..2 in order"):
        IdMap.load(tmp_path / "y.parquet")


def test_encode_interactions_layout():
    df = pl.DataFrame({"user": ["u2", "u1"], "item": [10, 20], "timestamp": [5, 6],
                       "weight": [1.0, 2.0], "event": [None, "buy"]})
    users, items = IdMap.fit(df["user"]), IdMap.fit(df["item"])
    enc = encode_interactions(df, users, items)
    assert enc.columns == ["user_idx", "item_idx", "timestamp", "weight", "event"]
    assert enc.schema["user_idx"] == pl.Int32 and enc.schema["item_idx"] == pl.Int32
    assert enc.rows() == [(2, 1, 5, 1.0, None), (1, 2, 6, 2.0, "buy")]
    with pytest.raises(UnknownIdError, match="in 'item'"):
        encode_interactions(df, users, IdMap.fit([10]))


ids_int = st.lists(st.integers(-(2**62), 2**62), max_size=30)
ids_str = st.lists(st.text(max_size=4), max_size=30)


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.tuples(ids_int, ids_int), st.tuples(ids_str, ids_str)))
def test_round_trip_and_stability_under_extend(pair):
    first, later = pair
    m = IdMap.fit(first)
    idx = m.encode(first)
    assert idx.to_list() == [] or (idx.min() >= 1 and idx.max() <= len(m))
    assert m.decode(idx).to_list() == list(first)
    e = m.extend(later)
    assert e.encode(first).to_list() == idx.to_list()  # known ids keep their index
    assert len(e) == len(set(first) | set(later))
    new = sorted(set(later) - set(first))
    assert e.encode(new).to_list() == list(range(len(m) + 1, len(e) + 1))
    assert e.decode(e.encode(later)).to_list() == list(later)


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.integers(-50, 200), min_size=1, max_size=60, unique=True),
       extra=st.lists(st.integers(-50, 200), max_size=60), wide=st.booleans())
def test_compact_int_lookup_matches_hash_path(ids, extra, wide):
    """encode's lookup-table path (compact integer ids, maybe extended) equals the general path."""
    m = IdMap.fit(ids[: len(ids) // 2 + 1]).extend(ids)  # extend makes the index order non-sorted
    if wide:  # a range far wider than the map forces the general path
        m = m.extend([10**12])
    values = pl.Series("v", [ids[k % len(ids)] for k in range(len(extra) + 3)])
    expected = pl.Series("v", [m.ids.to_list().index(v) + 1 for v in values], dtype=pl.Int32)
    assert m.encode(values).equals(expected)
    unknown = [v for v in extra if v not in ids]
    if unknown:
        with pytest.raises(UnknownIdError):
            m.encode(pl.Series("v", unknown))
        assert m.encode(pl.Series("v", unknown), unknown="null").null_count() == len(unknown)


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.integers(-5, 300), min_size=1, max_size=80))
def test_fit_on_compact_ints_equals_sorted_unique(values):
    """fit's presence-count path (non-negative compact ints) numbers ids exactly like sorted unique."""
    assert IdMap.fit(values).ids.to_list() == sorted(set(values))
    assert IdMap.fit(pl.Series(values + [None])).ids.to_list() == sorted(set(values))


def test_few_lookups_in_a_large_sorted_map_use_binary_search_and_agree():
    ids = pl.Series([f"id-{i:06d}" for i in range(5000)])
    m = IdMap.fit(ids.sample(fraction=1.0, shuffle=True, seed=3))
    query = ids.sample(100, seed=4)
    got = m.encode(query)
    assert got.to_list() == [int(q[3:]) + 1 for q in query.to_list()]
    unsorted = IdMap(m.ids.reverse())  # not sorted: the hash path
    assert unsorted.encode(query).to_list() == [5000 - v + 1 for v in got.to_list()]
    with pytest.raises(UnknownIdError, match="not in the IdMap"):
        m.encode(pl.Series(["id-999999", *query.head(5).to_list()]))
    assert m.encode(pl.Series(["nope", "id-000000"]), unknown="null").to_list() == [None, 1]

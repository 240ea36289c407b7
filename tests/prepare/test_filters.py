"""dedupe, kcore and min_sequence_length: hand-checked examples, row accounting, k-core properties."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.ingest.report import IngestReport
from recsys.prepare.filters import dedupe, kcore, kcore_mask, min_sequence_length

SCHEMA = {"user": pl.Int64, "item": pl.Int64, "timestamp": pl.Int64, "weight": pl.Float32, "event": pl.String}


def frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


# pair (1, 7) three times (rows 0-2, ties at t=5), an exact copy of row 0 at the end
REPEATS = frame([
    (1, 7, 5, 1.0, "a"),
    (1, 7, 3, 2.0, "b"),
    (1, 7, 5, 4.0, "c"),
    (1, 8, 1, 1.0, None),
    (2, 7, 2, 1.0, None),
    (1, 7, 5, 1.0, "a"),
])


@pytest.mark.parametrize(
    ("policy", "kept_pair_row"),
    [("first", (1, 7, 3, 2.0, "b")), ("last", (1, 7, 5, 4.0, "c")), ("sum_weight", (1, 7, 5, 7.0, "c"))],
)
def test_repeat_policies_keep_the_right_event(policy, kept_pair_row):
    report = IngestReport("t")
    out = dedupe(REPEATS, policy, report)
    assert out.rows() == [kept_pair_row, (1, 8, 1, 1.0, None), (2, 7, 2, 1.0, None)]
    assert (report.duplicates_removed, report.filtered, report.accepted) == (1, {"repeats": 2}, 3)
    report.check()


def test_keep_all_removes_only_exact_duplicates_in_order():
    report = IngestReport("t", rows_read=6, accepted=6)
    out = dedupe(REPEATS, "keep_all", report)
    assert out.rows() == REPEATS.head(5).rows()
    assert (report.duplicates_removed, report.filtered["repeats"], report.accepted) == (1, 0, 5)
    report.check()


def test_rows_differing_only_in_event_are_not_exact_duplicates():
    df = frame([(1, 7, 5, 1.0, "view"), (1, 7, 5, 1.0, "buy")])
    assert dedupe(df).height == 2
    assert dedupe(df, "first").rows() == [(1, 7, 5, 1.0, "view")]


def test_dedupe_rejects_bad_input():
    with pytest.raises(ValueError, match="repeat_policy='newest' is unknown"):
        dedupe(REPEATS, "newest")
    with pytest.raises(ValueError, match="lacks column"):
        dedupe(REPEATS.drop("timestamp"))
    with pytest.raises(ValueError, match="null values in {'timestamp': 1}"):
        dedupe(frame([(1, 7, None, 1.0, None)]))
    with pytest.raises(ValueError, match="says 3 rows are accepted but the frame has 6"):
        dedupe(REPEATS, report=IngestReport("t", rows_read=3, accepted=3))


def test_kcore_needs_several_passes():
    # item z has one event -> C drops to 1 event -> C removed; x and y keep 2 users each
    df = pl.DataFrame({"user": ["A", "A", "B", "B", "C", "C"], "item": ["x", "y", "x", "y", "y", "z"]})
    report = IngestReport("t")
    out = kcore(df, user_k=2, item_k=2, report=report)
    assert out.rows() == df.head(4).rows()
    assert report.filtered == {"kcore": 2} and report.stats["kcore_passes"] == 3
    report.check()


def test_kcore_can_empty_the_frame_and_validates_k():
    df = pl.DataFrame({"user": [1, 2], "item": [1, 2]})
    assert kcore(df, 2, 1).height == 0
    assert kcore(df.head(0), 3, 3).height == 0
    with pytest.raises(ValueError, match="user_k must be an int >= 1, got 0"):
        kcore(df, 0, 1)


def test_min_sequence_length_and_a_full_report_chain():
    df = frame([(1, 1, 1, 1.0, None), (1, 2, 2, 1.0, None), (1, 2, 2, 1.0, None), (2, 1, 3, 1.0, None)])
    report = IngestReport("chain")
    out = min_sequence_length(kcore(dedupe(df, report=report), 1, 1, report), 2, report)
    assert out.rows() == df.head(2).rows()
    assert report.filtered == {"repeats": 0, "kcore": 0, "min_length": 1} and report.duplicates_removed == 1
    report.check()
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        min_sequence_length(df, 0)


raw_rows = st.lists(
    st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(0, 3), st.sampled_from([1.0, 2.5]),
              st.sampled_from([None, "view"])),
    max_size=30,
)


def reference_policy(rows: list[tuple], policy: str) -> list[tuple]:
    """Row-by-row reference for dedupe: exact copies out, then one row per pair (or all)."""
    uniq = list(dict.fromkeys(rows))
    if policy == "keep_all":
        return uniq
    pairs: dict[tuple, list[int]] = {}
    for n, r in enumerate(uniq):
        pairs.setdefault(r[:2], []).append(n)
    chosen = {}
    for members in pairs.values():
        if policy == "first":
            chosen[min(members, key=lambda n: (uniq[n][2], n))] = None
        else:
            pick = max(members, key=lambda n: (uniq[n][2], n))
            total = sum(uniq[n][3] for n in members)
            chosen[pick] = total if policy == "sum_weight" else None
    out = []
    for n, r in enumerate(uniq):
        if n in chosen:
            out.append(r if chosen[n] is None else (*r[:3], chosen[n], r[4]))
    return out


@settings(max_examples=80, deadline=None)
@given(raw_rows, st.sampled_from(["keep_all", "first", "last", "sum_weight"]))
def test_dedupe_matches_a_row_by_row_reference(rows, policy):
    report = IngestReport("h")
    out = dedupe(frame(rows), policy, report)
    assert out.rows() == reference_policy(rows, policy)
    assert report.duplicates_removed == len(rows) - len(set(rows))
    report.check()


events = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=0, max_size=25)


def brute_force_core(pairs: list[tuple[int, int]], uk: int, ik: int) -> int:
    """Size of the largest induced event set (over all user x item subsets) meeting the thresholds."""
    best = 0
    users, items = sorted({u for u, _ in pairs}), sorted({i for _, i in pairs})
    for ru in range(len(users) + 1):
        for us in itertools.combinations(users, ru):
            for ri in range(len(items) + 1):
                for its in itertools.combinations(items, ri):
                    sub = [(u, i) for u, i in pairs if u in us and i in its]
                    uc = {u: sum(1 for x, _ in sub if x == u) for u in us}
                    ic = {i: sum(1 for _, y in sub if y == i) for i in its}
                    if all(c >= uk for c in uc.values()) and all(c >= ik for c in ic.values()):
                        best = max(best, len(sub))
    return best


@settings(max_examples=60, deadline=None)
@given(events, st.integers(1, 3), st.integers(1, 3))
def test_kcore_is_a_core_and_the_maximal_one(pairs, uk, ik):
    u = np.array([p[0] for p in pairs], dtype=np.int32)
    i = np.array([p[1] for p in pairs], dtype=np.int32)
    keep, _ = kcore_mask(u, i, uk, ik)
    kept = [p for p, k in zip(pairs, keep, strict=True) if k]
    # the k-core property
    assert all(np.sum(u[keep] == x) >= uk for x in set(u[keep].tolist()))
    assert all(np.sum(i[keep] == x) >= ik for x in set(i[keep].tolist()))
    # induced: every event between surviving users and items survives
    ku, ki = {x for x, _ in kept}, {y for _, y in kept}
    assert kept == [p for p in pairs if p[0] in ku and p[1] in ki]
    # maximal
    assert len(kept) == brute_force_core(pairs, uk, ik)


@settings(max_examples=40, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=60),
       offset=st.sampled_from([0, -3, 10**15]), k=st.integers(1, 3))
def test_kcore_on_compact_and_sparse_integer_ids_matches_string_ids(pairs, offset, k):
    """count_codes' value-offset path (compact ints) and the hashing path (strings) give the same core."""
    users = [u * (1 if offset != 10**15 else offset) + offset for u, _ in pairs]  # 10**15: a sparse range
    ints = pl.DataFrame({"user": users, "item": [i for _, i in pairs]})
    strs = ints.select(pl.col("user").cast(pl.String), pl.col("item").cast(pl.String))
    assert kcore(ints, k, k)["user"].cast(pl.String).to_list() == kcore(strs, k, k)["user"].to_list()

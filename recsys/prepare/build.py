"""Encoded interaction frames -> :class:`~recsys.prepare.sequences.Sequences` (per user or per session).

    >>> enc = pl.DataFrame({"user_idx": [2, 1, 2, 2], "item_idx": [5, 3, 4, 4],
    ...                     "timestamp": [30, 10, 10, 20]}, schema_overrides={"user_idx": pl.Int32,
    ...                     "item_idx": pl.Int32})
    >>> s = build_sequences(enc, n_users=2, n_items=5)
    >>> [s.row(r).tolist() for r in range(3)]          # row 0 is the padding user
    [[], [3], [4, 4, 5]]
    >>> build_sequences(enc, 2, 5, drop_consecutive_repeats=True).row(2).tolist()
    [4, 5]

Time order: events are sorted by (``user_idx``, ``timestamp``); events of one user with the same
timestamp keep their input row order (a stable sort), so a reader's file order decides ties.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from recsys.ingest.schema import ITEM_IDX, TIMESTAMP, USER_IDX
from recsys.prepare.sequences import Sequences


def check_encoded(encoded: pl.DataFrame, n_users: int, n_items: int, where: str) -> None:
    """Raise ValueError unless ``encoded`` has non-null user_idx/item_idx/timestamp in range."""
    missing = [c for c in (USER_IDX, ITEM_IDX, TIMESTAMP) if c not in encoded.columns]
    if missing:
        raise ValueError(
            f"{where}: frame lacks column(s) {missing} (has {encoded.columns}); "
            "encode raw ids first with recsys.prepare.idmap.encode_interactions"
        )
    stats = encoded.select(
        [pl.col(c).null_count().alias(f"{c}_nulls") for c in (USER_IDX, ITEM_IDX, TIMESTAMP)]
        + [pl.col(USER_IDX).min().alias("umin"), pl.col(USER_IDX).max().alias("umax"),
           pl.col(ITEM_IDX).min().alias("imin"), pl.col(ITEM_IDX).max().alias("imax")]
    ).row(0, named=True)
    nulls = {k: v for k, v in stats.items() if k.endswith("_nulls") and v}
    if nulls:
        raise ValueError(f"{where}: null values {nulls}; encoded frames must be complete")
    for col, lo, hi, n in ((USER_IDX, "umin", "umax", n_users), (ITEM_IDX, "imin", "imax", n_items)):
        if encoded.height and (stats[lo] < 1 or stats[hi] > n):
            raise ValueError(
                f"{where}: {col} spans {stats[lo]}..{stats[hi]} but must lie in 1..{n} "
                f"(0 is padding); pass the n_users/n_items of the IdMaps used to encode"
            )


def sort_events(encoded: pl.DataFrame) -> pl.DataFrame:
    """Sort by (user_idx, timestamp); ties keep input row order."""
    if encoded.height:
        stats = encoded.select(pl.col(USER_IDX).min().alias("u0"), pl.col(USER_IDX).max().alias("u1"),
                               pl.col(TIMESTAMP).min().alias("t0"), pl.col(TIMESTAMP).max().alias("t1")).row(0)
        u0, u1, t0, t1 = stats
        span = t1 - t0 + 1
        if u0 >= 0 and (u1 + 1) * span < 2**62:
            # one Int64 key user * span + (t - t0) and a stable single-key sort: same order as the
            # (user, time, row) sort below, ~2.5x faster on unsorted 10M-event frames
            key = encoded.select(pl.col(USER_IDX).cast(pl.Int64) * span + (pl.col(TIMESTAMP) - t0))
            if key.to_series().is_sorted():  # logs often arrive grouped by user in time order: one pass, no sort
                return encoded
            return encoded.with_columns(key.to_series().alias("_key")).sort("_key", maintain_order=True).drop("_key")
    # an explicit row-number key is ~3x faster than sort(maintain_order=True) for the same order
    return encoded.with_row_index("_row").sort([USER_IDX, TIMESTAMP, "_row"]).drop("_row")


def positions_from_end(rows: np.ndarray, n_rows: int) -> np.ndarray:
    """For events sorted by row: (n,) int64, 0 for the last event of its row, 1 for the one before..."""
    ends = np.cumsum(np.bincount(rows, minlength=n_rows))  # (n_rows,) one past each row's last event
    return ends[rows] - 1 - np.arange(len(rows), dtype=np.int64)


def session_rows(users: np.ndarray, ts: np.ndarray, gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Split sorted events into sessions: a new one starts at a new user or a pause > ``gap`` seconds.

    Returns
    -------
    rows : (n,) int64 session index of every event, 0..n_sessions-1.
    row_users : (n_sessions,) int32 user index of every session.
    """
    start = np.ones(len(users), dtype=bool)
    start[1:] = (users[1:] != users[:-1]) | (np.diff(ts) > gap)
    return np.cumsum(start) - 1, users[start].astype(np.int32)


def build_sequences(
    encoded: pl.DataFrame,
    n_users: int,
    n_items: int,
    *,
    session_gap: int | None = None,
    drop_consecutive_repeats: bool = False,
    max_len: int | None = None,
) -> Sequences:
    """Per-user (or per-session) time-ordered item sequences.

    Parameters
    ----------
    encoded : (n, ...) frame with ``user_idx``, ``item_idx`` (1-based) and ``timestamp``.
    n_users, n_items : sizes of the index spaces (``len(IdMap)``).
    session_gap : seconds; when given, rows are sessions (a pause longer than this starts a new
        one) numbered from 0 in (user, time) order, and ``row_users`` holds each session's user.
        When None, row ``r`` is user index ``r`` (row 0, the padding user, is empty).
    drop_consecutive_repeats : drop an event whose item equals the previous event's in the same row.
        Sessions are cut on all events first, so a dropped repeat still keeps its session alive.
    max_len : keep only the most recent ``max_len`` events of every row (applied last).

    Returns
    -------
    Sequences with ``timestamps`` (n_kept,) set.
    """
    if session_gap is not None and session_gap < 0:
        raise ValueError(f"session_gap must be >= 0 seconds or None, got {session_gap}")
    if max_len is not None and max_len < 1:
        raise ValueError(f"max_len must be >= 1 or None, got {max_len}")
    check_encoded(encoded, n_users, n_items, "build_sequences")
    ev = sort_events(encoded.select(USER_IDX, ITEM_IDX, TIMESTAMP))
    users, items = ev[USER_IDX].to_numpy(), ev[ITEM_IDX].to_numpy()
    ts = ev[TIMESTAMP].to_numpy()
    del ev
    row_users = None
    if session_gap is None:
        rows, n_rows = users.astype(np.int64), n_users + 1
    else:
        rows, row_users = session_rows(users, ts, session_gap)
        n_rows = len(row_users)
    if drop_consecutive_repeats:
        keep = np.ones(len(rows), dtype=bool)
        keep[1:] = (rows[1:] != rows[:-1]) | (items[1:] != items[:-1])
        rows, items, ts = rows[keep], items[keep], ts[keep]
    if max_len is not None:
        keep = positions_from_end(rows, n_rows) < max_len
        rows, items, ts = rows[keep], items[keep], ts[keep]
    seqs = Sequences.from_arrays(rows, items, n_rows=n_rows, n_items=n_items, timestamps=ts)
    return seqs if row_users is None else dataclasses.replace(seqs, row_users=row_users)

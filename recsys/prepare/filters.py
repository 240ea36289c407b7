"""Row filters on raw interaction frames: exact duplicates, repeated events, k-core, minimum length.

Every function takes a frame in the canonical raw layout (:mod:`recsys.ingest.schema`) and an
optional :class:`~recsys.ingest.report.IngestReport`; the rows it removes are counted there so
that ``report.check()`` keeps holding::

    >>> df = pl.DataFrame({"user": [1, 1, 1], "item": [7, 7, 8], "timestamp": [5, 5, 6],
    ...                    "weight": [1.0, 1.0, 1.0], "event": [None, None, None]})
    >>> dedupe(df).height          # the second row is an exact copy of the first
    2

All work is vectorised (polars expressions, numpy ``bincount``); nothing loops per row or user.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl

from recsys.ingest.report import IngestReport
from recsys.ingest.schema import ITEM, TIMESTAMP, USER, WEIGHT

RepeatPolicy = Literal["keep_all", "first", "last", "sum_weight"]
REPEAT_POLICIES = ("keep_all", "first", "last", "sum_weight")


def _require_columns(df: pl.DataFrame, columns: tuple[str, ...], where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{where}: frame lacks column(s) {missing} (has {df.columns}); "
            "pass the canonical raw layout of recsys.ingest.schema (user, item, timestamp, weight, event)"
        )
    nulls = {c: n for c, n in zip(columns, df.select(pl.col(columns).null_count()).row(0), strict=True) if n}
    if nulls:
        raise ValueError(
            f"{where}: null values in {nulls}; readers must quarantine such rows before filtering"
        )


def _start(report: IngestReport | None, n_rows: int, where: str) -> None:
    """A fresh report (nothing read yet) starts from this frame; otherwise it must describe it."""
    if report is None:
        return
    if report.rows_read == 0 and report.accepted == 0:
        report.rows_read = report.accepted = n_rows
    elif report.accepted != n_rows:
        raise ValueError(
            f"{where}: report {report.source!r} says {report.accepted} rows are accepted but the frame "
            f"has {n_rows}; pass the report that belongs to this frame (or a fresh IngestReport)"
        )


def _count_filtered(report: IngestReport | None, key: str, removed: int) -> None:
    if report is not None:
        report.filtered[key] = report.filtered.get(key, 0) + removed
        report.accepted -= removed


def dedupe(
    df: pl.DataFrame, repeat_policy: RepeatPolicy = "keep_all", report: IngestReport | None = None
) -> pl.DataFrame:
    """Remove exact duplicate rows, then apply ``repeat_policy`` to repeated (user, item) events.

    Parameters
    ----------
    df : raw interactions, (n, >=3 columns) with ``user``, ``item``, ``timestamp`` (and ``weight``).
    repeat_policy : what to do when a user interacted with the same item more than once:
        ``"keep_all"`` keeps every event; ``"first"`` keeps the earliest; ``"last"`` the latest;
        ``"sum_weight"`` keeps the latest with ``weight`` replaced by the sum over the pair.
        Timestamp ties are broken by input row order (the earlier row is "first").
    report : exact duplicates go to ``duplicates_removed``, policy removals to ``filtered["repeats"]``.

    Returns
    -------
    pl.DataFrame, same columns, input row order kept.
    """
    if repeat_policy not in REPEAT_POLICIES:
        raise ValueError(f"repeat_policy={repeat_policy!r} is unknown; use one of {list(REPEAT_POLICIES)}")
    needed = (USER, ITEM, TIMESTAMP) + ((WEIGHT,) if repeat_policy == "sum_weight" else ())
    _require_columns(df, needed, "dedupe")
    _start(report, df.height, "dedupe")
    copies = _exact_copies(df)
    out = df.filter(pl.Series(~copies)) if copies.any() else df  # no copy of a clean frame
    if report is not None:
        report.duplicates_removed += df.height - out.height
        report.accepted -= df.height - out.height
    n_unique = out.height
    if repeat_policy != "keep_all":
        out = _apply_repeat_policy(out, repeat_policy)
    _count_filtered(report, "repeats", n_unique - out.height)
    return out


def _hash_candidates(frame: pl.DataFrame) -> np.ndarray:
    """(n,) int64 positions of rows whose row hash occurs more than once (a superset of repeats).

    Hashing and a numpy sort of the (n,) uint64 hashes need ~16 bytes a row, far less than a
    polars ``unique`` over all columns; only the (usually few) candidates get an exact check.
    """
    hashes = frame.hash_rows(seed=0)
    h, s = hashes.to_numpy(), hashes.sort().to_numpy()  # polars' sort is ~2x faster than np.sort here
    repeated = s[1:][s[1:] == s[:-1]]
    if not len(repeated):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.isin(h, np.unique(repeated)))


def _exact_copies(df: pl.DataFrame) -> np.ndarray:
    """(n,) bool, True for every row that equals an earlier row in all columns."""
    copies = np.zeros(df.height, dtype=bool)
    # equal rows share (user, item, timestamp); hashing just those skips the wide (string) columns
    keys = [c for c in (USER, ITEM, TIMESTAMP) if c in df.columns]
    cand = _hash_candidates(df.select(keys))
    if len(cand):
        first = df[cand].select(pl.struct(pl.all()).is_first_distinct()).to_series().to_numpy()
        copies[cand[~first]] = True
    return copies


def _apply_repeat_policy(df: pl.DataFrame, policy: str) -> pl.DataFrame:
    """Resolve repeated (user, item) pairs; only rows of pairs that hash alike are looked at."""
    cand = _hash_candidates(df.select(USER, ITEM))
    if not len(cand):
        return df
    kept = _resolve_pairs(df[cand].with_columns(pl.Series("_pos", cand)), policy)
    keep = np.ones(df.height, dtype=bool)
    keep[cand] = False
    pos = kept["_pos"].to_numpy()
    keep[pos] = True
    out = df.filter(pl.Series(keep))
    if policy == "sum_weight":  # write the summed weights back at the kept rows' new positions
        new_pos = np.cumsum(keep)[pos] - 1
        out = out.with_columns(out[WEIGHT].clone().scatter(new_pos, kept[WEIGHT]))
    return out


def _resolve_pairs(df: pl.DataFrame, policy: str) -> pl.DataFrame:
    keys = [USER, ITEM]
    if policy == "sum_weight":
        df = df.with_columns(pl.col(WEIGHT).sum().over(keys).cast(df.schema[WEIGHT]))
    earliest = policy == "first"
    extreme = pl.col(TIMESTAMP).min() if earliest else pl.col(TIMESTAMP).max()
    # Two hash passes, no sort: keep events at the extreme time, then one row per pair.
    at_extreme = df.filter(pl.col(TIMESTAMP) == extreme.over(keys))
    return at_extreme.unique(subset=keys, keep="first" if earliest else "last", maintain_order=True)


def dense_codes(values: pl.Series) -> np.ndarray:
    """Map arbitrary ids to dense codes ``0..n_distinct-1``: (n,) int32 (code order unspecified)."""
    uniq = values.unique()
    codes = np.arange(len(uniq), dtype=np.int32)
    return values.replace_strict(uniq, codes, return_dtype=pl.Int32).to_numpy()


def count_codes(values: pl.Series) -> np.ndarray:
    """(n,) int codes >= 0 to ``np.bincount`` over: ``value - min`` for integer ids whose range is at
    most 4x the number of rows (no hashing needed), else :func:`dense_codes`."""
    if values.dtype.is_integer() and len(values) and not values.null_count():
        lo, hi = int(values.min()), int(values.max())
        if lo >= 0 and hi <= 4 * len(values):  # ids are already codes: zero-copy, no new 8-byte array
            return values.cast(pl.Int64).to_numpy()
        if hi - lo <= 4 * len(values):
            return values.to_numpy() - lo
    return dense_codes(values)


def kcore_mask(users: np.ndarray, items: np.ndarray, user_k: int, item_k: int) -> tuple[np.ndarray, int]:
    """Rows of the maximal (user_k, item_k)-core of the user-item event multigraph.

    Parameters
    ----------
    users, items : (n,) int dense codes (``0..max``) of each event's user and item.

    Returns
    -------
    keep : (n,) bool, True for events in the core.
    passes : number of counting passes until nothing changed (1 when the input is already a core).
    """
    u, i, idx = users, items, None  # idx: input positions of u, i once compacted (None = all rows)
    n_u, n_i = (int(u.max()) + 1, int(i.max()) + 1) if len(u) else (0, 0)
    cu, ci = np.bincount(u, minlength=n_u), np.bincount(i, minlength=n_i)
    alive = np.ones(len(u), dtype=bool)
    n_alive, passes = len(u), 0
    while True:
        passes += 1
        # threshold the small count arrays, gather booleans (1 byte a row), and only *decrement* the
        # counts by the dropped events: no full bincount or array copy per pass
        drop = np.flatnonzero(alive & ~((cu >= user_k)[u] & (ci >= item_k)[i]))
        if not len(drop):
            break
        alive[drop] = False
        n_alive -= len(drop)
        cu -= np.bincount(u[drop], minlength=n_u)
        ci -= np.bincount(i[drop], minlength=n_i)
        if 2 * n_alive < len(u):  # most rows gone: compact so later passes touch only survivors
            sel = np.flatnonzero(alive)
            u, i, idx = u[sel], i[sel], sel if idx is None else idx[sel]
            alive = np.ones(len(u), dtype=bool)
    if idx is None:
        return alive, passes
    keep = np.zeros(len(users), dtype=bool)
    keep[idx[alive]] = True
    return keep, passes


def kcore(
    df: pl.DataFrame, user_k: int = 5, item_k: int = 5, report: IngestReport | None = None
) -> pl.DataFrame:
    """Keep the maximal subset in which every user has >= ``user_k`` and every item >= ``item_k`` events.

    Removal is iterated until stable (dropping an item can push a user below ``user_k`` and so on);
    the result is the unique maximal core. Counts are *events*, so repeats count: run
    :func:`dedupe` with ``repeat_policy="first"`` before if you want distinct-item counts.

    Parameters
    ----------
    df : raw interactions, (n, ...) with ``user`` and ``item`` columns.
    user_k, item_k : int >= 1 thresholds.
    report : removals go to ``filtered["kcore"]``, the number of passes to ``stats["kcore_passes"]``.

    Returns
    -------
    pl.DataFrame, the surviving rows in input order.
    """
    for name, k in (("user_k", user_k), ("item_k", item_k)):
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
            raise ValueError(f"kcore: {name} must be an int >= 1, got {k!r}")
    _require_columns(df, (USER, ITEM), "kcore")
    _start(report, df.height, "kcore")
    keep, passes = kcore_mask(count_codes(df[USER]), count_codes(df[ITEM]), int(user_k), int(item_k))
    out = df if keep.all() else df.filter(pl.Series(keep))
    _count_filtered(report, "kcore", df.height - out.height)
    if report is not None:
        report.stats["kcore_passes"] = passes
        report.stats["kcore_user_k"], report.stats["kcore_item_k"] = int(user_k), int(item_k)
    return out


def min_sequence_length(df: pl.DataFrame, n: int, report: IngestReport | None = None) -> pl.DataFrame:
    """Drop users with fewer than ``n`` events (one pass; item counts are not revisited).

    Parameters
    ----------
    df : interactions with a ``user`` column, (rows, ...).
    n : int >= 1 minimum number of events per user.
    report : removals go to ``filtered["min_length"]``.
    """
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 1:
        raise ValueError(f"min_sequence_length: n must be an int >= 1, got {n!r}")
    _require_columns(df, (USER,), "min_sequence_length")
    _start(report, df.height, "min_sequence_length")
    out = df.filter(pl.len().over(USER) >= n)
    _count_filtered(report, "min_length", df.height - out.height)
    return out

"""Per-row (user or session) time-ordered item sequences as a flat array plus offsets.

A :class:`Sequences` is a CSR-like container, memory-mappable, never a list of lists::

    >>> s = Sequences.from_lists([[], [3, 1], [2]], n_items=3)
    >>> s.offsets, s.items
    (array([0, 0, 2, 3]), array([3, 1, 2], dtype=int32))
    >>> s.row(1)
    array([3, 1], dtype=int32)

Row ``r`` holds ``items[offsets[r]:offsets[r + 1]]`` in time order. When ``row_users`` is
None, row ``r`` *is* user index ``r`` and row 0 (the padding user) is empty. Item indices
are dense ints in ``1..n_items``; 0 is padding and never stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp


def item_counts(items: np.ndarray, n_items: int, chunk: int = 1 << 24) -> np.ndarray:
    """(n_items + 1,) int64 occurrences of every item index, read ``chunk`` events at a time (a memory-mapped
    ``items`` is streamed, never copied whole)."""
    counts = np.zeros(n_items + 1, dtype=np.int64)
    for s in range(0, len(items), chunk):
        counts += np.bincount(np.asarray(items[s:s + chunk]), minlength=n_items + 1)
    return counts


def row_chunks(offsets: np.ndarray, chunk_events: int) -> Iterable[tuple[int, int]]:
    """Consecutive row ranges ``[r0, r1)`` covering every row, each holding about ``chunk_events`` events (a
    range holds more only when one row alone does)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    cuts = np.searchsorted(offsets, np.arange(0, offsets[-1], max(1, chunk_events)), side="right") - 1
    bounds = np.unique(np.concatenate([[0], cuts, [len(offsets) - 1]]))
    return zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)


@dataclass(frozen=True)
class Sequences:
    """Flat time-ordered item sequences.

    Attributes
    ----------
    offsets : (n_rows + 1,) int64, non-decreasing, ``offsets[0] == 0``.
    items : (n_events,) int32, values in ``1..n_items``.
    n_items : int, size of the item index space (item vectors have ``n_items + 1`` rows).
    timestamps : (n_events,) int64 epoch seconds, or None.
    row_users : (n_rows,) int32 user index of each row (sessions), or None when row == user.
    """

    offsets: np.ndarray
    items: np.ndarray
    n_items: int
    timestamps: np.ndarray | None = None
    row_users: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.offsets.ndim != 1 or len(self.offsets) == 0 or self.offsets[0] != 0:
            raise ValueError("offsets must be a 1-D array starting at 0")
        if self.offsets[-1] != len(self.items):
            raise ValueError(f"offsets end at {self.offsets[-1]} but there are {len(self.items)} items")
        if len(self.items) and (self.items.min() < 1 or self.items.max() > self.n_items):
            raise ValueError(
                f"item indices must lie in 1..{self.n_items} (0 is padding); "
                f"got range {self.items.min()}..{self.items.max()}"
            )
        if self.timestamps is not None and len(self.timestamps) != len(self.items):
            raise ValueError("timestamps must have one entry per item")
        if self.row_users is not None and len(self.row_users) != self.n_rows:
            raise ValueError("row_users must have one entry per row")

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_lists(
        cls, rows: Iterable[Sequence[int]], n_items: int | None = None
    ) -> Sequences:
        """Build from Python lists (tests and small examples only)."""
        rows = [np.asarray(r, dtype=np.int32) for r in rows]
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32)
        if n_items is None:
            n_items = int(items.max()) if len(items) else 0
        return cls(offsets=offsets, items=items, n_items=int(n_items))

    @classmethod
    def from_arrays(
        cls,
        rows: np.ndarray,
        items: np.ndarray,
        n_rows: int,
        n_items: int,
        timestamps: np.ndarray | None = None,
    ) -> Sequences:
        """Group parallel arrays already sorted by (row, time) into sequences.

        ``rows`` (n,) int row index per event, sorted ascending; ``items`` (n,) item index.
        """
        rows = np.asarray(rows)
        if len(rows) > 1 and np.any(np.diff(rows) < 0):
            raise ValueError("rows must be sorted ascending (sort by row, then time)")
        counts = np.bincount(rows, minlength=n_rows) if len(rows) else np.zeros(n_rows, np.int64)
        if len(counts) > n_rows:
            raise ValueError(f"row index {rows.max()} out of range for n_rows={n_rows}")
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        ts = None if timestamps is None else np.asarray(timestamps, dtype=np.int64)
        return cls(offsets, np.asarray(items, dtype=np.int32), int(n_items), ts)

    # -- access ---------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_events(self) -> int:
        return len(self.items)

    def __len__(self) -> int:
        return self.n_rows

    def row(self, r: int) -> np.ndarray:
        """Items of row ``r`` in time order, (len,) int32."""
        return self.items[self.offsets[r] : self.offsets[r + 1]]

    def lengths(self) -> np.ndarray:
        """(n_rows,) int64 length of every row."""
        return np.diff(self.offsets)

    def row_index(self) -> np.ndarray:
        """(n_events,) int64 row of every event (the inverse of the offsets)."""
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), self.lengths())

    def to_csr(self, binary: bool = True, chunk_events: int = 1 << 22) -> sp.csr_matrix:
        """(n_rows, n_items + 1) float32 sparse matrix of row x item; repeats summed unless ``binary``.

        Built ``chunk_events`` events at a time (each chunk's rows summed and sorted on their own), so memory is
        the result (int32 indices and float32 values per distinct (row, item)) plus O(``chunk_events``), and a
        memory-mapped ``items`` is read, never copied whole.
        """
        offsets = np.asarray(self.offsets, dtype=np.int64)
        shape = (self.n_rows, self.n_items + 1)
        indices, data, row_nnz = [], [], np.zeros(self.n_rows, dtype=np.int64)
        for r0, r1 in row_chunks(offsets, chunk_events):
            lo, hi = int(offsets[r0]), int(offsets[r1])
            # a copy: sum_duplicates sorts the indices in place, and self.items must keep its time order
            cols = np.array(self.items[lo:hi], dtype=np.int32)
            part = sp.csr_matrix((np.ones(hi - lo, dtype=np.float32), cols, offsets[r0:r1 + 1] - lo),
                                 shape=(r1 - r0, shape[1]))
            part.sum_duplicates()  # also sorts each row's indices
            indices.append(part.indices.astype(np.int32, copy=False))
            data.append(part.data)
            row_nnz[r0:r1] = np.diff(part.indptr)
        indptr = np.concatenate([[0], np.cumsum(row_nnz)])
        m = sp.csr_matrix((np.concatenate(data) if data else np.zeros(0, np.float32),
                           np.concatenate(indices) if indices else np.zeros(0, np.int32), indptr), shape=shape)
        m.has_canonical_format = True  # every row summed and sorted above
        if binary:
            m.data[:] = 1.0
        return m

    def padded(self, max_len: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Most recent ``max_len`` items of each row, left-padded with 0: (n, max_len) int32."""
        rows = np.arange(self.n_rows) if rows is None else np.asarray(rows)
        out = np.zeros((len(rows), max_len), dtype=np.int32)
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        take = np.minimum(ends - starts, max_len)
        # position j of output row b takes items[end - take + (j - (max_len - take))]
        col = np.arange(max_len)[None, :]
        first = (max_len - take)[:, None]
        mask = col >= first
        src = (ends - take)[:, None] + (col - first)
        out[mask] = self.items[src[mask]]
        return out

    def take(self, rows: np.ndarray) -> Sequences:
        """The given rows, in that order, as a new Sequences (row i = ``self.row(rows[i])``); ``row_users``
        becomes the taken rows' users (their row indices when ``self`` has none). Memory: the taken events."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = np.asarray(self.offsets, dtype=np.int64)[rows]
        lens = np.asarray(self.offsets, dtype=np.int64)[rows + 1] - starts
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        src = np.repeat(starts - offsets[:-1], lens) + np.arange(offsets[-1], dtype=np.int64)
        ts = None if self.timestamps is None else np.asarray(self.timestamps[src], dtype=np.int64)
        users = rows if self.row_users is None else np.asarray(self.row_users)[rows]
        return Sequences(offsets, np.asarray(self.items[src], dtype=np.int32), self.n_items, ts,
                         users.astype(np.int32))

    def split_last(self, n_rows: int, seed: int = 0) -> tuple[Sequences, Sequences]:
        """(histories, targets) of up to ``n_rows`` rows of length >= 2, drawn with ``seed``, in row order: each
        drawn row without its last item, and that item alone. Row 0 of both is empty (the padding row that the
        evaluator skips, as in a split's sequences); drawn row i is row i + 1."""
        rows = np.flatnonzero(self.lengths() >= 2)
        if len(rows) > n_rows:
            rows = np.sort(np.random.default_rng(seed).choice(rows, n_rows, replace=False))
        taken = self.take(rows)
        last = taken.offsets[1:] - 1
        keep = np.ones(taken.n_events, dtype=bool)
        keep[last] = False
        n = len(rows)
        hist_offsets = np.concatenate([[0], taken.offsets - np.arange(n + 1)]).astype(np.int64)
        tgt_offsets = np.concatenate([[0], np.arange(n + 1)]).astype(np.int64)
        return (Sequences(hist_offsets, taken.items[keep], self.n_items),
                Sequences(tgt_offsets, taken.items[last], self.n_items))

    def concat(self, other: Sequences, chunk_events: int = 1 << 22) -> Sequences:
        """Row-wise concatenation ``self.row(r) ++ other.row(r)`` (same number of rows).

        Each event is copied once to its place, ``chunk_events`` at a time: memory is the result plus
        O(``chunk_events``), whatever the size of the inputs (which may be memory-mapped).
        """
        if other.n_rows != self.n_rows:
            raise ValueError(f"row counts differ: {self.n_rows} vs {other.n_rows}")
        offsets = np.asarray(self.offsets, dtype=np.int64) + np.asarray(other.offsets, dtype=np.int64)
        keep_ts = self.timestamps is not None and other.timestamps is not None
        items = np.empty(int(offsets[-1]), dtype=np.int32)
        ts = np.empty(int(offsets[-1]), dtype=np.int64) if keep_ts else None
        a_len = self.lengths()
        for r0, r1 in row_chunks(offsets, chunk_events):  # about chunk_events events of the result each
            # the part of self, then the part of other, each moved by its rows' shift
            for part, start_in_out in ((self, offsets[r0:r1]), (other, offsets[r0:r1] + a_len[r0:r1])):
                lo, hi = int(part.offsets[r0]), int(part.offsets[r1])
                if hi == lo:
                    continue
                shift = start_in_out - part.offsets[r0:r1]
                dest = np.arange(lo, hi) + np.repeat(shift, np.diff(part.offsets[r0:r1 + 1]))
                items[dest] = part.items[lo:hi]
                if ts is not None:
                    ts[dest] = part.timestamps[lo:hi]  # type: ignore[index]
        return Sequences(offsets, items, max(self.n_items, other.n_items), ts, self.row_users)

    # -- persistence ----------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write ``offsets.npy``, ``items.npy`` (+ ``timestamps.npy``, ``row_users.npy``) and ``meta.json``
        into a folder that replaces ``directory`` atomically (:func:`recsys.atomic.atomic_dir`)."""
        from recsys.atomic import atomic_dir

        with atomic_dir(directory) as d:
            np.save(d / "offsets.npy", self.offsets)
            np.save(d / "items.npy", self.items)
            if self.timestamps is not None:
                np.save(d / "timestamps.npy", self.timestamps)
            if self.row_users is not None:
                np.save(d / "row_users.npy", self.row_users)
            (d / "meta.json").write_text(json.dumps({"n_items": self.n_items, "n_rows": self.n_rows}))

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = True) -> Sequences:
        """Load what :meth:`save` wrote; arrays are memory-mapped when ``mmap``."""
        d = Path(directory)
        if not (d / "meta.json").is_file():
            raise FileNotFoundError(f"{d} holds no sequences (meta.json missing); run `recsys data sequences`")
        mode = "r" if mmap else None
        meta = json.loads((d / "meta.json").read_text())
        opt = {n: np.load(d / f"{n}.npy", mmap_mode=mode, allow_pickle=False)
               for n in ("timestamps", "row_users") if (d / f"{n}.npy").exists()}
        return cls(
            offsets=np.load(d / "offsets.npy", mmap_mode=mode, allow_pickle=False),
            items=np.load(d / "items.npy", mmap_mode=mode, allow_pickle=False),
            n_items=int(meta["n_items"]),
            **opt,
        )

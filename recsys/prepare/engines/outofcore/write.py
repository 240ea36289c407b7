"""Out-of-core output: encode the surviving events, regroup them into contiguous ranges of user indices, split
each range with the in-memory split functions, and append the parts to the same ``.npy`` files
:meth:`recsys.prepare.split.SplitData.save` writes (byte for byte: same headers, same arrays).

Users are numbered in sorted id order, so a hash partition holds users from all over the index space; the
encoded events are therefore regrouped into ``n_buckets`` files of consecutive user indices first. Each bucket
is then sorted and split on its own (a leave-last-out split is per user; a temporal split gets the global cuts,
found by exact selection over all timestamps, and the global "item occurs in train" array), and its parts are
appended in user order. ``interactions.parquet`` is written bucket by bucket sorted by (user_idx, timestamp,
item_idx, weight), which is the fingerprint's order, so the fingerprint is hashed from it column by column.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl

from recsys.ingest.schema import EVENT, ITEM_IDX, TIMESTAMP, USER_IDX, WEIGHT
from recsys.prepare import format as pformat
from recsys.prepare.engines.outofcore.clean import Cleaned
from recsys.prepare.idmap import IdMap
from recsys.prepare.split import _FP_TYPES, PARTS, leave_last_out, temporal_split

ENCODED = (USER_IDX, ITEM_IDX, TIMESTAMP, WEIGHT, EVENT)
_NP_TYPES = {USER_IDX: np.dtype(np.int32), TIMESTAMP: np.dtype(np.int64), ITEM_IDX: np.dtype(np.int32),
             WEIGHT: np.dtype(np.float32)}  # _FP_TYPES as numpy dtypes
_FIXED = ("split", "min_events_for_targets", "cut", "cut_quantile", "valid_cut", "valid_fraction")


def _encoded_schema():
    import pyarrow as pa

    return pa.schema([(USER_IDX, pa.int32()), (ITEM_IDX, pa.int32()), (TIMESTAMP, pa.int64()),
                      (WEIGHT, pa.float32()), (EVENT, pa.large_string())])


def bucket_of(user_idx: np.ndarray, n_users: int, n_buckets: int) -> np.ndarray:
    """Bucket of 1-based user indices: consecutive ranges of about ``n_users / n_buckets`` users."""
    return ((user_idx.astype(np.int64) - 1) * n_buckets) // max(n_users, 1)


def encode_buckets(c: Cleaned, users: IdMap, items: IdMap, folder: Path, n_buckets: int,
                   progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Encode each partition's surviving events into ``folder/bucket-NNNNN.parquet`` (deleting the partition).

    Returns (n_users + 1,) int64 events per user index.
    """
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    schema = _encoded_schema()
    counts = np.zeros(len(users) + 1, dtype=np.int64)
    present = c.item_counts > 0
    item_of_code = np.zeros(len(c.item_space) + 1, dtype=np.int32)
    item_of_code[np.flatnonzero(present)] = items.encode(c.item_space.ids.filter(pl.Series(present[1:]))).to_numpy()
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for p in range(c.n_partitions):
            umap = c.user_maps[p]
            if umap is None:
                c.drop(p)
                continue
            cu = c.user_counts[p]
            alive = cu > 0
            user_of_code = np.zeros(len(umap) + 1, dtype=np.int32)
            user_of_code[np.flatnonzero(alive)] = users.encode(umap.ids.filter(pl.Series(alive[1:]))).to_numpy()
            counts[user_of_code[alive]] = cu[alive]
            u, i = c.codes(p)
            keep = c.keep(p)
            frame = c.frame(p).filter(pl.Series(keep))
            uidx = user_of_code[u[keep]]
            frame = frame.select(pl.Series(USER_IDX, uidx), pl.Series(ITEM_IDX, item_of_code[i[keep]]),
                                 TIMESTAMP, WEIGHT, EVENT)
            del u, i
            frame = frame.with_columns(pl.Series("_b", bucket_of(uidx, len(users), n_buckets)))
            for (b,), sub in frame.partition_by("_b", as_dict=True, maintain_order=True).items():
                if b not in writers:
                    writers[b] = pq.ParquetWriter(folder / f"bucket-{b:05d}.parquet", schema)
                writers[b].write_table(sub.drop("_b").to_arrow().cast(schema))
            c.drop(p)
            if progress is not None:
                progress(p)
    finally:
        for w in writers.values():
            with contextlib.suppress(Exception):
                w.close()
    return counts


class NpyAppender:
    """A 1-D ``.npy`` file written front to back; the header (always 128 bytes for a 1-D array: numpy leaves
    room for any length) is rewritten with the final length on :meth:`close`."""

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.path, self.dtype, self.n = path, np.dtype(dtype), 0
        self.fh = path.open("wb")
        self.header = self._header(0)
        self.fh.write(self.header)

    def _header(self, n: int) -> bytes:
        import io

        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                   "fortran_order": False, "shape": (n,)})
        return buf.getvalue()

    def append(self, values: np.ndarray) -> None:
        self.fh.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())
        self.n += len(values)

    def close(self) -> None:
        header = self._header(self.n)
        if len(header) != len(self.header):
            raise AssertionError(f"{self.path}: npy header length changed ({len(self.header)} -> {len(header)})")
        self.fh.seek(0)
        self.fh.write(header)
        self.fh.close()


class SplitWriter:
    """Appends the parts of consecutive user ranges into ``split/<part>/`` as SplitData.save lays them out."""

    def __init__(self, folder: Path, n_users: int, n_items: int) -> None:
        self.folder, self.n_users, self.n_items = folder, n_users, n_items
        self.lengths: dict[str, np.ndarray] = {}
        self.files: dict[str, tuple[NpyAppender, NpyAppender]] = {}
        self.aliases: dict[str, str] = {}
        self.params: dict = {}

    def add(self, lo: int, s) -> None:
        """Append the SplitData ``s`` of users ``lo .. lo + s.n_users - 1`` (its row r is user lo + r - 1)."""
        for k, part in enumerate(PARTS):
            same = next((q for q in PARTS[:k] if getattr(s, q) is getattr(s, part)), None)
            if same is not None:
                self.aliases[part] = same
                continue
            seq = getattr(s, part)
            if part not in self.files:
                d = self.folder / part
                d.mkdir(parents=True, exist_ok=True)
                self.files[part] = (NpyAppender(d / "items.npy", np.int32), NpyAppender(d / "timestamps.npy", np.int64))
                self.lengths[part] = np.zeros(self.n_users + 1, dtype=np.int64)
            items, ts = self.files[part]
            items.append(seq.items)
            ts.append(seq.timestamps)
            self.lengths[part][lo:lo + s.n_users] = seq.lengths()[1:]
        for key, value in s.params.items():
            if key in _FIXED:
                self.params[key] = value
            else:
                self.params[key] = self.params.get(key, 0) + value

    def close(self, fingerprint: str, params: dict) -> None:
        for part, (items, ts) in self.files.items():
            items.close()
            ts.close()
            d = self.folder / part
            np.save(d / "offsets.npy", np.concatenate([[0], np.cumsum(self.lengths[part])]).astype(np.int64))
            (d / "meta.json").write_text(json.dumps({"n_items": self.n_items, "n_rows": self.n_users + 1}))
        meta = {"n_users": self.n_users, "n_items": self.n_items, "fingerprint": fingerprint,
                "params": {**self.params, **params}, "aliases": self.aliases}
        (self.folder / "params.json").write_text(json.dumps(meta, indent=2, sort_keys=True))


def bucket_ranges(n_users: int, n_buckets: int) -> list[tuple[int, int]]:
    """(first, last) user index of every bucket (empty buckets left out)."""
    b = bucket_of(np.arange(1, n_users + 1), n_users, n_buckets)
    starts = np.searchsorted(b, np.arange(n_buckets), side="left")
    ends = np.searchsorted(b, np.arange(n_buckets), side="right")
    return [(int(s) + 1, int(e)) for s, e in zip(starts, ends, strict=True) if e > s]


def _bucket(folder: Path, b: int, columns: list[str] | None = None) -> pl.DataFrame:
    """Bucket ``b`` of ``folder``: ``bucket-NNNNN.parquet`` (this engine) or ``_b=N/*.parquet`` (Spark's
    partitioned write), rows in the order written; an empty frame when the bucket holds nothing."""
    path = folder / f"bucket-{b:05d}.parquet"
    spark_parts = sorted((folder / f"_b={b}").glob("*.parquet"))
    if spark_parts:
        return pl.concat([pl.read_parquet(f, columns=columns or list(ENCODED)) for f in spark_parts])
    if not path.exists():
        return pl.DataFrame(schema=dict(zip(ENCODED, (pl.Int32, pl.Int32, pl.Int64, pl.Float32, pl.String),
                                            strict=True))).select(columns or list(ENCODED))
    return pl.read_parquet(path, columns=columns)


def kth_smallest(chunks: Callable[[], Iterator[np.ndarray]], k: int, upper: int | None = None) -> int:
    """The ``k``-th smallest (0-based) of all values (those ``<= upper`` when given) of ``chunks()``, exactly,
    with a few histogram passes (memory: 65,536 counters), as ``np.sort(values)[k]`` would give."""
    lo, hi = None, None
    for a in chunks():
        a = a if upper is None else a[a <= upper]
        if len(a):
            lo = int(a.min()) if lo is None else min(lo, int(a.min()))
            hi = int(a.max()) if hi is None else max(hi, int(a.max()))
    if lo is None:
        raise ValueError("kth_smallest: no values")
    rank = k
    while lo < hi:
        width = hi - lo + 1
        size = -(-width // 65_536)
        hist = np.zeros(-(-width // size), dtype=np.int64)
        for a in chunks():
            a = a[(a >= lo) & (a <= hi)]
            hist += np.bincount((a - lo) // size, minlength=len(hist))
        cum = np.cumsum(hist)
        j = int(np.searchsorted(cum, rank, side="right"))
        rank -= int(cum[j - 1]) if j else 0
        lo, hi = lo + j * size, min(hi, lo + (j + 1) * size - 1)
    return lo


def temporal_cuts(folder: Path, ranges: list[int], n_events: int, cut_quantile: float,
                  valid_fraction: float, n_items: int) -> tuple[int, int, np.ndarray]:
    """(cut, valid_cut, train_items) over all buckets, as :func:`recsys.prepare.split.temporal_split` computes
    them on the whole log ("lower" quantiles of time)."""
    def times() -> Iterator[np.ndarray]:
        for b in ranges:
            yield _bucket(folder, b, [TIMESTAMP])[TIMESTAMP].to_numpy()

    cut = kth_smallest(times, int(np.floor((n_events - 1) * cut_quantile)))
    if valid_fraction > 0:
        m = sum(int((t <= cut).sum()) for t in times())
        valid_cut = kth_smallest(times, int(np.floor((m - 1) * (1.0 - valid_fraction))), upper=cut) if m else 0
    else:
        valid_cut = cut
    train_items = np.zeros(n_items + 1, dtype=bool)
    for b in ranges:
        f = _bucket(folder, b, [ITEM_IDX, TIMESTAMP])
        train_items[f.filter(pl.col(TIMESTAMP) <= valid_cut)[ITEM_IDX].to_numpy()] = True
    return cut, valid_cut, train_items


def write_split(folder: Path, out: Path, n_users: int, n_items: int, n_buckets: int, split: str,
                cut_quantile: float = 0.9, valid_fraction: float = 0.1,
                progress: Callable[[int], None] | None = None) -> tuple[str, dict, int]:
    """Split every bucket, write ``out/split/`` and ``out/interactions.parquet``; returns (fingerprint, params,
    n_events). Buckets are deleted as they are written."""
    import pyarrow.parquet as pq

    ranges = bucket_ranges(n_users, n_buckets)
    n_events = sum(pq.ParquetFile(p).metadata.num_rows for p in [*folder.glob("bucket-*.parquet"),
                                                                    *folder.glob("_b=*/*.parquet")])
    extra: dict = {}
    if split == "temporal":
        cut, valid_cut, train_items = temporal_cuts(folder, list(range(n_buckets)), n_events, cut_quantile,
                                                    valid_fraction, n_items)
        extra = {"cut_quantile": cut_quantile}
    writer = SplitWriter(out / pformat.SPLIT, n_users, n_items)
    schema = _encoded_schema()
    inter = pq.ParquetWriter(out / pformat.INTERACTIONS, schema)
    try:
        for lo, hi in ranges:
            b = int(bucket_of(np.array([lo]), n_users, n_buckets)[0])
            frame = _bucket(folder, b)
            local = frame.with_columns((pl.col(USER_IDX) - (lo - 1)).cast(pl.Int32))
            n_local = hi - lo + 1
            if split == "leave_last_out":
                s = leave_last_out(local, n_local, n_items, with_fingerprint=False)
            else:
                s = temporal_split(local, n_local, n_items, cut=cut, valid_cut=valid_cut, valid_fraction=valid_fraction,
                                   train_items=train_items, with_fingerprint=False)
            writer.add(lo, s)
            fp_order = frame.sort([USER_IDX, TIMESTAMP, ITEM_IDX, WEIGHT], maintain_order=True)
            inter.write_table(fp_order.to_arrow().cast(schema))
            (folder / f"bucket-{b:05d}.parquet").unlink(missing_ok=True)
            shutil.rmtree(folder / f"_b={b}", ignore_errors=True)
            if progress is not None:
                progress(frame.height)
    finally:
        inter.close()
    fp = fingerprint_file(out / pformat.INTERACTIONS, n_events)
    writer.close(fp, extra)
    return fp, writer.params | extra, n_events


def fingerprint_file(path: Path, n_rows: int) -> str:
    """:func:`recsys.prepare.split.fingerprint` of a Parquet file already sorted in its order, streamed a column
    at a time (user_idx, timestamp, item_idx, weight)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    cols = [c for c in _FP_TYPES if c in pf.schema_arrow.names]
    h = hashlib.sha256(f"recsys-fingerprint-v1 rows={n_rows} cols={cols}".encode())
    for col in cols:
        dtype = _NP_TYPES[col]
        # row group by row group: ParquetFile.iter_batches keeps what it decoded alive (memory grows with the file)
        for g in range(pf.num_row_groups):
            values = pf.read_row_group(g, columns=[col]).column(0).to_numpy()
            h.update(np.ascontiguousarray(values.astype(dtype, copy=False)))
    return h.hexdigest()


__all__ = ["NpyAppender", "SplitWriter", "bucket_of", "bucket_ranges", "encode_buckets", "fingerprint_file",
           "kth_smallest", "temporal_cuts", "write_split"]

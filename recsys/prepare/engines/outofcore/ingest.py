"""Out-of-core ingest: a log streamed block by block, validated, and appended to Parquet partitions chosen by a
hash of the user, so that every later step (dedupe, repeats, per-user counts, the split) is local to one partition.

Each block goes through :func:`recsys.ingest.validation.validate_frame` exactly as the in-memory reader validates it
(``timestamp_unit="auto"``: the first block with numbers decides seconds or milliseconds for the rest). A block's
ids are Int64 when all of them are plain integers, else String; a partition file therefore keeps both forms
(``user_i`` / ``user_s``) and the final dtype is decided when the whole log has been read, as
:func:`~recsys.ingest.validation.validate_frames` decides it. The hash key of a string id that reads as an integer
is that integer's hash, so ``"5"`` and ``5`` (the same final id once ids turn to strings) always meet in one
partition. Rows keep their input order inside a partition: blocks are appended in order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recsys.ingest.report import IngestReport
from recsys.ingest.schema import EVENT, ITEM, TIMESTAMP, USER, WEIGHT, ColumnMapping
from recsys.ingest.validation import TimeBounds, Validated, check_bad_fraction, validate_frame

HASH_SEED = 20240607
PART_COLUMNS = ("user_i", "user_s", "item_i", "item_s", TIMESTAMP, WEIGHT, EVENT)


def _part_schema():
    import pyarrow as pa

    s = pa.large_string()
    return pa.schema([("user_i", pa.int64()), ("user_s", s), ("item_i", pa.int64()), ("item_s", s),
                      (TIMESTAMP, pa.int64()), (WEIGHT, pa.float32()), (EVENT, s)])


@dataclass
class Partitioned:
    """What :func:`partition_log` wrote: ``n_partitions`` files ``folder/part-NNNNN.parquet`` (absent when empty)."""

    folder: Path
    n_partitions: int
    rows: list[int]  # accepted rows per partition
    report: IngestReport
    string_ids: dict[str, bool]  # USER / ITEM: some block held non-integer ids, so the final dtype is String
    quarantine_files: list[Path] = field(default_factory=list)
    fmt: str = ""

    def path(self, p: int) -> Path:
        return self.folder / f"part-{p:05d}.parquet"

    def read(self, p: int) -> pl.DataFrame:
        """Partition ``p`` in input order with final ``user``/``item`` dtypes, the canonical raw layout."""
        if not self.rows[p]:
            return pl.DataFrame(schema={USER: pl.String if self.string_ids[USER] else pl.Int64,
                                        ITEM: pl.String if self.string_ids[ITEM] else pl.Int64,
                                        TIMESTAMP: pl.Int64, WEIGHT: pl.Float32, EVENT: pl.String})
        return self.scan(p).collect()

    def scan(self, p: int) -> pl.LazyFrame:
        """:meth:`read` as a lazy frame (a non-empty partition), to stream it elsewhere."""
        return pl.scan_parquet(self.path(p)).select(
            _final_id(USER, self.string_ids[USER]), _final_id(ITEM, self.string_ids[ITEM]), TIMESTAMP, WEIGHT, EVENT)


def _final_id(col: str, as_string: bool) -> pl.Expr:
    i, s = pl.col(f"{col}_i"), pl.col(f"{col}_s")
    return (pl.coalesce(s, i.cast(pl.String)) if as_string else i).alias(col)


def _hash_key(frame: pl.DataFrame, col: str) -> pl.Expr:
    if frame.schema[col] == pl.String:
        as_int = pl.col(col).cast(pl.Int64, strict=False)
        return pl.when(as_int.is_not_null()).then(as_int.hash(HASH_SEED)).otherwise(pl.col(col).hash(HASH_SEED))
    return pl.col(col).cast(pl.Int64).hash(HASH_SEED)


def _split_ids(frame: pl.DataFrame, col: str) -> list[pl.Expr]:
    is_str = frame.schema[col] == pl.String
    return [(pl.lit(None, pl.Int64) if is_str else pl.col(col).cast(pl.Int64)).alias(f"{col}_i"),
            (pl.col(col) if is_str else pl.lit(None, pl.String)).alias(f"{col}_s")]


def partition_of(frame: pl.DataFrame, n_partitions: int) -> pl.Series:
    """(n,) partition number of every row of an accepted frame (hash of its user id)."""
    return frame.select((_hash_key(frame, USER) % n_partitions).cast(pl.Int32)).to_series()


def validated_blocks(raws: Iterable[pl.DataFrame], source: str, *, timestamp_unit: str = "auto",
                     bounds: TimeBounds | None = None, id_dtype: str = "auto",
                     max_id_len: int = 256) -> Iterator[Validated]:
    """:func:`validate_frame` block by block, with :func:`~recsys.ingest.validation.validate_frames`' rule for the
    time unit (the first block holding numbers decides it for the rest)."""
    auto_unit = None
    for raw in raws:
        v = validate_frame(raw, source, timestamp_unit=timestamp_unit, bounds=bounds, id_dtype=id_dtype,
                           max_id_len=max_id_len, auto_unit=auto_unit)
        if timestamp_unit == "auto" and auto_unit is None and v.stats["timestamp_unit"] in ("s", "ms"):
            auto_unit = v.stats["timestamp_unit"]
        yield v


def partition_log(blocks: Iterable[Validated], source: str, folder: Path, n_partitions: int,
                  max_bad_fraction: float, progress=None) -> Partitioned:
    """Append every validated block's accepted rows to its users' partitions; quarantined rows to
    ``folder/quarantine/``. Raises :class:`~recsys.ingest.errors.DataError` (as the in-memory reader does) when
    too many rows were bad; the message shows the first bad rows."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "quarantine").mkdir(exist_ok=True)
    schema = _part_schema()
    out = Partitioned(folder, n_partitions, [0] * n_partitions, IngestReport(source=source),
                      {USER: False, ITEM: False})
    report, head, unit, n_blocks = out.report, [], None, 0
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for v in blocks:
            n_blocks += 1
            report.rows_read += v.report.rows_read
            report.accepted += v.report.accepted
            report.quarantined += v.report.quarantined
            report.reasons.update(v.report.reasons)
            unit = unit or (v.stats["timestamp_unit"] if v.stats["timestamp_unit"] in ("s", "ms") else None)
            first_unit = report.stats.setdefault("timestamp_unit", v.stats["timestamp_unit"])
            report.stats["timestamp_unit"] = unit or first_unit
            if v.quarantine.height:
                q = folder / "quarantine" / f"q-{len(out.quarantine_files):05d}.parquet"
                v.quarantine.write_parquet(q)
                out.quarantine_files.append(q)
                if sum(h.height for h in head) < 5:
                    head.append(v.quarantine.head(5))
            frame = v.frame
            if not frame.height:
                continue
            for col in (USER, ITEM):
                out.string_ids[col] |= frame.schema[col] == pl.String
            frame = frame.with_columns(partition_of(frame, n_partitions).alias("_p"))
            frame = frame.select(*_split_ids(frame, USER), *_split_ids(frame, ITEM), TIMESTAMP,
                                 pl.col(WEIGHT).cast(pl.Float32), pl.col(EVENT).cast(pl.String), "_p")
            for (p,), sub in frame.partition_by("_p", as_dict=True, maintain_order=True).items():
                if p not in writers:
                    writers[p] = pq.ParquetWriter(out.path(p), schema)
                writers[p].write_table(sub.drop("_p").to_arrow().cast(schema))
                out.rows[p] += sub.height
            if progress is not None:
                progress(v.report.rows_read)
    finally:
        for w in writers.values():
            with contextlib.suppress(Exception):
                w.close()
    report.stats["blocks"] = n_blocks
    quarantine = pl.concat(head, how="diagonal") if head else pl.DataFrame()
    check_bad_fraction(Validated(pl.DataFrame(), quarantine, report, {"timestamp_unit": report.stats.get(
        "timestamp_unit")}), max_bad_fraction)
    report.check()
    return out


def write_quarantine_parts(parts: Partitioned, dest: Path) -> int:
    """Concatenate the block quarantines into ``dest`` (streamed); returns the number of rows (0: nothing written)."""
    if not parts.quarantine_files:
        return 0
    lazy = pl.concat([pl.scan_parquet(f) for f in parts.quarantine_files], how="diagonal")
    lazy.sink_parquet(dest)
    return parts.report.quarantined


__all__ = ["ColumnMapping", "PART_COLUMNS", "Partitioned", "partition_log", "partition_of", "validated_blocks",
           "write_quarantine_parts"]

"""Out-of-core preparation: a log larger than memory -> the same prepared data as the in-memory path.

The steps, each streaming or local to one partition, with their working files under a scratch folder::

    ingest    blocks of the log -> validate -> Parquet partitions by a hash of the user   (ingest.py)
    dedupe    per partition: exact duplicates and the repeat policy                       (clean.py)
    k-core    iterated counts over the partitions (per-user counts local, item counts summed)
    ids       user and item IdMaps from the distinct surviving ids (sorted, as IdMap.fit)
    encode    partitions -> buckets of consecutive user indices                            (write.py)
    split     per bucket with the in-memory split functions, appended to the .npy parts

Peak memory is set by the partition size (``partition_rows``) plus one count per user and item, not by the
log size. The outputs equal the in-memory path's: the same IdMaps, the same split arrays byte for byte, the same
fingerprint and report counts (``interactions.parquet`` holds the same rows, sorted by user and time).
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recsys.ingest.compression import compression, decompressed
from recsys.ingest.report import IngestReport
from recsys.ingest.schema import ITEM, USER, ColumnMapping
from recsys.ingest.text import check_file
from recsys.ingest.timeparse import unit_for
from recsys.prepare import format as pformat
from recsys.prepare.clock import StepClock
from recsys.prepare.engines.outofcore.clean import dedupe_partitions, fit_maps, kcore_partitions, min_length_partitions
from recsys.prepare.engines.outofcore.ingest import partition_log, validated_blocks, write_quarantine_parts
from recsys.prepare.engines.outofcore.write import encode_buckets, write_split
from recsys.prepare.idmap import IdMap

log = logging.getLogger(__name__)

TEXT_BYTES_PER_ROW = 24  # a guess for sizing partitions of a text log (short ids and epoch seconds)


@dataclass(frozen=True)
class OutOfCoreOptions:
    """Sizes of the out-of-core path; memory follows ``partition_rows`` (about 1 GB per 5M rows)."""

    partition_rows: int = 5_000_000  # target accepted rows per partition (and per bucket)
    partitions: int = 0  # 0: from the log's size (Parquet footers, or the file size of a text log)
    block_rows: int = 2_000_000  # rows of a Parquet log read at a time
    work_dir: str = ""  # scratch folder (a few times the log's size on disk); "" = beside the output

    def __post_init__(self) -> None:
        if self.partition_rows < 1 or self.partitions < 0 or self.block_rows < 1:
            raise ValueError(f"out-of-core sizes must be positive (partitions >= 0), got {self}")


@dataclass
class OutOfCoreResult:
    report: IngestReport
    users: IdMap
    items: IdMap
    n_events: int
    fingerprint: str
    split_params: dict
    fmt: str
    steps_s: dict = field(default_factory=dict)  # wall seconds of each step


def estimated_rows(path: Path, fmt: str) -> int:
    """Rows of the log, for sizing the partitions: exact for Parquet, a guess from a text file's size."""
    from recsys.ingest.parquet import parquet_rows

    if path.is_dir() or fmt == "parquet" or path.suffix in (".parquet", ".pq"):
        return parquet_rows(path)
    return max(path.stat().st_size // TEXT_BYTES_PER_ROW, 1)


def prepare_out_of_core(path: str | Path, dest: Path, *, fmt: str = "auto", mapping: ColumnMapping | None = None,
                        encoding: str | None = None, max_bad_fraction: float = 0.05, max_id_len: int = 256,
                        repeat_policy: str = "keep_all", user_k: int = 0, item_k: int = 0, min_length: int = 1,
                        split: str = "leave_last_out", cut_quantile: float = 0.9,
                        previous: tuple[IdMap, IdMap] | None = None,
                        options: OutOfCoreOptions | None = None) -> OutOfCoreResult:
    """Write ``interactions.parquet``, ``quarantine.parquet`` (when rows were bad), ``user_ids.parquet``,
    ``item_ids.parquet`` and ``split/`` into the folder ``dest`` (the caller makes it appear atomically).

    Parameters mirror :class:`pipelines.config.DataConfig`; ``previous`` = IdMaps to extend (stable indices).
    Raises DataError / ValueError with the same messages as the in-memory path for bad input.
    """
    opts = options or OutOfCoreOptions()
    src = check_file(path) if not Path(path).is_dir() else Path(path)
    work = Path(opts.work_dir) if opts.work_dir else dest.parent / f".{dest.name}.ooc-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    clock = StepClock(log)
    try:
        parts = _ingest_source(src, fmt, mapping, encoding, max_bad_fraction, max_id_len, opts, work)
        report = parts.report
        clock.lap(f"ingest into {parts.n_partitions} partitions", report.accepted)
        write_quarantine_parts(parts, dest / pformat.QUARANTINE)
        cleaned = dedupe_partitions(parts, work / "dedup", repeat_policy, report)
        clock.lap("dedupe", report.accepted)
        if user_k > 0 or item_k > 0:
            kcore_partitions(cleaned, max(user_k, 1), max(item_k, 1), report)
            clock.lap(f"k-core ({report.stats['kcore_passes']} passes)", report.accepted)
        if min_length > 1:
            min_length_partitions(cleaned, min_length, report)
        report.check()
        if report.accepted == 0:
            raise ValueError(f"no interactions left after cleaning {src}: {report.summary()}; "
                             "lower data.user_k / data.item_k / data.min_length")
        users, items = fit_maps(cleaned, previous)
        clock.lap("id maps", report.accepted)
        counts = encode_buckets(cleaned, users, items, work / "buckets", parts.n_partitions)
        clock.lap("encode + regroup by user", int(counts.sum()))
        fp, params, n_events = write_split(work / "buckets", dest, len(users), len(items), parts.n_partitions,
                                           split, cut_quantile=cut_quantile)
        clock.lap(f"{split} split + write", n_events)
        pformat.save_id_maps(dest, users, items)
        report.stats["engine"] = "outofcore"
        report.stats["partitions"] = parts.n_partitions
        return OutOfCoreResult(report, users, items, n_events, fp, params, parts.fmt, clock.laps)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def validate_log_file(path: str | Path, dest: Path, quarantine_dir: Path, *, fmt: str = "auto",
                      mapping: ColumnMapping | None = None, encoding: str | None = None,
                      max_bad_fraction: float = 0.05, max_id_len: int = 256, block_rows: int = 2_000_000,
                      tag: str = "q", ids_as_text: bool = False) -> tuple[IngestReport, list[Path]]:
    """Validate one log file as a stream into the Parquet file ``dest`` (canonical columns ``user, item,
    timestamp, weight, event``; ids Int64 when every id of the file is an integer, else String), as the
    out-of-core ingest validates it; memory is one block whatever the file's size. With ``ids_as_text`` ids are
    always written as text, so that parts of several files share one schema (Spark reads them as one table;
    validating them again turns ids that are all integers back into Int64).

    Returns the file's report and its quarantine files (``quarantine_dir/<tag>-NNNNN.parquet``; none when every
    row was good). No ``dest`` is written when no row was accepted. Raises DataError past ``max_bad_fraction``,
    with the in-memory reader's message.
    """
    src = check_file(path)
    work = dest.parent / f".{dest.name}.work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        opts = OutOfCoreOptions(partitions=1, block_rows=block_rows)
        parts = _ingest_source(src, fmt, mapping, encoding, max_bad_fraction, max_id_len, opts, work)
        if parts.rows[0]:
            lazy = parts.scan(0)
            if ids_as_text:
                lazy = lazy.with_columns(pl.col(USER).cast(pl.String), pl.col(ITEM).cast(pl.String))
            lazy.sink_parquet(dest)
        quarantine_dir.mkdir(parents=True, exist_ok=True)
        moved = []
        for i, q in enumerate(parts.quarantine_files):
            moved.append(quarantine_dir / f"{tag}-{i:05d}.parquet")
            shutil.move(q, moved[-1])
        return parts.report, moved
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _ingest_source(src: Path, fmt: str, mapping, encoding, max_bad_fraction: float, max_id_len: int,
                   opts: OutOfCoreOptions, work: Path):
    """:func:`_ingest` of a log file (decompressed first when compressed: stat ``compression``) or a folder."""
    kind = None if src.is_dir() else compression(src)
    if kind is None:
        return _ingest(src, src, fmt, mapping, encoding, max_bad_fraction, max_id_len, opts, work)
    with decompressed(src, kind) as plain:
        parts = _ingest(plain, src, fmt, mapping, encoding, max_bad_fraction, max_id_len, opts, work)
    parts.report.stats["compression"] = kind
    return parts


def _ingest(plain: Path, source: Path, fmt: str, mapping, encoding, max_bad_fraction: float, max_id_len: int,
            opts: OutOfCoreOptions, work: Path):
    from recsys.ingest.readers import raw_blocks

    fmt, raws, stats = raw_blocks(plain, fmt, mapping, encoding, parquet_block_rows=opts.block_rows)
    n = opts.partitions or max(1, math.ceil(estimated_rows(plain, fmt) / opts.partition_rows))
    unit = unit_for(fmt)
    blocks = validated_blocks(raws, str(source), timestamp_unit=unit, max_id_len=max_id_len)
    parts = partition_log(blocks, str(source), work / "partitions", n, max_bad_fraction)
    parts.fmt = fmt
    parts.report.stats.update(stats, format=fmt)
    return parts


__all__ = ["OutOfCoreOptions", "OutOfCoreResult", "estimated_rows", "prepare_out_of_core", "validate_log_file"]

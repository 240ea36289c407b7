"""Preparation as a Spark job: the same prepared folder as the in-memory and out-of-core engines, where the
logs live (a cluster's Parquet) or on one machine in local mode.

What runs where::

    Parquet log    read by Spark (a file or a folder of parts); ``row`` = position in the parts sorted by path
    CSV/TSV/...    parsed by the project's reader on the driver (streamed, constant memory) into raw Parquet,
                   so quoting, field counts and reader-level quarantine reasons are exactly the readers'
    validation     recsys.ingest.validation.validate_frame on every Arrow batch (``mapInArrow``): the same code,
                   reasons and quarantine rows; the time unit is decided once from the log's first block
    dedupe         window functions: exact copies, then the repeat policy (ties by input order)
    k-core         iterated counts (the same Jacobi passes as the in-memory k-core) and the minimum length
    id maps        distinct surviving ids, sorted, collected to the driver (IdMap.fit's order)
    encode         joins with the maps; events regrouped into buckets of consecutive user indices
    split + write  the driver streams the buckets through the out-of-core writer (one bucket in memory):
                   the same split functions and ``.npy`` parts

Spark starts in local mode (``local[*]``) by default; a ``master`` URL runs the same job on a cluster (the
executors need this package and pyarrow installed). Needs the ``spark`` extra and a Java runtime.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

import polars as pl

from recsys.ingest.compression import compression, decompressed
from recsys.ingest.errors import LINE
from recsys.ingest.report import IngestReport
from recsys.ingest.schema import (
    EVENT,
    ITEM,
    ITEM_IDX,
    REASON,
    ROW,
    SOURCE,
    TIMESTAMP,
    USER,
    USER_IDX,
    WEIGHT,
    ColumnMapping,
)
from recsys.ingest.text import check_file
from recsys.ingest.timeparse import unit_for
from recsys.ingest.validation import Validated, check_bad_fraction, validate_frame
from recsys.prepare import format as pformat
from recsys.prepare.engines.outofcore import OutOfCoreResult
from recsys.prepare.engines.outofcore.write import write_split
from recsys.prepare.idmap import IdMap

log = logging.getLogger(__name__)

_Q = (USER, ITEM, TIMESTAMP, WEIGHT, EVENT, LINE)  # quarantine raw columns, as validate._quarantine_frame
VALIDATED_SCHEMA = ("ok boolean, user_i long, user_s string, item_i long, item_s string, timestamp long, "
                    "weight float, event string, row long, reason string, "
                    + ", ".join(f"q_{c} string" for c in _Q))


def spark_session(master: str = "local[*]", driver_memory: str = "4g"):
    """A SparkSession (``master``: ``local[*]`` or a cluster URL); clear errors when pyspark or Java is missing.

    An existing session is reused (its master stays). Spark's shuffle scratch space is ``SPARK_LOCAL_DIRS``
    (default the system temp folder)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise RuntimeError("data.engine = 'spark' needs PySpark: pip install 'recsys[spark]' (or pip install "
                           "pyspark)") from exc
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise RuntimeError("data.engine = 'spark' needs a Java runtime (17 or newer) for Spark: install one "
                           "(Debian/Ubuntu: apt-get install default-jre-headless) or set JAVA_HOME")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    b = (SparkSession.builder.master(master).appName("recsys-prepare").config("spark.ui.enabled", "false")
         .config("spark.sql.session.timeZone", "UTC").config("spark.driver.memory", driver_memory)
         .config("spark.sql.shuffle.partitions", "8" if master.startswith("local") else "200"))
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _validator(source: str, auto_unit: str | None, max_id_len: int, unit: str):
    """The mapInArrow function: validate_frame per batch -> accepted rows and quarantine rows in one schema."""
    def run(batches):
        import pyarrow as pa

        for batch in batches:
            raw = pl.from_arrow(pa.Table.from_batches([batch]))
            if raw.height == 0:
                continue
            v = validate_frame(raw, source, timestamp_unit=unit, max_id_len=max_id_len, auto_unit=auto_unit)
            ok_rows = raw.filter(~pl.col(ROW).is_in(v.quarantine[ROW].implode()))[ROW]
            f = v.frame
            cols = {}
            for c in (USER, ITEM):
                is_str = f.schema[c] == pl.String
                cols[f"{c}_i"] = pl.Series([None] * f.height, dtype=pl.Int64) if is_str else f[c].cast(pl.Int64)
                cols[f"{c}_s"] = f[c] if is_str else pl.Series([None] * f.height, dtype=pl.String)
            good = pl.DataFrame({"ok": pl.Series([True] * f.height), **cols, TIMESTAMP: f[TIMESTAMP],
                                 WEIGHT: f[WEIGHT].cast(pl.Float32), EVENT: f[EVENT].cast(pl.String),
                                 ROW: ok_rows.cast(pl.Int64)})
            q = v.quarantine
            bad = q.select(pl.lit(False).alias("ok"), pl.col(ROW).cast(pl.Int64), pl.col(REASON),
                           *[(pl.col(c) if c in q.columns else pl.lit(None, pl.String)).alias(f"q_{c}") for c in _Q])
            out = pl.concat([good, bad], how="diagonal_relaxed")
            schema = _arrow_schema()
            yield from out.select(schema.names).to_arrow().cast(schema).to_batches()
    return run


def _arrow_schema():
    import pyarrow as pa

    return pa.schema([("ok", pa.bool_()), ("user_i", pa.int64()), ("user_s", pa.string()), ("item_i", pa.int64()),
                      ("item_s", pa.string()), (TIMESTAMP, pa.int64()), (WEIGHT, pa.float32()), (EVENT, pa.string()),
                      (ROW, pa.int64()), (REASON, pa.string())] + [(f"q_{c}", pa.string()) for c in _Q])


def _raw_frame(spark, plain: Path, fmt: str, mapping: ColumnMapping | None, encoding: str | None, work: Path):
    """(Spark DataFrame of raw columns + row, first block for the time unit, raw column names, format, stats)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from recsys.ingest.parquet import parquet_files, parquet_raw
    from recsys.ingest.readers import raw_blocks

    fmt, raws, stats = raw_blocks(plain, fmt, mapping, encoding, parquet_block_rows=10_000)
    if fmt == "parquet":
        first = next(iter(raws), None)
        pairs = (mapping or ColumnMapping()).pairs()
        files = parquet_files(plain)
        for f in files:
            parquet_raw(f, mapping or ColumnMapping(), schema_only=True)
        df = spark.read.parquet(*[str(f) for f in files]).select(
            *[F.col(src).alias(dst) for dst, src in pairs.items()],
            F.col("_metadata.file_path").alias("_file"), F.col("_metadata.row_index").alias("_ri"))
        per_file = df.groupBy("_file").count()
        offsets = per_file.select("_file", (F.sum("count").over(Window.orderBy("_file")) - F.col("count"))
                                  .alias("_offset"))
        df = df.join(F.broadcast(offsets), "_file").select(
            *pairs, (F.col("_offset") + F.col("_ri") + 1).alias(ROW))
        return df, first, fmt, stats
    import pyarrow.parquet as pq

    staged, writer, first, schema = work / "raw.parquet", None, None, None
    try:
        for raw in raws:
            table = raw.to_arrow()
            if writer is None:
                first, schema = raw.head(10_000), table.schema
                writer = pq.ParquetWriter(staged, schema)
            writer.write_table(table.cast(schema))
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ValueError(f"{plain}: no data rows to read")
    return spark.read.parquet(str(staged)), first, fmt, stats


def prepare_spark(path: str | Path, dest: Path, *, fmt: str = "auto", mapping: ColumnMapping | None = None,
                  encoding: str | None = None, max_bad_fraction: float = 0.05, max_id_len: int = 256,
                  repeat_policy: str = "keep_all", user_k: int = 0, item_k: int = 0, min_length: int = 1,
                  split: str = "leave_last_out", cut_quantile: float = 0.9,
                  previous: tuple[IdMap, IdMap] | None = None, master: str = "local[*]", work_dir: str = "",
                  buckets: int = 0) -> OutOfCoreResult:
    """:func:`recsys.prepare.engines.outofcore.prepare_out_of_core` as a Spark job: the same files in ``dest``."""
    src = Path(path) if Path(path).is_dir() else check_file(path)
    work = Path(work_dir) if work_dir else dest.parent / f".{dest.name}.spark-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    spark = spark_session(master)
    t0 = time.perf_counter()
    try:
        kind = None if src.is_dir() else compression(src)
        if kind is None:
            res = _run(spark, src, src, dest, work, fmt, mapping, encoding, max_bad_fraction, max_id_len,
                       repeat_policy, user_k, item_k, min_length, split, cut_quantile, previous, buckets)
        else:
            with decompressed(src, kind) as plain:
                res = _run(spark, plain, src, dest, work, fmt, mapping, encoding, max_bad_fraction, max_id_len,
                           repeat_policy, user_k, item_k, min_length, split, cut_quantile, previous, buckets)
            res.report.stats["compression"] = kind
        log.info("spark prepare of %s: %.1f s", src, time.perf_counter() - t0)
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(spark, plain: Path, source: Path, dest: Path, work: Path, fmt, mapping, encoding, max_bad_fraction,
         max_id_len, repeat_policy, user_k, item_k, min_length, split, cut_quantile, previous, buckets):
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    raw, first, fmt, stats = _raw_frame(spark, plain, fmt, mapping, encoding, work)
    unit_arg = unit_for(fmt)
    first_unit = unit_arg
    if first is not None and first.height:
        first_unit = validate_frame(first, str(source), timestamp_unit=unit_arg,
                                    max_id_len=max_id_len).stats["timestamp_unit"]
    auto_unit = first_unit if unit_arg == "auto" and first_unit in ("s", "ms") else None
    raw_cols = set(raw.columns)
    validated = raw.mapInArrow(_validator(str(source), auto_unit, max_id_len, unit_arg), VALIDATED_SCHEMA)
    validated.write.parquet(str(work / "validated"))
    val = spark.read.parquet(str(work / "validated"))

    # -- the report and the quarantine ------------------------------------------------------------
    report = IngestReport(source=str(source))
    counts = val.groupBy("ok", "reason").count().collect()
    report.rows_read = sum(r["count"] for r in counts)
    report.quarantined = sum(r["count"] for r in counts if not r["ok"])
    report.accepted = report.rows_read - report.quarantined
    report.reasons.update({r["reason"]: r["count"] for r in counts if not r["ok"]})
    report.stats.update(stats, format=fmt, timestamp_unit=auto_unit or first_unit)
    bad = val.filter(~F.col("ok"))
    q_cols = [c for c in _Q if c in raw_cols or c == TIMESTAMP]
    head = _quarantine(bad.orderBy(ROW).limit(5).toArrow(), q_cols, str(source))
    check_bad_fraction(Validated(pl.DataFrame(), head, report, {"timestamp_unit": report.stats["timestamp_unit"]}),
                       max_bad_fraction)
    if report.quarantined:
        _quarantine(bad.orderBy(ROW).toArrow(), q_cols, str(source)).write_parquet(dest / pformat.QUARANTINE)

    # -- dedupe and repeats --------------------------------------------------------------------------
    strings = val.filter("ok").agg(F.max(F.col("user_s").isNotNull().cast("int")).alias("u"),
                                   F.max(F.col("item_s").isNotNull().cast("int")).alias("i")).first()

    def final(col: str, as_str: bool):
        return (F.coalesce(F.col(f"{col}_s"), F.col(f"{col}_i").cast("string")) if as_str
                else F.col(f"{col}_i")).alias(col)

    ev = val.filter("ok").select(final(USER, bool(strings["u"])), final(ITEM, bool(strings["i"])), TIMESTAMP,
                                 WEIGHT, EVENT, ROW)
    n0 = report.accepted
    first_copy = Window.partitionBy(USER, ITEM, TIMESTAMP, WEIGHT, EVENT).orderBy(ROW)
    ev = ev.withColumn("_n", F.row_number().over(first_copy)).filter("_n = 1").drop("_n")
    ev = _checkpoint(spark, ev, work / "dedup")
    n1 = ev.count()
    report.duplicates_removed = n0 - n1
    if repeat_policy != "keep_all":
        pair = Window.partitionBy(USER, ITEM)
        order = ([F.col(TIMESTAMP).asc(), F.col(ROW).asc()] if repeat_policy == "first"
                 else [F.col(TIMESTAMP).desc(), F.col(ROW).desc()])
        ev = ev.withColumn("_n", F.row_number().over(pair.orderBy(*order)))
        if repeat_policy == "sum_weight":
            ev = ev.withColumn(WEIGHT, F.sum(WEIGHT).over(pair).cast("float"))
        ev = _checkpoint(spark, ev.filter("_n = 1").drop("_n"), work / "repeats")
    n2 = ev.count()
    report.filtered["repeats"] = n1 - n2
    report.accepted = n2

    # -- k-core and minimum length ------------------------------------------------------------------------
    if user_k > 0 or item_k > 0:
        ev, passes, n3 = _kcore(spark, ev, max(user_k, 1), max(item_k, 1), n2, work)
        report.filtered["kcore"] = n2 - n3
        report.accepted = n3
        report.stats["kcore_passes"] = passes
        report.stats["kcore_user_k"], report.stats["kcore_item_k"] = max(user_k, 1), max(item_k, 1)
    if min_length > 1:
        before = report.accepted
        ev = ev.withColumn("_c", F.count("*").over(Window.partitionBy(USER))).filter(F.col("_c") >= min_length)
        ev = _checkpoint(spark, ev.drop("_c"), work / "minlen")
        report.accepted = ev.count()
        report.filtered["min_length"] = before - report.accepted
    report.check()
    if report.accepted == 0:
        raise ValueError(f"no interactions left after cleaning {source}: {report.summary()}; "
                         "lower data.user_k / data.item_k / data.min_length")

    # -- id maps, encode, regroup by user index ------------------------------------------------------------
    user_ids = pl.from_arrow(ev.select(USER).distinct().toArrow())[USER]
    item_ids = pl.from_arrow(ev.select(ITEM).distinct().toArrow())[ITEM]
    if previous is None:
        users, items = IdMap.fit(user_ids), IdMap.fit(item_ids)
    else:
        users, items = previous[0].extend(user_ids), previous[1].extend(item_ids)
    umap = spark.createDataFrame(pl.DataFrame({USER: users.ids, USER_IDX: range(1, len(users) + 1)}).to_arrow())
    imap = spark.createDataFrame(pl.DataFrame({ITEM: items.ids, ITEM_IDX: range(1, len(items) + 1)}).to_arrow())
    n_buckets = buckets or max(1, -(-report.accepted // 5_000_000))
    enc = ev.join(umap, USER).join(imap, ITEM).select(
        F.col(USER_IDX).cast("int"), F.col(ITEM_IDX).cast("int"), TIMESTAMP, WEIGHT, EVENT, ROW,
        F.expr(f"((CAST({USER_IDX} AS BIGINT) - 1) * {n_buckets}) div {len(users)}").alias("_b"))
    (enc.repartition(n_buckets, "_b").sortWithinPartitions("_b", USER_IDX, ROW)
        .write.partitionBy("_b").parquet(str(work / "buckets")))
    fp, params, n_events = write_split(work / "buckets", dest, len(users), len(items), n_buckets, split,
                                       cut_quantile=cut_quantile)
    pformat.save_id_maps(dest, users, items)
    report.stats["engine"] = "spark"
    return OutOfCoreResult(report, users, items, n_events, fp, params, fmt)


def _checkpoint(spark, df, path: Path):
    """Write ``df`` and read it back: cuts the plan's lineage (the k-core loop would otherwise grow it)."""
    df.write.parquet(str(path))
    return spark.read.parquet(str(path))


def _kcore(spark, ev, user_k: int, item_k: int, n: int, work: Path):
    """Jacobi passes as :func:`recsys.prepare.filters.kcore_mask`: drop events of users or items under the
    thresholds, counted on the previous pass's survivors, until a pass drops nothing."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    passes = 0
    while True:
        passes += 1
        counted = (ev.withColumn("_cu", F.count("*").over(Window.partitionBy(USER)))
                   .withColumn("_ci", F.count("*").over(Window.partitionBy(ITEM))))
        kept = counted.filter((F.col("_cu") >= user_k) & (F.col("_ci") >= item_k)).drop("_cu", "_ci")
        kept = _checkpoint(spark, kept, work / f"kcore-{passes}")
        m = kept.count()
        if m == n:
            return ev, passes, n
        ev, n = kept, m


def _quarantine(table, cols: list[str], source: str) -> pl.DataFrame:
    """Quarantine rows in :func:`recsys.ingest.validation.validate_frame`'s layout."""
    q = pl.from_arrow(table)
    return q.select(*[pl.col(f"q_{c}").cast(pl.String).alias(c) for c in cols], pl.col(ROW).cast(pl.Int64),
                    pl.col(REASON), pl.lit(source).alias(SOURCE))


__all__ = ["VALIDATED_SCHEMA", "prepare_spark", "spark_session"]

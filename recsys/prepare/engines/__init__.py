"""The engines behind :func:`recsys.prepare.prepare`, each writing the same prepared folder:

- ``memory`` (:mod:`.memory`): the whole log in RAM; the reference.
- ``outofcore`` (:mod:`.outofcore`): hash partitions on disk, memory set by ``partition_rows``.
- ``spark`` (:mod:`.spark`): a PySpark job (the ``spark`` extra and a Java runtime).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from recsys.atomic import atomic_dir
from recsys.config import to_dict
from recsys.ingest.report import IngestReport
from recsys.prepare import format as pformat
from recsys.prepare.config import DataConfig
from recsys.prepare.idmap import IdMap

log = logging.getLogger(__name__)


@dataclass
class ValidatedParts:
    """Rows already validated, as a folder of Parquet parts in the canonical columns (the pipeline's incremental
    log folder: one part per log file, kept between runs), for the out-of-core and Spark engines.

    ``report`` counts what this run's new files added (rows read, quarantined, reasons); ``quarantine_files``
    hold their quarantined rows; ``previous_rows``: the rows the parts held before this run.
    """

    folder: Path
    report: IngestReport
    quarantine_files: list[Path] = field(default_factory=list)
    previous_rows: int = 0


def prepare_large(cfg: DataConfig, out: Path, seed: int = 42, previous: tuple[IdMap, IdMap] | None = None,
                  validated: ValidatedParts | None = None) -> None:
    """The prepared folder ``out`` (atomically) on the out-of-core or Spark engine, for logs larger than memory;
    from ``validated`` parts instead of ``cfg.path`` when given (their counts and quarantine join the report)."""
    from recsys.ingest.schema import ColumnMapping
    from recsys.prepare.engines.memory import encode_meta, synthetic

    mapping = cfg.mapping()
    with atomic_dir(out) as tmp:
        path, meta_raw, log_format = cfg.path, None, cfg.format
        if validated is not None:  # canonical columns, as validation wrote them
            path, log_format = str(validated.folder), "parquet"
            mapping = ColumnMapping(weight="weight", event="event")
        elif not path:  # the built-in synthetic set, as a Parquet log the engine reads
            frame, meta_raw = synthetic(cfg, seed)
            path, log_format = str(tmp / "synthetic.parquet"), "parquet"
            mapping = ColumnMapping(weight="weight", event="event")
            frame.write_parquet(path)
        kwargs = dict(fmt=log_format, mapping=mapping, encoding=cfg.encoding, max_bad_fraction=cfg.max_bad_fraction,
                      max_id_len=cfg.max_id_len, repeat_policy=cfg.repeat_policy, user_k=cfg.user_k,
                      item_k=cfg.item_k, min_length=cfg.min_length, split=cfg.split, cut_quantile=cfg.cut_quantile,
                      previous=previous)
        if cfg.engine == "outofcore":
            from recsys.prepare.engines.outofcore import OutOfCoreOptions, prepare_out_of_core

            res = prepare_out_of_core(path, tmp, **kwargs, options=OutOfCoreOptions(
                partition_rows=cfg.partition_rows, work_dir=cfg.work_dir))
        elif cfg.engine == "spark":
            from recsys.prepare.engines.spark import prepare_spark

            res = prepare_spark(path, tmp, **kwargs, master=cfg.spark_master, work_dir=cfg.work_dir)
        else:
            raise ValueError(f"data.engine = {cfg.engine!r} is not one of 'outofcore', 'spark'")
        if validated is not None:
            _merge_validated(res.report, validated, tmp / pformat.QUARANTINE)
        elif not cfg.path:
            Path(path).unlink()
        elif res.fmt in ("ml-100k", "ml-1m", "ml-latest-small"):
            from recsys.ingest import movielens

            meta_raw, _ = movielens.metadata(res.fmt, Path(cfg.path).parent)
        meta = encode_meta(meta_raw, res.items)
        if meta is not None:
            meta.write_parquet(tmp / pformat.ITEMS_META)
        report = {**res.report.as_dict(), "n_users": len(res.users), "n_items": len(res.items),
                  "n_events": res.n_events, "fingerprint": res.fingerprint, "data_config": to_dict(cfg)}
        pformat.write_report(tmp, report)
    log.info("prepared %s (%s engine): %s", out, cfg.engine, res.report.summary())


def _merge_validated(report: IngestReport, validated: ValidatedParts, quarantine: Path) -> None:
    """Fold what validation counted before the engine read the parts into its report (rows read include the new
    files' quarantined rows; stats ``new_rows_read`` / ``new_quarantined``) and write their quarantine."""
    import polars as pl

    new = validated.report
    report.source = new.source
    report.rows_read += new.quarantined
    report.quarantined += new.quarantined
    report.reasons.update(new.reasons)
    report.stats.update(new_files=new.stats.get("new_files", 0), new_rows_read=new.rows_read,
                        new_quarantined=new.quarantined, previous_rows=validated.previous_rows)
    files = validated.quarantine_files + ([quarantine] if quarantine.is_file() else [])
    if files:
        staged = quarantine.with_name(f".{quarantine.name}.tmp")
        pl.concat([pl.scan_parquet(f) for f in files], how="diagonal_relaxed").sink_parquet(staged)
        staged.replace(quarantine)

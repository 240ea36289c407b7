"""The in-memory engine: the whole log in RAM, read -> validate -> dedupe -> k-core -> encode -> split.

The default engine and the reference the others are held to (the same prepared folder, byte for byte in the
split arrays). Its pieces are public for the pipeline's incremental log folder (``pipelines.ingest_logs``
reads new files with :func:`read_source`) and for experiments that prepare a set step by step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsys.atomic import atomic_dir
from recsys.config import to_dict
from recsys.ingest.report import IngestReport
from recsys.ingest.schema import ITEM, ITEM_IDX, USER
from recsys.prepare import filters
from recsys.prepare import format as pformat
from recsys.prepare.clock import StepClock
from recsys.prepare.config import DataConfig
from recsys.prepare.idmap import IdMap, encode_interactions
from recsys.prepare.split import SplitData, leave_last_out, temporal_split

log = logging.getLogger(__name__)


@dataclass
class Ingested:
    """Validated raw interactions of one source (canonical columns, raw ids)."""

    frame: pl.DataFrame
    quarantine: pl.DataFrame | None
    items_meta: pl.DataFrame | None  # raw ``item`` + title, categories
    report: IngestReport


def read_source(cfg: DataConfig, path: str | Path) -> Ingested:
    """Read and validate one log file with ``cfg``'s format, column mapping and bad-row threshold."""
    from recsys.ingest.readers import read_interactions

    res = read_interactions(path, fmt=cfg.format, mapping=cfg.mapping(), encoding=cfg.encoding,
                            max_bad_fraction=cfg.max_bad_fraction, max_id_len=cfg.max_id_len)
    return Ingested(res.frame, res.quarantine, res.items_meta, res.report)


def ingest(cfg: DataConfig, seed: int = 42) -> Ingested:
    """Read ``cfg.path`` (or generate the built-in synthetic set), validate, and dedupe."""
    if cfg.path:
        one = read_source(cfg, cfg.path)
        frame, quarantine, meta, report = one.frame, one.quarantine, one.items_meta, one.report
    else:
        frame, meta = synthetic(cfg, seed)
        quarantine, report = None, IngestReport(source=f"synthetic(seed={seed})")
        report.rows_read = report.accepted = frame.height
    frame = filters.dedupe(frame, cfg.repeat_policy, report)
    return Ingested(frame, quarantine, meta, report)


def synthetic(cfg: DataConfig, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The built-in synthetic set of ``cfg``'s size: (interactions, item metadata)."""
    from recsys.sources.synthetic import SyntheticConfig, generate

    data = generate(SyntheticConfig(n_users=cfg.synthetic_users, n_items=cfg.synthetic_items,
                                    n_events=cfg.synthetic_events, seed=seed))
    return data.interactions, data.items


def clean(ing: Ingested, cfg: DataConfig) -> pl.DataFrame:
    """k-core (when thresholds are set) and the minimum sequence length; removals are counted."""
    frame = ing.frame
    if cfg.user_k > 0 or cfg.item_k > 0:
        frame = filters.kcore(frame, max(cfg.user_k, 1), max(cfg.item_k, 1), ing.report)
    if cfg.min_length > 1:
        frame = filters.min_sequence_length(frame, cfg.min_length, ing.report)
    ing.report.check()
    return frame


def fit_id_maps(frame: pl.DataFrame, previous: tuple[IdMap, IdMap] | None = None) -> tuple[IdMap, IdMap]:
    """Fresh sorted maps, or ``previous`` extended with new ids at the end (stable warm start)."""
    if previous is None:
        return IdMap.fit(frame[USER]), IdMap.fit(frame[ITEM])
    users, items = previous
    return users.extend(frame[USER]), items.extend(frame[ITEM])


def split_encoded(encoded: pl.DataFrame, cfg: DataConfig, n_users: int, n_items: int) -> SplitData:
    """``cfg.split`` of the encoded events: leave-last-out, or a global time cut at ``cfg.cut_quantile``."""
    if cfg.split == "leave_last_out":
        return leave_last_out(encoded, n_users, n_items)
    return temporal_split(encoded, n_users, n_items, cut_quantile=cfg.cut_quantile)


def encode_meta(meta: pl.DataFrame | None, items: IdMap) -> pl.DataFrame | None:
    """Item metadata keyed by ``item_idx``; items of the metadata that never occur are left out."""
    if meta is None or meta.height == 0:
        return None
    known = meta.filter(pl.col(ITEM).is_in(items.ids.implode()))
    return known.with_columns(items.encode(known[ITEM]).alias(ITEM_IDX)).drop(ITEM).sort(ITEM_IDX)


def prepare_in_memory(cfg: DataConfig, out: Path, seed: int = 42, previous: tuple[IdMap, IdMap] | None = None,
                      ingested: Ingested | None = None) -> None:
    """Write the prepared folder ``out`` (atomically) from ``ingested`` rows, or from :func:`ingest` of ``cfg``."""
    clock = StepClock(log)
    ing = ingested if ingested is not None else ingest(cfg, seed)
    clock.lap("read + validate + dedupe", ing.frame.height)
    frame = clean(ing, cfg)
    clock.lap("k-core + min length", frame.height)
    if frame.height == 0:
        raise ValueError(f"no interactions left after cleaning {cfg.path or 'synthetic data'}: "
                         f"{ing.report.summary()}; lower data.user_k / data.item_k / data.min_length")
    users, items = fit_id_maps(frame, previous)
    encoded = encode_interactions(frame, users, items)
    clock.lap("id maps + encode", encoded.height)
    split = split_encoded(encoded, cfg, len(users), len(items))
    clock.lap(f"{cfg.split} split", encoded.height)
    meta = encode_meta(ing.items_meta, items)
    report = {**ing.report.as_dict(), "n_users": len(users), "n_items": len(items),
              "n_events": encoded.height, "fingerprint": split.fingerprint, "data_config": to_dict(cfg)}
    with atomic_dir(out) as tmp:
        encoded.write_parquet(tmp / pformat.INTERACTIONS)
        if ing.quarantine is not None and ing.quarantine.height:
            ing.quarantine.write_parquet(tmp / pformat.QUARANTINE)
        pformat.save_id_maps(tmp, users, items)
        if meta is not None:
            meta.write_parquet(tmp / pformat.ITEMS_META)
        split.save(tmp / pformat.SPLIT)
        pformat.write_report(tmp, report)
    clock.lap("write", encoded.height)
    log.info("prepared %s: %s", out, ing.report.summary())

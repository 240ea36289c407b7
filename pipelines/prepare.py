"""The data steps of a run: ingest -> clean -> encode -> split, each writing files a later step reads.

A prepared data folder holds::

    interactions.parquet   encoded, cleaned events (user_idx, item_idx, timestamp, weight, event)
    quarantine.parquet     rows rejected by validation, with a ``reason`` (only when there were any)
    user_ids.parquet       IdMap of users  (index 1..n_users <-> raw id)
    item_ids.parquet       IdMap of items
    items_meta.parquet     item_idx, title, categories (when the source has them)
    split/                 SplitData (train / validation / test sequences, params.json)
    report.json            row accounting (read = accepted + quarantined + duplicates + filtered)

The folder is built under a temporary name and renamed into place, so a crash never leaves a
half-written one behind.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipelines.config import DataConfig
from recsys.atomic import atomic_dir
from recsys.config import to_dict
from recsys.ingest.report import IngestReport
from recsys.ingest.schema import ITEM, ITEM_IDX, USER
from recsys.prepare import filters
from recsys.prepare.idmap import IdMap, encode_interactions
from recsys.prepare.sequences import Sequences
from recsys.prepare.split import SplitData, leave_last_out, temporal_split

log = logging.getLogger(__name__)


@dataclass
class Ingested:
    """Validated raw interactions of one source (canonical columns, raw ids)."""

    frame: pl.DataFrame
    quarantine: pl.DataFrame | None
    items_meta: pl.DataFrame | None  # raw ``item`` + title, categories
    report: IngestReport


@dataclass
class Prepared:
    """Everything a training step needs, as read back from a prepared data folder."""

    directory: Path
    split: SplitData
    users: IdMap
    items: IdMap
    items_meta: pl.DataFrame | None  # item_idx, title, categories
    report: dict
    name: str


def read_source(cfg: DataConfig, path: str | Path) -> Ingested:
    """Read and validate one log file with ``cfg``'s format, column mapping and bad-row threshold."""
    from recsys.ingest.readers import ColumnMapping, read_interactions

    mapping = ColumnMapping(user=cfg.user_col, item=cfg.item_col, timestamp=cfg.timestamp_col,
                            weight=cfg.weight_col or None, event=cfg.event_col or None)
    res = read_interactions(path, fmt=cfg.format, mapping=mapping, encoding=cfg.encoding,
                            max_bad_fraction=cfg.max_bad_fraction, max_id_len=cfg.max_id_len)
    return Ingested(res.frame, res.quarantine, res.items_meta, res.report)


def ingest(cfg: DataConfig, seed: int = 42) -> Ingested:
    """Read ``cfg.path`` (or generate the built-in synthetic set), validate, and dedupe."""
    if cfg.path:
        one = read_source(cfg, cfg.path)
        frame, quarantine, meta, report = one.frame, one.quarantine, one.items_meta, one.report
    else:
        frame, meta = _synthetic(cfg, seed)
        quarantine, report = None, IngestReport(source=f"synthetic(seed={seed})")
        report.rows_read = report.accepted = frame.height
    frame = filters.dedupe(frame, cfg.repeat_policy, report)
    return Ingested(frame, quarantine, meta, report)


def _synthetic(cfg: DataConfig, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
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
    if cfg.split == "leave_last_out":
        return leave_last_out(encoded, n_users, n_items)
    return temporal_split(encoded, n_users, n_items, cut_quantile=cfg.cut_quantile)


def prepare(cfg: DataConfig, out_dir: str | Path, seed: int = 42, id_maps_from: str | Path | None = None,
            ingested: Ingested | None = None) -> Prepared:
    """Run ingest -> clean -> encode -> split and write the prepared folder ``out_dir`` atomically.

    ``id_maps_from``: a previous prepared folder whose IdMaps are extended (new ids appended), so
    indices of known users and items stay the same across runs. ``ingested``: rows already read
    (the pipeline's incremental log folder); otherwise :func:`ingest` reads ``cfg``.
    """
    out = Path(out_dir)
    if cfg.engine != "memory":
        if ingested is not None:
            raise ValueError(f"data.engine = {cfg.engine!r} reads data.path itself, but this run reads a folder of "
                             "logs incrementally, which the in-memory engine does; set data.engine = \"memory\"")
        return prepare_with_engine(cfg, out, seed, id_maps_from)
    clock = _Clock()
    ing = ingested if ingested is not None else ingest(cfg, seed)
    clock.lap("read + validate + dedupe", ing.frame.height)
    frame = clean(ing, cfg)
    clock.lap("k-core + min length", frame.height)
    if frame.height == 0:
        raise ValueError(f"no interactions left after cleaning {cfg.path or 'synthetic data'}: "
                         f"{ing.report.summary()}; lower data.user_k / data.item_k / data.min_length")
    previous = load_id_maps(Path(id_maps_from)) if id_maps_from else None
    users, items = fit_id_maps(frame, previous)
    encoded = encode_interactions(frame, users, items)
    clock.lap("id maps + encode", encoded.height)
    split = split_encoded(encoded, cfg, len(users), len(items))
    clock.lap(f"{cfg.split} split", encoded.height)
    meta = _encode_meta(ing.items_meta, items)
    report = {**ing.report.as_dict(), "n_users": len(users), "n_items": len(items),
              "n_events": encoded.height, "fingerprint": split.fingerprint, "data_config": to_dict(cfg)}
    with atomic_dir(out) as tmp:
        encoded.write_parquet(tmp / "interactions.parquet")
        if ing.quarantine is not None and ing.quarantine.height:
            ing.quarantine.write_parquet(tmp / "quarantine.parquet")
        users.save(tmp / "user_ids.parquet")
        items.save(tmp / "item_ids.parquet")
        if meta is not None:
            meta.write_parquet(tmp / "items_meta.parquet")
        split.save(tmp / "split")
        (tmp / "report.json").write_text(json.dumps(report, indent=2, default=str))
    clock.lap("write", encoded.height)
    log.info("prepared %s: %s", out, ing.report.summary())
    return load_prepared(out, name=cfg.name)


def prepare_with_engine(cfg: DataConfig, out: Path, seed: int = 42, id_maps_from: str | Path | None = None) -> Prepared:
    """:func:`prepare` on the out-of-core or Spark engine: the same prepared folder, for logs larger than memory."""
    from recsys.ingest.readers import ColumnMapping

    previous = load_id_maps(Path(id_maps_from)) if id_maps_from else None
    mapping = ColumnMapping(user=cfg.user_col, item=cfg.item_col, timestamp=cfg.timestamp_col,
                            weight=cfg.weight_col or None, event=cfg.event_col or None)
    with atomic_dir(out) as tmp:
        path, meta_raw, fmt = cfg.path, None, cfg.format
        if not path:  # the built-in synthetic set, as a Parquet log the engine reads
            frame, meta_raw = _synthetic(cfg, seed)
            path, fmt = str(tmp / "synthetic.parquet"), "parquet"
            mapping = ColumnMapping(weight="weight", event="event")
            frame.write_parquet(path)
        kwargs = dict(fmt=fmt, mapping=mapping, encoding=cfg.encoding, max_bad_fraction=cfg.max_bad_fraction,
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
            raise ValueError(f"data.engine = {cfg.engine!r} is not one of 'memory', 'outofcore', 'spark'")
        if not cfg.path:
            Path(path).unlink()
        elif res.fmt in ("ml-100k", "ml-1m", "ml-latest-small"):
            from recsys.ingest import movielens

            meta_raw, _ = movielens.metadata(res.fmt, Path(cfg.path).parent)
        meta = _encode_meta(meta_raw, res.items)
        if meta is not None:
            meta.write_parquet(tmp / "items_meta.parquet")
        report = {**res.report.as_dict(), "n_users": len(res.users), "n_items": len(res.items),
                  "n_events": res.n_events, "fingerprint": res.fingerprint, "data_config": to_dict(cfg)}
        (tmp / "report.json").write_text(json.dumps(report, indent=2, default=str))
    log.info("prepared %s (%s engine): %s", out, cfg.engine, res.report.summary())
    return load_prepared(out, name=cfg.name)


class _Clock:
    """Logs each data step as it finishes (the progress shown on long ingests)."""

    def __init__(self) -> None:
        self.t = time.perf_counter()

    def lap(self, step: str, rows: int) -> None:
        now = time.perf_counter()
        log.info("  %-26s %12s rows  %6.1f s", step, f"{rows:,}", now - self.t)
        self.t = now


def _encode_meta(meta: pl.DataFrame | None, items: IdMap) -> pl.DataFrame | None:
    """Item metadata keyed by ``item_idx``; items of the metadata that never occur are left out."""
    if meta is None or meta.height == 0:
        return None
    known = meta.filter(pl.col(ITEM).is_in(items.ids.implode()))
    return known.with_columns(items.encode(known[ITEM]).alias(ITEM_IDX)).drop(ITEM).sort(ITEM_IDX)


def load_id_maps(directory: Path) -> tuple[IdMap, IdMap]:
    return IdMap.load(directory / "user_ids.parquet"), IdMap.load(directory / "item_ids.parquet")


def load_prepared(directory: str | Path, name: str = "") -> Prepared:
    """Read a folder written by :func:`prepare`."""
    d = Path(directory)
    if not (d / "report.json").is_file():
        raise FileNotFoundError(f"{d} is not a prepared data folder (report.json missing); run `recsys data split`")
    users, items = load_id_maps(d)
    meta_path = d / "items_meta.parquet"
    report = json.loads((d / "report.json").read_text())
    return Prepared(d, SplitData.load(d / "split"), users, items,
                    pl.read_parquet(meta_path) if meta_path.is_file() else None, report,
                    name or report.get("data_config", {}).get("name", d.name))


def raw_items_meta(data: Prepared) -> pl.DataFrame | None:
    """The item metadata keyed by raw ``item`` id (as bundles store it), or None."""
    if data.items_meta is None:
        return None
    meta = data.items_meta
    return meta.with_columns(pl.Series("item", data.items.decode(meta["item_idx"].to_numpy()))).drop("item_idx")


def all_events(data: Prepared) -> Sequences:
    """Every user's whole history (all splits, oldest first): what an exported bundle encodes and stores."""
    from recsys.prepare.build import build_sequences

    encoded = pl.read_parquet(data.directory / "interactions.parquet")
    return build_sequences(encoded, data.split.n_users, data.split.n_items)

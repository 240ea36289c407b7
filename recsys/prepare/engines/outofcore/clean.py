"""Out-of-core cleaning: dedupe and repeats per partition, k-core by iterated counts, minimum length, id maps.

Dedupe and the repeat policy only compare rows of one user, so running :func:`recsys.prepare.filters.dedupe` on
each partition (rows in input order) removes exactly the rows it removes from the whole log.

The k-core is the same Jacobi iteration as :func:`recsys.prepare.filters.kcore_mask`: each pass drops every event
whose user count (local to its partition) or item count (summed over all partitions) is below the threshold,
using the counts of the previous pass, then decrements the counts by the dropped events. The maximal core is
unique, and the passes match the in-memory ones one for one (``kcore_passes`` agrees). Per partition it keeps
two int32 code arrays and a keep mask on disk; in memory only the count arrays (one int64 per user and item).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recsys.ingest.report import IngestReport
from recsys.ingest.schema import ITEM, USER
from recsys.prepare import filters
from recsys.prepare.engines.outofcore.ingest import Partitioned
from recsys.prepare.idmap import IdMap


@dataclass
class Cleaned:
    """Deduplicated partitions ``folder/part-NNNNN.parquet`` and, per partition, the codes and what survives."""

    folder: Path
    n_partitions: int
    item_space: IdMap  # every item after dedupe (sorted); codes are its indices 1..n
    user_maps: list[IdMap | None]  # per partition: its users (sorted); local codes are indices 1..n
    user_counts: list[np.ndarray]  # per partition: (n_local + 1,) surviving events of each local user
    item_counts: np.ndarray  # (len(item_space) + 1,) surviving events of each item

    def frame(self, p: int) -> pl.DataFrame:
        return pl.read_parquet(self.folder / f"part-{p:05d}.parquet")

    def codes(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        """(user local codes, item codes) of partition ``p``, memory-mapped."""
        d = self.folder
        return (np.load(d / f"u-{p:05d}.npy", mmap_mode="r"), np.load(d / f"i-{p:05d}.npy", mmap_mode="r"))

    def keep(self, p: int) -> np.ndarray:
        path = self.folder / f"keep-{p:05d}.npy"
        return np.load(path) if path.exists() else np.ones(len(self.codes(p)[0]), dtype=bool)

    def set_keep(self, p: int, keep: np.ndarray) -> None:
        np.save(self.folder / f"keep-{p:05d}.npy", keep)

    def drop(self, p: int) -> None:
        """Remove partition ``p``'s files (after the last step that reads them)."""
        for name in (f"part-{p:05d}.parquet", f"u-{p:05d}.npy", f"i-{p:05d}.npy", f"keep-{p:05d}.npy"):
            (self.folder / name).unlink(missing_ok=True)


def dedupe_partitions(parts: Partitioned, folder: Path, repeat_policy: str, report: IngestReport,
                      progress=None) -> Cleaned:
    """Dedupe every partition (deleting the raw one), then code users and items for the count passes."""
    folder.mkdir(parents=True, exist_ok=True)
    items: pl.Series | None = None
    for p in range(parts.n_partitions):
        frame = parts.read(p)
        local = IngestReport(source=report.source, rows_read=frame.height, accepted=frame.height)
        frame = filters.dedupe(frame, repeat_policy, local)
        report.duplicates_removed += local.duplicates_removed
        report.accepted -= local.duplicates_removed + local.filtered.get("repeats", 0)
        report.filtered["repeats"] = report.filtered.get("repeats", 0) + local.filtered.get("repeats", 0)
        frame.write_parquet(folder / f"part-{p:05d}.parquet")
        uniq = frame[ITEM].unique()
        items = uniq if items is None else pl.concat([items, uniq]).unique()
        parts.path(p).unlink(missing_ok=True)
        if progress is not None:
            progress(p)
    dtype = pl.String if parts.string_ids[ITEM] else pl.Int64
    space = IdMap.fit(items if items is not None else pl.Series([], dtype=dtype))
    cleaned = Cleaned(folder, parts.n_partitions, space, [], [], np.zeros(len(space) + 1, dtype=np.int64))
    for p in range(parts.n_partitions):
        frame = cleaned.frame(p)
        if not frame.height:
            cleaned.user_maps.append(None)
            cleaned.user_counts.append(np.zeros(1, dtype=np.int64))
            np.save(folder / f"u-{p:05d}.npy", np.zeros(0, np.int32))
            np.save(folder / f"i-{p:05d}.npy", np.zeros(0, np.int32))
            continue
        users = IdMap.fit(frame[USER])
        u = users.encode(frame[USER]).to_numpy()
        i = space.encode(frame[ITEM]).to_numpy()
        np.save(folder / f"u-{p:05d}.npy", u)
        np.save(folder / f"i-{p:05d}.npy", i)
        cleaned.user_maps.append(users)
        cleaned.user_counts.append(np.bincount(u, minlength=len(users) + 1).astype(np.int64))
        cleaned.item_counts += np.bincount(i, minlength=len(space) + 1)
    return cleaned


def kcore_partitions(c: Cleaned, user_k: int, item_k: int, report: IngestReport) -> None:
    """The maximal (user_k, item_k)-core over all partitions; updates the keep masks, counts and ``report``."""
    passes, removed = 0, 0
    while True:
        passes += 1
        item_ok = c.item_counts >= item_k
        item_drop = np.zeros_like(c.item_counts)
        any_drop = False
        for p in range(c.n_partitions):
            u, i = c.codes(p)
            if not len(u):
                continue
            keep = c.keep(p)
            cu = c.user_counts[p]
            drop = np.flatnonzero(keep & ~((cu >= user_k)[u] & item_ok[i]))
            if not len(drop):
                continue
            any_drop = True
            keep[drop] = False
            c.set_keep(p, keep)
            cu -= np.bincount(u[drop], minlength=len(cu))
            item_drop += np.bincount(i[drop], minlength=len(item_drop))
            removed += len(drop)
        c.item_counts -= item_drop
        if not any_drop:
            break
    report.filtered["kcore"] = report.filtered.get("kcore", 0) + removed
    report.accepted -= removed
    report.stats["kcore_passes"] = passes
    report.stats["kcore_user_k"], report.stats["kcore_item_k"] = int(user_k), int(item_k)


def min_length_partitions(c: Cleaned, n: int, report: IngestReport) -> None:
    """Drop users with fewer than ``n`` surviving events (one pass, as :func:`filters.min_sequence_length`)."""
    removed = 0
    for p in range(c.n_partitions):
        u, i = c.codes(p)
        cu = c.user_counts[p]
        short = (cu > 0) & (cu < n)
        if not len(u) or not short.any():
            continue
        keep = c.keep(p)
        drop = np.flatnonzero(keep & short[u])
        keep[drop] = False
        c.set_keep(p, keep)
        cu[short] = 0
        c.item_counts -= np.bincount(i[drop], minlength=len(c.item_counts))
        removed += len(drop)
    report.filtered["min_length"] = report.filtered.get("min_length", 0) + removed
    report.accepted -= removed


def fit_maps(c: Cleaned, previous: tuple[IdMap, IdMap] | None = None) -> tuple[IdMap, IdMap]:
    """The user and item IdMaps of the surviving events: sorted distinct ids (or ``previous`` extended), as
    :func:`recsys.prepare.engines.memory.fit_id_maps` builds them from the whole frame."""
    kept = [m.ids.filter(pl.Series(c.user_counts[p][1:] > 0)) for p, m in enumerate(c.user_maps) if m is not None]
    dtype = c.item_space.dtype if not kept else kept[0].dtype
    user_ids = pl.concat(kept) if kept else pl.Series("id", [], dtype=dtype)
    item_ids = c.item_space.ids.filter(pl.Series(c.item_counts[1:] > 0))
    if previous is None:
        return IdMap.fit(user_ids), IdMap.fit(item_ids)
    return previous[0].extend(user_ids), previous[1].extend(item_ids)


__all__ = ["Cleaned", "dedupe_partitions", "fit_maps", "kcore_partitions", "min_length_partitions"]

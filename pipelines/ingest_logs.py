"""Incremental ingest of a folder of log files: files new since the last run are appended, on every engine.

The pipeline keeps, in ``<workdir>/logs/``, ``parts/`` (the validated rows of each file already read, as Parquet
parts in the canonical columns) and ``files.json`` (name, size and mtime of each file already read, the parts in
order, and which run committed them). A run reads only the files not listed (or changed: then everything is
re-read, with a warning) and validates each into new parts: into memory for the in-memory engine (the files
are read whole, one at a time), as a stream for the out-of-core and Spark engines (memory is one block of a
file), which then read every part as one Parquet log. The new state (earlier parts hard-linked, new parts,
listing) is staged in a temporary folder, and :func:`commit` swaps it in for ``logs/`` in one atomic folder
replacement once the ingest step has passed its checks.

Rerunning the ingest of a run whose state was already committed (killed after the commit, before
its marker) rebuilds the same input: ``files.json`` records the listing and the parts from before that
run, so the run's new files are read again on top of the parts that preceded them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import polars as pl

from pipelines.config import DataConfig
from recsys import atomic
from recsys.ingest.compression import SUFFIXES as COMPRESSED
from recsys.ingest.compression import inner_name
from recsys.ingest.report import IngestReport
from recsys.prepare import filters
from recsys.prepare.engines import ValidatedParts
from recsys.prepare.engines.memory import Ingested, read_source

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".tsv", ".parquet", ".txt", ".dat", ".data")
LEGACY = "accumulated.parquet"  # the state before parts: every row read so far in one file


def is_log_folder(cfg: DataConfig) -> bool:
    return bool(cfg.path) and Path(cfg.path).is_dir()


def _state_dir(workdir: Path) -> Path:
    return workdir / "logs"


def _staged(workdir: Path) -> Path:
    return workdir / ".logs.staged"


def _listing(folder: Path) -> dict[str, dict]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and Path(inner_name(p)).suffix in SUFFIXES
                   and not p.name.startswith("."))
    if not files:
        raise ValueError(f"log folder {folder} holds no log files ({', '.join(SUFFIXES)}, each optionally "
                         f"compressed: {', '.join(COMPRESSED)}); add files or fix data.path")
    return {p.name: {"size": p.stat().st_size, "mtime": p.stat().st_mtime} for p in files}


def _state(workdir: Path) -> dict:
    """The committed ``files.json``: {"files": listing, "parts", "run_id", "previous_files", "previous_parts"}."""
    path = _state_dir(workdir) / "files.json"
    if not path.is_file():
        return {"files": {}, "parts": []}
    raw = json.loads(path.read_text())
    raw = raw if "files" in raw else {"files": raw}  # a listing written before run ids were recorded
    if "parts" not in raw:  # written before parts: one accumulated file
        has = (_state_dir(workdir) / LEGACY).is_file()
        raw["parts"] = [LEGACY] if has else []
        raw["previous_parts"] = [LEGACY] if has and int(raw.get("previous_rows", 0)) else []
    return raw


def collect(cfg: DataConfig, workdir: Path, run_id: str) -> Ingested | ValidatedParts:
    """Earlier parts + the parts of new files, validated; the new state is staged, not committed.

    Returns the rows in memory, deduplicated (:class:`Ingested`), for the in-memory engine; the staged parts
    (:class:`ValidatedParts`) for the out-of-core and Spark engines, which dedupe themselves. The report's stats
    hold ``new_rows_read`` and ``new_quarantined``: what this run's files alone contributed.
    """
    folder, state_dir, staged = Path(cfg.path), _state_dir(workdir), _staged(workdir)
    atomic.recover_dir(state_dir)
    listing = _listing(folder)
    state = _state(workdir)
    if state.get("run_id") == run_id:  # this run committed already (killed before its marker): rebuild its input
        known, kept = state.get("previous_files", {}), state.get("previous_parts", [])
    else:
        known, kept = state["files"], state["parts"]
    changed = [n for n in known if n in listing and listing[n] != known[n]]
    if changed or any(n not in listing for n in known):
        log.warning("log files changed or vanished since the last run (%s): re-reading the whole folder",
                    changed or sorted(set(known) - set(listing)))
        known, kept = {}, []
    new = [n for n in listing if n not in known]
    shutil.rmtree(staged, ignore_errors=True)
    (staged / "parts").mkdir(parents=True)
    parts = []
    for name in kept:
        dst = staged / "parts" / Path(name).name
        if name == LEGACY and state.get("run_id") == run_id:  # state from before parts, of this run: its first rows
            pl.read_parquet(state_dir / LEGACY).head(int(state.get("previous_rows", 0))).write_parquet(dst)
            parts.append(dst)
        else:
            parts.append(_link(state_dir / name, dst))
    previous_rows = sum(_rows(p) for p in parts)
    report = IngestReport(source=str(folder))
    memory = cfg.engine == "memory"
    quarantines: list[pl.DataFrame] = []
    quarantine_files: list[Path] = []
    metas: list[pl.DataFrame] = []
    for k, name in enumerate(new):
        part = staged / "parts" / f"{run_id}-{k:05d}.parquet"
        if memory:
            one = read_source(cfg, folder / name)
            one.frame.write_parquet(part)
            got = one.report
            quarantines += [one.quarantine] if one.quarantine is not None and one.quarantine.height else []
            metas += [one.items_meta] if one.items_meta is not None else []
        else:
            got, files = _validate_streamed(cfg, folder / name, part, staged / "quarantine", f"{k:05d}")
            quarantine_files += files
        if part.is_file():
            parts.append(part)
        report.rows_read += got.rows_read
        report.accepted += got.accepted
        report.quarantined += got.quarantined
        report.reasons.update(got.reasons)
    report.stats.update(new_files=len(new), new_rows_read=report.rows_read, new_quarantined=report.quarantined)
    log.info("log folder %s: %d new file(s) %s appended to %d earlier rows", folder, len(new), new, previous_rows)
    (staged / "files.json").write_text(json.dumps(
        {"files": listing, "parts": [f"parts/{p.name}" for p in parts], "run_id": run_id, "previous_files": known,
         "previous_parts": [f"parts/{Path(name).name}" for name in kept], "previous_rows": previous_rows}, indent=2))
    if not memory:
        return ValidatedParts(staged / "parts", report, quarantine_files, previous_rows)
    frame = pl.concat([pl.read_parquet(p) for p in parts], how="diagonal_relaxed") if parts else pl.DataFrame()
    report.rows_read += previous_rows
    report.accepted = frame.height
    frame = filters.dedupe(frame, cfg.repeat_policy, report)
    quarantine = pl.concat(quarantines, how="diagonal_relaxed") if quarantines else None
    meta = pl.concat(metas, how="diagonal_relaxed").unique("item", keep="last") if metas else None
    return Ingested(frame, quarantine, meta, report)


def _validate_streamed(cfg: DataConfig, path: Path, part: Path, quarantine_dir: Path,
                       tag: str) -> tuple[IngestReport, list[Path]]:
    """One log file validated as a stream into ``part`` (the out-of-core engine's ingest, one block at a time)."""
    from recsys.prepare.engines.outofcore import validate_log_file

    return validate_log_file(path, part, quarantine_dir, fmt=cfg.format, mapping=cfg.mapping(),
                             encoding=cfg.encoding, max_bad_fraction=cfg.max_bad_fraction,
                             max_id_len=cfg.max_id_len, tag=tag, ids_as_text=True)


def _link(src: Path, dst: Path) -> Path:
    """``dst`` as a hard link to the committed part ``src`` (a copy where the file system has no links)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _rows(part: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(part).metadata.num_rows


def commit(workdir: Path) -> None:
    """Make the staged parts and file listing the state the next run starts from (one atomic folder swap).

    Idempotent: with nothing staged (committed before a kill) it does nothing.
    """
    staged = _staged(workdir)
    if staged.is_dir():
        atomic.replace_dir(staged, _state_dir(workdir))

"""Incremental ingest of a folder of log files: files new since the last run are appended.

The pipeline keeps, in its workdir, ``logs/accumulated.parquet`` (every validated row read so far)
and ``logs/files.json`` (name, size and mtime of each file already read). A run reads only the
files not listed (or changed: then everything is re-read, with a warning), appends them, and
:func:`commit` moves the new state into place once the ingest step has passed its checks.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import polars as pl

from pipelines.config import DataConfig
from pipelines.prepare import Ingested, read_source
from recsys.data import filters
from recsys.data.report import IngestReport

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".tsv", ".parquet", ".txt", ".dat", ".data")


def is_log_folder(cfg: DataConfig) -> bool:
    return bool(cfg.path) and Path(cfg.path).is_dir()


def _state_dir(workdir: Path) -> Path:
    return workdir / "logs"


def _listing(folder: Path) -> dict[str, dict]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith("."))
    if not files:
        raise ValueError(f"log folder {folder} holds no log files ({', '.join(SUFFIXES)}); add files or fix data.path")
    return {p.name: {"size": p.stat().st_size, "mtime": p.stat().st_mtime} for p in files}


def collect(cfg: DataConfig, workdir: Path) -> Ingested:
    """Earlier rows + the rows of new files, validated and deduplicated; the new state is staged, not committed."""
    folder, state = Path(cfg.path), _state_dir(workdir)
    state.mkdir(parents=True, exist_ok=True)
    listing = _listing(folder)
    known = json.loads((state / "files.json").read_text()) if (state / "files.json").is_file() else {}
    changed = [n for n in known if n in listing and listing[n] != known[n]]
    if changed or any(n not in listing for n in known):
        log.warning("log files changed or vanished since the last run (%s): re-reading the whole folder",
                    changed or sorted(set(known) - set(listing)))
        known = {}
    new = [n for n in listing if n not in known]
    acc_path = state / "accumulated.parquet"
    frames = [pl.read_parquet(acc_path)] if known and acc_path.is_file() else []
    previous_rows = frames[0].height if frames else 0
    report = IngestReport(source=str(folder))
    quarantines, metas = [], []
    for name in new:
        one = read_source(cfg, folder / name)
        frames.append(one.frame)
        report.rows_read += one.report.rows_read
        report.quarantined += one.report.quarantined
        report.reasons.update(one.report.reasons)
        quarantines += [one.quarantine] if one.quarantine is not None and one.quarantine.height else []
        metas += [one.items_meta] if one.items_meta is not None else []
    frame = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    report.rows_read += previous_rows
    report.accepted = frame.height
    log.info("log folder %s: %d new file(s) %s appended to %d earlier rows", folder, len(new), new, previous_rows)
    _stage(state, frame, listing)
    frame = filters.dedupe(frame, cfg.repeat_policy, report)
    quarantine = pl.concat(quarantines, how="diagonal_relaxed") if quarantines else None
    meta = pl.concat(metas, how="diagonal_relaxed").unique("item", keep="last") if metas else None
    return Ingested(frame, quarantine, meta, report)


def _stage(state: Path, frame: pl.DataFrame, listing: dict[str, dict]) -> None:
    frame.write_parquet(state / ".accumulated.parquet.staged")
    (state / ".files.json.staged").write_text(json.dumps(listing, indent=2))


def commit(workdir: Path) -> None:
    """Make the staged accumulated rows and file listing the state the next run starts from."""
    state = _state_dir(workdir)
    os.replace(state / ".accumulated.parquet.staged", state / "accumulated.parquet")
    os.replace(state / ".files.json.staged", state / "files.json")

"""Incremental ingest of a folder of log files: files new since the last run are appended.

The pipeline keeps, in ``<workdir>/logs/``, ``accumulated.parquet`` (every validated row read so far)
and ``files.json`` (name, size and mtime of each file already read, and which run committed them).
A run reads only the files not listed (or changed: then everything is re-read, with a warning),
stages the new state in a temporary folder, and :func:`commit` swaps it in for ``logs/`` in one
atomic folder replacement once the ingest step has passed its checks.

Rerunning the ingest of a run whose state was already committed (killed after the commit, before
its marker) rebuilds the same input: ``files.json`` records the listing and the row count from
before that run, so the run's new files are read again on top of the rows that preceded them.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import polars as pl

from pipelines.config import DataConfig
from recsys import atomic
from recsys.ingest.compression import SUFFIXES as COMPRESSED
from recsys.ingest.compression import inner_name
from recsys.ingest.report import IngestReport
from recsys.prepare import filters
from recsys.prepare.engines.memory import Ingested, read_source

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".tsv", ".parquet", ".txt", ".dat", ".data")


def is_log_folder(cfg: DataConfig) -> bool:
    return bool(cfg.path) and Path(cfg.path).is_dir()


def _state_dir(workdir: Path) -> Path:
    return workdir / "logs"


def _listing(folder: Path) -> dict[str, dict]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and Path(inner_name(p)).suffix in SUFFIXES
                   and not p.name.startswith("."))
    if not files:
        raise ValueError(f"log folder {folder} holds no log files ({', '.join(SUFFIXES)}, each optionally "
                         f"compressed: {', '.join(COMPRESSED)}); add files or fix data.path")
    return {p.name: {"size": p.stat().st_size, "mtime": p.stat().st_mtime} for p in files}


def _state(workdir: Path) -> dict:
    """The committed ``files.json``: {"files": listing, "run_id", "previous_files", "previous_rows"}."""
    path = _state_dir(workdir) / "files.json"
    if not path.is_file():
        return {"files": {}}
    raw = json.loads(path.read_text())
    return raw if "files" in raw else {"files": raw}  # a listing written before run ids were recorded


def collect(cfg: DataConfig, workdir: Path, run_id: str) -> Ingested:
    """Earlier rows + the rows of new files, validated and deduplicated; the new state is staged, not committed.

    ``report.stats`` holds ``new_rows_read`` and ``new_quarantined``: what this run's files alone contributed.
    """
    folder, state_dir = Path(cfg.path), _state_dir(workdir)
    atomic.recover_dir(state_dir)
    listing = _listing(folder)
    state = _state(workdir)
    acc_path = state_dir / "accumulated.parquet"
    if state.get("run_id") == run_id:  # this run committed already (killed before its marker): rebuild its input
        known, base_rows = state.get("previous_files", {}), int(state.get("previous_rows", 0))
    else:
        known, base_rows = state["files"], None
    changed = [n for n in known if n in listing and listing[n] != known[n]]
    if changed or any(n not in listing for n in known):
        log.warning("log files changed or vanished since the last run (%s): re-reading the whole folder",
                    changed or sorted(set(known) - set(listing)))
        known = {}
    new = [n for n in listing if n not in known]
    frames = []
    if known and acc_path.is_file():
        earlier = pl.read_parquet(acc_path)
        frames.append(earlier if base_rows is None else earlier.head(base_rows))
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
    report.stats.update(new_files=len(new), new_rows_read=report.rows_read, new_quarantined=report.quarantined)
    frame = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    report.rows_read += previous_rows
    report.accepted = frame.height
    log.info("log folder %s: %d new file(s) %s appended to %d earlier rows", folder, len(new), new, previous_rows)
    _stage(workdir, frame, {"files": listing, "run_id": run_id, "previous_files": known,
                            "previous_rows": previous_rows})
    frame = filters.dedupe(frame, cfg.repeat_policy, report)
    quarantine = pl.concat(quarantines, how="diagonal_relaxed") if quarantines else None
    meta = pl.concat(metas, how="diagonal_relaxed").unique("item", keep="last") if metas else None
    return Ingested(frame, quarantine, meta, report)


def _staged(workdir: Path) -> Path:
    return workdir / ".logs.staged"


def _stage(workdir: Path, frame: pl.DataFrame, state: dict) -> None:
    staged = _staged(workdir)
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    frame.write_parquet(staged / "accumulated.parquet")
    (staged / "files.json").write_text(json.dumps(state, indent=2))


def commit(workdir: Path) -> None:
    """Make the staged rows and file listing the state the next run starts from (one atomic folder swap).

    Idempotent: with nothing staged (committed before a kill) it does nothing.
    """
    staged = _staged(workdir)
    if staged.is_dir():
        atomic.replace_dir(staged, _state_dir(workdir))

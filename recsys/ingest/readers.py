"""Read interaction logs (CSV, TSV, Parquet, MovieLens, sequence files) into the canonical raw layout.

:func:`read_interactions` is the one entry point. The read path, top to bottom:

1. :mod:`recsys.ingest.text` checks the file (exists, not empty, text or not) and the encoding;
2. :mod:`recsys.ingest.compression` streams a gzip, zstd or bz2 file (recognised by its magic bytes) into
   a temporary plain copy; ``events.csv.gz`` is then read as CSV;
3. :func:`detect_format` takes the format from the name (``fmt="auto"``), and one module per format
   parses it into raw columns plus ``row`` (the file's line number) and reader-level reasons:
   :mod:`recsys.ingest.delimited` (CSV/TSV), :mod:`recsys.ingest.parquet`, :mod:`recsys.ingest.movielens`,
   :mod:`recsys.ingest.seqfile`;
4. :func:`recsys.ingest.validation.validate_frame` accepts or quarantines every row with a reason;
5. :func:`~recsys.ingest.validation.check_bad_fraction` raises when too many rows are bad.

Errors and quarantine reasons live in :mod:`recsys.ingest.errors`. The report reconciles
``rows_read == accepted + quarantined (+ duplicates_removed when dedupe=True)``::

    >>> res = read_interactions("ratings.csv")                       # doctest: +SKIP
    >>> res.frame.columns, res.report.summary()                      # doctest: +SKIP
    (['user', 'item', 'timestamp', 'weight', 'event'], 'ratings.csv: read 100,836 = accepted 100,836 + ...')

``fmt="auto"`` picks the format from the file name: ``u.data`` -> ml-100k, ``ratings*.dat`` ->
ml-1m, ``ratings.csv`` with header ``userId,movieId,...`` -> ml-latest-small, ``*.parquet``,
``*.csv``, ``*.tsv``, and ``*.txt`` -> sequence file (layout sniffed: one user a line, or one
``user item`` pair a line); a compression suffix (``.gz``, ``.zst``, ``.bz2``) is dropped first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsys.ingest import movielens, seqfile
from recsys.ingest.compression import compression, decompressed, inner_name
from recsys.ingest.delimited import SEPARATORS, delimited_raw, header_line
from recsys.ingest.errors import DataError
from recsys.ingest.parquet import parquet_blocks, parquet_raw
from recsys.ingest.report import IngestReport
from recsys.ingest.schema import ColumnMapping
from recsys.ingest.text import check_encoding, check_file, read_lines
from recsys.ingest.timeparse import TimestampUnit, unit_for
from recsys.ingest.validation import IdDtype, TimeBounds, check_bad_fraction, validate_frames, write_quarantine
from recsys.prepare.filters import dedupe as dedupe_rows
from serving.format import MAX_ID_LEN

FORMATS = ("auto", "csv", "tsv", "parquet", "ml-100k", "ml-1m", "ml-latest-small", "seq", "seq-lines", "seq-pairs")
_ALIASES = {"seq-per-user": "seq-lines", "seq-per-event": "seq-pairs"}  # names used in run configs
_MOVIELENS_TEXT = {"ml-100k": "\t", "ml-1m": "::"}
LATEST_SMALL = ColumnMapping(user="userId", item="movieId", timestamp="timestamp", weight="rating")
"""The columns of MovieLens latest-small's ratings.csv."""


@dataclass
class ReadResult:
    """``frame``: (n_ok, 5) user, item, timestamp Int64, weight Float32, event String.

    ``quarantine``: bad rows (raw values as strings, row, reason, source); ``report``: the counts;
    ``items_meta`` / ``users_meta``: MovieLens metadata (item, title, categories / user, ...) or None.
    """

    frame: pl.DataFrame
    quarantine: pl.DataFrame
    report: IngestReport
    items_meta: pl.DataFrame | None = None
    users_meta: pl.DataFrame | None = None


def detect_format(path: Path) -> str:
    """The format ``fmt="auto"`` uses for ``path``, from its name without a compression suffix (and a
    CSV's header)."""
    if path.is_dir():  # a folder of Parquet parts (the out-of-core and Spark engines read those)
        return "parquet"
    name = inner_name(path).lower()
    suffix = Path(name).suffix
    if name == "u.data":
        return "ml-100k"
    if name.startswith("ratings") and suffix == ".dat":
        return "ml-1m"
    if name == "ratings.csv" and header_line(path).replace('"', "").startswith("userId,movieId"):
        return "ml-latest-small"
    by_suffix = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".txt": "seq"}
    if suffix in by_suffix:
        return by_suffix[suffix]
    raise DataError(f"{path}: cannot tell the format from the name {path.name!r}; pass fmt= one of "
                    f"{list(FORMATS[1:])} (compressed files: name.csv.gz, name.tsv.zst, name.csv.bz2).")


def _raw_frames(path: Path, fmt: str, mapping: ColumnMapping | None, encoding: str | None,
                separator: str | None) -> tuple[Iterable[pl.DataFrame], dict]:
    """Dispatch to the parser of ``fmt``: the raw frames (CSV/TSV: one per block) and stats about the parse."""
    if fmt in _MOVIELENS_TEXT:
        return [movielens.ratings_raw(path, _MOVIELENS_TEXT[fmt], encoding or "latin-1")], {}
    if fmt == "ml-latest-small":
        # the default mapping (user, item, timestamp) means "the standard columns of this format"
        custom = mapping is not None and mapping != ColumnMapping()
        return delimited_raw(path, ",", mapping if custom else LATEST_SMALL, encoding or "utf8"), {}
    if fmt in ("csv", "tsv"):
        return delimited_raw(path, separator or SEPARATORS[fmt], mapping or ColumnMapping(), encoding or "utf8"), {}
    if fmt == "parquet":
        return [parquet_raw(path, mapping or ColumnMapping())], {}
    lines = read_lines(path, encoding or "utf8")
    layout = {"seq-lines": "lines", "seq-pairs": "pairs"}.get(fmt) or seqfile.sniff_layout(lines)
    return [seqfile.seq_raw(lines, layout)], {"layout": layout}


def raw_blocks(path: Path, fmt: str, mapping: ColumnMapping | None, encoding: str | None = None,
               separator: str | None = None, parquet_block_rows: int = 4_000_000
               ) -> tuple[str, Iterable[pl.DataFrame], dict]:
    """(format, raw frames, parse stats) of a plain (not compressed) file: what :func:`read_interactions`
    validates, as a stream. CSV/TSV come in text blocks and Parquet (a file or a folder of parts) in blocks of
    ``parquet_block_rows`` rows; the small formats (MovieLens, sequence files) as one frame."""
    fmt = _ALIASES.get(fmt, fmt)
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r} is unknown; use one of {list(FORMATS)}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "parquet":
        return fmt, parquet_blocks(path, mapping or ColumnMapping(), parquet_block_rows), {}
    raws, stats = _raw_frames(path, fmt, mapping, encoding, separator)
    return fmt, raws, stats


def read_interactions(
    path: str | Path,
    fmt: str = "auto",
    mapping: ColumnMapping | None = None,
    *,
    encoding: str | None = None,
    timestamp_unit: TimestampUnit = "auto",
    max_bad_fraction: float = 0.05,
    separator: str | None = None,
    id_dtype: IdDtype = "auto",
    bounds: TimeBounds | None = None,
    dedupe: bool = False,
    quarantine_path: str | Path | None = None,
    max_id_len: int = MAX_ID_LEN,
) -> ReadResult:
    """Read, validate and account for every row of an interaction file.

    Parameters
    ----------
    path : the file.
    fmt : one of :data:`FORMATS`; ``"auto"`` decides from the name (see the module docstring).
    mapping : source column names (CSV, TSV, Parquet); default ``user, item, timestamp``.
    encoding : text encoding; None = utf8, but latin-1 for the ml-100k / ml-1m files.
    timestamp_unit : ``"auto"`` (s or ms by magnitude, or ISO-8601), ``"s"``, ``"ms"``, ``"iso"``;
        sequence files always get synthetic positions.
    max_bad_fraction : DataError when quarantined / read exceeds it.
    separator : override the CSV/TSV field separator.
    id_dtype : ``"auto"`` (Int64 when every id is an integer), ``"int"`` or ``"str"``.
    bounds : plausible timestamp range (default 1990-01-01 .. now + 1 day).
    dedupe : also remove exact duplicate rows (counted in ``report.duplicates_removed``).
    quarantine_path : where to write the quarantine as Parquet (also when the read then fails).
    max_id_len : ids longer than this are quarantined (default 256, the limit serving enforces).

    Returns
    -------
    ReadResult; ``report.check()`` holds.
    """
    fmt = _ALIASES.get(fmt, fmt)
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r} is unknown; use one of {list(FORMATS)}")
    p = check_file(path)
    if encoding is not None:
        check_encoding(encoding)
    kind = compression(p)
    if kind is None:
        return _read(p, p, fmt, mapping, encoding, timestamp_unit, max_bad_fraction, separator, id_dtype, bounds,
                     dedupe, quarantine_path, max_id_len)
    with decompressed(p, kind) as plain:
        try:
            res = _read(plain, p, fmt, mapping, encoding, timestamp_unit, max_bad_fraction, separator, id_dtype,
                        bounds, dedupe, quarantine_path, max_id_len)
        except DataError as exc:  # name the file the caller passed, not the temporary copy
            raise DataError(str(exc).replace(str(plain), f"{p} (decompressed)")) from None
    res.report.stats["compression"] = kind
    return res


def _read(p: Path, source: Path, fmt: str, mapping: ColumnMapping | None, encoding: str | None,
          timestamp_unit: TimestampUnit, max_bad_fraction: float, separator: str | None, id_dtype: IdDtype,
          bounds: TimeBounds | None, dedupe: bool, quarantine_path: str | Path | None,
          max_id_len: int) -> ReadResult:
    """:func:`read_interactions` on the plain file ``p``; ``source`` is what reports and metadata name."""
    fmt = detect_format(p) if fmt == "auto" else fmt
    raws, stats = _raw_frames(p, fmt, mapping, encoding, separator)
    unit = unit_for(fmt, timestamp_unit)
    validated = validate_frames(raws, str(source), timestamp_unit=unit, bounds=bounds, id_dtype=id_dtype,
                                max_id_len=max_id_len)
    if quarantine_path is not None and validated.quarantine.height:
        write_quarantine(validated.quarantine, quarantine_path)
    check_bad_fraction(validated, max_bad_fraction, None if quarantine_path is None else str(quarantine_path))
    report, frame = validated.report, validated.frame
    report.stats.update(stats, format=fmt)
    if dedupe:
        frame = dedupe_rows(frame, report=report)
    report.check()
    items_meta = users_meta = None
    if fmt in ("ml-100k", "ml-1m", "ml-latest-small"):
        items_meta, users_meta = movielens.metadata(fmt, source.parent)
    return ReadResult(frame, validated.quarantine, report, items_meta, users_meta)


__all__ = ["FORMATS", "LATEST_SMALL", "ColumnMapping", "DataError", "ReadResult", "detect_format", "raw_blocks",
           "read_interactions"]

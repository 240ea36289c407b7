"""Read interaction logs (CSV, TSV, Parquet, MovieLens, sequence files) into the canonical raw layout.

:func:`read_interactions` is the one entry point. It parses the file, validates every row
(:func:`recsys.data.validate.validate_frame`: bad rows are quarantined with a reason, never
dropped), raises :class:`~recsys.data.validate.DataError` when too many rows are bad, and
returns a :class:`ReadResult` whose report reconciles ``rows_read == accepted + quarantined
(+ duplicates_removed when dedupe=True)``::

    >>> res = read_interactions("ratings.csv")                       # doctest: +SKIP
    >>> res.frame.columns, res.report.summary()                      # doctest: +SKIP
    (['user', 'item', 'timestamp', 'weight', 'event'], 'ratings.csv: read 100,836 = accepted 100,836 + ...')

``fmt="auto"`` picks the format from the file name: ``u.data`` -> ml-100k, ``ratings*.dat`` ->
ml-1m, ``ratings.csv`` with header ``userId,movieId,...`` -> ml-latest-small, ``*.parquet``,
``*.csv``, ``*.tsv``, and ``*.txt`` -> sequence file (layout sniffed: one user a line, or one
``user item`` pair a line). gzip, zstd and bz2 files are recognised by their magic bytes and
decompressed as a stream first (:mod:`recsys.data.compressed`); ``events.csv.gz`` is read as CSV.
CSV is read as strings first, so a bad value is quarantined instead of failing the whole read.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import polars as pl

from recsys.data import movielens, seqfile
from recsys.data.compressed import compression, decompressed, inner_name
from recsys.data.filters import dedupe as dedupe_rows
from recsys.data.report import IngestReport
from recsys.data.schema import ROW
from recsys.data.textio import (
    check_encoding,
    check_file,
    check_text,
    field_counts,
    polars_errors,
    read_lines,
    text_source,
)
from recsys.data.timeparse import TimestampUnit
from recsys.data.validate import (
    BLANK_LINE,
    LINE,
    READER_REASON,
    WRONG_FIELD_COUNT,
    DataError,
    IdDtype,
    TimeBounds,
    check_bad_fraction,
    validate_frame,
    write_quarantine,
)
from serving.format import MAX_ID_LEN

FORMATS = ("auto", "csv", "tsv", "parquet", "ml-100k", "ml-1m", "ml-latest-small", "seq", "seq-lines", "seq-pairs")
_ALIASES = {"seq-per-user": "seq-lines", "seq-per-event": "seq-pairs"}  # names used in run configs
_SEPARATORS = {"csv": ",", "tsv": "\t"}
_MOVIELENS_TEXT = {"ml-100k": "\t", "ml-1m": "::"}


@dataclass(frozen=True)
class ColumnMapping:
    """Source column names for each canonical column; None = the source has no such column.

    Without ``timestamp`` the file order is taken as time order (synthetic timestamps);
    without ``weight`` every event weighs 1.0.
    """

    user: str = "user"
    item: str = "item"
    timestamp: str | None = "timestamp"
    weight: str | None = None
    event: str | None = None

    def pairs(self) -> dict[str, str]:
        """{canonical name: source name} for the mapped columns."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


LATEST_SMALL = ColumnMapping(user="userId", item="movieId", timestamp="timestamp", weight="rating")


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
    name = inner_name(path).lower()
    suffix = Path(name).suffix
    if name == "u.data":
        return "ml-100k"
    if name.startswith("ratings") and suffix == ".dat":
        return "ml-1m"
    if name == "ratings.csv" and _header_line(path).replace('"', "").startswith("userId,movieId"):
        return "ml-latest-small"
    by_suffix = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".txt": "seq"}
    if suffix in by_suffix:
        return by_suffix[suffix]
    raise DataError(f"{path}: cannot tell the format from the name {path.name!r}; pass fmt= one of "
                    f"{list(FORMATS[1:])} (compressed files: name.csv.gz, name.tsv.zst, name.csv.bz2).")


def _header_line(path: Path, encoding: str = "utf8") -> str:
    with path.open("rb") as fh:
        first = fh.readline()
    try:
        text = first.decode(encoding)
    except UnicodeDecodeError:
        text = first.decode("latin-1")
    return text.lstrip("\ufeff").rstrip("\r\n")


def _missing_columns(path: Path, found: list[str], mapping: ColumnMapping, sep: str | None) -> DataError:
    wanted = mapping.pairs()
    missing = [src for src in wanted.values() if src not in found]
    hint = ""
    if sep is not None and len(found) == 1:
        seps = [s for s in (",", "\t", ";", "|") if s != sep and s in found[0]]
        if seps:
            hint = f" The header looks {seps[0]!r}-separated: pass separator={seps[0]!r} (or fmt=)."
    expects = ", ".join(f"{k}={v!r}" for k, v in wanted.items())
    return DataError(f"{path}: column(s) {missing} not found. The file has columns {found}; the mapping expects "
                     f"{expects}.{hint} Pass mapping=ColumnMapping(...) naming the file's columns.")


def _delimited_raw(path: Path, sep: str, mapping: ColumnMapping, encoding: str) -> pl.DataFrame:
    """CSV/TSV with a header -> raw string columns under canonical names + row + line + _reason."""
    check_text(path, "CSV/TSV")
    header = _header_line(path, encoding)
    with polars_errors(path, "CSV/TSV", encoding):
        names = pl.read_csv(header.encode(), separator=sep, has_header=False, infer_schema=False).row(0)
    names = [n.strip() if n is not None else "" for n in names]
    empty = [i + 1 for i, n in enumerate(names) if not n]
    dupes = sorted({n for n in names if n and names.count(n) > 1})
    if empty or dupes:
        what = "; ".join(([f"empty column name(s) at position(s) {empty}"] if empty else [])
                         + ([f"duplicated column name(s) {dupes}"] if dupes else []))
        raise DataError(f"{path}: the header line has {what}: {header!r}. Every column needs its own name; fix the "
                        "header (a stray separator at the end of the line makes an empty name).")
    if any(src not in names for src in mapping.pairs().values()):
        raise _missing_columns(path, names, mapping, sep)
    schema = {f"_c{i}": pl.String for i in range(len(names))}
    with polars_errors(path, "CSV/TSV", encoding):
        src = text_source(path, encoding)
        data = pl.scan_csv(src, separator=sep, has_header=False, skip_lines=1, schema=schema,
                           truncate_ragged_lines=True, missing_columns="insert", extra_columns="ignore",
                           empty_string_is_null=False).collect()
        lines = read_lines(path, encoding).slice(1)
    picked = data.select([pl.col(f"_c{names.index(src)}").alias(dst) for dst, src in mapping.pairs().items()])
    if lines.height != data.height:  # a quoted field spans lines: check records, not lines
        return _checked_records(path, picked, sep, len(names), encoding)
    blank = lines[LINE].str.strip_chars() == ""
    ragged = field_counts(lines, sep) != len(names)
    reason = pl.when(blank).then(pl.lit(BLANK_LINE)).when(ragged).then(pl.lit(WRONG_FIELD_COUNT))
    return picked.with_columns(lines[ROW], lines[LINE]).with_columns(
        pl.select(reason.alias(READER_REASON))[READER_REASON],
        pl.when(ragged | blank).then(pl.col(LINE)).alias(LINE),  # keep the raw text only where it helps
    )


def _checked_records(path: Path, picked: pl.DataFrame, sep: str, n_fields: int, encoding: str) -> pl.DataFrame:
    """Row numbers and ragged/blank flags per CSV record when a quoted field spans lines.

    Python's csv module walks the records (quotes and all) and gives each one's first line number and
    field count; only this rare layout pays for it. Should its record count disagree with polars', the
    rows get record numbers and no field check (the quarantine still catches bad values).
    """
    import csv
    import io

    text = text_source(path, encoding)
    with (open(text, newline="", encoding="utf-8") if isinstance(text, str)
          else io.TextIOWrapper(io.BytesIO(text), encoding="utf-8", newline="")) as fh:
        reader = csv.reader(fh, delimiter=sep)
        next(reader, None)  # header
        starts, counts, line = [], [], reader.line_num + 1
        for record in reader:
            starts.append(line)
            counts.append(len(record))
            line = reader.line_num + 1
    if len(starts) != picked.height:
        return picked.with_columns(pl.int_range(2, picked.height + 2, dtype=pl.Int64).alias(ROW))
    n = pl.Series(counts)
    blank, ragged = n == 0, (n != n_fields) & (n != 0)
    reason = pl.select(pl.when(blank).then(pl.lit(BLANK_LINE)).when(ragged).then(pl.lit(WRONG_FIELD_COUNT))
                       .alias(READER_REASON))[READER_REASON]
    return picked.with_columns(pl.Series(ROW, starts, dtype=pl.Int64), reason)


def _parquet_raw(path: Path, mapping: ColumnMapping) -> pl.DataFrame:
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"PAR1":
        raise DataError(f"{path}: is not a Parquet file (starts with {magic!r}, not b'PAR1'). Check the path, "
                        "or pass fmt='csv' / 'tsv' if it is text.")
    with polars_errors(path, "Parquet"):
        lf = pl.scan_parquet(path)
        found = lf.collect_schema().names()
        if any(src not in found for src in mapping.pairs().values()):
            raise _missing_columns(path, found, mapping, None)
        cols = [pl.col(src).alias(dst) for dst, src in mapping.pairs().items()]
        return lf.select(*cols, pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(ROW)).collect()


def _raw_frame(path: Path, fmt: str, mapping: ColumnMapping | None, encoding: str | None,
               separator: str | None) -> tuple[pl.DataFrame, dict]:
    """Dispatch to the parser of ``fmt``; returns the raw frame and stats about the parse."""
    if fmt in _MOVIELENS_TEXT:
        return movielens.ratings_raw(path, _MOVIELENS_TEXT[fmt], encoding or "latin-1"), {}
    if fmt == "ml-latest-small":
        # the default mapping (user, item, timestamp) means "the standard columns of this format"
        custom = mapping is not None and mapping != ColumnMapping()
        return _delimited_raw(path, ",", mapping if custom else LATEST_SMALL, encoding or "utf8"), {}
    if fmt in ("csv", "tsv"):
        return _delimited_raw(path, separator or _SEPARATORS[fmt], mapping or ColumnMapping(), encoding or "utf8"), {}
    if fmt == "parquet":
        return _parquet_raw(path, mapping or ColumnMapping()), {}
    lines = read_lines(path, encoding or "utf8")
    layout = {"seq-lines": "lines", "seq-pairs": "pairs"}.get(fmt) or seqfile.sniff_layout(lines)
    return seqfile.seq_raw(lines, layout), {"layout": layout}


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
    raw, stats = _raw_frame(p, fmt, mapping, encoding, separator)
    unit = "position" if fmt.startswith("seq") else timestamp_unit
    validated = validate_frame(raw, str(source), timestamp_unit=unit, bounds=bounds, id_dtype=id_dtype,
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


__all__ = ["FORMATS", "LATEST_SMALL", "ColumnMapping", "DataError", "ReadResult", "detect_format",
           "read_interactions"]

"""CSV and TSV logs with a header line -> raw string columns under the canonical names.

Values are read as strings, so a bad value is quarantined by the validator instead of failing the whole
read. The header must name every column once (duplicated or empty names are a
:class:`~recsys.data.errors.DataError`); extra columns are ignored. Each record is checked as a record,
whatever its quoting: a line with more or fewer fields than the header is flagged "wrong field count",
a blank line "blank line", and quarantine ``row`` numbers are the file's line numbers (the first line
of a record whose quoted field spans lines).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys.data.errors import BLANK_LINE, LINE, READER_REASON, WRONG_FIELD_COUNT, DataError
from recsys.data.schema import ROW, ColumnMapping
from recsys.data.textio import check_text, field_counts, polars_errors, read_lines, text_source

SEPARATORS = {"csv": ",", "tsv": "\t"}


def header_line(path: Path, encoding: str = "utf8") -> str:
    with path.open("rb") as fh:
        first = fh.readline()
    try:
        text = first.decode(encoding)
    except UnicodeDecodeError:
        text = first.decode("latin-1")
    return text.lstrip("\ufeff").rstrip("\r\n")


def delimited_raw(path: Path, sep: str, mapping: ColumnMapping, encoding: str) -> pl.DataFrame:
    """CSV/TSV with a header -> raw string columns under canonical names + row + line + _reason."""
    check_text(path, "CSV/TSV")
    header = header_line(path, encoding)
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
        raise mapping.missing_error(path, names, sep)
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


__all__ = ["SEPARATORS", "delimited_raw", "header_line"]

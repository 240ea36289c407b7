"""CSV and TSV logs with a header line -> raw string columns under the canonical names.

Values are read as strings, so a bad value is quarantined by the validator instead of failing the whole
read. The header must name every column once (duplicated or empty names are a
:class:`~recsys.ingest.errors.DataError`); extra columns are ignored. Each record is checked as a record,
whatever its quoting: a line with more or fewer fields than the header is flagged "wrong field count",
a blank line "blank line", and quarantine ``row`` numbers are the file's line numbers (the first line
of a record whose quoted field spans lines).

The file is parsed in blocks of whole records (:data:`BLOCK_BYTES` of text; a block never ends inside a
quoted field), so a 20M-row log needs one block's working memory plus the accepted rows, not the
whole file's strings.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl

from recsys.ingest.errors import BLANK_LINE, LINE, READER_REASON, WRONG_FIELD_COUNT, DataError
from recsys.ingest.schema import ROW, ColumnMapping
from recsys.ingest.text import check_encoding, check_text, field_counts, lines_of, polars_errors

SEPARATORS = {"csv": ",", "tsv": "\t"}


def header_line(path: Path, encoding: str = "utf8") -> str:
    with path.open("rb") as fh:
        first = fh.readline()
    try:
        text = first.decode(encoding)
    except UnicodeDecodeError:
        text = first.decode("latin-1")
    return text.lstrip("\ufeff").rstrip("\r\n")


BLOCK_BYTES = 64 << 20  # text parsed at a time: peak memory is one block's parse plus the accepted rows


def header_names(path: Path, sep: str, mapping: ColumnMapping, encoding: str) -> list[str]:
    """The header's column names; DataError when one is empty or duplicated, or a mapped one is missing."""
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
    return names


def delimited_raw(path: Path, sep: str, mapping: ColumnMapping, encoding: str,
                  block_bytes: int | None = None) -> Iterator[pl.DataFrame]:
    """CSV/TSV with a header -> raw string columns under canonical names + row + line + _reason, one frame
    per block of whole records (about ``block_bytes`` of text, default :data:`BLOCK_BYTES`), so memory does
    not grow with the file."""
    check_text(path, "CSV/TSV")
    names = header_names(path, sep, mapping, encoding)
    for first_line, block in _blocks(path, encoding, block_bytes or BLOCK_BYTES):
        yield _block_raw(path, block, first_line, sep, names, mapping, encoding)


def _blocks(path: Path, encoding: str, block_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(line number of the block's first line, UTF-8 text of whole records) after the header line.

    Blocks end at a newline outside quotes, so no record is split. Other encodings are decoded as a stream,
    about ``block_bytes`` at a time, so memory does not grow with the file whatever its encoding.
    """
    line, carry, sent = 2, b"", False
    chunks = _utf8_chunks(path, encoding, block_bytes)
    while True:
        chunk = next(chunks, b"")
        data = carry + chunk if carry else chunk
        cut = len(data) if not chunk else _record_end(data)
        if cut == 0 and chunk:  # one record longer than a block: read on
            carry = data
            continue
        if data[:cut] or not sent:
            yield line, data[:cut]
            sent = True
        if not chunk:
            return
        line += data.count(b"\n", 0, cut)
        carry = data[cut:]


def _utf8_chunks(path: Path, encoding: str, block_bytes: int) -> Iterator[bytes]:
    """The file after its header line as UTF-8 bytes, about ``block_bytes`` at a time (UTF-8 files as they are;
    others decoded incrementally, so a character split between two reads is never cut)."""
    if check_encoding(encoding) == "utf-8":
        with path.open("rb") as fh:
            fh.readline()  # the header
            while chunk := fh.read(block_bytes):
                yield chunk
        return
    line = 2
    with path.open("r", encoding=encoding, newline="") as fh:
        try:
            fh.readline()  # the header
            while text := fh.read(block_bytes):
                yield text.encode("utf-8")
                line += text.count("\n")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: cannot be decoded as {encoding} ({e.reason}, on or after line {line}). "
                            "Pass the file's real encoding.") from None


def _record_end(data: bytes) -> int:
    """Offset just past the last newline of ``data`` that is outside double quotes (0: none)."""
    if b'"' not in data:
        return data.rfind(b"\n") + 1
    buf = np.frombuffer(data, np.uint8)
    inside = np.logical_xor.accumulate(buf == ord('"'))  # after an odd number of quotes ("" keeps parity)
    newlines = np.flatnonzero(buf == ord("\n"))
    outside = newlines[~inside[newlines]]
    return int(outside[-1]) + 1 if len(outside) else 0


def _block_raw(path: Path, block: bytes, first_line: int, sep: str, names: list[str], mapping: ColumnMapping,
               encoding: str) -> pl.DataFrame:
    schema = {f"_c{i}": pl.String for i in range(len(names))}
    picks = [(dst, f"_c{names.index(src)}") for dst, src in mapping.pairs().items()]
    if not block:
        return pl.DataFrame({dst: [] for dst, _ in picks} | {ROW: [], LINE: [], READER_REASON: []},
                            schema={dst: pl.String for dst, _ in picks} | {ROW: pl.Int64, LINE: pl.String,
                                                                          READER_REASON: pl.String})
    with polars_errors(path, "CSV/TSV", encoding):
        data = pl.scan_csv(block, separator=sep, has_header=False, schema=schema, truncate_ragged_lines=True,
                           missing_columns="insert", extra_columns="ignore", empty_string_is_null=False).collect()
        lines = lines_of(block, first_line)
    picked = data.select([pl.col(c).alias(dst) for dst, c in picks])
    if lines.height != data.height:  # a quoted field spans lines: check records, not lines
        return _checked_records(block, first_line, picked, sep, len(names))
    blank = lines[LINE].str.strip_chars() == ""
    ragged = field_counts(lines, sep) != len(names)
    reason = pl.when(blank).then(pl.lit(BLANK_LINE)).when(ragged).then(pl.lit(WRONG_FIELD_COUNT))
    return picked.with_columns(lines[ROW], lines[LINE]).with_columns(
        pl.select(reason.alias(READER_REASON))[READER_REASON],
        pl.when(ragged | blank).then(pl.col(LINE)).alias(LINE),  # keep the raw text only where it helps
    )


def _checked_records(block: bytes, first_line: int, picked: pl.DataFrame, sep: str, n_fields: int) -> pl.DataFrame:
    """Row numbers and ragged/blank flags per CSV record when a quoted field spans lines.

    Python's csv module walks the block's records (quotes and all) and gives each one's first line number
    and field count; only this rare layout pays for it. Should its record count disagree with polars', the
    rows get record numbers and no field check (the quarantine still catches bad values).
    """
    import csv
    import io

    with io.TextIOWrapper(io.BytesIO(block), encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter=sep)
        starts, counts, line = [], [], first_line
        for record in reader:  # a whitespace-only line is blank, as on the line-based path
            starts.append(line)
            counts.append(0 if len(record) == 1 and not record[0].strip() else len(record))
            line = first_line + reader.line_num
    no_text = pl.lit(None, pl.String).alias(LINE)  # a record's raw text spans lines: not kept
    if len(starts) != picked.height:
        return picked.with_columns(pl.int_range(first_line, first_line + picked.height, dtype=pl.Int64).alias(ROW),
                                   no_text)
    n = pl.Series(counts)
    blank, ragged = n == 0, (n != n_fields) & (n != 0)
    reason = pl.select(pl.when(blank).then(pl.lit(BLANK_LINE)).when(ragged).then(pl.lit(WRONG_FIELD_COUNT))
                       .alias(READER_REASON))[READER_REASON]
    return picked.with_columns(pl.Series(ROW, starts, dtype=pl.Int64), reason, no_text)


__all__ = ["BLOCK_BYTES", "SEPARATORS", "delimited_raw", "header_line", "header_names"]

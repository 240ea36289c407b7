"""Low-level text input shared by the readers: file checks, encodings, lines and field splitting.

Every failure is a :class:`~recsys.ingest.errors.DataError` with one paragraph saying what was
wrong and what to do; polars' own errors never reach the caller. Lines are numbered from 1 as an
editor shows them, so quarantine ``row`` values point at the exact line of the source file.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from recsys.ingest.errors import BLANK_LINE, LINE, READER_REASON, WRONG_FIELD_COUNT, DataError
from recsys.ingest.schema import ROW

_UTF8 = ("utf8", "utf-8")


def check_file(path: str | Path) -> Path:
    """The path as a Path; DataError when it is missing, not a file, or empty."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file (working directory {Path.cwd()}). Check the path and file name.")
    if not p.is_file():
        raise DataError(f"{p}: is a directory, not a file. Pass the path of the interaction file inside it.")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: the file is empty (0 bytes). It was probably truncated or not written yet; "
                        "regenerate or re-download it.")
    return p


BINARY_MAGIC = {b"PAR1": "Parquet", b"PK\x03\x04": "zip", b"\x89PNG": "PNG", b"\x7fELF": "executable",
                b"SQLite format": "SQLite"}


def check_text(path: Path, what: str) -> None:
    """DataError when the file is not text: a known binary signature, or control bytes (NUL and the other
    non-whitespace C0 codes) making up more than 5% of its first 8 KiB. A stray NUL inside one field is
    text: that row's id is quarantined ("control character in id") instead."""
    with path.open("rb") as fh:
        head = fh.read(8192)
    kind = next((name for magic, name in BINARY_MAGIC.items() if head.startswith(magic)), None)
    control = sum(1 for b in head if b < 32 and b not in b"\t\n\r\f\v") + head.count(127)
    if kind is not None or control > max(len(head) // 20, 2):
        nul = head.count(0)
        found = f"a {kind} file" if kind else f"a binary file ({nul} NUL bytes in the first {len(head)} bytes)"
        raise DataError(f"{path}: looks like {found}, not {what} text. Check the path; pass fmt='parquet' if it "
                        "is a Parquet file.")


def check_encoding(encoding: str) -> str:
    """Python's canonical name of ``encoding``; DataError when it is unknown."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise DataError(f"encoding={encoding!r} is unknown to Python; use e.g. 'utf8' or 'latin-1'.") from None


def text_source(path: Path, encoding: str) -> str | bytes:
    """What polars should read: the path for UTF-8, else the file transcoded to UTF-8 bytes."""
    if check_encoding(encoding) in ("utf-8",):
        return str(path)
    try:
        return path.read_bytes().decode(encoding).encode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: cannot be decoded as {encoding} ({e.reason} at byte {e.start}). "
                        "Pass the file's real encoding.") from None


def utf8_error(path: Path) -> DataError:
    """Locate the first invalid UTF-8 byte and say which encoding to pass instead."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return DataError(
            f"{path}: is not valid UTF-8 (byte 0x{data[e.start]:02x} on line {line}, offset {e.start}). "
            "It is probably latin-1 / cp1252 text: pass encoding='latin-1' (or the file's real encoding)."
        )
    return DataError(f"{path}: polars reported invalid UTF-8 but Python decodes it; re-save the file as UTF-8.")


@contextmanager
def polars_errors(path: Path, what: str, encoding: str = "utf8") -> Iterator[None]:
    """Turn polars parse errors into one-paragraph DataErrors (no polars traceback)."""
    try:
        yield
    except pl.exceptions.PolarsError as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "utf8" in msg.lower() or "utf-8" in msg.lower():
            raise utf8_error(path) from None
        raise DataError(f"{path}: could not be read as {what} ({msg}). Check fmt, separator and encoding, "
                        "or whether the file is damaged.") from None


def read_lines(path: Path, encoding: str = "utf8") -> pl.DataFrame:
    """Every line of a text file: (n_lines, 2) ``row`` Int64 (1-based line number), ``line`` String.

    CRLF endings are handled; a final newline does not add an empty line.
    """
    check_text(path, "line-based")
    with polars_errors(path, "text lines", encoding):
        lines = pl.scan_lines(text_source(path, encoding), name=LINE, row_index_name=ROW, row_index_offset=1)
        return lines.with_columns(pl.col(ROW).cast(pl.Int64)).collect()


def lines_of(text: bytes, first: int = 1) -> pl.DataFrame:
    """:func:`read_lines` for UTF-8 text in memory whose first line is line ``first`` of its file."""
    lines = pl.scan_lines(text, name=LINE, row_index_name=ROW, row_index_offset=first)
    return lines.with_columns(pl.col(ROW).cast(pl.Int64)).collect()


def split_fields(lines: pl.DataFrame, sep: str, names: Sequence[str]) -> pl.DataFrame:
    """Split ``line`` on the literal ``sep`` into ``names``; flag blank and ragged lines.

    Returns
    -------
    (n_lines, len(names) + 3) frame: the named String fields (null past a short line's end),
    ``row``, ``line`` and ``_reason`` (``"blank line"``, ``"wrong field count"`` or null).
    """
    parts = pl.col(LINE).str.split(sep, literal=True)
    blank = pl.col(LINE).str.strip_chars() == ""
    reason = (pl.when(blank).then(pl.lit(BLANK_LINE))
              .when(parts.list.len() != len(names)).then(pl.lit(WRONG_FIELD_COUNT)))
    fields = [parts.list.get(i, null_on_oob=True).alias(n) for i, n in enumerate(names)]
    return lines.select(*fields, ROW, LINE, reason.alias(READER_REASON))


def field_counts(lines: pl.DataFrame, sep: str, quote: str = '"') -> pl.Series:
    """(n_lines,) number of ``sep``-separated fields per line, separators inside quotes not counted."""
    q = quote
    unquoted = pl.col(LINE).str.replace_all(f"{q}(?:[^{q}]|{q}{q})*{q}", "")
    return lines.select((unquoted.str.count_matches(sep, literal=True) + 1).alias("n"))["n"]

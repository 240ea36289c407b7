"""Sequence text files without timestamps, where line order is time order.

Two layouts (whitespace-separated, no header):

- ``"lines"``: one user a line, ``user i1 i2 ... in`` (S3-Rec / ICLRec, e.g. ``Beauty.txt``);
- ``"pairs"``: one ``user item`` event a line, grouped by user (SASRec, e.g. ``Video.txt``).

Each event gets a synthetic timestamp, its 1-based position among all events of the file, so
sorting by (user, timestamp) reproduces the file order::

    >>> lines = pl.DataFrame({"row": [1, 2, 3], "line": ["7 3 1", "", "8 2"]})
    >>> raw = seq_raw(lines, "lines")
    >>> raw.select("user", "item", "timestamp", "row", "_reason").rows()
    [('7', '3', 1, 1, None), ('7', '1', 2, 1, None), (None, None, None, 2, 'blank line'), ('8', '2', 3, 3, None)]

A record is one event, plus one per line that yields no event (a blank line, a user without
items, a ragged ``pairs`` line); those carry a reader-level reason and end up in the quarantine.
Parsing is vectorised with polars string and list operations; nothing loops per line.
"""

from __future__ import annotations

from typing import Literal

import polars as pl

from recsys.ingest.errors import BLANK_LINE, LINE, NO_ITEMS, READER_REASON, WRONG_FIELD_COUNT
from recsys.ingest.schema import ITEM, ROW, TIMESTAMP, USER

SeqLayout = Literal["lines", "pairs"]
SNIFF_LINES = 1000
_TOKENS = "_tokens"


def _tokenize(lines: pl.DataFrame) -> pl.DataFrame:
    return lines.with_columns(pl.col(LINE).str.extract_all(r"\S+").alias(_TOKENS))


def sniff_layout(lines: pl.DataFrame) -> SeqLayout:
    """``"pairs"`` when each of the first non-blank lines has exactly two tokens, else ``"lines"``.

    A ``lines`` file whose users all have one item reads the same either way.
    """
    head = _tokenize(lines.filter(pl.col(LINE).str.strip_chars() != "").head(SNIFF_LINES))
    counts = head[_TOKENS].list.len()
    return "pairs" if len(counts) and (counts == 2).all() else "lines"


def seq_raw(lines: pl.DataFrame, layout: SeqLayout) -> pl.DataFrame:
    """Lines (``row``, ``line``) of a sequence file -> raw events for :func:`validate_frame`.

    Returns
    -------
    (n_records, 6) frame: ``user``, ``item`` (String), ``timestamp`` (Int64 event position, null
    on problem lines), ``row`` (line number), ``line`` (the raw line on problem lines), ``_reason``.
    """
    if layout not in ("lines", "pairs"):
        raise ValueError(f"layout={layout!r} is not a choice; use 'lines' or 'pairs'")
    tok = _tokenize(lines)
    n = pl.col(_TOKENS).list.len()
    if layout == "pairs":
        reason = pl.when(n == 0).then(pl.lit(BLANK_LINE)).when(n != 2).then(pl.lit(WRONG_FIELD_COUNT))
    else:
        reason = pl.when(n == 0).then(pl.lit(BLANK_LINE)).when(n == 1).then(pl.lit(NO_ITEMS))
    tok = tok.with_columns(reason.alias(READER_REASON))
    good = tok.filter(pl.col(READER_REASON).is_null())
    events = good.select(
        pl.col(_TOKENS).list.first().alias(USER), pl.col(_TOKENS).list.slice(1).alias(ITEM), ROW,
    ).explode(ITEM)
    events = events.with_columns(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(TIMESTAMP),
        pl.lit(None, pl.String).alias(LINE), pl.lit(None, pl.String).alias(READER_REASON),
    )
    bad = tok.filter(pl.col(READER_REASON).is_not_null()).select(
        pl.col(_TOKENS).list.first().alias(USER), pl.col(_TOKENS).list.get(1, null_on_oob=True).alias(ITEM),
        pl.lit(None, pl.Int64).alias(TIMESTAMP), ROW, LINE, READER_REASON,
    )
    cols = [USER, ITEM, TIMESTAMP, ROW, LINE, READER_REASON]
    merged = pl.concat([events.select(cols), bad.select(cols)])
    # back to file order: bad lines sit between the events of the lines around them
    return merged.with_row_index("_i").sort([ROW, "_i"]).drop("_i")

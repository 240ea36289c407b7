"""Errors and quarantine reasons of the read path, in one place.

A file that cannot be read at all raises :class:`DataError` (one paragraph: what was wrong, in which
file, and the fix). A row that cannot be accepted is quarantined with one of the reasons of
:data:`REASONS`: stable short strings, meant for counting and filtering. Readers flag problems only
they can see (a ragged line, a blank line) in the column :data:`READER_REASON`; the validator
(:mod:`recsys.ingest.validation`) adds the value-level reasons.
"""

from __future__ import annotations


class DataError(ValueError):
    """Input data that cannot be read as interactions; the message says what was wrong and the fix."""


BLANK_LINE = "blank line"
WRONG_FIELD_COUNT = "wrong field count"
NO_ITEMS = "no items"
NULL_USER = "null user"
NULL_ITEM = "null item"
EMPTY_ID = "empty id"
ID_TOO_LONG = "id too long"
CONTROL_CHARACTER = "control character in id"
WRONG_TYPE = "wrong type"
MISSING_TIMESTAMP = "missing timestamp"
UNPARSABLE_TIMESTAMP = "unparsable timestamp"
IMPLAUSIBLE_TIMESTAMP = "implausible timestamp"
MISSING_WEIGHT = "missing weight"
BAD_WEIGHT = "bad weight"

REASONS: dict[str, str] = {
    BLANK_LINE: "an empty line in a text file (reader-level)",
    WRONG_FIELD_COUNT: "a line with more or fewer fields than the header or format has (reader-level)",
    NO_ITEMS: "a sequence-file line with a user id but no items (reader-level)",
    NULL_USER: "user is null (Parquet null)",
    NULL_ITEM: "item is null (Parquet null)",
    EMPTY_ID: "user or item is blank after stripping whitespace",
    ID_TOO_LONG: "user or item id longer than max_id_len characters (default 256, the limit serving enforces)",
    CONTROL_CHARACTER: "user or item id holds a control character (NUL, tab, newline, ... U+0000-U+001F, U+007F)",
    WRONG_TYPE: "a value of the wrong type: non-numeric weight, non-integer id under id_dtype='int'",
    MISSING_TIMESTAMP: "timestamp is null or blank",
    UNPARSABLE_TIMESTAMP: "timestamp is neither a number nor an ISO-8601 date/time",
    IMPLAUSIBLE_TIMESTAMP: "timestamp before TimeBounds.min_ts (1990-01-01) or more than a day in the future",
    MISSING_WEIGHT: "the weight column is mapped but this row's weight is null or blank",
    BAD_WEIGHT: "weight is negative, NaN or infinite",
}
"""Every quarantine reason with what it means, in check order (the first failing one is reported)."""

READER_REASON = "_reason"  # column where readers put problems only they can see
LINE = "line"  # optional raw text line, kept in the quarantine

__all__ = [
    "BAD_WEIGHT",
    "BLANK_LINE",
    "CONTROL_CHARACTER",
    "EMPTY_ID",
    "ID_TOO_LONG",
    "IMPLAUSIBLE_TIMESTAMP",
    "LINE",
    "MISSING_TIMESTAMP",
    "MISSING_WEIGHT",
    "NO_ITEMS",
    "NULL_ITEM",
    "NULL_USER",
    "READER_REASON",
    "REASONS",
    "UNPARSABLE_TIMESTAMP",
    "WRONG_FIELD_COUNT",
    "WRONG_TYPE",
    "DataError",
]

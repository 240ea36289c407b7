"""Timestamps of any common shape -> Int64 epoch seconds (null where a value cannot be parsed).

Accepted: integer or decimal epoch seconds or milliseconds (``"auto"`` tells them apart by the
median magnitude of the column: above 1e11, i.e. after the year 5138 in seconds but 1973 in
milliseconds, it is milliseconds), ISO-8601 strings (``2020-01-02``, ``2020-01-02 03:04:05``,
``2020-01-02T03:04:05.5Z``, ``...+02:00``; no zone means UTC), and Parquet Datetime/Date columns.

    >>> raw = pl.DataFrame({"t": ["978300760000", "978300761500", "2001-01-01T00:00:00Z", "x"]})
    >>> expr, unit = epoch_seconds(raw, "t", "auto", "f.csv")
    >>> unit, raw.select(expr)["t"].to_list()
    ('ms', [978300760, 978300761, 978307200, None])

The unit is decided once per column, so a file that mixes seconds and milliseconds gets the
minority values flagged as implausible by the caller instead of silently misread. A CSV read in blocks
(:mod:`recsys.ingest.delimited`) decides it on the first block that holds numbers (``auto_unit``).
"""

from __future__ import annotations

from typing import Literal

import polars as pl

from recsys.ingest.errors import DataError

TimestampUnit = Literal["auto", "s", "ms", "iso", "position"]
TIMESTAMP_UNITS = ("auto", "s", "ms", "iso", "position")
MS_THRESHOLD = 1e11  # |t| above this is taken as milliseconds under "auto"
_CLIP = 1e15  # keeps absurd floats castable to Int64 so they read as implausible, not unparsable
_ISO_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d")


def _iso_seconds(s: pl.Expr) -> pl.Expr:
    """ISO-8601 strings -> epoch seconds; zoned values are converted to UTC, naive ones taken as UTC."""
    t = s.str.replace(" ", "T", literal=True)
    zoned = t.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%#z", strict=False, time_zone="UTC").dt.epoch("s")
    naive = [t.str.to_datetime(f, strict=False).dt.epoch("s") for f in _ISO_FORMATS]
    return pl.coalesce(zoned, *naive)


def _numeric_seconds(as_int: pl.Expr, as_float: pl.Expr, unit: str) -> pl.Expr:
    """Seconds from integer (exact) or float (floored) values in ``unit`` ("s" or "ms")."""
    factor = 1000 if unit == "ms" else 1
    from_float = (as_float.clip(-_CLIP, _CLIP) / factor).floor().cast(pl.Int64)
    from_float = pl.when(as_float.is_finite()).then(from_float)
    return pl.coalesce(as_int // factor, from_float)


def _detect_unit(raw: pl.DataFrame, numeric: pl.Expr) -> str:
    median = raw.select(numeric.filter(numeric.is_finite()).abs().median()).item()
    if median is None:
        return "iso"
    return "ms" if median > MS_THRESHOLD else "s"


def unit_for(fmt: str, unit: TimestampUnit = "auto") -> TimestampUnit:
    """The timestamp unit a log of format ``fmt`` is read with: the sequence formats (``seq-*``) carry each
    event's position in its user's sequence, not a time; every other format uses ``unit``."""
    return "position" if fmt.startswith("seq") else unit


def epoch_seconds(raw: pl.DataFrame, col: str, unit: TimestampUnit, source: str,
                  auto_unit: str | None = None) -> tuple[pl.Expr, str]:
    """An expression giving column ``col`` of ``raw`` as Int64 epoch seconds, and the unit used.

    Parameters
    ----------
    raw : frame holding ``col`` as String, integer, float, Datetime or Date.
    unit : ``"auto"`` (numbers: s or ms by magnitude, plus ISO strings), ``"s"``, ``"ms"``,
        ``"iso"`` (strings only) or ``"position"`` (integers kept as they are: synthetic order).
    source : file name for error messages.
    auto_unit : under ``"auto"``, take numbers in this unit ("s" or "ms") instead of deciding from this
        frame's magnitudes (later blocks of one file follow the first block's decision).

    Returns
    -------
    (expr, resolved) where ``expr`` evaluates to (n,) Int64 with null for unparsable values and
    ``resolved`` is ``"s"``, ``"ms"``, ``"iso"``, ``"datetime"`` or ``"position"``.
    """
    if unit not in TIMESTAMP_UNITS:
        raise ValueError(f"timestamp_unit={unit!r} is not a choice; use one of {list(TIMESTAMP_UNITS)}")
    dtype = raw.schema[col]
    c = pl.col(col)
    if unit == "position":
        return c.cast(pl.Int64), "position"
    if dtype in (pl.Date,) or isinstance(dtype, pl.Datetime):
        return c.cast(pl.Datetime("us")).dt.epoch("s") if dtype == pl.Date else c.dt.epoch("s"), "datetime"
    if dtype == pl.String:
        s = c.str.strip_chars()
        as_int, as_float = s.cast(pl.Int64, strict=False), s.cast(pl.Float64, strict=False)
    elif dtype.is_numeric():
        as_int = c.cast(pl.Int64) if dtype.is_integer() else pl.lit(None, pl.Int64)
        as_float = c.cast(pl.Float64)
    else:
        raise DataError(
            f"{source}: timestamp column {col!r} has dtype {dtype}; expected epoch seconds or milliseconds, "
            "ISO-8601 strings, or a Datetime. Convert the column to one of these."
        )
    if unit == "iso":
        if dtype != pl.String:
            raise DataError(f"{source}: timestamp_unit='iso' needs a string column, {col!r} is {dtype}; "
                            "use timestamp_unit='s' or 'ms' (or 'auto').")
        return _iso_seconds(s), "iso"
    resolved = (auto_unit or _detect_unit(raw, as_float)) if unit == "auto" else unit
    if resolved == "iso":  # auto found no numbers at all
        return _iso_seconds(s), "iso"
    numeric = _numeric_seconds(as_int, as_float, resolved)
    # ISO parsing is the costly part: only when some non-blank value is not a number
    if unit == "auto" and dtype == pl.String and raw.select((as_float.is_null() & (s != "")).any()).item():
        return pl.coalesce(numeric, _iso_seconds(s)), resolved
    return numeric, resolved

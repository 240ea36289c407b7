"""Validate a raw interaction frame: accepted rows in the canonical layout, bad rows quarantined with a reason.

Readers hand :func:`validate_frame` the source's values as read (strings for text files, typed
columns for Parquet) plus ``row`` (1-based line or row number) and, optionally, ``_reason`` for
problems only the reader can see (a ragged line). Every row comes out either accepted, converted
to the layout of :mod:`recsys.ingest.schema`, or in the quarantine frame with its raw values as
strings, ``row``, ``reason`` and ``source``::

    >>> raw = pl.DataFrame({"user": ["u1", " ", "u2"], "item": ["7", "8", "9"],
    ...                     "timestamp": ["978300760", "978300761", "1990-13-01"], "row": [2, 3, 4]})
    >>> v = validate_frame(raw, "log.csv", id_dtype="auto")
    >>> v.frame["item"].to_list(), v.quarantine["reason"].to_list(), v.report.reasons[EMPTY_ID]
    ([7], ['empty id', 'unparsable timestamp'], 1)

The first failing check (in the order of :data:`recsys.ingest.errors.REASONS`) names a row's reason.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from recsys.atomic import atomic_path
from recsys.ingest.errors import (
    BAD_WEIGHT,
    CONTROL_CHARACTER,
    EMPTY_ID,
    ID_TOO_LONG,
    IMPLAUSIBLE_TIMESTAMP,
    LINE,
    MISSING_TIMESTAMP,
    MISSING_WEIGHT,
    NULL_ITEM,
    NULL_USER,
    READER_REASON,
    UNPARSABLE_TIMESTAMP,
    WRONG_TYPE,
    DataError,
)
from recsys.ingest.report import IngestReport
from recsys.ingest.schema import EVENT, ITEM, REASON, ROW, SOURCE, TIMESTAMP, USER, WEIGHT
from recsys.ingest.timeparse import TimestampUnit, epoch_seconds
from serving.format import MAX_ID_LEN

IdDtype = Literal["auto", "int", "str"]
_INT_ID = r"^(0|-?[1-9][0-9]{0,17})$"  # round-trips through Int64: no leading zeros, no '+'

@dataclass(frozen=True)
class TimeBounds:
    """Plausible timestamps: ``min_ts <= t <= (max_ts or now + future_slack_s)``, epoch seconds."""

    min_ts: int = 631_152_000  # 1990-01-01T00:00:00Z, before any web interaction log
    max_ts: int | None = None
    future_slack_s: int = 86_400

    def upper(self) -> int:
        return self.max_ts if self.max_ts is not None else int(time.time()) + self.future_slack_s


@dataclass
class Validated:
    """What :func:`validate_frame` returns: accepted ``frame``, ``quarantine`` and the ``report``."""

    frame: pl.DataFrame
    quarantine: pl.DataFrame
    report: IngestReport
    stats: dict = field(default_factory=dict)


def _id_checks(raw: pl.DataFrame, col: str, null_reason: str, id_dtype: IdDtype, source: str,
               max_id_len: int = MAX_ID_LEN) -> tuple:
    """(stripped id expression, [(condition, reason), ...]); conditions read the ``_<col>`` column."""
    dtype, tmp = raw.schema[col], pl.col(f"_{col}")
    if dtype.is_integer():
        return pl.col(col).cast(pl.Int64), [(tmp.is_null(), null_reason)]
    if dtype != pl.String:
        raise DataError(
            f"{source}: column {col!r} has dtype {dtype}; ids must be integers or strings. "
            f"Cast the column to Int64 or String before writing the file."
        )
    checks = [(tmp.is_null(), null_reason), (tmp == "", EMPTY_ID), (tmp.str.len_chars() > max_id_len, ID_TOO_LONG),
              (tmp.str.contains(r"[\x00-\x1f\x7f]"), CONTROL_CHARACTER)]
    if id_dtype == "int":
        checks.append((~tmp.str.contains(_INT_ID), WRONG_TYPE))
    return pl.col(col).str.strip_chars(), checks


def _weight_expr(raw: pl.DataFrame) -> tuple[pl.Expr, list]:
    """Float64 weight (1.0 when the source has none) and its checks, which read the ``_w`` column."""
    if WEIGHT not in raw.columns:
        return pl.lit(1.0, pl.Float64), []
    col, w = pl.col(WEIGHT), pl.col("_w")
    bad = ~w.is_finite() | (w < 0)
    if raw.schema[WEIGHT] == pl.String:
        s = col.str.strip_chars()
        return s.cast(pl.Float64, strict=False), [((col.is_null() | (s == "")), MISSING_WEIGHT),
                                                  (w.is_null(), WRONG_TYPE), (bad, BAD_WEIGHT)]
    if not raw.schema[WEIGHT].is_numeric():
        return pl.lit(None, pl.Float64), [(pl.lit(True), WRONG_TYPE)]
    return col.cast(pl.Float64), [(col.is_null(), MISSING_WEIGHT), (bad, BAD_WEIGHT)]


def _first_reason(checks: list) -> pl.Expr:
    """The reason of the first condition that holds, else null."""
    expr = pl.lit(None, pl.String)
    for cond, reason in reversed(checks):
        value = reason if isinstance(reason, pl.Expr) else pl.lit(reason)
        expr = pl.when(cond.fill_null(False)).then(value).otherwise(expr)
    return expr


def _cast_ids(frame: pl.DataFrame, id_dtype: IdDtype) -> pl.DataFrame:
    """Under ``"auto"`` turn (stripped) string ids into Int64 when every one is a plain integer."""
    out = []
    for col in (USER, ITEM):
        if frame.schema[col] != pl.String or id_dtype == "str":
            continue
        as_int = frame[col].cast(pl.Int64, strict=False)
        # a cheap cast first; the exact check (no leading zeros, no '+') only when it succeeded
        if id_dtype == "int" or (as_int.null_count() == 0 and frame[col].str.contains(_INT_ID).all()):
            out.append(as_int)
    return frame.with_columns(out)


def _quarantine_frame(rows: pl.DataFrame, source: str) -> pl.DataFrame:
    raw_cols = [c for c in (USER, ITEM, TIMESTAMP, WEIGHT, EVENT, LINE) if c in rows.columns]
    return rows.select(
        *[pl.col(c).cast(pl.String) for c in raw_cols],
        pl.col(ROW).cast(pl.Int64), pl.col(REASON), pl.lit(source).alias(SOURCE),
    )


def validate_frame(
    raw: pl.DataFrame,
    source: str,
    *,
    timestamp_unit: TimestampUnit = "auto",
    bounds: TimeBounds | None = None,
    id_dtype: IdDtype = "auto",
    max_id_len: int = MAX_ID_LEN,
    auto_unit: str | None = None,
) -> Validated:
    """Split ``raw`` into accepted rows (canonical layout) and quarantined rows.

    Parameters
    ----------
    raw : (n, ...) frame with ``user``, ``item``, ``row`` (1-based position in the source) and
        optional ``timestamp``, ``weight``, ``event`` (strings or typed), ``_reason`` (reader-level
        problems, null when fine). Without ``timestamp`` the row number is used (file order = time).
    source : file name, for the quarantine and messages.
    timestamp_unit : ``"auto"``, ``"s"``, ``"ms"``, ``"iso"`` or ``"position"`` (synthetic ordinal
        timestamps: no plausibility check); see :func:`recsys.ingest.timeparse.epoch_seconds`.
    bounds : plausible time range (default: 1990-01-01 .. now + 1 day).
    id_dtype : ``"auto"`` (Int64 when every accepted id is a plain integer, else String),
        ``"int"`` (non-integers quarantined as wrong type) or ``"str"``.
    max_id_len : longer ids are quarantined (default: the limit serving enforces on request ids).
    auto_unit : under ``"auto"``, the unit ("s" or "ms") numbers are taken in instead of deciding it here.

    Returns
    -------
    Validated with ``frame`` (n_ok, 5) user, item, timestamp Int64, weight Float32, event String;
    ``quarantine`` (n_bad, ...) raw values as strings + row, reason, source; a checked report.
    """
    if id_dtype not in ("auto", "int", "str"):
        raise ValueError(f"id_dtype={id_dtype!r} is not a choice; use 'auto', 'int' or 'str'")
    bounds = bounds or TimeBounds()
    if TIMESTAMP not in raw.columns:
        raw, timestamp_unit = raw.with_columns(pl.col(ROW).cast(pl.Int64).alias(TIMESTAMP)), "position"
    checks = [(pl.col(READER_REASON).is_not_null(), pl.col(READER_REASON))] if READER_REASON in raw.columns else []
    if max_id_len < 1:
        raise ValueError(f"max_id_len must be >= 1; got {max_id_len}")
    user, user_checks = _id_checks(raw, USER, NULL_USER, id_dtype, source, max_id_len)
    item, item_checks = _id_checks(raw, ITEM, NULL_ITEM, id_dtype, source, max_id_len)
    ts, unit = epoch_seconds(raw, TIMESTAMP, timestamp_unit, source, auto_unit)
    weight, weight_checks = _weight_expr(raw)
    # parse every column once; the checks below only compare the parsed columns
    parsed = raw.with_columns(user.alias("_user"), item.alias("_item"), ts.alias("_ts"), weight.alias("_w"))
    t = pl.col("_ts")
    checks += user_checks + item_checks
    checks += [(t.is_null() & _blank(raw, TIMESTAMP), MISSING_TIMESTAMP), (t.is_null(), UNPARSABLE_TIMESTAMP)]
    if unit != "position":
        checks.append(((t < bounds.min_ts) | (t > bounds.upper()), IMPLAUSIBLE_TIMESTAMP))
    tagged = parsed.with_columns(_first_reason(checks + weight_checks).alias(REASON))
    bad, ok = tagged.filter(pl.col(REASON).is_not_null()), tagged.filter(pl.col(REASON).is_null())
    event = pl.col(EVENT).cast(pl.String).str.strip_chars() if EVENT in raw.columns else pl.lit(None, pl.String)
    frame = _cast_ids(ok.select(
        pl.col("_user").alias(USER), pl.col("_item").alias(ITEM), t.cast(pl.Int64).alias(TIMESTAMP),
        pl.col("_w").cast(pl.Float32).alias(WEIGHT),
        pl.when(event != "").then(event).otherwise(pl.lit(None, pl.String)).alias(EVENT),
    ), id_dtype)
    report = IngestReport(source=source, rows_read=raw.height, accepted=frame.height, quarantined=bad.height)
    report.reasons.update(dict(bad[REASON].value_counts().iter_rows()))
    report.stats["timestamp_unit"] = unit
    report.check()
    return Validated(frame, _quarantine_frame(bad, source), report, {"timestamp_unit": unit})


def validate_frames(raws: Iterable[pl.DataFrame], source: str, *, timestamp_unit: TimestampUnit = "auto",
                    bounds: TimeBounds | None = None, id_dtype: IdDtype = "auto",
                    max_id_len: int = MAX_ID_LEN) -> Validated:
    """:func:`validate_frame` over consecutive blocks of one source, merged as if validated whole.

    Under ``timestamp_unit="auto"`` the first block that holds numbers decides seconds or milliseconds for
    the rest; under ``id_dtype="auto"`` ids are Int64 only when every block's are (the plain integers of a
    block whose neighbours hold other ids go back to the strings they were read as).
    """
    parts, auto_unit = [], None
    for raw in raws:
        v = validate_frame(raw, source, timestamp_unit=timestamp_unit, bounds=bounds, id_dtype=id_dtype,
                           max_id_len=max_id_len, auto_unit=auto_unit)
        if timestamp_unit == "auto" and auto_unit is None and v.stats["timestamp_unit"] in ("s", "ms"):
            auto_unit = v.stats["timestamp_unit"]
        parts.append(v)
    if len(parts) == 1:
        return parts[0]
    frames = [p.frame for p in parts]
    for col in (USER, ITEM):
        if any(f.schema[col] == pl.String for f in frames):
            frames = [f.with_columns(pl.col(col).cast(pl.String)) for f in frames]
    report = IngestReport(source=source, rows_read=sum(p.report.rows_read for p in parts),
                          accepted=sum(p.report.accepted for p in parts),
                          quarantined=sum(p.report.quarantined for p in parts))
    for p in parts:
        report.reasons.update(p.report.reasons)
    unit = auto_unit or parts[0].stats["timestamp_unit"]
    report.stats.update(timestamp_unit=unit, blocks=len(parts))
    report.check()
    return Validated(pl.concat(frames, rechunk=False), pl.concat([p.quarantine for p in parts], how="diagonal"),
                     report, {"timestamp_unit": unit})


def _blank(raw: pl.DataFrame, col: str) -> pl.Expr:
    if raw.schema[col] == pl.String:
        return pl.col(col).is_null() | (pl.col(col).str.strip_chars() == "")
    return pl.col(col).is_null()


def _describe(row: dict) -> str:
    values = ", ".join(f"{c}={row[c]!r}" for c in (USER, ITEM, TIMESTAMP, WEIGHT) if c in row)
    return f"row {row[ROW]} ({row[REASON]}: {values})"


def check_bad_fraction(validated: Validated, max_bad_fraction: float, quarantine_path: str | None = None) -> None:
    """Raise :class:`DataError` when quarantined / read exceeds ``max_bad_fraction``.

    The message names the file, the fraction, the reasons and the first 5 bad rows.
    """
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
    rep = validated.report
    if rep.rows_read == 0:
        raise DataError(f"{rep.source}: no data rows to read. Check that this is the right file and that it "
                        "is not truncated (a header alone is not an interaction log).")
    fraction = rep.quarantined / rep.rows_read
    if fraction <= max_bad_fraction:
        return
    first = "; ".join(_describe(r) for r in validated.quarantine.head(5).iter_rows(named=True))
    where = f" The quarantined rows were written to {quarantine_path}." if quarantine_path else ""
    raise DataError(
        f"{rep.source}: {rep.quarantined:,} of {rep.rows_read:,} rows ({fraction:.1%}) were quarantined, more than "
        f"max_bad_fraction={max_bad_fraction:.1%} allows; reasons {dict(rep.reasons.most_common())}. "
        f"First bad rows: {first}.{where} Fix the file or the reader options (column mapping, separator, "
        f"encoding, timestamp_unit{_unit_hint(validated)}), or pass a larger max_bad_fraction to accept the loss."
    )


def _unit_hint(validated: Validated) -> str:
    """Suggest the other time unit when most rows were implausible under the detected one."""
    rep = validated.report
    if rep.reasons.get(IMPLAUSIBLE_TIMESTAMP, 0) * 2 < rep.quarantined:
        return ""
    unit = validated.stats.get("timestamp_unit")
    other = {"s": "ms", "ms": "s"}.get(unit)
    return f": timestamps were read as '{unit}', try timestamp_unit='{other}'" if other else ""


def write_quarantine(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write a quarantine frame as Parquet atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)
    return path

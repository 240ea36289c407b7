"""Column names of the canonical interaction frames shared by every reader and step.

Raw interactions (what readers return, polars)::

    user       Int64 or String   raw user id as in the source
    item       Int64 or String   raw item id as in the source
    timestamp  Int64             epoch seconds
    weight     Float32           1.0 unless the source has ratings/weights
    event      String (nullable) event type when the source has one

Encoded interactions (after IdMap)::

    user_idx   Int32  1..n_users  (0 = padding, never used)
    item_idx   Int32  1..n_items  (0 = padding, never used)
    timestamp, weight, event as above

Quarantine frames hold the offending raw values as strings plus ``row`` (1-based line or
row number in the source file), ``reason`` and ``source`` (the file).

:class:`ColumnMapping` names, for a CSV/TSV/Parquet source, which of its columns holds each canonical one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from recsys.ingest.errors import DataError

USER = "user"
ITEM = "item"
TIMESTAMP = "timestamp"
WEIGHT = "weight"
EVENT = "event"
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
ROW = "row"
REASON = "reason"
SOURCE = "source"

RAW_COLUMNS = (USER, ITEM, TIMESTAMP, WEIGHT, EVENT)
ENCODED_COLUMNS = (USER_IDX, ITEM_IDX, TIMESTAMP, WEIGHT, EVENT)


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

    def missing_error(self, path: Path, found: list[str], sep: str | None) -> DataError:
        """The error for a source whose columns ``found`` lack some mapped column (with a separator hint
        when the header looks split on another character)."""
        wanted = self.pairs()
        missing = [src for src in wanted.values() if src not in found]
        hint = ""
        if sep is not None and len(found) == 1:
            seps = [s for s in (",", "\t", ";", "|") if s != sep and s in found[0]]
            if seps:
                hint = f" The header looks {seps[0]!r}-separated: pass separator={seps[0]!r} (or fmt=)."
        expects = ", ".join(f"{k}={v!r}" for k, v in wanted.items())
        return DataError(f"{path}: column(s) {missing} not found. The file has columns {found}; the mapping expects "
                         f"{expects}.{hint} Pass mapping=ColumnMapping(...) naming the file's columns.")

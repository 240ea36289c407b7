"""Persisted mapping between raw ids (int or string) and dense indices ``1..n`` (0 = padding).

    >>> m = IdMap.fit(pl.Series(["b", "a", "b"]))
    >>> m.encode(pl.Series(["a", "b"])).to_list(), m.decode([2]).to_list(), len(m)
    ([1, 2], ['b'], 2)
    >>> m.extend(pl.Series(["c", "a"])).encode(pl.Series(["c"])).to_list()   # known ids keep their index
    [3]

Order rule: :meth:`IdMap.fit` numbers the distinct ids in *sorted* order (so the map depends only
on the set of ids, never on row order or threading); :meth:`IdMap.extend` appends unseen ids, also
sorted, after all known ones. Saved as Parquet with columns ``index`` (Int32) and ``id`` (raw dtype).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import polars as pl

from recsys.atomic import atomic_path
from recsys.ingest.schema import ENCODED_COLUMNS, ITEM, ITEM_IDX, USER, USER_IDX

_MAX_IDS = 2**31 - 2  # indices are Int32 and 0 is reserved


class UnknownIdError(KeyError):
    """Raw ids that are not in the map; the message counts them and shows a few."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


def _as_series(values: pl.Series | Iterable, name: str = "id") -> pl.Series:
    if isinstance(values, pl.Series):
        s = values
    else:
        s = pl.Series(name, values if isinstance(values, np.ndarray) else list(values))
    if s.dtype.is_integer():
        return s.cast(pl.Int64)
    if s.dtype in (pl.String, pl.Categorical, pl.Enum):
        return s.cast(pl.String)
    if s.dtype == pl.Null:  # empty list
        return s.cast(pl.Int64)
    raise TypeError(f"ids must be integers or strings, got dtype {s.dtype} (series {s.name!r})")


class IdMap:
    """Raw id <-> dense index. ``ids[j]`` is the raw id of index ``j + 1``; index 0 is padding.

    Parameters
    ----------
    ids : (n,) Series of distinct, non-null raw ids (Int64 or String) in index order.
    """

    def __init__(self, ids: pl.Series) -> None:
        ids = _as_series(ids).rename("id")
        if ids.null_count():
            raise ValueError("IdMap ids must not contain null; quarantine rows with a missing id first")
        if ids.n_unique() != len(ids):
            dup = ids.filter(ids.is_duplicated()).unique().head(5).to_list()
            raise ValueError(f"IdMap ids must be distinct; duplicated: {dup}")
        if len(ids) > _MAX_IDS:
            raise ValueError(f"{len(ids)} ids do not fit Int32 indices (max {_MAX_IDS})")
        self._ids = ids
        self._sorted: bool | None = None  # ids in sorted order (decided on first use)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def fit(cls, values: pl.Series | Iterable) -> IdMap:
        """Number the distinct non-null ``values`` 1..n in sorted order."""
        s = _as_series(values).drop_nulls()
        if s.dtype == pl.Int64 and len(s) and s.min() >= 0 and s.max() <= 4 * len(s):
            # compact non-negative ints: a presence count gives the sorted distinct ids without hashing
            return cls(pl.Series("id", np.flatnonzero(np.bincount(s.to_numpy())), dtype=pl.Int64))
        return cls(s.unique().sort())

    def extend(self, values: pl.Series | Iterable) -> IdMap:
        """New map with unseen ``values`` appended (sorted) after every known id; known ids keep indices."""
        if not len(self):  # an empty map has no dtype yet
            return IdMap.fit(values)
        new = self._check_dtype(_as_series(values)).drop_nulls().unique()
        new = new.filter(~new.is_in(self._ids.implode())).sort()
        return IdMap(pl.concat([self._ids, new.rename("id")]))

    # -- access ---------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of real ids (the padding index 0 is not counted)."""
        return len(self._ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self._ids.dtype == other._ids.dtype and self._ids.equals(
            other._ids)

    __hash__ = None  # compared by content, so not hashable

    def __repr__(self) -> str:
        return f"IdMap(n={len(self)}, dtype={self.dtype}, first={self._ids.head(3).to_list()})"

    @property
    def dtype(self) -> pl.DataType:
        """Raw id dtype: ``pl.Int64`` or ``pl.String``."""
        return self._ids.dtype

    @property
    def ids(self) -> pl.Series:
        """(n,) raw ids in index order (index ``j + 1`` <-> ``ids[j]``)."""
        return self._ids

    def _check_dtype(self, s: pl.Series) -> pl.Series:
        if len(s) and s.dtype != self.dtype and s.dtype != pl.Null:
            raise TypeError(
                f"ids of dtype {s.dtype} (column {s.name!r}) cannot be looked up in an IdMap of {self.dtype} "
                "ids; cast the column to the map's dtype or refit the map"
            )
        return s.cast(self.dtype)

    def encode(self, values: pl.Series | Iterable, unknown: str = "error") -> pl.Series:
        """Raw ids -> indices, (n,) Int32 in 1..len(self).

        ``unknown="error"`` raises on ids not in the map (the message counts them and shows a few);
        ``unknown="null"`` returns null for them.
        """
        if unknown not in ("error", "null"):
            raise ValueError(f"unknown={unknown!r} is not a choice; use 'error' or 'null'")
        s = self._check_dtype(_as_series(values, getattr(values, "name", "id")))
        fast = self._encode_compact_ints(s)
        if fast is None:
            fast = self._encode_few_sorted(s)
        if fast is not None:
            return fast
        idx = np.arange(1, len(self) + 1, dtype=np.int32)
        out = s.replace_strict(self._ids, idx, default=None, return_dtype=pl.Int32).rename(s.name)
        if unknown == "error" and out.null_count():
            missing = s.filter(out.is_null())
            shown = missing.unique(maintain_order=True).head(5).to_list()
            raise UnknownIdError(
                f"{len(missing)} value(s) in {s.name!r} ({missing.n_unique()} distinct) are not in "
                f"the IdMap, e.g. {shown}; extend the map with IdMap.extend(...) or pass unknown='null'"
            )
        return out

    def _encode_few_sorted(self, s: pl.Series) -> pl.Series | None:
        """Few values in a large map whose ids are sorted (every fitted map): binary search, no hash table of
        the whole map (the out-of-core path encodes one partition's users at a time). None when not applicable
        or when a value is missing (the general path reports it)."""
        if not len(s) or 16 * len(s) > len(self) or s.null_count():
            return None
        if self._sorted is None:
            self._sorted = bool(self._ids.is_sorted())
        if not self._sorted:
            return None
        pos = self._ids.search_sorted(s, side="left")
        pos = pos.cast(pl.Int64).clip(upper_bound=len(self) - 1)
        if not (self._ids.gather(pos) == s).all():
            return None
        return (pos + 1).cast(pl.Int32).rename(s.name)

    def _encode_compact_ints(self, s: pl.Series) -> pl.Series | None:
        """Integer ids spanning a range <= 4x the map size: a lookup table instead of a hash join.

        Returns None (use the general path, which also reports unknown ids) when the ids are not
        compact integers or when any value is null or unknown.
        """
        if self.dtype != pl.Int64 or not len(self) or not len(s) or s.null_count():
            return None
        lo, hi = int(self._ids.min()), int(self._ids.max())
        if hi - lo > 4 * len(self):
            return None
        v = s.to_numpy()
        if v.min() < lo or v.max() > hi:
            return None
        base = 0 if lo >= 0 and hi <= 4 * len(self) else lo  # base 0: index by the raw id, no subtraction
        lut = np.zeros(hi - base + 1, dtype=np.int32)  # 0 marks "not in the map"
        lut[self._ids.to_numpy() - base] = np.arange(1, len(self) + 1, dtype=np.int32)
        out = lut[v - base if base else v]
        return None if not out.all() else pl.Series(s.name, out, dtype=pl.Int32)

    def decode(self, indices: pl.Series | np.ndarray | Iterable[int]) -> pl.Series:
        """Indices in 1..len(self) -> raw ids, (n,) of :attr:`dtype`; 0 (padding) or out of range raises."""
        if isinstance(indices, pl.Series):
            indices = indices.to_numpy()
        idx = np.asarray(indices if isinstance(indices, np.ndarray) else list(indices))
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"indices must be integers, got dtype {idx.dtype}")
        bad = (idx < 1) | (idx > len(self))
        if bad.any():
            raise IndexError(
                f"{int(bad.sum())} index(es) outside 1..{len(self)}, "
                f"e.g. {np.unique(idx[bad])[:5].tolist()}; 0 is padding and has no raw id"
            )
        return self._ids.gather(idx.astype(np.int64) - 1)

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write Parquet (``index`` Int32, ``id`` raw dtype) atomically: temp file, then rename."""
        path = Path(path)
        frame = pl.DataFrame({"index": np.arange(1, len(self) + 1, dtype=np.int32), "id": self._ids})
        with atomic_path(path) as tmp:
            frame.write_parquet(tmp)

    @classmethod
    def load(cls, path: str | Path) -> IdMap:
        """Read what :meth:`save` wrote; checks the columns and that ``index`` is exactly 1..n."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no IdMap at {path}; build one with IdMap.fit(...).save(path)")
        frame = pl.read_parquet(path)
        if frame.columns != ["index", "id"]:
            raise ValueError(
                f"{path} is not an IdMap file: columns {frame.columns}, expected ['index', 'id']"
            )
        if not np.array_equal(frame["index"].to_numpy(), np.arange(1, frame.height + 1)):
            raise ValueError(
                f"{path}: column 'index' must be 1..{frame.height} in order; the file is corrupt"
            )
        return cls(frame["id"])


def encode_interactions(df: pl.DataFrame, users: IdMap, items: IdMap) -> pl.DataFrame:
    """Raw interactions -> encoded layout: ``user_idx``, ``item_idx`` (Int32) then the other columns.

    Unknown users or items raise (the message names the column); fit or extend the maps first.
    """
    for col in (USER, ITEM):
        if col not in df.columns:
            raise ValueError(f"encode_interactions: frame lacks column {col!r} (has {df.columns})")
    encoded = df.with_columns(
        users.encode(df[USER]).alias(USER_IDX), items.encode(df[ITEM]).alias(ITEM_IDX)
    ).drop(USER, ITEM)
    order = [c for c in ENCODED_COLUMNS if c in encoded.columns]
    return encoded.select(order + [c for c in encoded.columns if c not in order])

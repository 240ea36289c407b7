"""Validate and normalise what export_bundle is given: vectors, raw ids, seen items, item metadata."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.ingest.schema import ITEM
from recsys.models.base import NaNLossError
from recsys.prepare.idmap import IdMap
from recsys.prepare.sequences import Sequences


def check_vectors(name: str, vectors: np.ndarray, dim: int | None = None) -> np.ndarray:
    """(n + 1, d) float32 copy of ``vectors``; raises on wrong rank/dim and on NaN/inf rows."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise ValueError(f"{name} must be (n + 1, d) with row 0 = padding and n >= 1; got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has {arr.shape[1]} dims but item_vectors have {dim}; export one model's vectors")
    bad = np.flatnonzero(~np.all(np.isfinite(arr), axis=1))
    if len(bad):
        raise NaNLossError(f"{name} has NaN/inf in {len(bad)} rows (first {bad[:5].tolist()}); retrain the model")
    return np.ascontiguousarray(arr)


def as_id_array(name: str, ids: Any, n: int) -> np.ndarray:
    """(n,) int64 or unicode array of distinct raw ids (from a polars Series, IdMap, list or array)."""
    if isinstance(ids, IdMap):
        ids = ids.ids
    if isinstance(ids, pl.Series):
        if ids.null_count():
            raise ValueError(f"{name} contains {ids.null_count()} nulls; every index 1..{n} needs a raw id")
        ids = ids.to_list()
    arr = np.asarray(ids)
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind in "UO":
        if any(x is None for x in arr.ravel().tolist()):
            raise ValueError(f"{name} contains None; every index 1..{n} needs a raw id")
        arr = arr.astype(str)
    else:
        raise TypeError(f"{name} must hold integers or strings; got dtype {arr.dtype}")
    if arr.shape != (n,):
        raise ValueError(f"{name} must have one raw id per index 1..{n} (shape ({n},)); got shape {arr.shape}")
    if len(np.unique(arr)) != n:
        raise ValueError(f"{name} holds duplicate raw ids; an id map must be one-to-one")
    return arr


def as_seen_csr(seen: Sequences | sp.spmatrix, n_users: int, n_items: int) -> sp.csr_matrix:
    """(n_users + 1, n_items + 1) binary CSR with sorted, distinct item indices per user row."""
    if isinstance(seen, Sequences):
        if seen.row_users is not None:
            raise ValueError("seen must have one row per user (row = user index), not session rows")
        csr = seen.to_csr()
    elif sp.issparse(seen):
        csr = sp.csr_matrix(seen, dtype=np.float32)
        csr.sum_duplicates()
    else:
        raise TypeError(f"seen must be Sequences or a scipy CSR matrix; got {type(seen).__name__}")
    if csr.shape[0] != n_users + 1 or csr.shape[1] > n_items + 1:
        raise ValueError(
            f"seen has shape {csr.shape} but needs {n_users + 1} user rows (row 0 = padding) "
            f"and at most {n_items + 1} item columns"
        )
    csr.sort_indices()
    return csr


def meta_list(item_meta: Any, item_ids: np.ndarray) -> list[dict | None]:
    """Metadata aligned with item index - 1: a list of JSON-able dicts (None for items without any)."""
    if isinstance(item_meta, pl.DataFrame):
        if ITEM not in item_meta.columns:
            raise ValueError(f"item_meta needs an {ITEM!r} column with raw item ids; got {item_meta.columns}")
        rows = item_meta.to_dicts()
        mapping = {r.pop(ITEM): r for r in rows}
    elif isinstance(item_meta, Mapping):
        mapping = dict(item_meta)
    else:
        raise TypeError(f"item_meta must be a polars DataFrame or a mapping; got {type(item_meta).__name__}")
    keys = {(int(k) if item_ids.dtype.kind in "iu" and not isinstance(k, str) else k): v for k, v in mapping.items()}
    return [keys.get(raw) for raw in item_ids.tolist()]

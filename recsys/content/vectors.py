"""Precomputed item vectors (an image model's, say) keyed by raw item id.

Two layouts:

- Parquet with an ``item`` column (raw ids) and one vector column: ``vector`` or, when there is no
  column of that name, the only other column; a list/array of floats per row, all the same length.
- ``.npy``: a (n, k) float matrix, with the raw ids of its rows in the sibling ``<stem>.items.npy``.

    >>> vecs, found = read_vectors("image_vectors.parquet", ["i1", "i2", "i9"])   # doctest: +SKIP
    >>> vecs.shape, found                        # ((3, 512), array([ True,  True, False]))

Rows for ids the file does not hold are zero and ``found`` is False there (the caller decides the
fallback and reports them); ids in the file that are not asked for are counted in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from recsys.ingest.errors import DataError

log = logging.getLogger(__name__)


def _read_parquet(path: Path) -> tuple[list, np.ndarray]:
    frame = pl.read_parquet(path)
    if "item" not in frame.columns:
        raise DataError(f"{path}: precomputed vectors need an 'item' column with raw item ids; it has "
                        f"{frame.columns}")
    others = [c for c in frame.columns if c != "item"]
    col = "vector" if "vector" in others else (others[0] if len(others) == 1 else None)
    if col is None:
        raise DataError(f"{path}: name the vector column 'vector' (found {others})")
    lengths = frame[col].list.len() if frame[col].dtype != pl.Null else None
    if lengths is None or lengths.null_count() or lengths.n_unique() != 1:
        bad = 0 if lengths is None else int(np.argmax(lengths.fill_null(-1).to_numpy() != lengths.max()))
        raise DataError(f"{path}: row {bad} of column {col!r} is null or has another length; every item needs a "
                        "vector of the same length")
    vecs = np.asarray(frame[col].to_list(), dtype=np.float32)
    return frame["item"].to_list(), vecs


def _read_npy(path: Path) -> tuple[list, np.ndarray]:
    ids_path = path.with_name(path.stem + ".items.npy")
    if not ids_path.is_file():
        raise DataError(f"{path}: a .npy vector file needs its rows' raw item ids in {ids_path.name} beside it")
    vecs = np.load(path, allow_pickle=False)
    ids = np.load(ids_path, allow_pickle=False)
    if vecs.ndim != 2 or len(ids) != len(vecs):
        raise DataError(f"{path}: expected a (n, k) matrix with n = {len(ids)} ids from {ids_path.name}; got "
                        f"shape {vecs.shape}")
    return ids.tolist(), vecs.astype(np.float32)


def read_vectors(path: str | Path, item_ids: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors (len(item_ids), k) float32, found (len(item_ids),) bool)`` for the raw ``item_ids``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"precomputed vectors {p} not found")
    ids, vecs = _read_parquet(p) if p.suffix == ".parquet" else _read_npy(p) if p.suffix == ".npy" else (None, None)
    if ids is None:
        raise DataError(f"{p}: precomputed vectors must be .parquet or .npy (with .items.npy)")
    finite = np.isfinite(vecs).all(axis=1)
    if not finite.all():
        raise DataError(f"{p}: the vector of item {ids[int(np.argmin(finite))]!r} (row {int(np.argmin(finite))}) "
                        "holds NaN or inf")
    pos: dict = {}
    for row, raw in enumerate(ids):
        if raw in pos:
            raise DataError(f"{p}: item {raw!r} has two vectors (rows {pos[raw]} and {row}); keep one per item")
        pos[raw] = row
    out = np.zeros((len(item_ids), vecs.shape[1]), np.float32)
    found = np.zeros(len(item_ids), bool)
    for i, raw in enumerate(item_ids):
        row = pos.get(raw)
        if row is None and not isinstance(raw, str):
            row = pos.get(str(raw))  # ids written as strings for an integer catalogue
        if row is not None:
            out[i], found[i] = vecs[row], True
    unused = len(ids) - int(found.sum())
    if unused > 0:
        log.info("%s: %d of its %d vectors belong to items outside the catalogue", p, unused, len(ids))
    return out, found

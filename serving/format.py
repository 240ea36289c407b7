"""The bundle format shared by the writer (``recsys.export``) and the reader (:mod:`serving`).

A bundle is one directory, immutable once renamed into place::

    manifest.json        format_version, model, run_id, created_at, dim, metric, annoy params,
                         counts, measured ANN recall@10, encoder spec, sha256 + size of every file,
                         never_candidates (item indices a model lookup never returns: vectors with
                         nothing learnt, e.g. items absent from training; absent in older bundles = none),
                         exclude_seen (whether lookups leave a user's seen items out by default; decided per
                         log on validation by the pipeline; absent in older bundles = true)
    items.ann            Annoy index over items; Annoy id j is item index j + 1 (index 0 = padding); absent
                         (manifest "annoy" null) in bundles over AnnConfig.annoy_max_items, which search IVF
    item_vectors.npy     (n_items + 1, dim) float32, row 0 = padding
    user_vectors.npy     (n_users + 1, dim) float32, row 0 = padding user
    item_ids.npy         (n_items,) int64 or unicode: raw id of item index j + 1
    user_ids.npy         (n_users,) int64 or unicode: raw id of user index j + 1
    seen.npz             CSR ``indptr`` (n_users + 2,) int64 and ``indices`` int32 item indices per user
    history.npz          ``indptr`` (n_users + 2,) int64 and ``items`` int32: each user's stored history,
                         oldest first (repeats kept); request-time events are appended to it and encoded
    popular.npy          (m,) int64 item indices, most popular first (the cold-start fallback)
    popularity.npy       (n_items + 1,) float32 interaction counts (the fallback's scores)
    items_meta.json      optional: list of n_items dicts (title, categories, ...) or null, by item index - 1
    encoder_<name>.npy   plain weights of the request-time user encoder (manifest "encoder": its spec,
                         see :mod:`serving.encoder`)
    ivf_centroids.npy    optional IVF index (manifest "ivf" not null): (nlist, dim) float32 cell centroids,
    ivf_offsets.npy      (nlist + 1,) int64 cell boundaries into the two arrays below,
    ivf_items.npy        (n_items,) int32 item index of each row, cells in order,
    ivf_vectors.npy      (n_items, dim) float32 item vectors in cell order (L2-normalised for "angular")

Everything loads with numpy (``allow_pickle=False``) and json only: no pickle anywhere.
This module imports numpy and the standard library only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

#: longest user or item id accepted: by the readers (longer ids are quarantined) and by serving requests
MAX_ID_LEN = 256

FORMAT_VERSION = 2  # 2: history.npz and model-specific encoders (kind)
MANIFEST = "manifest.json"
INDEX = "items.ann"
ITEM_VECTORS = "item_vectors.npy"
USER_VECTORS = "user_vectors.npy"
ITEM_IDS = "item_ids.npy"
USER_IDS = "user_ids.npy"
SEEN = "seen.npz"
HISTORY = "history.npz"
POPULAR = "popular.npy"
POPULARITY = "popularity.npy"
ITEMS_META = "items_meta.json"
ENCODER_PREFIX = "encoder_"
IVF_CENTROIDS = "ivf_centroids.npy"
IVF_OFFSETS = "ivf_offsets.npy"
IVF_ITEMS = "ivf_items.npy"
IVF_VECTORS = "ivf_vectors.npy"
IVF_FILES = (IVF_CENTROIDS, IVF_OFFSETS, IVF_ITEMS, IVF_VECTORS)
#: files every bundle has (items_meta.json and encoder_*.npy are optional and listed in the manifest)
REQUIRED_FILES = (ITEM_VECTORS, USER_VECTORS, ITEM_IDS, USER_IDS, SEEN, HISTORY, POPULAR, POPULARITY)
#: Annoy metric per model similarity
METRICS = ("dot", "angular")
#: manifest key: sorted item indices that model lookups never return (see the module docstring)
NEVER_CANDIDATES = "never_candidates"
#: manifest key: lookups leave a user's seen items out unless the request says otherwise (absent = true)
EXCLUDE_SEEN = "exclude_seen"
#: the manifest's ``search_k`` is for 10 results; see :func:`effective_search_k` for n results
SEARCH_K_FOR = 10
#: candidate search per bundle (manifest "search"): the Annoy index, exact scoring of every item, or the
#: IVF index (large catalogues); export picks the fastest that reached the target recall, by measurement
SEARCH_MODES = ("annoy", "exact", "ivf")
#: publish root layout: ``<root>/bundles/<version>/`` and ``<root>/current`` -> ``bundles/<version>``
BUNDLES_DIR = "bundles"
CURRENT = "current"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def effective_search_k(search_k: int, n_trees: int, n: int) -> int:
    """Nodes Annoy inspects to return ``n`` results: the tuned ``search_k``, or Annoy's default
    ``n_trees * n`` when a large over-fetch needs more. Export measures recall with each user's
    seen items excluded through this same rule, so the manifest's recall is the served recall
    (scaling search_k with every excluded item would cost ~3x on typical histories)."""
    return max(search_k, n_trees * n)


class RequestError(ValueError):
    """A caller's mistake (bad k, ...): the HTTP service answers 400 with the message; any other error is a
    500 with a log line."""


class BundleError(RuntimeError):
    """A bundle is missing, corrupt or inconsistent; the message names the file and the fix."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (bounded memory for big indexes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve_bundle_dir(path: str | Path) -> Path:
    """A bundle directory, or the bundle a publish root's ``current`` pointer names.

    Raises
    ------
    BundleError
        When ``path`` is neither a bundle (no manifest.json) nor a publish root with ``current``.
    """
    p = Path(path)
    if (p / MANIFEST).is_file():
        return p
    cur = p / CURRENT
    if cur.is_symlink() or cur.exists():
        target = cur.resolve()
        if not (target / MANIFEST).is_file():
            raise BundleError(f"{cur} points at {target}, which holds no {MANIFEST}; publish a bundle again")
        return target
    raise BundleError(
        f"{p} is neither a bundle (no {MANIFEST}) nor a publish root (no {CURRENT} pointer); "
        "pass the directory export_bundle() wrote or the root publish() manages"
    )


class IdLookup:
    """Raw id -> dense index (1-based) by binary search over the sorted ids; no per-id dict.

    Parameters
    ----------
    ids : (n,) int64 or unicode array, raw id of index ``j + 1``.
    """

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids
        self.is_int = ids.dtype.kind in "iu"
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]

    def __len__(self) -> int:
        return len(self.ids)

    def _coerce(self, raw: object) -> object | None:
        if self.is_int:
            if isinstance(raw, bool):
                return None
            if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
                raw = int(raw)
            if isinstance(raw, (int, np.integer)) and _INT64_MIN <= int(raw) <= _INT64_MAX:
                return int(raw)
            return None
        return str(raw) if isinstance(raw, (str, int, np.integer)) and not isinstance(raw, bool) else None

    def lookup(self, raws: list) -> np.ndarray:
        """(len(raws),) int64 index of each raw id; 0 where the id is unknown or of the wrong type."""
        out = np.zeros(len(raws), dtype=np.int64)
        keep = [(i, v) for i, r in enumerate(raws) if (v := self._coerce(r)) is not None]
        if not keep or not len(self.ids):
            return out
        pos_in, vals = zip(*keep, strict=True)
        vals_arr = np.asarray(vals, dtype=np.int64 if self.is_int else None)
        pos = np.searchsorted(self._sorted, vals_arr)
        pos_c = np.minimum(pos, len(self._sorted) - 1)
        hit = self._sorted[pos_c] == vals_arr
        out[np.asarray(pos_in)[hit]] = self._order[pos_c[hit]] + 1
        return out

    def raw(self, indices: np.ndarray) -> list:
        """Raw ids (Python int or str) of 1-based indices."""
        return self.ids[np.asarray(indices, dtype=np.int64) - 1].tolist()

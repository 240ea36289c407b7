"""Load and verify a bundle: every file's sha256 against the manifest, then shapes and dims.

Vectors are memory-mapped (``np.load(mmap_mode="r")``) and the Annoy index is mapped with
``prefault=False``, so loading a big bundle costs the hashing pass, not a copy in memory; worker
processes share the pages. The item and IVF vectors' pages are touched once at load (:func:`touch`),
so the first lookups after a (re)load do not pay the page faults of a 10M-item catalogue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from serving import format as fmt
from serving.encoder import Encoder, build_encoder
from serving.ivf import IvfIndex


@dataclass
class Bundle:
    """A verified bundle's contents (arrays are read-only / memory-mapped)."""

    path: Path
    manifest: dict
    index: AnnoyIndex | None  # None when exported without one (catalogues over AnnConfig.annoy_max_items)
    item_vectors: np.ndarray  # (n_items + 1, d)
    user_vectors: np.ndarray  # (n_users + 1, d)
    items: fmt.IdLookup
    users: fmt.IdLookup
    seen_indptr: np.ndarray  # (n_users + 2,)
    seen_indices: np.ndarray  # (nnz,) item indices
    popular: np.ndarray  # (m,) item indices, most popular first
    popularity: np.ndarray  # (n_items + 1,)
    meta: list | None
    encoder: Encoder
    history_indptr: np.ndarray  # (n_users + 2,)
    history_items: np.ndarray  # (n_events,) item indices, each user's oldest first
    ivf: IvfIndex | None = None  # the IVF index, when the bundle has one (large catalogues)

    @property
    def input_vectors(self) -> np.ndarray:
        """(n_items + 1, d) what a history is made of: a mean encoder's own table when it has one (item2vec
        in-out scoring ships its input vectors there; the item vectors are then its output vectors), else the
        item vectors. What ``similar_items`` queries with and what a warm start copies."""
        from serving.encoder import MeanEncoder

        return self.encoder.vectors if isinstance(self.encoder, MeanEncoder) else self.item_vectors

    def seen(self, user: int) -> np.ndarray:
        """Item indices user ``user`` (1-based index) interacted with."""
        return self.seen_indices[self.seen_indptr[user]:self.seen_indptr[user + 1]]

    def history(self, user: int) -> np.ndarray:
        """User ``user``'s stored history (item indices, oldest first), as the stored vector encoded it."""
        return self.history_items[self.history_indptr[user]:self.history_indptr[user + 1]]


def touch(a: np.ndarray, page: int = 4096) -> None:
    """Read one value per ``page`` bytes of ``a`` (a memory map): the pages are mapped into this process now,
    not during the first lookups (no copy: they stay the shared page cache)."""
    flat = a.reshape(-1)
    if flat.size:
        float(flat[::max(1, page // a.itemsize)].sum(dtype=np.float64))


def _npy(path: Path, mmap: bool = True) -> np.ndarray:
    try:  # asarray: a plain ndarray view of the map (np.memmap indexing adds per-call overhead)
        return np.asarray(np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False))
    except (ValueError, OSError) as exc:
        raise BundleError(f"{path} is not a readable .npy array ({exc}); re-export the bundle") from exc


BundleError = fmt.BundleError


def read_manifest(directory: Path) -> dict:
    try:
        manifest = json.loads((directory / fmt.MANIFEST).read_text())
    except FileNotFoundError as exc:
        raise BundleError(f"{directory / fmt.MANIFEST} is missing; this is not a bundle directory") from exc
    except json.JSONDecodeError as exc:
        raise BundleError(f"{directory / fmt.MANIFEST} is not valid JSON ({exc}); re-export the bundle") from exc
    if manifest.get("format_version") != fmt.FORMAT_VERSION:
        raise BundleError(
            f"{directory} has bundle format_version {manifest.get('format_version')!r}; this server reads "
            f"version {fmt.FORMAT_VERSION}: re-export with a matching recsys version"
        )
    return manifest


def verify_files(directory: Path, manifest: dict) -> None:
    """Raise BundleError for a missing file, an unlisted required file, or a sha256/size mismatch."""
    files = manifest.get("files", {})
    for name in fmt.REQUIRED_FILES:
        if name not in files:
            raise BundleError(f"{directory / fmt.MANIFEST} does not list required file {name}; re-export the bundle")
    for name, entry in files.items():
        p = directory / name
        if not p.is_file():
            raise BundleError(f"{p} is missing (listed in the manifest); the bundle is incomplete: re-export it")
        if p.stat().st_size != entry["bytes"]:
            raise BundleError(f"{p} has {p.stat().st_size} bytes, the manifest says {entry['bytes']}: corrupt bundle")
        if fmt.sha256_file(p) != entry["sha256"]:
            raise BundleError(f"{p} fails its sha256 check against the manifest: corrupt bundle, re-export it")


def _check(cond: bool, directory: Path, what: str) -> None:
    if not cond:
        raise BundleError(f"{directory}: {what}; the bundle is inconsistent, re-export it")


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Verify and map the bundle at ``path`` (a bundle dir or a publish root with ``current``)."""
    d = fmt.resolve_bundle_dir(path)
    manifest = read_manifest(d)
    if verify:
        verify_files(d, manifest)
    dim, n_items, n_users = manifest["dim"], manifest["counts"]["items"], manifest["counts"]["users"]
    items, users = _npy(d / fmt.ITEM_VECTORS), _npy(d / fmt.USER_VECTORS)
    _check(items.shape == (n_items + 1, dim), d, f"item_vectors.npy is {items.shape}, manifest says "
           f"({n_items + 1}, {dim})")
    _check(users.shape == (n_users + 1, dim), d, f"user_vectors.npy is {users.shape}, manifest says "
           f"({n_users + 1}, {dim})")
    item_ids, user_ids = _npy(d / fmt.ITEM_IDS, mmap=False), _npy(d / fmt.USER_IDS, mmap=False)
    _check(item_ids.shape == (n_items,), d, f"item_ids.npy has {item_ids.shape} ids for {n_items} items")
    _check(user_ids.shape == (n_users,), d, f"user_ids.npy has {user_ids.shape} ids for {n_users} users")
    indptr, indices = _csr(d / fmt.SEEN, "indices")
    _check(indptr.shape == (n_users + 2,), d, f"seen.npz indptr has {indptr.shape} entries for {n_users} users")
    h_ptr, h_items = _csr(d / fmt.HISTORY, "items")
    _check(h_ptr.shape == (n_users + 2,) and h_ptr[-1] == len(h_items), d,
           f"history.npz indptr has {h_ptr.shape} entries for {n_users} users and {len(h_items)} events")
    popularity = _npy(d / fmt.POPULARITY, mmap=False)
    _check(popularity.shape == (n_items + 1,), d, f"popularity.npy is {popularity.shape}")
    index = _load_index(d, manifest, dim, n_items)
    meta = json.loads((d / fmt.ITEMS_META).read_text()) if fmt.ITEMS_META in manifest["files"] else None
    _check(meta is None or len(meta) == n_items, d, "items_meta.json does not have one entry per item")
    weights = {n[len(fmt.ENCODER_PREFIX):-4]: _npy(d / n, mmap=False)
               for n in manifest["files"] if n.startswith(fmt.ENCODER_PREFIX)}
    try:
        encoder = build_encoder({k: v for k, v in manifest["encoder"].items() if k != "weights"}, weights, items)
    except ValueError as exc:
        raise BundleError(f"{d}: the encoder does not fit the bundle: {exc}") from exc
    ivf = _load_ivf(d, manifest, dim, n_items)
    for mapped in (items, ivf.vectors if ivf is not None else None):
        if mapped is not None:
            touch(mapped)
    return Bundle(d, manifest, index, items, users, fmt.IdLookup(item_ids), fmt.IdLookup(user_ids), indptr,
                  indices, _npy(d / fmt.POPULAR, mmap=False), popularity, meta, encoder, h_ptr, h_items, ivf)


def _csr(path: Path, values: str) -> tuple[np.ndarray, np.ndarray]:
    """``indptr`` and ``values`` of an npz the bundle stores per user."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["indptr"], z[values]
    except (ValueError, OSError, KeyError) as exc:
        raise BundleError(f"{path} is not an npz with indptr/{values} ({exc}); re-export the bundle") from exc


def _load_ivf(d: Path, manifest: dict, dim: int, n_items: int) -> IvfIndex | None:
    """The IVF index when the manifest lists one; its files are checked like every other file."""
    spec = manifest.get("ivf")
    _check(spec is not None or manifest.get("search") != "ivf", d, 'manifest search is "ivf" but has no ivf section')
    if spec is None:
        return None
    for name in fmt.IVF_FILES:
        _check(name in manifest["files"], d, f"manifest has an ivf section but does not list {name}")
    arrays = [_npy(d / name, mmap=name == fmt.IVF_VECTORS) for name in fmt.IVF_FILES]
    centroids, offsets, items, vectors = arrays
    _check(centroids.shape == (spec["nlist"], dim), d, f"{fmt.IVF_CENTROIDS} is {centroids.shape}, manifest says "
           f"({spec['nlist']}, {dim})")
    _check(items.shape == (n_items,) and (not n_items or items.min() >= 1 and items.max() <= n_items), d,
           f"{fmt.IVF_ITEMS} must hold the {n_items} item indices 1..{n_items}")
    try:
        return IvfIndex(centroids, offsets.astype(np.int64), items, vectors, int(spec["nprobe"]))
    except ValueError as exc:
        raise BundleError(f"{d}: the IVF index is inconsistent ({exc}); re-export the bundle") from exc


def _load_index(d: Path, manifest: dict, dim: int, n_items: int) -> AnnoyIndex | None:
    """The Annoy index, or None for a bundle exported without one (``manifest["annoy"]`` null)."""
    _check(manifest["metric"] in fmt.METRICS, d, f"unknown metric {manifest['metric']!r}")
    _check(manifest.get("search", "annoy") in fmt.SEARCH_MODES, d, f"unknown search {manifest.get('search')!r}")
    if manifest.get("annoy") is None:
        _check(manifest.get("search") != "annoy", d, 'manifest search is "annoy" but the bundle has no Annoy index')
        return None
    _check(fmt.INDEX in manifest["files"], d, f"manifest has an annoy section but does not list {fmt.INDEX}")
    index = AnnoyIndex(dim, manifest["metric"])
    try:
        index.load(str(d / fmt.INDEX), prefault=False)
    except OSError as exc:
        raise BundleError(f"{d / fmt.INDEX} cannot be loaded by Annoy ({exc}); re-export the bundle") from exc
    _check(index.get_n_items() == n_items, d, f"items.ann holds {index.get_n_items()} items, manifest says {n_items}")
    return index

"""Write a serving bundle (see :mod:`serving.format` for the layout) from plain arrays or a model.

    >>> export_bundle("out/b1", item_vecs, user_vecs, item_ids, user_ids, seen=train,
    ...               popularity=None, metric="dot", model_name="als")    # doctest: +SKIP
    PosixPath('out/b1')

Everything is written into a hidden temp directory beside ``dest_dir`` and renamed into place
only when complete, so a reader never sees half a bundle.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.data.sequences import Sequences
from recsys.export.ann import AnnConfig
from recsys.export.inputs import as_id_array, as_seen_csr, check_vectors, meta_list
from recsys.export.search import build_search
from recsys.models.base import Model
from serving import encoder as enc
from serving import format as fmt

N_POPULAR = 10_000


def export_bundle(
    dest_dir: str | Path,
    item_vectors: np.ndarray,
    user_vectors: np.ndarray,
    item_ids: Any,
    user_ids: Any,
    seen: Sequences | sp.csr_matrix,
    popularity: np.ndarray | None,
    metric: str,
    model_name: str,
    run_id: str | None = None,
    item_meta: Any = None,
    encoder_spec: Mapping | None = None,
    encoder_weights: Mapping[str, np.ndarray] | None = None,
    target_recall: float = 0.98,
    ann: AnnConfig | None = None,
    overwrite: bool = False,
) -> Path:
    """Export vectors, id maps, seen items and the tuned indexes (Annoy; IVF on large catalogues) as one bundle.

    Parameters
    ----------
    dest_dir : the bundle directory to create (must not exist unless ``overwrite``).
    item_vectors : (n_items + 1, d) float, row 0 = padding.
    user_vectors : (n_users + 1, d) float, row 0 = padding user.
    item_ids, user_ids : raw ids of indices 1..n (polars Series, IdMap, list or array; ints or strings).
    seen : each user's seen items: Sequences (row = user) or CSR (n_users + 1, n_items + 1).
    popularity : (n_items + 1,) counts for the cold-start fallback; None counts users in ``seen``.
    metric : "dot" or "angular" (a model's "cosine" similarity maps to "angular").
    model_name, run_id : recorded in the manifest (run_id = the MLflow run).
    item_meta : optional polars DataFrame with an ``item`` column (plus title, categories, ...)
        or a mapping raw id -> dict.
    encoder_spec, encoder_weights : request-time history encoder (see :mod:`serving.encoder`);
        default: mean of item vectors, normalised for "angular".
    target_recall : ANN recall@10 to reach against exact top-10 (overrides ``ann.target_recall``).

    Returns
    -------
    Path of the bundle directory.
    """
    dest = Path(dest_dir)
    metric = {"cosine": "angular"}.get(metric, metric)
    if metric not in fmt.METRICS:
        raise ValueError(f"metric must be one of {fmt.METRICS} (or 'cosine'); got {metric!r}")
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} exists; bundles are immutable: pick a new directory or pass overwrite=True")
    items = check_vectors("item_vectors", item_vectors)
    users = check_vectors("user_vectors", user_vectors, dim=items.shape[1])
    n_items, n_users, dim = items.shape[0] - 1, users.shape[0] - 1, items.shape[1]
    arrays = {
        fmt.ITEM_VECTORS: items, fmt.USER_VECTORS: users,
        fmt.ITEM_IDS: as_id_array("item_ids", item_ids, n_items),
        fmt.USER_IDS: as_id_array("user_ids", user_ids, n_users),
    }
    csr = as_seen_csr(seen, n_users, n_items)
    pop = _popularity(popularity, csr, n_items)
    arrays[fmt.POPULARITY], arrays[fmt.POPULAR] = pop, _popular_order(pop)
    weights = {k: np.asarray(v, dtype=np.float32) for k, v in (encoder_weights or {}).items()}
    spec = enc.validate_spec(encoder_spec or {"normalize": metric == "angular"}, weights, n_items, dim)
    cfg = ann or AnnConfig()
    cfg = AnnConfig(**{**cfg.__dict__, "target_recall": target_recall})
    if cfg.search not in ("auto", *fmt.SEARCH_MODES):
        raise ValueError(f"AnnConfig.search must be 'auto' or one of {fmt.SEARCH_MODES}; got {cfg.search!r}")
    built = build_search(items, users, metric, cfg, seen=csr)
    index, ann_result = built.annoy, built.annoy_result

    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        for name, arr in arrays.items():
            np.save(tmp / name, arr, allow_pickle=False)
        for name, arr in weights.items():
            np.save(tmp / f"{fmt.ENCODER_PREFIX}{name}.npy", arr, allow_pickle=False)
        np.savez(tmp / fmt.SEEN, indptr=csr.indptr.astype(np.int64), indices=csr.indices.astype(np.int32))
        index.save(str(tmp / fmt.INDEX))
        index.unload()
        if built.ivf is not None:
            for name, arr in ((fmt.IVF_CENTROIDS, built.ivf.centroids), (fmt.IVF_OFFSETS, built.ivf.offsets),
                              (fmt.IVF_ITEMS, built.ivf.items), (fmt.IVF_VECTORS, built.ivf.vectors)):
                np.save(tmp / name, arr, allow_pickle=False)
        if item_meta is not None:
            meta = meta_list(item_meta, arrays[fmt.ITEM_IDS])
            (tmp / fmt.ITEMS_META).write_text(json.dumps(meta, default=str))
        manifest = {
            "format_version": fmt.FORMAT_VERSION, "model": model_name, "run_id": run_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "dim": dim, "metric": metric,
            "search": built.search,
            "search_options": built.manifest_options(),
            "annoy": {"n_trees": ann_result.n_trees, "search_k": ann_result.search_k,
                      "search_k_for": fmt.SEARCH_K_FOR, "build_seconds": round(ann_result.build_seconds, 3)},
            "recall_at_10": {"users": ann_result.recall_users, "items": ann_result.recall_items,
                             "target": target_recall, "target_reached": ann_result.target_reached,
                             "sample": cfg.sample, "tried": ann_result.tried},
            "ivf": None if built.ivf_result is None else {
                **built.ivf_result.to_json(), "build_seconds": round(built.ivf_result.build_seconds, 3)},
            "counts": {"items": n_items, "users": n_users, "seen": int(csr.nnz)},
            "id_types": {"item": _kind(arrays[fmt.ITEM_IDS]), "user": _kind(arrays[fmt.USER_IDS])},
            "encoder": {**spec, "weights": sorted(weights)},
            "files": _file_table(tmp),
        }
        (tmp / fmt.MANIFEST).write_text(json.dumps(manifest, indent=2))
        if dest.exists():  # overwrite: remove only once the new bundle is complete
            shutil.rmtree(dest)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def export_model(dest_dir: str | Path, model: Model, item_ids: Any, user_ids: Any, train: Sequences,
                 run_id: str | None = None, **kwargs: Any) -> Path:
    """:func:`export_bundle` for a fitted model: its vectors, its metric, ``train`` as seen items and counts."""
    counts = np.bincount(np.asarray(train.items, dtype=np.int64), minlength=train.n_items + 1)
    return export_bundle(dest_dir, model.item_vectors(), model.user_vectors(), item_ids, user_ids, seen=train,
                         popularity=counts, metric=model.similarity, model_name=model.name, run_id=run_id,
                         **kwargs)


def _popularity(popularity: np.ndarray | None, csr: sp.csr_matrix, n_items: int) -> np.ndarray:
    if popularity is None:
        return np.bincount(csr.indices, minlength=n_items + 1).astype(np.float32)
    pop = np.asarray(popularity, dtype=np.float32)
    if pop.shape != (n_items + 1,) or not np.all(np.isfinite(pop)):
        raise ValueError(f"popularity must be ({n_items + 1},) finite counts (row 0 = padding); got {pop.shape}")
    return pop


def _popular_order(pop: np.ndarray) -> np.ndarray:
    """(min(n_items, N_POPULAR),) item indices by count, ties by index (stable)."""
    order = np.argsort(-pop[1:], kind="stable")[:N_POPULAR] + 1
    return order.astype(np.int64)


def _kind(ids: np.ndarray) -> str:
    return "int" if ids.dtype.kind in "iu" else "str"


def _file_table(directory: Path) -> dict[str, dict]:
    return {p.name: {"sha256": fmt.sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(directory.iterdir()) if p.is_file()}


__all__: Sequence[str] = ("export_bundle", "export_model")
